"""Routing inside a tenant through the anycast distributed gateway (issue 8), on 4 hypervisors in
2 racks (hv1 bonded): tenant `tiers` has two VLAN networks (web, api) and two overlay networks
(app, db), each with a gateway, and one network without a gateway (iso, never routed); tenant
`mirror` reuses the same subnets, gateways and addresses at the same time.

Placement (rack 1 = hv1, hv2; rack 2 = hv3, hv4), so every kind of routed path happens:
    hv1: web1 app1      hv2: api1 db2 iso1      hv3: web2 db1      hv4: api2 app2
    VLAN->VLAN     web1->api1 same rack, web1->api2 other rack
    VLAN->overlay  web1->app1 same hypervisor, web2->app2 same rack, web1->db1 other rack
    overlay->VLAN  app1->web1 same hypervisor, app2->web2 same rack, app1->api2 other rack
    overlay->overlay  app1->db2 same rack, app1->db1 other rack
(and every other pair of different subnets, in both directions)."""
from __future__ import annotations

import itertools
import re
import subprocess
import sys

import pytest

from mininet_topos import Lab
from tests.support import ROOT, ControllerProcess, free_port, wait_until

FABRIC = ROOT / 'examples' / 'fabric.yaml'
TIERS = '''tenant: tiers
networks:
  web: {vlan: 10, subnet: 10.1.0.0/24, gateway: 10.1.0.1}
  api: {vlan: 20, subnet: 10.2.0.0/24, gateway: 10.2.0.1}
  app: {vni: 5101, subnet: 10.3.0.0/24, gateway: 10.3.0.1}
  db:  {vni: 5102, subnet: 10.4.0.0/24, gateway: 10.4.0.1}
  iso: {vni: 5109, subnet: 10.9.0.0/24}
workloads:
  web1: {hypervisor: hv1, nics: [{network: web, mac: "02:00:71:01:00:01", ip: 10.1.0.11}]}
  web2: {hypervisor: hv3, nics: [{network: web, mac: "02:00:71:01:00:02", ip: 10.1.0.12}]}
  api1: {hypervisor: hv2, nics: [{network: api, mac: "02:00:71:02:00:01", ip: 10.2.0.11}]}
  api2: {hypervisor: hv4, nics: [{network: api, mac: "02:00:71:02:00:02", ip: 10.2.0.12}]}
  app1: {hypervisor: hv1, nics: [{network: app, mac: "02:00:71:03:00:01", ip: 10.3.0.11}]}
  app2: {hypervisor: hv4, nics: [{network: app, mac: "02:00:71:03:00:02", ip: 10.3.0.12}]}
  db1:  {hypervisor: hv3, nics: [{network: db,  mac: "02:00:71:04:00:01", ip: 10.4.0.11}]}
  db2:  {hypervisor: hv2, nics: [{network: db,  mac: "02:00:71:04:00:02", ip: 10.4.0.12}]}
  iso1: {hypervisor: hv2, nics: [{network: iso, mac: "02:00:71:09:00:01", ip: 10.9.0.11}]}
'''
# the same subnets, gateways and addresses; each address on another hypervisor than tiers'
# (10.4.0.11 sits on hv1, where tiers' web1 routes to its own 10.4.0.11 on hv3);
# 10.4.0.13 exists in mirror only
MIRROR = '''tenant: mirror
networks:
  web: {vlan: 30, subnet: 10.1.0.0/24, gateway: 10.1.0.1}
  api: {vlan: 40, subnet: 10.2.0.0/24, gateway: 10.2.0.1}
  app: {vni: 6101, subnet: 10.3.0.0/24, gateway: 10.3.0.1}
  db:  {vni: 6102, subnet: 10.4.0.0/24, gateway: 10.4.0.1}
workloads:
  mweb1: {hypervisor: hv2, nics: [{network: web, mac: "02:00:72:01:00:01", ip: 10.1.0.11}]}
  mweb2: {hypervisor: hv4, nics: [{network: web, mac: "02:00:72:01:00:02", ip: 10.1.0.12}]}
  mapi1: {hypervisor: hv3, nics: [{network: api, mac: "02:00:72:02:00:01", ip: 10.2.0.11}]}
  mapp1: {hypervisor: hv4, nics: [{network: app, mac: "02:00:72:03:00:01", ip: 10.3.0.11}]}
  mdb1:  {hypervisor: hv1, nics: [{network: db,  mac: "02:00:72:04:00:01", ip: 10.4.0.11}]}
  mdb2:  {hypervisor: hv1, nics: [{network: db,  mac: "02:00:72:04:00:03", ip: 10.4.0.13}]}
'''
ROUTED = ('web1', 'web2', 'api1', 'api2', 'app1', 'app2', 'db1', 'db2')
MIRRORED = ('mweb1', 'mweb2', 'mapi1', 'mapp1', 'mdb1', 'mdb2')
PHYSICAL = ('spine1', 'spine2', 'leaf1', 'leaf2')
HYPERVISORS = ('hv1', 'hv2', 'hv3', 'hv4')
WHO_PORT = 7000
APP_COOKIE = 'cookie=0x%02x00000000000000/0xff00000000000000'
# answers every TCP connection with "<vm name> <peer address>": who really answered, and
# that the source address arrived unchanged
WHOAMI = '''import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(sys.argv[2])))
s.listen(64)
while True:
    c, peer = s.accept()
    c.sendall(("%s %s\\n" % (sys.argv[1], peer[0])).encode())
    c.close()
'''


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp('routing')
    tenants = []
    for name, text in (('tiers', TIERS), ('mirror', MIRROR)):
        (work / (name + '.yaml')).write_text(text)
        tenants.append(str(work / (name + '.yaml')))
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(FABRIC), ofp_port=port, tenants=tenants)
    servers = []
    try:
        r = ctl.dvsctl('apply', *tenants)
        assert r.returncode == 0, r.stderr
        lab.up(timeout=60)
        servers = [lab.popen(vm, [sys.executable, '-c', WHOAMI, vm, str(WHO_PORT)]) for vm in lab.vms]
        for a, b in (('web1', 'web2'), ('app1', 'app2'), ('mweb1', 'mweb2'), ('mdb2', 'mdb1')):
            wait_until(lambda: lab.ping(a, b), 30, what='%s reaches %s (bridged)' % (a, b))
        for a, b in (('web1', 'api2'), ('app1', 'db1'), ('mweb1', 'mapi1')):
            wait_until(lambda: lab.ping(a, b), 30, what='%s reaches %s (routed)' % (a, b))
        # OVS's userspace tunnels drop the first packet toward an underlay next hop whose MAC
        # they have not resolved yet (bridged or routed alike): resolve every hypervisor's two
        # (the same-rack VTEP, the rack gateway) before the tests count first packets
        for a, b in (('app1', 'db2'), ('app1', 'app2'), ('db1', 'app2'), ('db1', 'db2')):
            for x, y in ((a, b), (b, a)):
                wait_until(lambda: lab.ping(x, y), 10, what='%s reaches %s (tunnel neighbours)' % (x, y))
        wait_until(lambda: who_answers(lab, 'web1', lab.vms['api2'].ip), 10, what='the whoami servers listen')
        yield lab, ctl, work
    finally:
        for s in servers:
            s.kill()
            s.wait()
        lab.down()
        ctl.stop()


