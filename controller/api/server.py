"""The REST API: JSON over HTTP on 127.0.0.1 by default; every call needs the token
(`Authorization: Bearer <token>`, the token is in <state-dir>/api-token)."""
from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from controller.policy.errors import PolicyError

LOG = logging.getLogger('opendvs.api')


def serve(service, token: str, host: str, port: int) -> ThreadingHTTPServer:
    """Start the API in a daemon thread; returns the server (call shutdown() to stop)."""
    handler = type('Handler', (_Handler,), {'service': service, 'token': token})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name='api', daemon=True).start()
    LOG.info('API on http://%s:%d', host, port)
    return httpd


class _Handler(BaseHTTPRequestHandler):
    service = None
    token = ''
    GET_VIEWS = {'tenants', 'networks', 'workloads', 'switches', 'tunnels', 'uplinks'}

    def log_message(self, fmt, *args):
        LOG.debug('%s ' + fmt, self.address_string(), *args)

    def _reply(self, code: int, body) -> None:
        data = json.dumps(body, indent=1).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        got = self.headers.get('Authorization', '')
        if got.startswith('Bearer ') and hmac.compare_digest(got[7:].strip(), self.token):
            return True
        self._reply(401, {'error': 'missing or wrong token (see <state-dir>/api-token)'})
        return False

    def _route(self, method: str) -> None:
        if not self._authorized():
            return
        url = urlparse(self.path)
        parts = [p for p in url.path.split('/') if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        dry = query.get('dry_run') in ('1', 'true')
        try:
            if parts[:1] != ['v1']:
                return self._reply(404, {'error': 'unknown path %s' % url.path})
            rest = parts[1:]
            if method == 'GET' and len(rest) == 1 and rest[0] in self.GET_VIEWS:
                return self._reply(200, getattr(self.service, rest[0])())
            if method == 'GET' and rest == ['flows']:
                return self._reply(200, self.service.flows(query.get('switch')))
            if method == 'POST' and rest == ['apply']:
                body = json.loads(self.rfile.read(int(self.headers.get('Content-Length', 0))) or b'{}')
                return self._reply(200, self.service.apply(body.get('tenants', []), bool(body.get('dry_run'))))
            if method == 'DELETE' and len(rest) == 2 and rest[0] == 'tenants':
                return self._reply(200, self.service.delete(rest[1], dry))
            return self._reply(404, {'error': 'unknown %s %s' % (method, url.path)})
        except PolicyError as e:
            return self._reply(400, {'error': 'policy rejected; nothing changed', 'diags': [str(d) for d in e.diags]})
        except KeyError as e:
            return self._reply(404, {'error': 'no such tenant: %s' % e.args[0]})
        except (ValueError, json.JSONDecodeError) as e:
            return self._reply(400, {'error': str(e)})
        except Exception as e:                      # a switch failed to converge, a disk error...
            LOG.exception('%s %s failed', method, url.path)
            return self._reply(500, {'error': str(e)})

    def do_GET(self):
        self._route('GET')

    def do_POST(self):
        self._route('POST')

    def do_DELETE(self):
        self._route('DELETE')
