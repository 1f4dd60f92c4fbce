"""VXLAN overlay networks across racks, programmed from bindings over the routed underlay:
two tenants whose overlays reuse the same addresses, on 4 hypervisors in 2 racks."""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from controller.pipeline import tables
from mininet_topos import Lab
from tests.support import ROOT, ControllerProcess, answered, counted, free_port, wait_until

FABRIC = ROOT / 'examples' / 'fabric.yaml'
INITECH = '''tenant: initech
networks:
  apps: {vni: 5020, subnet: 10.50.0.0/24, gateway: 10.50.0.1}
  ops:  {vni: 5021, subnet: 10.51.0.0/24}
workloads:
  a1: {hypervisor: hv1, nics: [{network: apps, mac: "02:00:32:00:00:01", ip: 10.50.0.11}]}
  a2: {hypervisor: hv2, nics: [{network: apps, mac: "02:00:32:00:00:02", ip: 10.50.0.12}]}
  a3: {hypervisor: hv3, nics: [{network: apps, mac: "02:00:32:00:00:03", ip: 10.50.0.13}]}
  o4: {hypervisor: hv4, nics: [{network: ops,  mac: "02:00:33:00:00:04", ip: 10.51.0.14}]}
'''
UMBRELLA = '''tenant: umbrella
networks:
  apps: {vni: 6020, subnet: 10.50.0.0/24}
workloads:
  z2: {hypervisor: hv1, nics: [{network: apps, mac: "02:00:5a:00:00:02", ip: 10.50.0.12}]}
  z3: {hypervisor: hv4, nics: [{network: apps, mac: "02:00:5a:00:00:03", ip: 10.50.0.13}]}
'''
APPS = ('a1', 'a2', 'a3')
PHYSICAL = ('spine1', 'spine2', 'leaf1', 'leaf2')


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp('overlay')
    tenants = []
    for name, text in (('initech', INITECH), ('umbrella', UMBRELLA)):
        (work / (name + '.yaml')).write_text(text)
        tenants.append(str(work / (name + '.yaml')))
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(FABRIC), ofp_port=port, tenants=tenants)
    try:
        r = ctl.dvsctl('apply', *tenants)
        assert r.returncode == 0, r.stderr
        lab.up(timeout=60)
        for a in APPS:
            for b in APPS:
                if a != b:
                    wait_until(lambda: lab.ping(a, b), 30, what='%s reaches %s over the overlay' % (a, b))
        wait_until(lambda: lab.ping('z2', 'z3'), 30, what='umbrella overlay')
        yield lab, ctl, work
    finally:
        lab.down()
        ctl.stop()


def neighbour_mac(lab, vm, ip):
    out = lab.exec(vm, 'ip neigh show %s' % ip)[1].split()
    return out[out.index('lladdr') + 1] if 'lladdr' in out else None


def test_an_overlay_network_spans_racks_and_nothing_else_reaches_it(env):
    lab, _, _ = env
    for a in APPS:
        for b in APPS:
            if a != b:
                assert lab.ping(a, b, count=2), '%s must reach %s' % (a, b)
    assert not lab.ping('a1', 'o4', timeout=0.5)          # another VNI of the same tenant
    assert not lab.ping('o4', '10.50.0.11', timeout=0.5)
    # the other tenant's overlay reuses 10.50.0.12/.13: each tenant reaches its own
    assert lab.ping('z2', '10.50.0.13') and neighbour_mac(lab, 'z2', '10.50.0.13') == lab.vms['z3'].mac
    assert lab.ping('a1', '10.50.0.13') and neighbour_mac(lab, 'a1', '10.50.0.13') == lab.vms['a3'].mac
    assert neighbour_mac(lab, 'a1', '10.50.0.12') == lab.vms['a2'].mac


def test_show_tunnels_lists_vteps_vnis_and_remote_macs(env):
    lab, ctl, _ = env
    import json
    rows = {r['hypervisor']: r for r in json.loads(ctl.dvsctl('show', 'tunnels', '--json').stdout)}
    assert rows['hv1']['vtep'] == '172.16.1.11'
    assert rows['hv1']['vnis'] == ['5020(initech/apps)', '6020(umbrella/apps)']
    assert sorted(rows['hv1']['remote_macs']) == sorted([
        '02:00:32:00:00:02@172.16.1.12/vni5020', '02:00:32:00:00:03@172.16.2.11/vni5020',
        '02:00:5a:00:00:03@172.16.2.12/vni6020'])
    assert rows['hv4']['vnis'] == ['5021(initech/ops)', '6020(umbrella/apps)']
    text = ctl.dvsctl('show', 'tunnels').stdout
    assert text.splitlines()[0].split() == ['hypervisor', 'vtep', 'vnis', 'remote_macs']


def _tcp_reaches(lab, src, ip, port) -> bool:
    return lab.exec(src, 'nc -z -w 1 %s %d' % (ip, port))[0] == 0


