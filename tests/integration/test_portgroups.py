"""VLAN port-groups as one distributed switch, driven by tenant policy pushed with dvsctl:
two tenants x two port-groups (acme: users VLAN 10 + servers VLAN 20; globex: apps VLAN 30 +
data VLAN 40, reusing acme's addresses) over 4 hypervisors on 2 leaves."""
from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from mininet_topos import Lab
from tests.support import ROOT, ControllerProcess, counted, dump_flows, free_port, ping_counts, wait_until

FABRIC = ROOT / 'examples' / 'fabric.yaml'
TENANTS = [str(ROOT / 'examples' / 'tenants' / 'acme.yaml'), str(ROOT / 'examples' / 'tenants' / 'globex.yaml')]
PHYSICAL = ('spine1', 'spine2', 'leaf1', 'leaf2')
SAME_NETWORK = [('web1', 'web2'), ('web2', 'web1'), ('db1', 'db2'), ('db2', 'db1'), ('app1', 'app2'),
                ('app2', 'app1'), ('data1', 'data2'), ('data2', 'data1')]
OTHER_NETWORK = [('web1', 'db1'), ('web2', 'db2'), ('db1', 'web1'), ('db2', 'web2'), ('app1', 'data1'),
                 ('data2', 'app2')]


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp('portgroups')
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(FABRIC), ofp_port=port, tenants=TENANTS)
    try:
        # policy first, as an operator would: no VM ever runs outside its port-group
        r = ctl.dvsctl('apply', *TENANTS)
        assert r.returncode == 0, r.stderr
        lab.up(timeout=60)
        for a, b in SAME_NETWORK:
            wait_until(lambda: lab.ping(a, b), 30, what='%s reaches %s' % (a, b))
        yield lab, ctl, work
    finally:
        lab.down()
        ctl.stop()


def mac_of_neighbour(lab, vm, ip) -> str | None:
    out = lab.exec(vm, 'ip neigh show %s' % ip)[1].split()
    return out[out.index('lladdr') + 1] if 'lladdr' in out else None


def flow_set(lab) -> dict:
    """Every flow of every bridge without counters: what a change would alter."""
    out = {}
    for sw in PHYSICAL:
        out[sw] = {(f['table'], f['cookie'], f['match'], f['actions']) for f in dump_flows(lab.bridge(sw))}
    for hv in lab.fabric.hypervisors:
        out[hv] = {l.split(' actions=')[0].split('table=')[-1].split(', n_packets')[0] + ' ' + l.split('priority=')[-1]
                   for l in lab.ofctl(hv, 'dump-flows', '--no-stats').splitlines() if 'cookie=' in l}
    return out


def ttl_seen(lab, a, b) -> int | None:
    """The TTL of b's echo reply as a sees it (64 bridged, 63 routed once), None if none."""
    out = lab.exec(a, 'ping -n -c 1 -W 1 %s' % lab.vms[b].ip)[1]
    m = re.search(r'ttl=(\d+)', out)
    return int(m.group(1)) if m else None


def test_each_port_group_is_one_l2_domain_across_leaves_and_the_tenants_other_one_is_routed(env):
    lab, _, _ = env
    for a, b in SAME_NETWORK:
        assert lab.ping(a, b, count=2), '%s must reach %s' % (a, b)
        assert ttl_seen(lab, a, b) == 64, '%s reaches %s bridged' % (a, b)
    # every network of acme and globex has a gateway: the other port-group of the same
    # tenant is reached routed (apps/anycast_gateway.py), never bridged
    for a, b in OTHER_NETWORK:
        wait_until(lambda: ttl_seen(lab, a, b) == 63, 10, what='%s reaches %s routed (ttl 63)' % (a, b))
        assert mac_of_neighbour(lab, a, lab.vms[b].ip) is None, '%s must not ARP %s: another subnet' % (a, b)


