"""`dvsctl show rules TENANT` (issue 9, part 5): each rule of a tenant with its hits and the
tenant's drops, summed from the hypervisors' own flow counters, with the YAML file:line of each
rule -- through a real controller core (its flows and cookie registry), the real PolicyService,
the real API on loopback and the real dvsctl.  The fake hypervisors hold a counter for every
flow the core compiled for them (every app's), and answer flow-stats requests by cookie/mask
as OVS does; `mirror` has a rule of the same name, on the same hypervisor, that must never
count as shop's."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from apps import microseg
from controller.api import rule_hits, server
from controller.api.service import NoSuchTenant, PolicyService
from controller.cli import dvsctl
from controller.core import Controller
from controller.inventory.model import Binding
from controller.pipeline import cookies
from controller.policy.model import Policy
from controller.policy.store import PolicyStore
from controller.policy.tenant import parse_tenant
from tests.unit.builders import ROOT, FakeSwitch, example_fabric

TOKEN = 'q' * 32
SHOP = '''tenant: shop
networks:
  web: {vlan: 10, subnet: 10.61.0.0/24, gateway: 10.61.0.1}
  db:  {vni: 5061, subnet: 10.62.0.0/24, gateway: 10.62.0.1}
workloads:
  web1: {labels: [web], nics: [{network: web, mac: "02:00:3d:00:00:01", ip: 10.61.0.11}]}
  web2: {labels: [web], nics: [{network: web, mac: "02:00:3d:00:00:02", ip: 10.61.0.12}]}
  db1:  {labels: [db],  nics: [{network: db,  mac: "02:00:3e:00:00:01", ip: 10.62.0.21}]}
  db2:  {labels: [db],  nics: [{network: db,  mac: "02:00:3e:00:00:02", ip: 10.62.0.22}]}
security:
  default: deny
  rules:
    - {name: web-to-db, from: {label: web}, to: {label: db}, allow: [{proto: tcp, port: 5432}]}
    - {name: web-to-db-alt, from: {label: web}, to: {label: db}, allow: [{proto: tcp, ports: "5433-5434"}]}
    - {name: web-peers, from: {label: web}, to: {label: web}, allow: [{proto: any}]}
    - {name: ops, from: {cidr: 192.0.2.0/24}, to: {workload: web2}, allow: [{proto: icmp}]}
'''
MIRROR = '''tenant: mirror
networks:
  db: {vni: 6061, subnet: 10.62.0.0/24, gateway: 10.62.0.1}
workloads:
  mweb: {labels: [web], nics: [{network: db, mac: "02:00:4d:00:00:01", ip: 10.62.0.11}]}
  mdb:  {labels: [db],  nics: [{network: db, mac: "02:00:4e:00:00:01", ip: 10.62.0.21}]}
security:
  default: deny
  rules:
    - {name: web-to-db, from: {label: web}, to: {label: db}, allow: [{proto: tcp, port: 5432}]}
'''
ACME = (ROOT / 'examples' / 'tenants' / 'acme.yaml').read_text()       # default: allow
# (hypervisor, port, iface-id, mac): hv4 never connects
PLACES = [('hv1', 2, 'shop/web1/nic0', '02:00:3d:00:00:01'), ('hv2', 2, 'shop/db1/nic0', '02:00:3e:00:00:01'),
          ('hv3', 2, 'shop/web2/nic0', '02:00:3d:00:00:02'), ('hv3', 3, 'shop/db2/nic0', '02:00:3e:00:00:02'),
          ('hv2', 3, 'mirror/mdb/nic0', '02:00:4e:00:00:01')]


def counts(c) -> tuple[int, int]:
    """What each installed flow has counted: the rules' conj_id flows, the default and invalid
    drops theirs; every other flow (any app's, the rules' clause flows) 1000 packets
    that must never show up."""
    if isinstance(c, cookies.Cookie) and c.app == microseg.APP:
        if c.owner == 'rule:web-to-db':
            return (2, 148) if c.tenant == 'shop' else (50, 5000)
        if c.owner == 'rule:web-peers':
            return 1, 98
        if (c.owner or '').startswith('rule:'):
            return 0, 0
        drops = {microseg.K_DEFAULT: (5, 370), microseg.K_INVALID: (1, 60), microseg.K_FLOOD: (4, 256)}
        if c.kind in drops:
            return drops[c.kind]
    return 1000, 100000


class Hypervisor(FakeSwitch):
    """A fake hypervisor that records its counter requests and may hang or fail on them."""

    def __init__(self, dpid, hang=None, fail=None):
        super().__init__(dpid)
        self.asked, self.hang, self.fail = [], hang, fail

    def flow_counters(self, cookie, mask, timeout=10.0):
        self.asked.append((cookie, mask))
        if self.hang is not None:
            self.hang.wait(30)
        if self.fail:
            raise RuntimeError(self.fail)
        return super().flow_counters(cookie, mask, timeout)


@pytest.fixture
def ctl():
    fabric = example_fabric()
    tenants = [parse_tenant(SHOP, 'shop.yaml'), parse_tenant(MIRROR, 'mirror.yaml'), parse_tenant(ACME, 'acme.yaml')]
    c = Controller(Policy(fabric).with_tenants(tenants))
    c.hang = threading.Event()
    for name in ('hv1', 'hv2', 'hv3'):
        hv = fabric.hypervisors[name]
        conn = Hypervisor(hv.dpid)
        c.switch_up(conn, [(1, 'int-to-phy', True), (2, 'tap-a', True), (3, 'tap-b', True), (4, 'vxlan0', True)])
        c.bindings_changed(hv.dpid, {no: Binding('tap%d' % no, iface, mac)
                                     for h, no, iface, mac in PLACES if h == name})
    for dpid, conn in c.conns.items():
        conn.counters = [(c.cookies.encode(f.cookie), *counts(f.cookie)) for f in c.desired(dpid)]
    yield c
    c.hang.set()
    c.stop()


@pytest.fixture
def api(ctl, tmp_path):
    httpd = server.serve(PolicyService(ctl, PolicyStore(tmp_path)), TOKEN, '127.0.0.1', 0)
    yield 'http://127.0.0.1:%d' % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def hv(ctl, name) -> Hypervisor:
    return ctl.conns[ctl.fabric.hypervisors[name].dpid]


def test_each_rule_in_file_order_with_its_hits_summed_over_the_hypervisors(ctl):
    view = rule_hits.view(ctl, 'shop')
    assert [r['name'] for r in view['rules']] == ['web-to-db', 'web-to-db-alt', 'web-peers', 'ops']
    first = view['rules'][0]
    # web-to-db has a conj_id flow where a db is (hv2, hv3): 2 connections counted on each;
    # mirror's web-to-db on hv2 (50) is another tenant's
    assert first == {'name': 'web-to-db', 'from': {'label': 'web'}, 'to': {'label': 'db'},
                     'allow': [{'proto': 'tcp', 'port': 5432}], 'where': 'shop.yaml:13', 'packets': 4, 'bytes': 296}
    alt, peers, ops = view['rules'][1:]
    assert (alt['allow'], alt['where'], alt['packets'], alt['bytes']) == (
        [{'proto': 'tcp', 'ports': '5433-5434'}], 'shop.yaml:14', 0, 0)
    assert (peers['allow'], peers['packets'], peers['bytes']) == ([{'proto': 'any'}], 2, 196)   # hv1 and hv3
    assert (ops['from'], ops['to'], ops['packets']) == ({'cidr': '192.0.2.0/24'}, {'workload': 'web2'}, 0)
    # the default flow drops on each hypervisor with a shop VM; nothing of any other flow
    assert view['default_drops'] == {'packets': 15, 'bytes': 1110}
    assert view['invalid_drops'] == {'packets': 3, 'bytes': 180}
    assert view['unknown_unicast_drops'] == {'packets': 12, 'bytes': 768}
    assert (view['answered'], view['no_answer'], view['not_connected']) == (['hv1', 'hv2', 'hv3'], {}, ['hv4'])
    assert view['enforced'] and view['default'] == 'deny' and 'connections' in view['note']
    # each hypervisor was asked once, for shop's microseg flows only
    app, tenant = microseg.APP, ctl.cookies.tenant_match('shop')[0]
    assert hv(ctl, 'hv2').asked == [(cookies.APPS[app] << 56 | tenant, 0xff << 56 | 0xffffff << 24)]


def test_the_other_tenant_has_its_own_counts(ctl):
    view = rule_hits.view(ctl, 'mirror')
    assert [(r['name'], r['packets'], r['where']) for r in view['rules']] == [('web-to-db', 50, 'mirror.yaml:10')]
    assert view['default_drops'] == {'packets': 5, 'bytes': 370}            # hv2 only


def test_a_hypervisor_that_does_not_answer_is_listed_and_the_others_still_count(ctl):
    hv(ctl, 'hv3').hang = ctl.hang
    hv(ctl, 'hv1').fail = '000000000000aa01: the session closed before the reply to flow stats'
    t0 = time.monotonic()
    view = rule_hits.view(ctl, 'shop', timeout=0.3)
    assert time.monotonic() - t0 < 3
    assert view['answered'] == ['hv2']
    assert view['no_answer'] == {'hv1': '000000000000aa01: the session closed before the reply to flow stats',
                                 'hv3': 'no reply within 0.3s'}
    assert view['rules'][0]['packets'] == 2 and view['default_drops']['packets'] == 5


def test_a_tenant_open_inside_says_so_and_asks_no_switch(ctl):
    view = rule_hits.view(ctl, 'acme')
    assert (view['enforced'], view['note']) == (False, 'open inside: no rules enforced')
    assert [(r['name'], r['where'], r['packets']) for r in view['rules']] == [
        ('web-to-db', 'acme.yaml:29', None), ('ping-web', 'acme.yaml:30', None)]
    assert view['default_drops'] is None and view['answered'] == []
    assert all(c.asked == [] for c in ctl.conns.values())


def test_an_unknown_tenant_names_the_known_ones(ctl):
    with pytest.raises(NoSuchTenant) as e:
        rule_hits.view(ctl, 'initech')
    assert e.value.args == ('initech', ['acme', 'mirror', 'shop'])


def test_the_cli_prints_a_table_then_the_drops(api, ctl, capsys):
    hv(ctl, 'hv1').fail = 'no reply to flow stats within 2.0s'
    assert dvsctl.main(['show', 'rules', 'shop', '--api', api, '--token', TOKEN]) == 0
    assert capsys.readouterr().out.splitlines() == [
        'tenant shop (shop.yaml): default deny',
        'a rule counts connections (the packet that opens one, or re-checks it after a policy change), '
        'not every packet',
        'rule           from -> to                          allow          hits (connections)  bytes  file:line',
        'web-to-db      label web -> label db               tcp/5432       4                   296    shop.yaml:13',
        'web-to-db-alt  label web -> label db               tcp/5433-5434  0                   0      shop.yaml:14',
        'web-peers      label web -> label web              any            1                   98     shop.yaml:15',
        'ops            cidr 192.0.2.0/24 -> workload web2  icmp           0                   0      shop.yaml:16',
        'default deny: 10 packets dropped (740 bytes)',
        'invalid: 2 packets dropped (120 bytes)',
        'unknown unicast: 8 packets dropped (512 bytes)',
        'counted on: hv2, hv3',
        'no answer from hv1: no reply to flow stats within 2.0s',
        'not connected: hv4']
    assert dvsctl.main(['show', 'rules', 'acme', '--api', api, '--token', TOKEN]) == 0
    assert capsys.readouterr().out.splitlines() == [
        'tenant acme (acme.yaml): default allow',
        'open inside: no rules enforced',
        'rule       from -> to                   allow     hits (connections)  bytes  file:line',
        'web-to-db  label web -> label db        tcp/5432  -                   -      acme.yaml:29',
        'ping-web   cidr 0.0.0.0/0 -> label web  icmp      -                   -      acme.yaml:30']
    assert dvsctl.main(['show', 'rules', 'shop', '--json', '--api', api, '--token', TOKEN]) == 0
    assert json.loads(capsys.readouterr().out)['rules'][0]['where'] == 'shop.yaml:13'


def test_an_unknown_tenant_is_a_404_and_rules_needs_one(api, capsys):
    assert dvsctl.main(['show', 'rules', 'initech', '--api', api, '--token', TOKEN]) == 1
    assert capsys.readouterr().err == 'dvsctl: no such tenant: initech (known: acme, mirror, shop)\n'
    with pytest.raises(SystemExit) as e:
        dvsctl.main(['show', 'rules', '--token', TOKEN])
    assert e.value.code == 2 and 'name a tenant: dvsctl show rules TENANT' in capsys.readouterr().err


def test_the_api_path(api):
    def get(path, method='GET'):
        req = urllib.request.Request(api + path, method=method, headers={'Authorization': 'Bearer ' + TOKEN})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
    code, body = get('/v1/rules/mirror')
    assert code == 200 and body['rules'][0]['packets'] == 50
    code, body = get('/v1/rules/initech')
    assert code == 404 and body == {'error': 'no such tenant: initech (known: acme, mirror, shop)'}
    assert get('/v1/rules')[0] == 404 and get('/v1/rules/shop/x')[0] == 404
    code, body = get('/v1/rules/shop', 'DELETE')
    assert code == 405 and 'GET' in body['error']