# --- helpers ------------------------------------------------------------------------------------

def ping(lab, src, ip, *opts, wait=1) -> tuple[int, str]:
    return lab.exec(src, ['ping', '-n', '-c', '1', '-W', str(wait), *opts, ip], timeout=15)


def reply_ttl(lab, src, ip, wait=1) -> int | None:
    """The TTL of the echo reply src gets from ip, None without a reply (within wait s)."""
    m = re.search(r'from %s: icmp_seq=\d+ ttl=(\d+)' % re.escape(ip), ping(lab, src, ip, wait=wait)[1])
    return int(m.group(1)) if m else None


def who_answers(lab, src, ip, wait=2) -> list[str] | None:
    """[vm name, source address it saw] from the whoami server at ip:WHO_PORT, over TCP."""
    rc, out = lab.exec(src, ['nc', '-w', str(wait), ip, str(WHO_PORT)], timeout=15)
    return out.split() if rc == 0 and out.strip() else None


def arping(lab, src, ip, all_answers=False) -> list[str]:
    """The MACs answering one broadcast ARP request for ip from src's eth0: the first (at most
    1 s), or with all_answers every answer within 1 s."""
    opts = ['-w', '1'] if all_answers else ['-C', '1', '-w', '1']
    out = lab.exec(src, ['arping', '-c', '1', *opts, '-I', 'eth0', ip], timeout=15)[1].lower()
    return re.findall(r'bytes from ([0-9a-f:]{17}) \(%s\)' % re.escape(ip), out)


