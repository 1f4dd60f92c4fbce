"""The REST API as a hostile client uses it (issue 7, part 2), on loopback: every malformed
request gets a 4xx with a JSON error, slow clients are cut off, 200 simultaneous clients are
all answered, a big parse does not hold up a small apply, and stopping answers the request in
flight.  Each case is one of the defects found on the controller as it was."""
from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time

import pytest

from controller.api import server
from controller.api.service import NoSuchTenant, PolicyService
from controller.policy.errors import PolicyError
from controller.policy.fabric import load_fabric
from controller.policy.model import Policy
from controller.policy.store import PolicyStore, TokenError, ensure_token
from tests.support import wait_until
from tests.unit.test_fuzz_policy import FABRIC

TOKEN = 'f' * 32
ACME = (FABRIC.parent / 'tenants' / 'acme.yaml').read_text()


class FakeService:
    """Answers like PolicyService; `gate` (an Event) holds apply() until set."""

    def __init__(self):
        self.applied, self.gate, self.entered = [], None, threading.Event()

    def apply(self, docs, dry_run=False, by=None):
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(60)
        self.applied.append((docs, dry_run))
        return {'dry_run': dry_run, 'tenants': [], 'switches': {}}

    def delete(self, name, dry_run=False, by=None):
        if name != 'acme':
            raise NoSuchTenant(name)
        return {'dry_run': dry_run, 'tenants': [], 'switches': {}}

    def tenants(self):
        return []

    def flows(self, switch=None):
        raise KeyError('a bug inside the service')     # must be a 500, not a "no such tenant" 404


@pytest.fixture
def api():
    svc = FakeService()
    httpd = server.serve(svc, TOKEN, '127.0.0.1', 0, io_timeout=1.0, deadline=2.0)
    httpd.svc = svc
    httpd.port = httpd.server_address[1]
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def request(api, method, path, body=None, headers=None, token=TOKEN):
    c = http.client.HTTPConnection('127.0.0.1', api.port, timeout=60)
    h = {'Authorization': 'Bearer ' + token} if token is not None else {}
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        h['Content-Type'] = 'application/json'
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    assert r.getheader('Content-Type') == 'application/json', (r.status, data)
    return r.status, json.loads(data)


def good(tenants=None, **extra):
    return dict({'tenants': tenants if tenants is not None else [{'source': 'a.yaml', 'text': 'x'}]}, **extra)


@pytest.mark.parametrize('body, status, what', [
    (good(), 200, None),
    (good(dry_run=True), 200, None),
    ([1, 2], 400, 'expected a JSON object'),                      # was: 500
    ('a string', 400, 'expected a JSON object'),
    ({}, 400, 'missing key "tenants"'),                            # was: an empty apply
    ({'tenants': {'a': 1}}, 400, 'tenants: expected a list'),
    ({'tenants': [1]}, 400, 'tenants[0]: expected an object'),
    ({'tenants': [{'source': 'a'}]}, 400, 'tenants[0]: expected an object'),   # was: 404 "no such tenant: text"
    ({'tenants': [{'source': 'a', 'text': 5}]}, 400, 'tenants[0].text: expected a string'),
    ({'tenants': [{'source': '', 'text': 'x'}]}, 400, 'tenants[0].source'),
    ({'tenants': [{'source': 'a\nb', 'text': 'x'}]}, 400, 'tenants[0].source'),
    ({'tenants': [{'source': 'a', 'text': 'x', 'more': 1}]}, 400, 'tenants[0]'),
    (good(dry_run='yes'), 400, 'dry_run: expected true or false'),
    (good(extra=1), 400, "unknown key 'extra'"),
])
def test_apply_bodies_of_the_wrong_shape_are_400(api, body, status, what):
    code, reply = request(api, 'POST', '/v1/apply', body)
    assert code == status, reply
    if what:
        assert what in reply['error'], reply


