"""The web view's server side (issue 14, part 2) through a real core, service and API server on
loopback: the token is taken once on /view?token= and kept in a cookie that only reads; the
page, its script and the vis-network build are served from the installed packages; and
GET /v1/view draws the fabric as the core sees it, changing as bindings change.  The page in a
real browser: tests/integration/test_webview.py."""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest

from controller.api import server, view
from controller.api.service import PolicyService
from controller.core import Controller
from controller.inventory.model import Binding
from controller.pipeline.flow import Flow, vid
from controller.policy.model import Policy
from controller.policy.store import PolicyStore
from controller.policy.tenant import parse_tenant
from tests.support import wait_until
from tests.unit.builders import LEAF1, ROOT, FakeSwitch, example_fabric

TOKEN = 'v' * 32
TENANTS = ROOT / 'examples' / 'tenants'


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url, cookie=None, bearer=None, method='GET', body=None):
    headers = {'Cookie': 'opendvs_token=' + cookie} if cookie else {}
    if bearer:
        headers['Authorization'] = 'Bearer ' + bearer
    if body is not None:
        headers['Content-Type'] = 'application/json'
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def ctl():
    fabric = example_fabric()
    tenants = [parse_tenant((TENANTS / n).read_text(), n) for n in ('acme.yaml', 'initech.yaml')]
    c = Controller(Policy(fabric).with_tenants(tenants))
    c.start()
    for s in fabric.switches.values():
        c.switch_up(FakeSwitch(s.dpid), [(1, 'p1', True)])
    for name in ('hv1', 'hv2', 'hv3'):
        c.switch_up(FakeSwitch(fabric.hypervisors[name].dpid), [(1, 'int-to-phy', True), (4, 'vxlan0', True)])
    c.place = lambda where: place(c, where)
    c.place({'acme/web1/nic0': 'hv1', 'initech/ov1/nic0': 'hv1', 'initech/ov2/nic0': 'hv3'})
    yield c
    c.stop()


def place(ctl, where: dict) -> None:
    """Bind these nics (iface-id -> hypervisor), and nothing else, as the hypervisors' OVSDB would."""
    for name, h in ctl.fabric.hypervisors.items():
        mine = [i for i, hv in sorted(where.items()) if hv == name]
        ctl.bindings_changed(h.dpid, {10 + n: Binding('tap%d' % n, i, ctl.policy.nics[i].nic.mac)
                                      for n, i in enumerate(mine)})


@pytest.fixture
def api(ctl, tmp_path):
    httpd = server.serve(PolicyService(ctl, PolicyStore(tmp_path)), TOKEN, '127.0.0.1', 0)
    yield 'http://127.0.0.1:%d' % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_the_token_is_taken_once_and_kept_in_a_read_only_cookie(api, caplog):
    caplog.set_level(logging.DEBUG, logger='opendvs.api')
    code, headers, body = get(api + '/view')
    assert code == 401 and b'/view?token=' in body and headers['Content-Type'].startswith('text/html')
    assert get(api + '/view?token=' + 'x' * 32)[0] == 401
    code, headers, _ = get(api + '/view?token=' + TOKEN)
    assert code == 303 and headers['Location'] == '/view'              # the token leaves the address bar
    cookie = headers['Set-Cookie']
    assert cookie.startswith('opendvs_token=%s;' % TOKEN) and 'HttpOnly' in cookie and 'SameSite=Strict' in cookie
    code, headers, body = get(api + '/view', cookie=TOKEN)
    assert code == 200 and b'<script src="/view/vis-network.min.js">' in body
    assert "default-src 'self'" in headers['Content-Security-Policy'] and headers['X-Frame-Options'] == 'DENY'
    assert get(api + '/view/view.js', cookie='y' * 32)[0] == 401
    # the cookie reads the API ...
    assert get(api + '/v1/view', cookie=TOKEN)[0] == 200
    assert get(api + '/v1/workloads', cookie=TOKEN)[0] == 200
    # ... and never changes anything: a push or a delete needs the Bearer token
    acme = {'tenants': [{'source': 'acme.yaml', 'text': (TENANTS / 'acme.yaml').read_text()}]}
    assert get(api + '/v1/apply', cookie=TOKEN, method='POST', body=acme)[0] == 401
    assert get(api + '/v1/tenants/acme', cookie=TOKEN, method='DELETE')[0] == 401
    assert get(api + '/v1/view', bearer=TOKEN)[0] == 200
    assert '/view?token=***' in caplog.text and TOKEN not in caplog.text      # never in the log


def test_dvsctl_view_prints_the_address_that_opens_the_page(api, tmp_path, capsys):
    from controller.cli import dvsctl
    (tmp_path / 'api-token').write_text(TOKEN + '\n')
    assert dvsctl.main(['view', '--api', api + '/', '--state-dir', str(tmp_path)]) == 0
    url = capsys.readouterr().out.strip()
    assert url == '%s/view?token=%s' % (api, TOKEN)
    code, headers, _ = get(url)
    assert code == 303 and headers['Set-Cookie'].startswith('opendvs_token=' + TOKEN)
    assert dvsctl.main(['view', '--state-dir', str(tmp_path / 'nowhere')]) == 1
    assert 'no API token' in capsys.readouterr().err


