"""The event log's entries from outside the bindings code (issue 14, part 3): switch connects,
disconnects and reconnects, applies (who, what changed: tenants, rules, flows per switch) and
refused inputs (a broken push, a broken fabric reload, an OpenFlow connection turned away);
read back through the real API (GET /v1/events) and the real `dvsctl events [--follow]`."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
import urllib.error
import urllib.request

import pytest

from controller import admission, lifecycle
from controller.api import server
from controller.api.service import PolicyService
from controller.cli import dvsctl
from controller.core import Controller
from controller.eventlog import EventLog
from controller.inventory.model import Binding
from controller.policy.fabric import load_fabric
from controller.policy.model import Policy
from controller.policy.store import PolicyStore
from tests.unit.builders import EXAMPLE_FABRIC, ROOT, FakeSwitch

TOKEN = 'e' * 32
ACME = ROOT / 'examples' / 'tenants' / 'acme.yaml'
SHOP = '''tenant: shop
networks:
  web: {vlan: 30, subnet: 10.61.0.0/24, gateway: 10.61.0.1}
workloads:
  web1: {labels: [web], nics: [{network: web, mac: "02:00:3d:00:00:01", ip: 10.61.0.11}]}
  db1:  {labels: [db],  nics: [{network: web, mac: "02:00:3d:00:00:02", ip: 10.61.0.21}]}
security:
  default: deny
  rules:
    - {name: web-to-db, from: {label: web}, to: {label: db}, allow: [{proto: tcp, port: 5432}]}
    - {name: ops, from: {cidr: 192.0.2.0/24}, to: {label: web}, allow: [{proto: tcp, port: 22}]}
'''


class Conn(FakeSwitch):
    def __init__(self, dpid, address='127.0.0.1'):
        super().__init__(dpid)
        self.address, self.closed = address, False

    def barrier(self):
        pass


@pytest.fixture
def fabric_file(tmp_path):
    f = tmp_path / 'fabric.yaml'
    f.write_text(EXAMPLE_FABRIC.read_text())
    return f


@pytest.fixture
def ctl(fabric_file, tmp_path):
    c = Controller(Policy(load_fabric(fabric_file)), state_dir=str(tmp_path))
    c.state_dir = tmp_path
    c.start()
    for h in c.fabric.hypervisors.values():         # every hypervisor reported: the picture is whole
        c.bindings_changed(h.dpid, {})
    yield c
    c.stop()
    c.events.close()


@pytest.fixture
def api(ctl, tmp_path):
    svc = PolicyService(ctl, PolicyStore(tmp_path / 'state'))
    httpd = server.serve(svc, TOKEN, '127.0.0.1', 0)
    httpd.url, httpd.svc = 'http://127.0.0.1:%d' % httpd.server_address[1], svc
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def hv1_up(ctl, conn=None):
    conn = conn or Conn(ctl.fabric.hypervisors['hv1'].dpid, '192.0.2.11')
    ctl.switch_up(conn, [(1, 'int-to-phy', True), (2, 'tap-a', True)])
    return conn


def events(ctl, name=None):
    return [e for e in ctl.events.since(0) if name in (None, e['event'])]


def dvs(api, *argv, capsys):
    rc = dvsctl.main([*argv, '--api', api.url, '--token', TOKEN])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_connect_disconnect_and_reconnect_of_a_switch(ctl):
    first = hv1_up(ctl)
    ctl.switch_down(first)
    second = hv1_up(ctl)
    hv1_up(ctl)                                      # a new session while the old never closed
    got = [(e['event'], e['switch'], e['kind']) for e in events(ctl) if 'switch' in e]
    assert got == [('connect', 'hv1', 'hypervisor'), ('disconnect', 'hv1', 'hypervisor'),
                   ('reconnect', 'hv1', 'hypervisor'), ('reconnect', 'hv1', 'hypervisor')]
    connect, _, back, replaced = [e for e in events(ctl) if 'switch' in e]
    assert connect['address'] == '192.0.2.11' and connect['ports'] == 2 and 'down_s' not in connect
    assert back['down_s'] >= 0 and replaced['down_s'] is None
    assert connect['dpid'] == '%016x' % ctl.fabric.hypervisors['hv1'].dpid
    ctl.switch_down(first)                           # the old session's close comes late: not an event
    assert len(events(ctl, 'disconnect')) == 1 and second is not None
    # and they are on disk, one JSON object a line
    lines = [json.loads(line) for line in (ctl.state_dir / 'events.jsonl').read_text().splitlines()]
    assert [e['event'] for e in lines] == ['connect', 'disconnect', 'reconnect', 'reconnect']


def test_an_apply_records_who_and_what_changed(ctl, api, capsys, tmp_path):
    hv1_up(ctl)
    ctl.bindings_changed(ctl.fabric.hypervisors['hv1'].dpid, {2: Binding('tap-a', 'shop/web1/nic0', '02:00:3d:00:00:01')})
    shop = tmp_path / 'shop.yaml'
    shop.write_text(SHOP)
    rc, out, err = dvs(api, 'apply', str(ACME), str(shop), capsys=capsys)
    assert rc == 0, err
    first = events(ctl, 'apply')[-1]
    assert first['by'] == '127.0.0.1'
    assert first['tenants_added'] == ['acme', 'shop'] and first['tenants_removed'] == []
    assert set(first['switches']) == {'hv1'} and first['switches']['hv1']['add'] > 0, first
    # a rule changed, one removed, the default flipped; acme untouched
    shop.write_text(SHOP.replace('port: 5432', 'port: 5433').replace('  default: deny', '  default: allow')
                    .replace("    - {name: ops, from: {cidr: 192.0.2.0/24}, to: {label: web}, allow: [{proto: tcp, port: 22}]}\n", ''))
    assert dvs(api, 'apply', str(shop), capsys=capsys)[0] == 0
    second = events(ctl, 'apply')[-1]
    assert second['tenants_changed'] == ['shop'] and second['tenants_added'] == []
    assert second['rules'] == {'shop': {'changed': ['web-to-db'], 'removed': ['ops'], 'default': 'deny -> allow'}}
    # a dry run changes nothing and is not logged; a delete is
    n = len(events(ctl, 'apply'))
    assert dvs(api, 'apply', '--dry-run', str(ACME), capsys=capsys)[0] == 0
    assert len(events(ctl, 'apply')) == n
    assert dvs(api, 'delete', 'shop', capsys=capsys)[0] == 0
    last = events(ctl, 'apply')[-1]
    assert last['tenants_removed'] == ['shop'] and last['switches']['hv1']['delete'] > 0


def test_a_refused_push_is_an_event_and_changes_nothing(ctl, api):
    broken = {'tenants': [{'source': 'shop.yaml', 'text': SHOP.replace('10.61.0.1}', '10.99.0.1}')}]}
    code, reply = request(api, 'POST', '/v1/apply', broken)
    assert code == 400
    refused = events(ctl, 'refused')
    assert len(refused) == 1 and refused[0]['input'] == 'apply' and refused[0]['by'] == '127.0.0.1'
    assert any('10.99.0.1' in d for d in refused[0]['diags'])
    assert events(ctl, 'apply') == [] and ctl.policy.tenants == {}
    code, _ = request(api, 'POST', '/v1/apply', dict(broken, dry_run=True))
    assert code == 400 and len(events(ctl, 'refused')) == 1            # a dry run is not an input


def test_a_fabric_reload_is_an_apply_by_sighup_and_a_broken_one_is_refused(ctl, api, fabric_file):
    fabric_file.write_text(fabric_file.read_text().replace('mac_age: 300', 'mac_age: 600')
                           .replace('  hv4: {', '  hv5: {leaf: leaf2, vtep: 172.16.2.13, trunk_vlans: [10]}\n  hv4: {'))
    assert lifecycle.reload_now(api.svc) == {}
    e = events(ctl, 'apply')[-1]
    assert e['by'] == 'sighup' and e['fabric'] == {'hypervisors_added': ['hv5'], 'settings': ['learning']}
    fabric_file.write_text('switches: [')
    assert lifecycle.reload_now(api.svc) is None
    e = events(ctl, 'refused')[-1]
    assert (e['input'], e['by']) == ('fabric reload', 'sighup') and 'does not validate' in e['reason']


def test_a_refused_openflow_connection_is_an_event_once_per_interval(ctl):
    for _ in range(20):
        admission.admit(ctl, Conn(0x998), [(1, 'p1', True)], close=lambda c: None, accept=ctl.switch_up,
                        sources=admission.Sources())
    refused = events(ctl, 'refused')
    assert len(refused) == 1 and refused[0]['input'] == 'openflow' and refused[0]['dpid'] == '0000000000000998'
    assert 'not in the fabric' in refused[0]['reason'] and events(ctl, 'connect') == []


def request(api, method, path, body=None, token=TOKEN):
    req = urllib.request.Request(api.url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_get_events_since_a_seq_with_the_token_only(ctl, api):
    hv1_up(ctl)
    code, view = request(api, 'GET', '/v1/events')
    assert code == 200 and [e['event'] for e in view['events']] == ['connect']
    last = view['last']
    ctl.events.record('move', iface_id='x', **{'from': 'hv1', 'to': 'hv2'})
    code, view = request(api, 'GET', '/v1/events?since=%d' % last)
    assert [e['event'] for e in view['events']] == ['move'] and view['last'] == last + 1
    assert view['started'] == ctl.events.started and view['oldest'] == 1
    assert request(api, 'GET', '/v1/events', token='x' * 32)[0] == 401
    for bad in ('-1', 'abc', '1e3', '9' * 40):
        code, reply = request(api, 'GET', '/v1/events?since=' + bad)
        assert code == 400 and 'since' in reply['error'], bad
    assert request(api, 'POST', '/v1/events', {'x': 1})[0] == 405


def test_dvsctl_events_prints_lines_or_json(ctl, api, capsys):
    hv1_up(ctl)
    ctl.events.record('move', iface_id='acme/web1/nic0', **{'from': 'hv1', 'to': 'hv2'})
    rc, out, _ = dvs(api, 'events', capsys=capsys)
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == 2 and ' connect ' in lines[0] and 'switch=hv1 kind=hypervisor' in lines[0]
    assert 'iface_id=acme/web1/nic0 from=hv1 to=hv2' in lines[1] and '#2' in lines[1]
    rc, out, _ = dvs(api, 'events', '--json', '--since', '1', capsys=capsys)
    assert rc == 0 and [json.loads(l)['event'] for l in out.splitlines()] == ['move']
    rc, _, err = dvsctl.main(['events', '--api', api.url, '--token', 'x' * 32]), None, capsys.readouterr().err
    assert rc == 1 and 'token' in err


def test_dvsctl_events_follow_prints_new_events_and_notices_a_restart(ctl, api):
    ctl.events.record('bind', hypervisor='hv1', iface_id='a', port=3)
    proc = subprocess.Popen([str(Path(sys.executable).parent / 'dvsctl'), 'events', '--follow', '--json',
                             '--interval', '0.05', '--api', api.url, '--token', TOKEN],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(json.loads(l)) for l in proc.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=30)['iface_id'] == 'a'
        ctl.events.record('bind', hypervisor='hv1', iface_id='b', port=4)
        assert lines.get(timeout=10)['iface_id'] == 'b'
        ctl.events = EventLog(None)                  # what a controller restart looks like to it
        ctl.events.started = 'later'
        ctl.events.record('connect', switch='leaf1')
        e = lines.get(timeout=10)
        assert (e['seq'], e['event']) == (1, 'connect')
    finally:
        proc.terminate()
        proc.wait(10)
    assert 'restarted' in proc.stderr.read()
