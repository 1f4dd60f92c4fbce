"""The REST API: JSON over HTTP on 127.0.0.1 by default; every call needs the token
(`Authorization: Bearer <token>`, the token is in <state-dir>/api-token), except
`GET /metrics`: Prometheus text exposition (controller/metrics.py), counts only.
`GET /v1/events?since=SEQ`: the event log's recent entries (controller/eventlog.py).
`GET /view`: the read-only web view (controller/api/view.py); `/view?token=T` keeps the
token in a cookie that authorizes GET requests only, `/view/vis-network.*` (the drawing
library, public code) needs no token.

Every malformed request gets a 4xx with a JSON {"error": ...}: 400 for a body of the wrong
shape, 401 without the token, 404 for an unknown path or tenant, 405 for a wrong method,
411 without a Content-Length, 413 for a body over MAX_BODY, 415 for a body that is not
application/json.  Clients are timed out (a slow client cannot hold a thread), the listen
backlog absorbs bursts of hundreds of clients, and at most MAX_CLIENTS are served at once
(the next get a 503 at once).  drain() lets the request in flight finish before exit.
"""
from __future__ import annotations

import hmac
import http.cookies
import json
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from controller import audit, metrics
from controller.api import view
from controller.api.service import NoSuchTenant
from controller.policy.errors import PolicyError
from controller.policy.values import known
from controller.trace.service import TraceRequestError

LOG = logging.getLogger('opendvs.api')