def test_tcp_inside_the_vni_and_not_across_vnis_or_tenants(env):
    lab, _, _ = env
    server = lab.popen('a3', ['nc', '-lk', '5900'])                # only initech's a3 listens
    try:
        wait_until(lambda: _tcp_reaches(lab, 'a1', lab.vms['a3'].ip, 5900), 10, what='a1 -> a3 over TCP')
        assert _tcp_reaches(lab, 'a2', '10.50.0.13', 5900)
        assert not _tcp_reaches(lab, 'z2', '10.50.0.13', 5900)    # umbrella's 10.50.0.13 is z3
        assert not _tcp_reaches(lab, 'o4', '10.50.0.13', 5900)    # another VNI
    finally:
        server.kill()
        server.wait()


def test_physical_switches_never_hold_a_vm_mac(env):
    lab, _, _ = env
    macs = [vm.mac for vm in lab.vms.values()]
    for sw in PHYSICAL:
        text = lab.ofctl(sw, 'dump-flows')
        assert not [m for m in macs if m in text], sw
        fdb = subprocess.run(['ovs-appctl', 'fdb/show', lab.bridge(sw)], capture_output=True, text=True).stdout
        assert not [m for m in macs if m in fdb], sw


def _vxlan_seen(lab, hv, send, seconds=3):
    """VNIs of the VXLAN packets crossing hv's uplink while send() runs."""
    cap = lab.popen(hv, ['timeout', str(seconds), 'tcpdump', '-nn', '-l', '-i', 'phy0', 'udp', 'port', '4789'],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)                          # let tcpdump open its socket first
    send()
    out, _ = cap.communicate(timeout=seconds + 10)
    return [int(v) for v in re.findall(r'vni (\d+)', out)]


def test_broadcasts_are_replicated_only_to_hypervisors_with_members(env):
    lab, _, _ = env
    arp = lambda: lab.exec('a1', 'arping -c 3 -w 2 -I eth0 10.50.0.99')    # noqa: E731
    assert 5020 in _vxlan_seen(lab, 'hv3', arp)          # hv3 hosts a3: it gets the copies
    assert 5020 not in _vxlan_seen(lab, 'hv4', arp)      # hv4 hosts no member of vni 5020


def test_tunnel_traffic_is_accepted_only_from_member_vteps_with_their_vni(env):
    lab, _, _ = env
    tun = lab.vsctl('hv1', 'get', 'interface', 'vxlan0', 'ofport').strip()
    a1, z2 = lab.vm_ofport('a1'), lab.vm_ofport('z2')

    def trace(tun_id, src):
        return lab.appctl('hv1', 'ofproto/trace', 'br-int',
                          'in_port=%s,tun_id=%d,tun_src=%s,tun_dst=172.16.1.11,dl_src=02:00:32:00:00:03,dl_dst=%s'
                          % (tun, tun_id, src, lab.vms['a1'].mac))

    def dropped(text):
        return re.search(r'Datapath actions: (.*)', text).group(1) == 'drop'
    assert 'output:%d' % a1 in trace(5020, '172.16.2.11')      # from hv3 (a member), its VNI
    assert dropped(trace(5020, '172.16.9.9'))                   # an unknown VTEP
    assert dropped(trace(5021, '172.16.2.12'))                  # a VNI with no member on hv1
    # umbrella's VNI from hv4 (z3) reaches umbrella's port on hv1 only, never a1's
    other = trace(6020, '172.16.2.12')
    assert 'output:%d' % z2 in other and 'output:%d' % a1 not in other


def test_half_a_gigabyte_crosses_racks_intact(env):
    lab, _, work = env
    src, dst = work / 'payload', work / 'received'
    subprocess.run(['dd', 'if=/dev/urandom', 'of=%s' % src, 'bs=1M', 'count=512', 'status=none'], check=True)
    server = lab.popen('a3', ['sh', '-c', 'nc -l 5800 > %s' % dst])
    try:
        for _ in range(50):
            rc, out = lab.exec('a1', 'nc -N -w 5 %s 5800 < %s' % (lab.vms['a3'].ip, src), timeout=300)
            if rc == 0:
                break
            time.sleep(0.1)
        assert rc == 0, out
        server.wait(60)
    finally:
        if server.poll() is None:
            server.kill()
    sums = subprocess.run(['sha256sum', str(src), str(dst)], capture_output=True, text=True, check=True).stdout
    a, b = [l.split()[0] for l in sums.splitlines()]
    assert a == b and src.stat().st_size == 512 * 2 ** 20
    src.unlink()
    dst.unlink()


def _routes_over(lab, spine, leaf_subnet='172.16.2.0/24') -> bool:
    """Does the spine route the other rack's VTEPs (over its cable to that rack's leaf)?"""
    return 'nw_dst=%s' % leaf_subnet in lab.ofctl(spine, 'dump-flows', 'table=%d' % tables.table_id('l3'))