def neighbour_mac(lab, vm, ip) -> str | None:
    out = lab.exec(vm, 'ip neigh show %s dev eth0' % ip)[1].split()
    return out[out.index('lladdr') + 1] if 'lladdr' in out else None


def network(vm) -> tuple[str, str]:
    return vm.tenant, vm.nics[0].network


def cross_subnet_pairs(vms, names):
    return [(a, b) for a, b in itertools.permutations(names, 2) if network(vms[a]) != network(vms[b])]


class Uplinks:
    """tcpdump on the hypervisor end of every uplink (each bond member) of some hypervisors,
    into files, while a `with` block runs; text() reads what was seen so far."""

    def __init__(self, lab, work, hvs, verbose=False):
        self.lab, self.procs, self.files = lab, [], {}
        self.opts = ['-nn', '-e', '-l', '--immediate-mode'] + (['-v'] if verbose else [])
        self.work, self.hvs = work, hvs
        Uplinks.runs = getattr(Uplinks, 'runs', 0) + 1

    def __enter__(self):
        for hv in self.hvs:
            for _, intf in self.lab.uplink_members(hv):
                base = self.work / ('cap%d-%s-%s' % (Uplinks.runs, hv, intf))
                out, err = open(str(base) + '.txt', 'w'), open(str(base) + '.err', 'w')
                self.procs.append(self.lab.popen(hv, ['tcpdump', *self.opts, '-i', intf], stdout=out, stderr=err))
                self.files[(hv, intf)] = base
        # its socket is open once tcpdump says it listens
        wait_until(lambda: all('listening on' in open(str(b) + '.err').read() for b in self.files.values()),
                   10, what='tcpdump listening on the uplinks')
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
            p.wait(10)

    def text(self, hv=None) -> str:
        return ''.join(open(str(b) + '.txt').read() for (h, _), b in self.files.items() if hv in (None, h))

    def packets(self, hv=None) -> list[str]:
        """One string per captured packet: each starts with its timestamp (tcpdump -v goes on
        over indented lines, a VXLAN packet's inner frame on a line of its own)."""
        return [p for p in re.split(r'\n(?=\d\d:\d\d:\d\d\.\d+ )', self.text(hv)) if p.strip()]


def arp_addresses(text) -> set[str]:
    """Addresses asked for or answered in the ARP packets of a capture (tagged, or inside VXLAN)."""
    return set(re.findall(r'who-has (\d+\.\d+\.\d+\.\d+)', text)) | \
        set(re.findall(r'Reply (\d+\.\d+\.\d+\.\d+) is-at', text))


def l3_drops(lab, hv, subnet) -> int:
    """Packets counted by the anycast gateway's drop flows for a subnet in table 50 (l3) of hv."""
    total, found = 0, False
    for line in lab.ofctl(hv, 'dump-flows', 'table=50,' + APP_COOKIE % 0x05).splitlines():
        if 'nw_dst=%s' % subnet in line and 'actions=drop' in line:
            found = True
            total += int(re.search(r'n_packets=(\d+)', line).group(1))
    assert found, 'no l3 drop flow for %s on %s' % (subnet, hv)
    return total


# --- the tests ------------------------------------------------------------------------------------

def test_every_pair_of_subnets_is_routed_and_each_subnet_still_bridged(env):
    lab, _, _ = env
    vms = lab.vms
    wrong = []
    for a, b in cross_subnet_pairs(vms, ROUTED):
        ttl = reply_ttl(lab, a, vms[b].ip)
        if ttl != 63:                            # one hop each way: routed on each source hypervisor
            wrong.append('%s(%s) -> %s(%s): ping reply ttl %s' % (a, vms[a].hypervisor, b, vms[b].hypervisor, ttl))
        got = who_answers(lab, a, vms[b].ip)
        if got != [b, vms[a].ip]:
            wrong.append('%s -> %s: TCP answered %s' % (a, b, got))
    assert not wrong, '\n'.join(wrong)
    for a, b in (('web1', 'web2'), ('api2', 'api1'), ('app1', 'app2'), ('db2', 'db1')):
        assert reply_ttl(lab, a, vms[b].ip) == 64, '%s -> %s is bridged: no hop' % (a, b)
        assert who_answers(lab, a, vms[b].ip) == [b, vms[a].ip]
    # a network without a gateway is not routed, in neither direction
    for a in ('web1', 'api1', 'db2'):
        assert reply_ttl(lab, a, vms['iso1'].ip, 0.3) is None and who_answers(lab, a, vms['iso1'].ip, 1) is None
    assert not lab.ping('iso1', '10.9.0.1', timeout=0.5)
    lab.exec('iso1', 'ip route add 10.0.0.0/8 via 10.9.0.1')     # even if it tried
    try:
        assert not lab.ping('iso1', vms['db2'].ip, timeout=0.5)
    finally:
        lab.exec('iso1', 'ip route del 10.0.0.0/8')