def test_tenants_with_the_same_addresses_never_see_each_other(env):
    lab, _, _ = env
    # web2 (acme) and app2 (globex) are both 10.10.0.12: each tenant reaches its own
    assert lab.ping('web1', '10.10.0.12') and lab.ping('app1', '10.10.0.12')
    assert mac_of_neighbour(lab, 'web1', '10.10.0.12') == lab.vms['web2'].mac
    assert mac_of_neighbour(lab, 'app1', '10.10.0.12') == lab.vms['app2'].mac
    # db1 (acme) and data1 (globex) share 10.20.0.21, db2 and data2 10.20.0.22
    assert lab.ping('db1', '10.20.0.22') and lab.ping('data1', '10.20.0.22')
    assert mac_of_neighbour(lab, 'db1', '10.20.0.22') == lab.vms['db2'].mac
    assert mac_of_neighbour(lab, 'data1', '10.20.0.22') == lab.vms['data2'].mac
    # an ARP broadcast from globex is answered by globex only
    out = lab.exec('app1', 'arping -c 2 -w 3 -I eth0 10.10.0.12')[1].lower()
    assert lab.vms['app2'].mac in out and lab.vms['web2'].mac not in out


def _tcp(lab, src, dst, port=5601, blocked_expected=False) -> bool:
    server = lab.popen(dst, ['nc', '-l', str(port)])
    try:
        ip = lab.vms[dst].ip
        for _ in range(5 if blocked_expected else 20):   # until the server listens
            rc, _ = lab.exec(src, 'nc -z -w 1 %s %d' % (ip, port))
            if rc == 0:
                return True
            if server.poll() is not None:
                return False
            time.sleep(0.1)
        return False
    finally:
        server.kill()
        server.wait()


def test_tcp_within_a_port_group_and_routed_across(env):
    lab, _, _ = env
    assert _tcp(lab, 'web1', 'web2')
    assert _tcp(lab, 'app2', 'app1')
    assert _tcp(lab, 'db2', 'db1')
    assert _tcp(lab, 'data1', 'data2')
    assert _tcp(lab, 'web1', 'db1')                # routed between the tenant's networks
    assert _tcp(lab, 'app2', 'data2')


def test_full_size_tcp_transfer_across_leaves(env):
    lab, _, _ = env
    server = lab.popen('db2', ['iperf3', '-s', '-1', '-p', '5202'])
    try:
        rc, out = 1, ''
        for _ in range(50):
            rc, out = lab.exec('db1', 'iperf3 -c %s -p 5202 -t 2 -J' % lab.vms['db2'].ip)
            if rc == 0:
                break
            time.sleep(0.1)
        assert rc == 0, out
        assert json.loads(out)['end']['sum_received']['bytes'] > 5 * 2 ** 20
    finally:
        server.kill()
        server.wait()


def test_crafted_tagged_frames_from_a_vm_are_dropped(env):
    lab, _, _ = env

    def captured(vm, send):
        cap = lab.popen(vm, ['timeout', '4', 'tcpdump', '-i', 'eth0', '-nn', '-p', 'ether', 'proto', '0x88b5'],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1)             # tcpdump needs its socket open before the frames go
        send()
        _, err = cap.communicate(timeout=10)
        return int(err.split(' packets captured')[0].split()[-1])
    # control: an untagged broadcast from web1 reaches web2 (same port-group)
    assert captured('web2', lambda: lab.send_frames('web1', ['02:00:0a:0a:00:0b'] * 3)) == 3
    # tagged with the servers VLAN, or a VLAN no trunk carries: never delivered anywhere
    assert captured('db2', lambda: lab.send_frames('web1', ['02:00:0a:0a:00:0b'] * 3, vlan=20)) == 0
    assert captured('data2', lambda: lab.send_frames('web1', ['02:00:0a:0a:00:0b'] * 3, vlan=40)) == 0
    assert captured('web2', lambda: lab.send_frames('web1', ['02:00:0a:0a:00:0b'] * 3, vlan=99)) == 0


def _icmp_echo(dst_mac, src_mac, src_ip, dst_ip, ident=0x4d53) -> bytes:
    """An Ethernet frame carrying an ICMP echo request, any addresses we like."""
    import socket
    import struct

    def csum(b):
        s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
        s = (s >> 16) + (s & 0xffff)
        return ~(s + (s >> 16)) & 0xffff
    icmp = struct.pack('!BBHHH', 8, 0, 0, ident, 1) + b'portsec!' * 4
    icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    return bytes.fromhex(dst_mac.replace(':', '')) + bytes.fromhex(src_mac.replace(':', '')) + b'\x08\x00' + ip + icmp


