"""Microsegmentation with real TCP through the userspace conntrack: a web/app/db tenant across
hypervisors and racks (bridged and routed, same and other hypervisor), default deny, rules by
label; a second tenant with the very same addresses and other rules; a policy change that
closes one established connection and keeps another flowing."""
from __future__ import annotations

import json
import re

import pytest

from mininet_topos import Lab
from tests.support import ROOT, ControllerProcess, free_port, wait_until

FABRIC = ROOT / 'examples' / 'fabric.yaml'
SHOP = '''tenant: shop
networks:
  web: {vlan: 10, subnet: 10.61.0.0/24, gateway: 10.61.0.1}
  db:  {vni: 5061, subnet: 10.62.0.0/24, gateway: 10.62.0.1}
  app: {vlan: 20, subnet: 10.63.0.0/24, gateway: 10.63.0.1}
workloads:
  app1: {hypervisor: hv4, labels: [app], nics: [{network: app, mac: "02:00:3f:00:00:01", ip: 10.63.0.31}]}
  web1: {hypervisor: hv1, labels: [web], nics: [{network: web, mac: "02:00:3d:00:00:01", ip: 10.61.0.11}]}
  web2: {hypervisor: hv3, labels: [web], nics: [{network: web, mac: "02:00:3d:00:00:02", ip: 10.61.0.12}]}
  db1:  {hypervisor: hv2, labels: [db],  nics: [{network: db,  mac: "02:00:3e:00:00:01", ip: 10.62.0.21}]}
  db2:  {hypervisor: hv3, labels: [db],  nics: [{network: db,  mac: "02:00:3e:00:00:02", ip: 10.62.0.22}]}
security:
  default: deny
  rules:
    - {name: web-to-db, from: {label: web}, to: {label: db}, allow: [{proto: tcp, port: 5432}]}
    - {name: web-to-db-alt, from: {label: web}, to: {label: db}, allow: [{proto: tcp, ports: "5433-5434"}]}
    - {name: web-peers, from: {label: web}, to: {label: web}, allow: [{proto: any}]}
    - {name: web-to-app, from: {label: web}, to: {label: app}, allow: [{proto: tcp, port: 8080}, {proto: icmp, type: 8}]}
    - {name: app-to-db, from: {label: app}, to: {network: db}, allow: [{proto: tcp, port: 5432}]}
'''
# the same addresses, the other way round: db may open web's port 80, nothing else
MIRROR = '''tenant: mirror
networks:
  web: {vlan: 30, subnet: 10.61.0.0/24, gateway: 10.61.0.1}
  db:  {vni: 6061, subnet: 10.62.0.0/24, gateway: 10.62.0.1}
workloads:
  mweb: {hypervisor: hv4, labels: [web], nics: [{network: web, mac: "02:00:4d:00:00:01", ip: 10.61.0.11}]}
  mdb:  {hypervisor: hv2, labels: [db],  nics: [{network: db,  mac: "02:00:4e:00:00:01", ip: 10.62.0.21}]}
security:
  default: deny
  rules:
    - {name: db-to-web, from: {label: db}, to: {label: web}, allow: [{proto: tcp, port: 80}]}
'''


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp('microseg')
    paths = []
    for name, text in (('shop', SHOP), ('mirror', MIRROR)):
        (work / (name + '.yaml')).write_text(text)
        paths.append(str(work / (name + '.yaml')))
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(FABRIC), ofp_port=port, tenants=paths)
    try:
        r = ctl.dvsctl('apply', *paths)
        assert r.returncode == 0, r.stderr
        lab.up(timeout=60)
        wait_until(lambda: lab.ping('web1', 'web2'), 30, what='web1 reaches web2 (web-peers)')
        wait_until(lambda: connects(lab, 'web1', 'db1', 5432), 30, what='web1 opens db1:5432')
        yield lab, ctl, work, paths
    finally:
        lab.down()
        ctl.stop()


def connects(lab, src, dst, port, tries=3) -> bool:
    """A real TCP handshake from src to dst:port (a listener runs on dst for the attempt); an
    allowed one gets `tries` 1 s attempts (the first packet of a cold path can be lost), a
    denied one is asked once (tries=1) on a path the test has already used."""
    server = lab.popen(dst, ['nc', '-l', '-k', str(port)])
    try:
        ip = lab.vms[dst].ip
        wait_until(lambda: str(port) in lab.exec(dst, 'ss -ltn')[1], 5, what='%s listens on %d' % (dst, port))
        for _ in range(tries):
            if lab.exec(src, 'nc -z -w 1 %s %d' % (ip, port))[0] == 0:
                return True
        return False
    finally:
        server.kill()
        server.wait()


def acl_counters(lab, hv, kind: int) -> int:
    """Packets counted by this app's flows of one cookie kind on a hypervisor (0x06 = microseg)."""
    out = lab.ofctl(hv, 'dump-flows', 'cookie=0x%02x%02x000000000000/0xffff000000000000' % (0x06, kind))
    return sum(int(n) for n in re.findall(r'n_packets=(\d+)', out))


def test_rules_admit_their_direction_and_the_default_denies_the_rest(env):
    lab, _, _, _ = env
    assert connects(lab, 'web2', 'db2', 5432)                  # same hypervisor, routed into the overlay
    assert connects(lab, 'web1', 'db1', 5433)                  # a port range, other rack
    assert lab.ping('web2', 'web1')                            # web-peers: any protocol
    assert not connects(lab, 'db1', 'web1', 5432, tries=1)              # the other direction has no rule
    assert not connects(lab, 'web1', 'db1', 22, tries=1)                # a port no rule allows
    assert not lab.ping('db1', 'db2', timeout=0.5)             # bridged in one network, still denied
    assert not lab.ping('web1', 'db1', timeout=0.5)            # icmp is not allowed to db