def test_bodies_that_are_not_json_are_400_and_other_types_415(api):
    assert request(api, 'POST', '/v1/apply', b'{"tenants": [', {'Content-Type': 'application/json'})[0] == 400
    assert request(api, 'POST', '/v1/apply', b'\xff\xfe', {'Content-Type': 'application/json'})[0] == 400
    code, reply = request(api, 'POST', '/v1/apply', b'tenants: []', {'Content-Type': 'application/yaml'})
    assert code == 415 and 'application/json' in reply['error']
    assert request(api, 'POST', '/v1/apply', b'{}', {})[0] == 415          # no Content-Type at all
    assert request(api, 'POST', '/v1/apply', json.dumps(good()).encode(),
                   {'Content-Type': 'application/json; charset=utf-8'})[0] == 200
    assert not [d for d, _ in api.svc.applied if d != good()['tenants']]


def test_a_body_over_the_limit_is_413_before_it_is_read(api):
    s = socket.create_connection(('127.0.0.1', api.port))
    s.sendall(b'POST /v1/apply HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n'
              b'Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{"tenants": ['
              % (TOKEN.encode(), 100 << 20))                           # 100 MB used to be accepted
    reply = s.makefile('rb').read()
    s.close()
    assert reply.startswith(b'HTTP/1.0 413') and b'"error"' in reply
    assert not api.svc.applied


def test_no_content_length_is_411(api):
    s = socket.create_connection(('127.0.0.1', api.port))
    s.sendall(b'POST /v1/apply HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n'
              b'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}\r\n0\r\n\r\n' % TOKEN.encode())
    assert s.makefile('rb').read().startswith(b'HTTP/1.0 411')
    s.close()


def test_404_only_for_a_missing_tenant_or_an_unknown_path(api):
    code, reply = request(api, 'DELETE', '/v1/tenants/globex')
    assert code == 404 and reply['error'] == 'no such tenant: globex'
    assert request(api, 'DELETE', '/v1/tenants/acme')[0] == 200
    code, reply = request(api, 'GET', '/v1/nothing')
    assert code == 404 and 'no such path' in reply['error']
    code, reply = request(api, 'GET', '/v1/flows')                  # a KeyError inside: a bug, not a 404
    assert code == 500
    code, reply = request(api, 'GET', '/v1/apply')
    assert code == 405 and 'POST' in reply['error']
    code, reply = request(api, 'PUT', '/v1/tenants')
    assert code == 405


@pytest.mark.parametrize('header', ['Bearer ', 'Bearer', '', 'Bearer ' + 'f' * 31, 'Basic ' + TOKEN])
def test_a_missing_or_wrong_token_is_401(api, header):
    code, reply = request(api, 'GET', '/v1/tenants', headers={'Authorization': header} if header else {},
                          token=None)
    assert code == 401 and 'token' in reply['error']


def test_the_api_refuses_to_start_with_an_empty_token():
    for token in ('', ' ', 'abc\n'):
        with pytest.raises(ValueError):
            server.serve(FakeService(), token, '127.0.0.1', 0)


def test_a_malformed_request_line_gets_a_json_error(api):
    s = socket.create_connection(('127.0.0.1', api.port))
    s.sendall(b'GARBAGE\r\n\r\n')
    reply = s.makefile('rb').read()
    s.close()
    assert reply.startswith(b'HTTP/1.0 400') and b'"error"' in reply


def test_a_silent_client_is_timed_out(api):
    s = socket.create_connection(('127.0.0.1', api.port))
    s.sendall(b'POST /v1/apply HTTP/1.1\r\n')          # and then nothing (io_timeout is 1 s here)
    s.settimeout(30)
    assert s.recv(100) == b''                          # the server closed it
    s.close()