def test_a_spine_cable_cut_keeps_the_overlay_up_and_its_return_loses_nothing(env):
    lab, _, _ = env
    pinger = lab.popen('a1', ['ping', *counted(100, 0.1), lab.vms['a3'].ip],
                       stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        lab.set_link('spine1', 'leaf2', up=False)
        out, _ = pinger.communicate(timeout=60)
        assert set(range(71, 101)) <= answered(out), out
        # The cable comes back, three times, at 100 pps: leaf1 and leaf2 hash onto it only
        # once spine1 routes over it and both its ends admit it (make before break).
        for _ in range(3):
            pinger = lab.popen('a1', ['ping', *counted(250, 0.01), lab.vms['a3'].ip],
                               stdout=subprocess.PIPE, text=True)
            time.sleep(0.3)
            lab.set_link('spine1', 'leaf2', up=True)
            wait_until(lambda: _routes_over(lab, 'spine1'), 10, what='spine1 routes over its cable again')
            out, _ = pinger.communicate(timeout=60)
            assert set(range(1, 251)) <= answered(out), 'lost icmp_seq %s' % sorted(set(range(1, 251)) - answered(out))
            lab.set_link('spine1', 'leaf2', up=False)
            wait_until(lambda: not _routes_over(lab, 'spine1'), 10, what='spine1 stops routing over the cut cable')
            wait_until(lambda: lab.ping('a1', lab.vms['a3'].ip), 10, what='a1 reaches a3 around the cut')
    finally:
        if pinger.poll() is None:
            pinger.kill()
        lab.set_link('spine1', 'leaf2', up=True)
        wait_until(lambda: _routes_over(lab, 'spine1'), 10, what='the cable carries traffic again')


HYPERVISORS = ('hv1', 'hv2', 'hv3', 'hv4')
FIRST_VNI = '''tenant: aardvark
networks:
  early: {vni: 10, subnet: 10.90.0.0/24}
workloads:
  x1: {nics: [{network: early, mac: "02:00:aa:00:00:01", ip: 10.90.0.11}]}
'''


def tenant_flows(lab, ctl, tenant):
    """{(hv, table, priority, match, actions): (duration, n_packets)} of one tenant's flows."""
    shown = {t['name']: t for t in __import__('json').loads(ctl.dvsctl('show', 'tenants', '--json', check=True).stdout)}
    cookie = shown[tenant]['cookie']
    out = {}
    for hv in HYPERVISORS:
        for line in lab.ofctl(hv, 'dump-flows', 'cookie=%s' % cookie).splitlines():
            m = re.search(r'duration=([\d.]+)s, table=(\d+), n_packets=(\d+).* priority=(\d+),?(\S*) actions=(\S+)', line)
            if m:
                out[(hv, m.group(2), m.group(4), m.group(5), m.group(6))] = (float(m.group(1)), int(m.group(3)))
    return out


def test_adding_a_tenant_whose_vni_sorts_first_touches_no_flow_of_another(env):
    lab, ctl, work = env
    pinger = lab.popen('a1', ['ping', *counted(60, 0.05), lab.vms['a3'].ip],
                       stdout=subprocess.PIPE, text=True)
    try:
        before = tenant_flows(lab, ctl, 'initech')
        assert before
        (work / 'aardvark.yaml').write_text(FIRST_VNI)
        r = ctl.dvsctl('apply', str(work / 'aardvark.yaml'))
        assert r.returncode == 0, r.stderr
        during = tenant_flows(lab, ctl, 'initech')
        r = ctl.dvsctl('delete', 'aardvark')
        assert r.returncode == 0, r.stderr
        after = tenant_flows(lab, ctl, 'initech')
        out, _ = pinger.communicate(timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    assert set(during) == set(before) == set(after)          # same flows, same actions: none rewritten
    for k, (age, _) in before.items():
        assert during[k][0] >= age and after[k][0] >= age, 'flow %s was replaced' % (k,)
    moved = [k for k in before if after[k][1] > before[k][1]]
    assert moved, 'the counters of the ping path kept counting'
    assert set(range(1, 61)) <= answered(out), out


def test_ten_controller_restarts_lose_no_overlay_packet_across_racks(env):
    lab, ctl, _ = env
    # a1 (hv1, rack 1) -> a3 (hv3, rack 2): the path depends on both hypervisors' bindings
    pinger = lab.popen('a1', ['ping', *counted(3000, 0.01), lab.vms['a3'].ip],
                       stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(10):
            ctl.kill9()
            ctl.start()
            ctl.wait_connected(8)
            wait_until(lambda: 'programming from the whole picture' in ctl.text(), 30,
                       what='every hypervisor reported its bindings')
        out, _ = pinger.communicate(timeout=120)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    got = answered(out)
    assert set(range(1, 3001)) <= got, 'lost icmp_seq %s' % sorted(set(range(1, 3001)) - got)[:20]
    assert lab.ping('a1', 'a2') and not lab.ping('a1', 'o4', timeout=0.5)