def test_a_three_tier_chain_each_tier_opens_only_the_next(env):
    lab, _, _, _ = env
    assert connects(lab, 'web1', 'app1', 8080)                 # web -> app (VLAN -> VLAN, other rack)
    assert connects(lab, 'app1', 'db1', 5432)                  # app -> db, selected by network
    assert lab.ping('web2', 'app1')                            # icmp type 8 allowed, its reply passes
    assert not connects(lab, 'app1', 'web1', 8080, tries=1)    # never backwards
    assert not connects(lab, 'db2', 'app1', 8080, tries=1)
    assert not lab.ping('app1', 'web1', timeout=0.5)


def test_the_other_tenant_with_the_same_addresses_has_its_own_rules(env):
    lab, _, _, _ = env
    assert connects(lab, 'mdb', 'mweb', 80)                    # mirror: db may open web:80
    assert not connects(lab, 'mweb', 'mdb', 5432, tries=1)              # ... and nothing shop allows
    assert connects(lab, 'web1', 'db1', 5432)                  # shop unchanged


def show_rules(ctl, *args):
    r = ctl.dvsctl('show', 'rules', 'shop', *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if args else r.stdout


def test_rule_hits_and_default_drops_are_counted_on_the_destination_hypervisor(env):
    lab, ctl, _, paths = env
    rules, drops = acl_counters(lab, 'hv2', 3), acl_counters(lab, 'hv2', 4)
    before = show_rules(ctl, '--json')
    assert connects(lab, 'web1', 'db1', 5432)
    assert not connects(lab, 'web1', 'db1', 23, tries=1)
    wait_until(lambda: acl_counters(lab, 'hv2', 3) > rules, 10, what='the rule counted its hit on hv2')
    wait_until(lambda: acl_counters(lab, 'hv2', 4) > drops, 10, what='the default counted its drop on hv2')
    # dvsctl show rules: the same counters, read by the controller from every hypervisor
    after = show_rules(ctl, '--json')
    assert after['answered'] == ['hv1', 'hv2', 'hv3', 'hv4'] and after['no_answer'] == {}
    hits = {r['name']: r['packets'] for r in after['rules']}
    assert hits['web-to-db'] > before['rules'][0]['packets'] > 0       # earlier tests connected too
    assert hits['web-to-db-alt'] == before['rules'][1]['packets']       # nothing went to 5433-5434 since
    assert after['default_drops']['packets'] > before['default_drops']['packets']
    text = show_rules(ctl)
    line = SHOP.splitlines().index(next(x for x in SHOP.splitlines() if 'name: web-to-db,' in x)) + 1
    assert re.search(r'^web-to-db +label web -> label db +tcp/5432 +[1-9][0-9]* +[1-9][0-9]* +%s:%d$'
                     % (re.escape(paths[0]), line), text, re.M), text
    assert re.search(r'^default deny: [1-9][0-9]* packets dropped', text, re.M), text


def stream(lab, src, dst, port, out):
    """A long-lived TCP connection src -> dst:port sending a line every 50 ms into dst's file."""
    server = lab.popen(dst, ['sh', '-c', 'nc -l %d > %s' % (port, out)])
    wait_until(lambda: str(port) in lab.exec(dst, 'ss -ltn')[1], 5, what='%s listens on %d' % (dst, port))
    client = lab.popen(src, ['sh', '-c', 'while true; do echo x; sleep 0.05; done | nc %s %d' % (lab.vms[dst].ip, port)])
    return server, client


def size(lab, vm, path) -> int:
    rc, out = lab.exec(vm, 'stat -c %%s %s' % path)
    return int(out.strip()) if rc == 0 and out.strip().isdigit() else 0


def test_a_policy_change_closes_a_forbidden_connection_and_keeps_an_allowed_one(env):
    lab, ctl, work, paths = env
    kept_file, cut_file = '/tmp/%s-kept' % lab.prefix, '/tmp/%s-cut' % lab.prefix
    procs = stream(lab, 'web1', 'db1', 5432, kept_file) + stream(lab, 'web2', 'db2', 5434, cut_file)
    try:
        wait_until(lambda: size(lab, 'db1', kept_file) > 20 and size(lab, 'db2', cut_file) > 20, 15,
                   what='both connections carry data')
        (work / 'shop.yaml').write_text(SHOP.replace(
            '    - {name: web-to-db-alt, from: {label: web}, to: {label: db}, allow: [{proto: tcp, ports: "5433-5434"}]}\n',
            ''))
        r = ctl.dvsctl('apply', str(work / 'shop.yaml'))
        assert r.returncode == 0, r.stderr
        # the apply returned once every switch converged: the forbidden one stops at once (a
        # line already in flight may still land), the allowed one keeps flowing
        cut0, kept0 = size(lab, 'db2', cut_file), size(lab, 'db1', kept_file)
        wait_until(lambda: size(lab, 'db1', kept_file) > kept0 + 40, 10, what='the allowed connection keeps flowing')
        assert size(lab, 'db2', cut_file) <= cut0 + 4, 'the forbidden connection still carries data'
        assert not connects(lab, 'web2', 'db2', 5434, tries=1)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        (work / 'shop.yaml').write_text(SHOP)
        ctl.dvsctl('apply', str(work / 'shop.yaml'))