def test_routed_frames_cross_the_fabric_on_the_destination_network(env):
    lab, _, work = env
    vms, gw = lab.vms, lab.fabric.gateway_mac
    with Uplinks(lab, work, ('hv1', 'hv4'), verbose=True) as cap:
        assert reply_ttl(lab, 'web1', vms['api2'].ip) == 63       # VLAN 10 -> VLAN 20, other rack
        assert reply_ttl(lab, 'web1', vms['app2'].ip) == 63       # VLAN 10 -> VNI 5101, other rack

        def seen(hv, *parts):
            return [p for p in cap.packets(hv) if all(x in p for x in parts)]
        to_api2 = ('%s > %s, ethertype 802.1Q' % (gw, vms['api2'].mac), 'vlan 20,', 'ttl 63',
                   '%s > %s: ICMP echo request' % (vms['web1'].ip, vms['api2'].ip))
        to_app2 = ('> 172.16.2.12.4789: VXLAN', 'vni 5101', '%s > %s, ethertype IPv4' % (gw, vms['app2'].mac),
                   'ttl 63', '%s > %s: ICMP echo request' % (vms['web1'].ip, vms['app2'].ip))
        wait_until(lambda: seen('hv1', *to_api2) and seen('hv4', *to_api2), 5,
                   what='the routed request tagged with the destination VLAN, from the gateway MAC')
        wait_until(lambda: seen('hv1', *to_app2) and seen('hv4', *to_app2), 5,
                   what='the routed request in the destination VNI straight to hv4\'s VTEP')
    # the replies come back routed on hv4, into web1's VLAN, from the gateway MAC
    assert seen('hv1', '%s > %s, ethertype 802.1Q' % (gw, vms['web1'].mac), 'vlan 10,', 'ttl 63',
                '%s > %s: ICMP echo reply' % (vms['api2'].ip, vms['web1'].ip))
    # and never on the source network: no request on VLAN 10, none from web1's MAC
    assert not seen('hv1', 'vlan 10,', 'ICMP echo request')
    assert not seen('hv1', vms['web1'].mac + ' >', 'ICMP echo request')


def test_gateways_and_known_vms_are_answered_on_the_hypervisor_and_never_cross_an_uplink(env):
    lab, _, work = env
    vms, gw = lab.vms, lab.fabric.gateway_mac
    with_gw = [v for v in vms.values() if v.gateway]
    peers = [(a, b) for a, b in itertools.permutations(vms, 2)
             if network(vms[a]) == network(vms[b]) and vms[a].ip != vms[b].ip]
    for v in vms.values():
        lab.exec(v.name, 'ip neigh flush dev eth0')
    protected = {v.gateway for v in with_gw} | {vms[b].ip for _, b in peers}
    answers, pings = {}, {}
    with Uplinks(lab, work, HYPERVISORS) as cap:
        for v in with_gw:
            answers[(v.name, v.gateway)] = (gw, arping(lab, v.name, v.gateway))
            pings[(v.name, v.gateway)] = lab.ping(v.name, v.gateway)
            # any gateway of the tenant answers an echo (here: the app network's)
            pings[(v.name, '10.3.0.1')] = lab.ping(v.name, '10.3.0.1')
        for a, b in peers:
            answers[(a, vms[b].ip)] = (vms[b].mac, arping(lab, a, vms[b].ip))
        # the control: an unknown address of the same network is flooded as before
        unknown = {'web1': '10.1.0.99', 'app1': '10.3.0.99'}
        for src, ip in unknown.items():
            assert arping(lab, src, ip) == []
        wait_until(lambda: '10.1.0.99' in arp_addresses(cap.text('hv1')) and
                   '10.1.0.99' in arp_addresses(cap.text('hv3')), 5, what='the unknown ARP on VLAN 10 uplinks')
        wait_until(lambda: '10.3.0.99' in arp_addresses(cap.text('hv1')) and
                   '10.3.0.99' in arp_addresses(cap.text('hv4')), 5, what='the unknown ARP in VNI 5101')
    wrong = ['%s asked for %s: answered by %s, not %s' % (k[0], k[1], got, mac)
             for k, (mac, got) in answers.items() if got != [mac]]
    wrong += ['%s does not reach %s' % k for k, ok in pings.items() if not ok]
    wrong += ['%s resolved its gateway to %s' % (v.name, neighbour_mac(lab, v.name, v.gateway))
              for v in with_gw if neighbour_mac(lab, v.name, v.gateway) != gw]
    assert not wrong, '\n'.join(wrong)
    for hv in HYPERVISORS:
        leaked = arp_addresses(cap.text(hv)) & protected
        assert not leaked, 'ARP for %s crossed %s\'s uplink:\n%s' % (sorted(leaked), hv, cap.text(hv))
    # the network without a gateway has none
    assert arping(lab, 'iso1', '10.9.0.1') == []