def test_the_page_script_and_the_drawing_library_are_served_from_the_packages(api):
    code, headers, body = get(api + '/view/vis-network.min.js')           # a public library: no token
    assert code == 200 and body.startswith(b'/**') and b'vis-network' in body[:100] and b'@version 9.1.2' in body[:400]
    assert headers['Content-Type'].startswith('text/javascript')
    assert get(api + '/view/vis-network.css')[0] == 200
    code, _, body = get(api + '/view/view.js', cookie=TOKEN)
    assert code == 200 and b"fetch('/v1/view'" in body
    assert get(api + '/view/../../etc/passwd', cookie=TOKEN)[0] == 404
    assert get(api + '/view/nothing.js', cookie=TOKEN)[0] == 404
    assert view.vis_dir() is not None


def test_the_picture_follows_the_bindings(ctl, api):
    pic = wait_until(lambda: (lambda p: p if all(h['flows'] for h in p['hypervisors'][:3]) else None)(
        json.loads(get(api + '/v1/view', bearer=TOKEN)[2])), 10, what='hv1-3 programmed')
    assert [s['name'] for s in pic['switches']] == ['spine1', 'spine2', 'leaf1', 'leaf2']
    assert {s['name']: s['role'] for s in pic['switches']}['leaf1'] == 'leaf'
    hvs = {h['name']: h for h in pic['hypervisors']}
    assert hvs['hv1']['connected'] and not hvs['hv4']['connected'] and hvs['hv1']['flows'] > 0
    assert (hvs['hv1']['leaf'], hvs['hv1']['uplinks'], hvs['hv1']['bond']) == ('leaf1', 2, 'lacp')
    assert {(l['a'], l['b']) for l in pic['links']} == {('leaf1', 'spine1'), ('leaf2', 'spine1'),
                                                        ('leaf1', 'spine2'), ('leaf2', 'spine2')}
    where = {w['id']: w['hypervisor'] for w in pic['workloads']}
    assert where == {'acme/web1': 'hv1', 'acme/web2': None, 'acme/db1': None, 'acme/db2': None,
                     'initech/ov1': 'hv1', 'initech/ov2': 'hv3'}
    assert [(t['a'], t['b'], [v['vni'] for v in t['vnis']]) for t in pic['tunnels']] == [('hv1', 'hv3', [5020])]
    nets = {(t['name'], n['name']): n for t in pic['tenants'] for n in t['networks']}
    assert nets[('initech', 'apps')]['vni'] == 5020 and nets[('initech', 'apps')]['bound'] == 2
    assert nets[('acme', 'users')]['vlan'] == 10 and nets[('acme', 'users')]['bound'] == 1
    assert [e['event'] for e in ctl.events.since(0)].count('connect') == 7
    assert [e['seq'] for e in pic['events']] == [e['seq'] for e in ctl.events.since(0)][-len(pic['events']):]
    # ov1 moves to hv2: the tunnel is now hv2 - hv3; web1 unplugged: not placed
    ctl.place({'initech/ov1/nic0': 'hv2', 'initech/ov2/nic0': 'hv3'})
    pic = json.loads(get(api + '/v1/view', bearer=TOKEN)[2])
    where = {w['id']: w['hypervisor'] for w in pic['workloads']}
    assert where['initech/ov1'] == 'hv2' and where['acme/web1'] is None
    assert [(t['a'], t['b']) for t in pic['tunnels']] == [('hv2', 'hv3')]


def test_macs_per_physical_switch_by_tenant(ctl):
    flows = {Flow.make('l2_lookup', 100, {'vlan_vid': vid(10), 'eth_dst': '02:00:0a:0a:00:0b'}),
             Flow.make('l2_lookup', 100, {'vlan_vid': vid(10), 'eth_dst': '02:00:0a:0a:00:0c'}),
             Flow.make('l2_lookup', 100, {'vlan_vid': vid(1), 'eth_dst': '02:00:00:00:00:01'}),
             Flow.make('l2_lookup', 90, {'vlan_vid': vid(10), 'eth_dst': 'ff:ff:ff:ff:ff:ff'}),   # not a MAC entry
             Flow.make('l2', 100, {'vlan_vid': vid(20), 'eth_dst': '02:00:0a:14:00:15'})}            # another table
    ctl.rec.installed = lambda dpid: flows if dpid == LEAF1 else set()
    ctl.rec.count = lambda dpid: len(flows) if dpid == LEAF1 else 0
    ctl.inv.macs[LEAF1] = {(20, '02:00:0a:14:00:15'): 3, (10, '02:00:0a:0a:00:0b'): 2}   # learned; one already a flow
    leaf1 = {s['name']: s for s in view.picture(ctl)['switches']}['leaf1']
    assert leaf1['macs'] == 4 and leaf1['macs_by_tenant'] == {'acme': 3, 'fabric': 1}
    assert leaf1['flows'] == len(flows)
    # counted again at most every MACS_EVERY seconds (it reads every flow of the switch)
    ctl.inv.macs[LEAF1] = {}
    assert {s['name']: s for s in view.picture(ctl)['switches']}['leaf1']['macs'] == 4
    view._macs.clear()
    assert {s['name']: s for s in view.picture(ctl)['switches']}['leaf1']['macs'] == 3