def test_a_client_dripping_bytes_is_cut_off_at_the_deadline(api):
    s = socket.create_connection(('127.0.0.1', api.port))
    s.settimeout(30)
    headers = (b'POST /v1/apply HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n'
               b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n' % TOKEN.encode())
    s.sendall(headers)
    closed = False
    for _ in range(200):                               # a byte every 0.5 s never trips io_timeout
        try:
            s.sendall(b' ')
            s.setblocking(False)
            try:
                if s.recv(100) == b'':
                    closed = True
                    break
            except BlockingIOError:
                pass
            finally:
                s.setblocking(True)
                s.settimeout(30)
        except OSError:
            closed = True
            break
        time.sleep(0.5)
    s.close()
    assert closed, 'a dripping client was never cut off'
    assert not api.svc.applied


def test_200_simultaneous_clients_are_all_answered_without_a_reset(api):
    n, results, start = 200, [], threading.Barrier(200)

    def client():
        start.wait()
        try:
            results.append(request(api, 'GET', '/v1/tenants')[0])
        except OSError as e:                          # ConnectionResetError before the fix
            results.append(repr(e))
    threads = [threading.Thread(target=client) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * n, [r for r in results if r != 200][:5]


def test_clients_beyond_the_cap_get_a_503_at_once():
    svc = FakeService()
    svc.gate = threading.Event()
    httpd = server.serve(svc, TOKEN, '127.0.0.1', 0, max_clients=1)
    port = httpd.server_address[1]
    try:
        api = type('A', (), {'port': port})()
        t = threading.Thread(target=request, args=(api, 'POST', '/v1/apply', good()))
        t.start()
        assert svc.entered.wait(10)
        code, reply = request(api, 'GET', '/v1/tenants')
        assert code == 503 and 'too many clients' in reply['error']
        svc.gate.set()
        t.join(10)
        # the slot is free once the first request's thread has finished (just after its reply)
        wait_until(lambda: request(api, 'GET', '/v1/tenants')[0] == 200, 10, what='a free slot again')
    finally:
        svc.gate.set()
        httpd.shutdown()
        httpd.server_close()


def test_drain_answers_the_request_in_flight_and_refuses_new_ones(api):
    api.svc.gate = threading.Event()
    replies = []
    t = threading.Thread(target=lambda: replies.append(request(api, 'POST', '/v1/apply', good())))
    t.start()
    assert api.svc.entered.wait(10)
    drained = []
    d = threading.Thread(target=lambda: drained.append(api.drain(30)))
    d.start()
    # stopped accepting: a new client is refused, while the apply in flight is still held
    wait = time.monotonic() + 10
    while time.monotonic() < wait and _accepts(api.port):
        time.sleep(0.05)
    assert not _accepts(api.port) and not drained and not replies
    api.svc.gate.set()
    d.join(30)
    t.join(30)
    assert drained == [True] and replies and replies[0][0] == 200


def _accepts(port) -> bool:
    """A new client is answered (not refused, nor left waiting in a queue no one reads)."""
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=2) as s:
            s.sendall(b'GET /v1/tenants HTTP/1.0\r\nAuthorization: Bearer %s\r\n\r\n' % TOKEN.encode())
            return s.recv(12).startswith(b'HTTP/1.0')
    except OSError:
        return False


# ---- the real PolicyService: parsing happens outside the lock ---------------------------

class Core:
    def __init__(self):
        self.policy = Policy(load_fabric(FABRIC))
        self.applied = []

    @property
    def fabric(self):
        return self.policy.fabric

    def apply_policy(self, candidate, dry_run=False):
        if not dry_run:
            self.policy = candidate
            self.applied.append(sorted(candidate.tenants))
        return {}


def test_a_huge_parse_does_not_hold_up_a_small_apply_queued_behind_it(tmp_path, monkeypatch):
    from controller.api import service as service_mod
    svc = PolicyService(Core(), PolicyStore(tmp_path))
    parsing, release = threading.Event(), threading.Event()
    real = service_mod.parse_doc

    def slow_for_huge(doc):
        if doc['source'] == 'huge.yaml':
            parsing.set()
            assert release.wait(30)
        return real(doc)
    monkeypatch.setattr(service_mod, 'parse_doc', slow_for_huge)
    big = threading.Thread(target=svc.apply, args=([{'source': 'huge.yaml', 'text': ACME}],))
    big.start()
    assert parsing.wait(10)
    # the huge push is still parsing: the small one goes through now, not after it
    svc.apply([{'source': 'globex.yaml', 'text': ACME.replace('tenant: acme', 'tenant: globex')
                .replace('vlan: 10', 'vlan: 30').replace('vlan: 20', 'vlan: 40')
                .replace('02:00:0a', '02:00:0b').replace('10.10.', '10.30.').replace('10.20.', '10.40.')}])
    assert svc.core.applied == [['globex']]
    release.set()
    big.join(30)
    assert svc.core.applied == [['globex'], ['acme', 'globex']]


def test_a_push_with_errors_also_reports_clashes_with_running_tenants(tmp_path):
    svc = PolicyService(Core(), PolicyStore(tmp_path))
    svc.apply([{'source': 'acme.yaml', 'text': ACME}])
    other = ACME.replace('tenant: acme', 'tenant: globex').replace('10.10.0.1}', '10.99.0.1}')
    with pytest.raises(PolicyError) as e:
        svc.apply([{'source': 'globex.yaml', 'text': other}])
    got = [str(d) for d in e.value.diags]
    assert any('gateway 10.99.0.1 is not inside' in g for g in got), got
    assert any("VLAN 20 is already used by tenant 'acme'" in g for g in got), got
    assert svc.core.applied == [['acme']]


def test_the_same_tenant_twice_in_one_push_is_an_error(tmp_path):
    svc = PolicyService(Core(), PolicyStore(tmp_path))
    with pytest.raises(PolicyError) as e:
        svc.apply([{'source': 'a.yaml', 'text': ACME}, {'source': 'b.yaml', 'text': ACME}])
    assert any("tenant 'acme' is already defined in a.yaml" in str(d) for d in e.value.diags)
    assert svc.core.applied == []


def test_delete_of_a_missing_tenant_is_no_such_tenant(tmp_path):
    with pytest.raises(NoSuchTenant):
        PolicyService(Core(), PolicyStore(tmp_path)).delete('acme')


# ---- the token file ------------------------------------------------------------------------

def test_a_token_is_generated_once_with_mode_0600(tmp_path):
    token = ensure_token(tmp_path)
    assert len(token) >= 32 and (tmp_path / 'api-token').stat().st_mode & 0o777 == 0o600
    assert ensure_token(tmp_path) == token
    assert [p.name for p in tmp_path.iterdir()] == ['api-token']        # no temporary file left


def test_an_empty_token_file_is_refused_not_taken_for_no_authentication(tmp_path):
    f = tmp_path / 'api-token'
    f.write_text('')
    f.chmod(0o600)
    with pytest.raises(TokenError, match='empty; delete it'):
        ensure_token(tmp_path)
    assert f.read_text() == ''                         # never silently replaced


@pytest.mark.parametrize('mode', [0o644, 0o604, 0o620, 0o666])
def test_a_token_file_others_can_read_or_change_is_refused(tmp_path, mode):
    f = tmp_path / 'api-token'
    f.write_text(TOKEN + '\n')
    os.chmod(f, mode)
    with pytest.raises(TokenError, match='chmod 600'):
        ensure_token(tmp_path)


def test_a_group_readable_token_is_fine_and_a_short_one_is_not(tmp_path):
    f = tmp_path / 'api-token'
    f.write_text(TOKEN + '\n')
    os.chmod(f, 0o640)
    assert ensure_token(tmp_path) == TOKEN
    f.write_text('short\n')
    with pytest.raises(TokenError, match='not a usable token'):
        ensure_token(tmp_path)


# ---- a corrupt tenants.json ----------------------------------------------------------------

@pytest.mark.parametrize('content, where, what', [
    (b'', '1:1', 'empty (truncated to 0 bytes)'),
    (b'{"acme": {"source": "a.yaml", "te', '1:', 'not valid JSON'),
    (b'\n\n  {"acme": 1,', '3:', 'not valid JSON'),
    (b'\xff\xfe{}', '1:1', 'not UTF-8'),
    (b'[]', '1:1', 'expected a JSON object'),
    (b'{"acme": {"source": "a.yaml"}}', '1:1', 'exactly "source" and "text"'),
    (b'{"acme": {"source": "a.yaml", "text": 5}}', '1:1', 'must be strings'),
])
def test_a_corrupt_tenants_json_is_reported_with_its_path_and_what_is_wrong(tmp_path, content, where, what):
    (tmp_path / 'tenants.json').write_bytes(content)
    with pytest.raises(PolicyError) as e:
        PolicyStore(tmp_path).load()
    msg = str(e.value)
    assert msg.startswith('%s:%s' % (tmp_path / 'tenants.json', where)), msg
    assert what in msg and 'corrupt state file' in msg and 'Recovering the state dir' in msg, msg