def test_the_other_tenant_with_the_same_addresses_works_and_never_meets_tiers(env):
    lab, _, _ = env
    vms = lab.vms
    wrong = []
    for a, b in cross_subnet_pairs(vms, MIRRORED):
        if reply_ttl(lab, a, vms[b].ip) != 63 or who_answers(lab, a, vms[b].ip) != [b, vms[a].ip]:
            wrong.append('mirror: %s -> %s not routed to its own VM' % (a, b))
    assert not wrong, '\n'.join(wrong)
    # each shared address, asked for from each tenant, is answered by that tenant's VM
    for tiers_vm, mirror_vm, src_tiers, src_mirror in (('api1', 'mapi1', 'web1', 'mweb1'),
                                                       ('db1', 'mdb1', 'web1', 'mweb1'),
                                                       ('app1', 'mapp1', 'db2', 'mdb2'),
                                                       ('web1', 'mweb1', 'app2', 'mapp1')):
        ip = vms[tiers_vm].ip
        assert ip == vms[mirror_vm].ip
        assert who_answers(lab, src_tiers, ip) == [tiers_vm, vms[src_tiers].ip]
        assert who_answers(lab, src_mirror, ip) == [mirror_vm, vms[src_mirror].ip]
    # on the link: one answer, from the own tenant's VM
    for src, dst in (('web1', 'web2'), ('mweb1', 'mweb2'), ('db2', 'db1'), ('mdb2', 'mdb1')):
        assert arping(lab, src, vms[dst].ip, all_answers=True) == [vms[dst].mac]
        assert lab.ping(src, dst) and neighbour_mac(lab, src, vms[dst].ip) == vms[dst].mac
    # an address only mirror has is not there for tiers, neither by ping nor TCP
    assert who_answers(lab, 'mweb1', '10.4.0.13') == ['mdb2', vms['mweb1'].ip]
    for src in ('web1', 'api1', 'db1'):
        assert reply_ttl(lab, src, '10.4.0.13', 0.3) is None and who_answers(lab, src, '10.4.0.13', 1) is None


def test_an_address_without_a_workload_is_dropped_and_counted(env):
    lab, _, work = env
    before = l3_drops(lab, 'hv1', '10.2.0.0/24')
    with Uplinks(lab, work, ('hv1',), verbose=True) as cap:
        rc, out = lab.exec('web1', ['ping', '-n', '-c', '3', '-i', '0.2', '-W', '1', '10.2.0.99'])
        assert rc != 0 and ' 0 received' in out, out
        wait_until(lambda: l3_drops(lab, 'hv1', '10.2.0.0/24') >= before + 3, 5, what='3 drops counted')
        assert lab.ping('web1', 'api1')                       # a routed packet still passes
    assert '10.2.0.99' not in cap.text(), 'not flooded, not asked for:\n' + cap.text()
    # the tenant's own gateway address of that subnet is not such an address
    assert lab.ping('web1', '10.2.0.1')


def test_ttl_expiring_at_the_gateway_is_reported_by_the_source_gateway(env):
    lab, _, _ = env
    vms = lab.vms
    for src, dst in (('web1', 'api2'), ('app1', 'db1')):
        gateway = vms[src].gateway
        got = wait_until(lambda: re.search(r'From (\S+) icmp_seq=\d+ Time to live exceeded',
                                           ping(lab, src, vms[dst].ip, '-t', '1')[1]), 10,
                         what='Time Exceeded for %s -> %s' % (src, dst))
        assert got.group(1) == gateway
        hops = wait_until(lambda: traceroute_hops(lab, src, vms[dst].ip), 10, what='traceroute %s -> %s' % (src, dst))
        assert hops == [gateway, vms[dst].ip], hops
    # bridged: no router in the way, TTL 1 arrives
    assert ping(lab, 'web1', vms['web2'].ip, '-t', '1')[0] == 0