MAX_BODY = 8 << 20          # bytes of one request body (a tenant file is at most 1 MiB of YAML)
IO_TIMEOUT = 10.0           # s a client may stay silent (or not read our reply)
REQUEST_DEADLINE = 30.0     # s to send the whole request: a client dripping bytes is cut off
MAX_CLIENTS = 256           # requests served at once
BACKLOG = 1024              # connections the kernel queues before we accept them
APPLY_KEYS = {'tenants', 'dry_run'}
DOC_KEYS = {'source', 'text'}
MAX_SOURCE = 4096           # characters of a pushed file's name
TENANT_VIEWS = {'routes', 'rules'}      # GET /v1/<view>/<tenant>
OWN_VIEWS = {'trace', 'macs'}           # GET /v1/trace/<tenant>?src=&dst=&service=, GET /v1/macs
COOKIE = 'opendvs_token'                # the web view's (GET only)
WEB_HEADERS = (('Content-Security-Policy', "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                          "img-src 'self' data:"),
               ('X-Frame-Options', 'DENY'), ('Referrer-Policy', 'no-referrer'), ('X-Content-Type-Options', 'nosniff'))
WEB_401 = (b'<!doctype html><title>opendvs: token needed</title><p>The web view needs the API token: open '
           b'<code>/view?token=TOKEN</code> (the token is in <code>&lt;state-dir&gt;/api-token</code>; '
           b'<code>dvsctl view</code> prints the address).')


class BadRequest(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = BACKLOG

    def __init__(self, address, handler, max_clients: int = MAX_CLIENTS):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_clients)
        self._busy = 0
        self._idle = threading.Condition()

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            _refuse_busy(request)
            return
        with self._idle:
            self._busy += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done()

    def _done(self) -> None:
        self._slots.release()
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Stop accepting; wait (up to timeout) for the requests in flight to be answered.
        True if none is left."""
        self.shutdown()
        with self._idle:
            done = self._idle.wait_for(lambda: self._busy == 0, timeout)
        self.server_close()
        return done


def _refuse_busy(sock) -> None:
    body = json.dumps({'error': 'too many clients; try again'}).encode()
    try:
        sock.settimeout(1.0)
        try:        # read what the client already sent: closing with unread data would reset it
            sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        sock.sendall(b'HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n'
                     b'Content-Length: %d\r\nConnection: close\r\n\r\n%s' % (len(body), body))
    except OSError:
        pass
    finally:
        sock.close()


def serve(service, token: str, host: str, port: int, io_timeout: float = IO_TIMEOUT,
          deadline: float = REQUEST_DEADLINE, max_clients: int = MAX_CLIENTS) -> Server:
    """Start the API in a daemon thread; returns the server (call drain() or shutdown() to stop)."""
    if not token or token != token.strip():
        raise ValueError('refusing to serve the API with an empty or padded token')
    handler = type('Handler', (_Handler,), {'service': service, 'token': token, 'timeout': io_timeout,
                                             'deadline': deadline})
    httpd = Server((host, port), handler, max_clients)
    threading.Thread(target=httpd.serve_forever, args=(0.1,), name='api', daemon=True).start()
    LOG.info('API on http://%s:%d', host, port)
    return httpd


class _Handler(BaseHTTPRequestHandler):
    service = None
    token = ''
    timeout = IO_TIMEOUT                 # socket timeout, set by StreamRequestHandler.setup()
    deadline = REQUEST_DEADLINE
    GET_VIEWS = {'tenants', 'networks', 'workloads', 'switches', 'tunnels', 'flows', 'uplinks'}

    def setup(self):
        super().setup()
        # A client that drips a byte every few seconds never trips the socket timeout: cut it
        # off when the whole request has not arrived in time (cancelled once it has).
        self._cutoff = threading.Timer(self.deadline, self._cut)
        self._cutoff.daemon = True
        self._cutoff.start()

    def finish(self):
        self._cutoff.cancel()
        try:
            super().finish()
        except OSError:
            pass

    def _cut(self):
        LOG.info('%s: request not received within %.0fs; connection closed', self.address_string(), self.deadline)
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, fmt, *args):
        if LOG.isEnabledFor(logging.DEBUG):       # never the web view's token (/view?token=...)
            LOG.debug('%s %s', self.address_string(), re.sub(r'token=[^&\s"]*', 'token=***', fmt % args))

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, headers too long...) as JSON too."""
        self.close_connection = True
        if getattr(self, 'request_version', 'HTTP/0.9') == 'HTTP/0.9':
            self.request_version = 'HTTP/1.0'   # a garbled request line: still answer with a status line
        try:
            self._reply(code, {'error': message or self.responses.get(code, ('error',))[0]})
        except OSError:
            pass

    def _reply(self, code: int, body) -> None:
        data = json.dumps(body, indent=1).encode()
        # before the client can see the reply; a garbled request line has no method or path
        metrics.api_request(getattr(self, 'command', None) or '-', getattr(self, 'path', None) or '', code)
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        if self.close_connection:
            self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(data)

    def _has_token(self) -> bool:
        """The token as a Bearer header, or (GET only) as the web view's cookie: the page
        reads, it never changes anything."""
        got = self.headers.get('Authorization', '')
        if got.startswith('Bearer ') and hmac.compare_digest(got[7:].strip().encode(), self.token.encode()):
            return True
        return self.command == 'GET' and hmac.compare_digest(_cookie(self.headers).encode(), self.token.encode())

    def _authorized(self) -> bool:
        if self._has_token():
            return True
        self.close_connection = True        # its body (if any) is never read
        self._reply(401, {'error': 'missing or wrong token (see <state-dir>/api-token)'})
        return False

    def _metrics(self) -> None:
        data, content_type = metrics.exposition(self.headers.get('Accept'))
        self.send_response(200)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        """The request's JSON object, read within the limits; BadRequest otherwise."""
        ctype = self.headers.get('Content-Type', '').split(';')[0].strip().lower()
        if ctype != 'application/json':
            raise BadRequest(415, 'the body must be application/json (got %s)' % (_short(ctype) or 'none'))
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            raise BadRequest(411, 'send a Content-Length (chunked bodies are not accepted)')
        length = self.headers.get('Content-Length')
        if length is None or not length.strip().isdigit():
            raise BadRequest(411, 'a Content-Length header is required')
        if int(length) > MAX_BODY:
            raise BadRequest(413, 'the body is %s bytes; at most %d are accepted' % (_short(length), MAX_BODY))
        raw = self.rfile.read(int(length))
        if len(raw) < int(length):
            raise BadRequest(400, 'the body ended after %d of %s bytes' % (len(raw), length))
        self._cutoff.cancel()                # all of the request is here: no more deadline
        try:
            body = json.loads(raw.decode('utf-8'))
        except (UnicodeDecodeError, ValueError) as e:
            raise BadRequest(400, 'the body is not JSON: %s' % _short(str(e)))
        return body

    def _send(self, code: int, data: bytes, content_type: str, headers=()) -> None:
        metrics.api_request(self.command, self.path, code)
        self.send_response(code)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(data)))
        for k, v in list(headers) + list(WEB_HEADERS):
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _web(self, path: str, query: dict) -> None:
        """The web view's page and its files (controller/api/view.py).  /view?token=T checks
        the token and keeps it in a cookie (HttpOnly, SameSite=Strict) that authorizes GETs
        only, then sends the browser to /view, so the token leaves the address bar."""
        if 'token' in query:
            if not hmac.compare_digest(query['token'].encode(), self.token.encode()):
                return self._send(401, WEB_401, 'text/html; charset=utf-8')
            return self._send(303, b'', 'text/html; charset=utf-8', [
                ('Location', '/view'),
                ('Set-Cookie', '%s=%s; Path=/; HttpOnly; SameSite=Strict' % (COOKIE, self.token))])
        if path not in view.LIBS and not self._has_token():
            return self._send(401, WEB_401, 'text/html; charset=utf-8')
        got = view.static(path)
        if got is None:
            return self._reply(404, {'error': 'no such path %s%s' % (_short(path), '' if path not in view.LIBS else
                                                                   ' (vis-network: install opendvs[view])')})
        return self._send(200, got[0], got[1], [('Cache-Control', 'no-store')])

    def _route(self, method: str) -> None:
        if method == 'GET' and urlparse(self.path).path == '/metrics':
            return self._metrics()               # no token: Prometheus scrapes it, counts only
        url = urlparse(self.path)
        if method == 'GET' and (url.path == '/view' or url.path.startswith('/view/')):
            return self._web(url.path, {k: v[-1] for k, v in parse_qs(url.query).items()})
        if not self._authorized():
            return
        parts = [p for p in url.path.split('/') if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        dry = query.get('dry_run') in ('1', 'true')
        try:
            if parts[:1] != ['v1']:
                return self._reply(404, {'error': 'no such path %s' % _short(url.path)})
            rest = parts[1:]
            allowed = _methods(rest, self.GET_VIEWS)
            if not allowed:
                return self._reply(404, {'error': 'no such path %s' % _short(url.path)})
            if method not in allowed:
                self.close_connection = True
                return self._reply(405, {'error': '%s is not allowed on %s (only %s)' % (
                    method, _short(url.path), ', '.join(sorted(allowed)))})
            if method == 'GET' and rest[0] in OWN_VIEWS:          # issue 14: trace, macs
                return self._reply(200, _own_view(self.service, rest, query))
            if method == 'GET' and rest == ['flows']:
                return self._reply(200, self.service.flows(query.get('switch')))
            if method == 'GET' and rest[0] == 'placement':
                if not query.get('hypervisor'):
                    raise BadRequest(400, 'say where: /v1/placement/<tenant>/<workload>?hypervisor=<name>')
                return self._reply(200, self.service.placement(rest[1], rest[2], query['hypervisor']))
            if method == 'GET' and rest == ['view']:
                return self._reply(200, view.picture(self.service.core))
            if method == 'GET' and rest == ['events']:
                return self._reply(200, self.service.core.events.view(_since(query.get('since'))))
            if method == 'GET' and rest[0] in TENANT_VIEWS:
                return self._reply(200, getattr(self.service, rest[0])(rest[1]))
            if method == 'GET':
                return self._reply(200, getattr(self.service, rest[0])())
            if method == 'POST':
                docs, dry = apply_request(self._body())
                return self._reply(200, self.service.apply(docs, dry, by=self.client_address[0]))
            return self._reply(200, self.service.delete(rest[1], dry, by=self.client_address[0]))
        except BadRequest as e:
            self.close_connection = True
            return self._reply(e.status, {'error': str(e)})
        except PolicyError as e:
            if not dry:
                audit.refused(getattr(self.service, 'core', None), 'apply', self.client_address[0], 'policy rejected',
                              diags=[str(d) for d in e.diags])
            return self._reply(400, {'error': 'policy rejected; nothing changed', 'diags': [str(d) for d in e.diags]})
        except TraceRequestError as e:
            return self._reply(400, {'error': str(e)})
        except NoSuchTenant as e:
            names = ' (known: %s)' % _short(known(e.args[1])) if len(e.args) > 1 else ''
            return self._reply(404, {'error': 'no such tenant: %s%s' % (_short(str(e.args[0])), names)})
        except Exception as e:                      # a switch failed to converge, a disk error...
            LOG.exception('%s %s failed', method, _short(url.path))
            return self._reply(500, {'error': str(e)})

    def do_GET(self):
        self._route('GET')

    def do_POST(self):
        self._route('POST')

    def do_DELETE(self):
        self._route('DELETE')

    def do_PUT(self):
        self._route('PUT')

    def do_PATCH(self):
        self._route('PATCH')


def _methods(rest: list[str], views) -> set[str]:
    """The methods a path under /v1 answers (empty: no such path)."""
    if len(rest) == 1 and rest[0] in views:
        return {'GET'}
    if len(rest) == 2 and rest[0] in TENANT_VIEWS:
        return {'GET'}
    if len(rest) == 3 and rest[0] == 'placement':       # /v1/placement/<tenant>/<workload>?hypervisor=H
        return {'GET'}
    if (len(rest) == 2 and rest[0] == 'trace') or rest == ['macs']:
        return {'GET'}
    if rest == ['apply']:
        return {'POST'}
    if rest in (['events'], ['view']):
        return {'GET'}
    if len(rest) == 2 and rest[0] == 'tenants':
        return {'DELETE'}
    return set()


def _own_view(service, rest: list[str], query: dict):
    """GET /v1/trace/TENANT?src=&dst=[&service=] (controller/trace/service.py) and GET /v1/macs."""
    if rest == ['macs']:
        from controller.trace import macs
        return macs.view(service.core)
    from controller.trace import service as trace
    missing = [k for k in ('src', 'dst') if not query.get(k)]
    if missing:
        raise BadRequest(400, 'trace needs %s: /v1/trace/TENANT?src=WORKLOAD&dst=WORKLOAD[&service=tcp/22]'
                         % ' and '.join(missing))
    return trace.view(service.core, service.docs, rest[1], query['src'], query['dst'], query.get('service'))


def apply_request(body) -> tuple[list[dict], bool]:
    """A POST /v1/apply body -> ([{'source', 'text'}], dry_run); BadRequest(400) naming what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest(400, 'expected a JSON object {"tenants": [{"source": ..., "text": ...}], "dry_run": false}')
    unknown = sorted(set(body) - APPLY_KEYS)
    if unknown:
        raise BadRequest(400, 'unknown key %s (allowed: %s)' % (_short(repr(unknown[0])), ', '.join(sorted(APPLY_KEYS))))
    if 'tenants' not in body:
        raise BadRequest(400, 'missing key "tenants"')
    docs = body['tenants']
    if not isinstance(docs, list):
        raise BadRequest(400, 'tenants: expected a list of {"source": ..., "text": ...}')
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or set(doc) != DOC_KEYS:
            raise BadRequest(400, 'tenants[%d]: expected an object with exactly "source" and "text"' % i)
        for key in sorted(DOC_KEYS):
            if not isinstance(doc[key], str):
                raise BadRequest(400, 'tenants[%d].%s: expected a string' % (i, key))
        if not doc['source'] or len(doc['source']) > MAX_SOURCE or not doc['source'].isprintable():
            raise BadRequest(400, 'tenants[%d].source: expected a file name (1..%d printable characters)'
                             % (i, MAX_SOURCE))
    dry_run = body.get('dry_run', False)
    if not isinstance(dry_run, bool):
        raise BadRequest(400, 'dry_run: expected true or false')
    return docs, dry_run


def _cookie(headers) -> str:
    """The web view's token cookie ('' when there is none or it does not parse)."""
    jar = http.cookies.SimpleCookie()
    try:
        jar.load(headers.get('Cookie', ''))
    except http.cookies.CookieError:
        return ''
    return jar[COOKIE].value if COOKIE in jar else ''


def _since(text: str | None) -> int:
    """GET /v1/events?since=SEQ: the events after SEQ (none given: all kept)."""
    if text is None:
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadRequest(400, 'since: expected an event seq (a whole number >= 0), got %r' % _short(text))
    return int(text)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + '...'