_SEND_RAW = ('import socket, sys\n'
             's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n'
             's.bind((sys.argv[1], 0))\n'
             'for f in sys.argv[2:]:\n'
             '    s.send(bytes.fromhex(f))\n')


def _port_security_drops(lab, vm) -> int:
    """Packets dropped by the port security drop flows (apps/port_security.py: app 0x09,
    kind 2) of the VM's port on its hypervisor, from the switch's own counters."""
    out = lab.ofctl(lab.vms[vm].hypervisor, 'dump-flows',
                    'cookie=0x0902000000000000/0xffff000000000000,in_port=%d' % lab.vm_ofport(vm))
    counts = [int(n) for n in re.findall(r'n_packets=(\d+)', out)]
    assert len(counts) == 4, out                 # the port's catch-all, and IPv4, ARP, IPv6
    return sum(counts)


def test_a_vm_spoofing_its_source_address_reaches_nobody_and_is_counted(env):
    """Raw frames from inside web1: an ICMP echo to web2 from web1's own MAC and IP arrives;
    the same from another source IP, or another source MAC, never does, and web1's drop
    counters on hv1 move by exactly those; a normal ping still works."""
    import sys
    lab, _, _ = env
    web1, web2 = lab.vms['web1'], lab.vms['web2']
    assert lab.ping('web1', 'web2')

    def arrived(frames) -> int:
        cap = lab.popen('web2', ['timeout', '5', 'tcpdump', '-i', 'eth0', '-nn', '-p', '-l', '--immediate-mode',
                                 'icmp[0] = 8 and icmp[4:2] = 0x4d53'],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert 'listening on' in cap.stderr.readline() + cap.stderr.readline()    # its socket is open
        rc, out = lab.exec('web1', [sys.executable, '-c', _SEND_RAW, 'eth0'] + [f.hex() for f in frames])
        assert rc == 0, out
        _, err = cap.communicate(timeout=15)
        return int(err.split(' packets captured')[0].split()[-1])

    own = _icmp_echo(web2.mac, web1.mac, web1.ip, web2.ip)
    spoofed_ip = _icmp_echo(web2.mac, web1.mac, '10.10.0.99', web2.ip)
    spoofed_mac = _icmp_echo(web2.mac, '02:00:0a:0a:00:99', web1.ip, web2.ip)
    before = _port_security_drops(lab, 'web1')
    assert arrived([own] * 3) == 3                        # the control: the tool and the path work
    assert _port_security_drops(lab, 'web1') == before
    assert arrived([spoofed_ip] * 3 + [spoofed_mac] * 2) == 0
    assert wait_until(lambda: _port_security_drops(lab, 'web1') - before == 5, 10), \
        lab.ofctl('hv1', 'dump-flows', 'cookie=0x0900000000000000/0xff00000000000000')
    assert lab.ping('web1', 'web2')


def test_a_vlan_not_on_the_hypervisors_trunk_is_refused_and_nothing_changes(env, tmp_path):
    lab, ctl, _ = env
    bad = tmp_path / 'initech.yaml'
    bad.write_text('tenant: initech\nnetworks:\n  lab: {vlan: 50, subnet: 10.50.0.0/24}\n'
                   'workloads:\n  x1: {hypervisor: hv2, nics: [{network: lab, mac: "02:00:28:00:00:01", '
                   'ip: 10.50.0.5}]}\n')
    before = flow_set(lab)
    r = ctl.dvsctl('apply', str(bad))
    assert r.returncode == 1
    assert '%s:5:' % bad in r.stderr and 'hv2' in r.stderr and '50' in r.stderr, r.stderr
    r = subprocess.run([str(ROOT / '.venv' / 'bin' / 'dvsctl'), 'validate', '--fabric', str(FABRIC), str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and '%s:5:' % bad in r.stderr
    assert flow_set(lab) == before
    assert sorted(t['name'] for t in json.loads(ctl.dvsctl('show', 'tenants', '--json').stdout)) == ['acme', 'globex']


def test_dry_run_reports_changes_and_changes_nothing(env, tmp_path):
    lab, ctl, _ = env
    changed = tmp_path / 'globex.yaml'
    # app2 gets a new MAC: its known-MAC entries would move on every switch
    changed.write_text(open(TENANTS[1]).read().replace('02:00:1e:0a:00:0c', '02:00:1e:0a:00:7c'))
    before = flow_set(lab)
    r = ctl.dvsctl('apply', '--dry-run', str(changed))
    assert r.returncode == 0, r.stderr
    assert 'would change' in r.stdout and '+0 -0 flows on' not in r.stdout, r.stdout
    r = ctl.dvsctl('delete', '--dry-run', 'globex')
    assert r.returncode == 0 and 'would change' in r.stdout
    assert flow_set(lab) == before


def test_rest_api_refuses_calls_without_the_token(env):
    _, ctl, _ = env
    url = 'http://127.0.0.1:%d/v1/tenants' % ctl.api_port
    for headers in ({}, {'Authorization': 'Bearer wrong'}):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
        assert e.value.code == 401
    token = (ctl.state_dir / 'api-token').read_text().strip()
    r = urllib.request.urlopen(urllib.request.Request(url, headers={'Authorization': 'Bearer ' + token}), timeout=10)
    assert r.status == 200


def test_show_workloads_says_where_each_nic_is_bound(env):
    lab, ctl, _ = env
    rows = json.loads(ctl.dvsctl('show', 'workloads', '--json').stdout)
    where = {r['workload']: r['hypervisor'] for r in rows}
    assert where == {name: vm.hypervisor for name, vm in lab.vms.items()}


def _pinger(lab, src, dst, count, interval):
    return lab.popen(src, ['ping', *counted(count, interval), lab.vms[dst].ip],
                     stdout=subprocess.PIPE, text=True)


def test_fifty_policy_pushes_during_traffic_lose_nothing_and_leave_other_tenants_alone(env, tmp_path):
    lab, ctl, _ = env
    shown = {t['name']: t for t in json.loads(ctl.dvsctl('show', 'tenants', '--json', check=True).stdout)}
    value, mask = (int(x, 16) for x in shown['acme']['cookie'].split('/'))
    acme_flows = lambda: {(sw, f['table'], f['match']): f['duration'] for sw in PHYSICAL    # noqa: E731
                          for f in dump_flows(lab.bridge(sw), 'cookie=%#x/%#x' % (value, mask))}
    before = acme_flows()
    base = open(TENANTS[1]).read()
    variants = []
    for i in range(50):
        text = base if i % 2 else base.replace(
            '  app2:', '  app%d: {hypervisor: hv%d, labels: [app], nics: [{network: apps, mac: "02:00:1e:0a:01:%02x", '
                       'ip: 10.10.0.%d}]}\n  app2:' % (100 + i, 1 + i % 4, i, 100 + i))
        f = tmp_path / ('globex-%d.yaml' % i)
        f.write_text(text)
        variants.append(f)
    pinger = _pinger(lab, 'web1', 'web2', count=400, interval=0.05)     # 20 pps while we push
    try:
        time.sleep(0.5)
        for f in variants:
            r = ctl.dvsctl('apply', str(f))
            assert r.returncode == 0, r.stderr
        out, _ = pinger.communicate(timeout=120)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    sent, got = ping_counts(out)
    assert sent == got, 'lost %d of %d pings during 50 pushes' % (sent - got, sent)
    # acme's proactive flows were never rewritten by globex's pushes
    after = acme_flows()
    acme_only = {k: v for k, v in before.items() if k in after}
    assert acme_only and all(after[k] >= v for k, v in acme_only.items())


def test_restart_restores_the_policy_from_the_state_dir_without_losing_a_ping(env):
    lab, ctl, _ = env
    before = flow_set(lab)
    pinger = _pinger(lab, 'db1', 'db2', count=100, interval=0.1)
    try:
        time.sleep(1)
        ctl.kill9()
        ctl.start()
        assert 'with 2 tenant(s)' in ctl.text()
        ctl.wait_connected(8)
        out, _ = pinger.communicate(timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    sent, got = ping_counts(out)
    assert sent == got == 100, out
    assert sorted(t['name'] for t in json.loads(ctl.dvsctl('show', 'tenants', '--json').stdout)) == ['acme', 'globex']
    assert flow_set(lab) == before