def traceroute_hops(lab, src, ip) -> list[str] | None:
    """The address of each hop (None if a hop did not answer), or None if the target was not reached."""
    rc, out = lab.exec(src, ['traceroute', '-n', '-q', '1', '-w', '1', '-m', '4', ip], timeout=30)
    hops = [(line.split() + ['*'])[1] for line in out.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    return [h if h != '*' else None for h in hops] if hops and hops[-1] == ip else None


def test_a_moved_vm_keeps_its_gateway_without_asking_again(env):
    lab, _, work = env
    vms, gw = lab.vms, lab.fabric.gateway_mac
    ip = vms['web1'].ip
    assert lab.ping('web1', 'api1') and neighbour_mac(lab, 'web1', '10.1.0.1') == gw
    try:
        with Uplinks(lab, work, ('hv4',)) as cap:
            lab.move_vm('web1', 'hv4')                     # rack 1 -> rack 2, a hv without web before
            # its routes out, and the routes to it from the other hypervisors, follow the binding
            for src, dst in (('web1', vms['api1'].ip), ('web1', vms['db2'].ip), ('api1', ip), ('api2', ip),
                             ('db1', ip)):
                wait_until(lambda: lab.ping(src, dst), 15, what='%s reaches %s after the move' % (src, dst))
            assert reply_ttl(lab, 'web1', vms['api1'].ip) == 63
            assert who_answers(lab, 'web1', vms['db2'].ip) == ['db2', ip]
            assert who_answers(lab, 'db1', ip) == ['web1', vms['db1'].ip]
            assert who_answers(lab, 'api2', ip) == ['web1', vms['api2'].ip]      # now on its hypervisor
            assert lab.ping('web1', '10.1.0.1') and lab.ping('web1', '10.4.0.1')
            assert neighbour_mac(lab, 'web1', '10.1.0.1') == gw
        assert '10.1.0.1' not in arp_addresses(cap.text()), cap.text()
        # asked now, the gateway answers from the new hypervisor with the same MAC
        assert arping(lab, 'web1', '10.1.0.1') == [gw]
        assert lab.vms['web1'].hypervisor == 'hv4'
    finally:
        lab.move_vm('web1', 'hv1')
    wait_until(lambda: lab.ping('web1', 'api2'), 15, what='web1 back on hv1 reaches api2')
    assert lab.ping('api1', 'web1')


def test_a_vm_left_behind_reaches_the_moved_vm(env):
    """br-phy, the hypervisor's NORMAL bridge, learned web1 on its br-int side while it lived on
    hv1; routed frames from hv1 to the moved web1 leave br-int for the uplink, and br-phy would
    drop them ("learned port is input port") until the entry aged out (300 s): the lab's
    hypervisors forget a VM's MACs on br-phy when its port comes or goes (Lab.move_vm)."""
    lab, _, _ = env
    ip = lab.vms['web1'].ip
    assert lab.ping('web1', 'web2') and lab.ping('app1', ip)      # bridged out of hv1: br-phy learns web1
    try:
        lab.move_vm('web1', 'hv4')
        wait_until(lambda: lab.ping('api1', ip), 15, what='api1 reaches the moved web1')     # converged
        wait_until(lambda: lab.ping('app1', ip), 10, what='app1, left on hv1, reaches the moved web1')
    finally:
        lab.move_vm('web1', 'hv1')
        wait_until(lambda: lab.ping('web1', 'api2'), 15, what='web1 back on hv1 reaches api2')


def test_the_gateway_mac_is_never_learned_and_no_physical_switch_holds_an_overlay_mac(env):
    lab, _, _ = env
    vms, gw = lab.vms, lab.fabric.gateway_mac
    overlay_macs = [v.mac for v in vms.values() if v.nics[0].network in ('app', 'db', 'iso')]
    for sw in PHYSICAL:
        learned = lab.ofctl(sw, 'dump-flows', APP_COOKIE % 0x01)
        assert gw not in learned, '%s learned the gateway MAC:\n%s' % (sw, learned)
        text = lab.ofctl(sw, 'dump-flows')
        fdb = subprocess.run(['ovs-appctl', 'fdb/show', lab.bridge(sw)], capture_output=True, text=True).stdout
        assert not [m for m in overlay_macs if m in text or m in fdb], sw
    for hv in HYPERVISORS:
        learned = lab.ofctl(hv, 'dump-flows', APP_COOKIE % 0x01)
        assert gw not in learned, '%s learned the gateway MAC:\n%s' % (hv, learned)
