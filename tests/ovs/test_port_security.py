"""Port security on a real OVS, no Mininet: hv1's compiled flows (tests/unit/builders.
routing_world) in a scratch bridge.  Each spoofing attempt from web1's port is asked of
ofproto/trace (dropped in port_sec, by web1's own drop flow), and real packets sent into the
pipeline with packet-out move that flow's counters; web1's frames as itself go on."""
from __future__ import annotations

import re
import struct

import pytest

from apps import anycast_gateway as gw, port_security as ps
from controller.pipeline import cookies
from controller.pipeline.flow import vid
from tests.ovs.pipeline_bridge import PipelineBridge
from tests.support import is_root, sh, wait_until
from tests.unit.builders import (APP1, HV_TUN, HV_UPLINK, HV_VM2, HV_VM3, HV_VM5, WEB1, WEB2, routing_world,
                                 switch_flows)

pytestmark = pytest.mark.skipif(not is_root(), reason='needs root and the OVS daemons')

BCAST = 'ff:ff:ff:ff:ff:ff'


@pytest.fixture(scope='module')
def hv1():
    fabric, policy, inv, hv = routing_world()
    reg = cookies.Registry()
    with PipelineBridge(ports=[HV_UPLINK, HV_VM2, HV_VM3, HV_VM5], tunnel=HV_TUN) as br:
        br.load(switch_flows(policy, inv, hv), registry=reg,
                meters=['meter=%d,pktps,band=type=drop,rate=%d' % (gw.METER, gw.METER_PPS)])
        yield br, reg, policy


def ips(policy):
    return {b.nic.mac: str(b.nic.ip) for b in policy.nics.values()}


def dropped_by_web1(t, reg):
    """Dropped at the first table, by one of web1's own port security drop flows."""
    if not (t.dropped and [s.name for s in t.steps] == ['port_sec']):
        return False
    c = reg.decode(t.steps[0].cookie)
    return (c.app, c.kind, c.tenant, c.owner) == (ps.APP, ps.K_DROP, 'acme', 'web1/nic0')


def test_web1_as_itself_goes_on(hv1):
    br, reg, policy = hv1
    ip = ips(policy)
    t = br.trace(HV_VM2, eth_src=WEB1, eth_dst=WEB2, eth_type=0x0800, ipv4_src=ip[WEB1], ipv4_dst=ip[WEB2])
    assert t.output_ports == [HV_UPLINK] and 'push_vlan(vid=10' in t.datapath_actions, t.text
    first = reg.decode(t.steps[0].cookie)
    assert (first.app, first.kind, first.owner) == (ps.APP, ps.K_ALLOW, 'web1/nic0')
    assert t.steps[1].name == 'classify'
    # ARP as itself, an ARP probe, a DHCP discover, another ethertype: all go on (flooded in VLAN 10)
    for fields in (dict(eth_type=0x0806, arp_op=1, arp_sha=WEB1, arp_spa=ip[WEB1], arp_tpa='10.4.0.99'),
                   dict(eth_type=0x0806, arp_op=1, arp_sha=WEB1, arp_spa='0.0.0.0', arp_tpa=ip[WEB1]),
                   dict(eth_type=0x0800, ipv4_src='0.0.0.0', ipv4_dst='255.255.255.255', ip_proto=17,
                        udp_src=68, udp_dst=67),
                   dict(eth_type=0x88b5)):
        t = br.trace(HV_VM2, eth_src=WEB1, eth_dst=BCAST, **fields)
        assert HV_UPLINK in t.output_ports and not dropped_by_web1(t, reg), (fields, t.text)


def test_each_spoofing_attempt_is_dropped_at_port_sec_by_the_nics_drop_flow(hv1):
    br, reg, policy = hv1
    ip = ips(policy)
    attempts = {
        'another source MAC': dict(eth_src=WEB2, eth_dst=APP1, eth_type=0x0800, ipv4_src=ip[WEB1]),
        'another source MAC, other ethertype': dict(eth_src='02:00:00:00:66:66', eth_dst=BCAST, eth_type=0x88b5),
        'another source IP': dict(eth_src=WEB1, eth_dst=WEB2, eth_type=0x0800, ipv4_src=ip[WEB2],
                                  ipv4_dst=ip[WEB2]),
        'a DHCP-looking packet from 0.0.0.0 to a VM': dict(eth_src=WEB1, eth_dst=WEB2, eth_type=0x0800,
                                                          ipv4_src='0.0.0.0', ipv4_dst=ip[WEB2]),
        'ARP claiming another IP': dict(eth_src=WEB1, eth_dst=BCAST, eth_type=0x0806, arp_op=2, arp_sha=WEB1,
                                        arp_spa=ip[WEB2], arp_tpa=ip[WEB2]),
        'ARP with another sender MAC': dict(eth_src=WEB1, eth_dst=BCAST, eth_type=0x0806, arp_op=1, arp_sha=WEB2,
                                            arp_spa=ip[WEB1], arp_tpa=ip[WEB2]),
        'an ARP reply from 0.0.0.0': dict(eth_src=WEB1, eth_dst=BCAST, eth_type=0x0806, arp_op=2, arp_sha=WEB1,
                                          arp_spa='0.0.0.0', arp_tpa=ip[WEB2]),
        'an 802.1Q-tagged frame of its own VLAN': dict(eth_src=WEB1, eth_dst=WEB2, vlan_vid=vid(10), eth_type=0x0800,
                                                       ipv4_src=ip[WEB1]),
        'an 802.1Q-tagged frame of another VLAN': dict(eth_src=WEB1, eth_dst=BCAST, vlan_vid=vid(20), eth_type=0x88b5),
        'IPv6': dict(eth_src=WEB1, eth_dst='33:33:00:00:00:01', eth_type=0x86dd),
    }
    for what, fields in attempts.items():
        t = br.trace(HV_VM2, **fields)
        assert dropped_by_web1(t, reg), (what, t.text)
    # the overlay nic next door is guarded by its own flows, with its own address
    t = br.trace(HV_VM3, eth_src=APP1, eth_dst=BCAST, eth_type=0x0800, ipv4_src=ip[WEB1])
    c = reg.decode(t.steps[0].cookie)
    assert t.dropped and (c.app, c.kind, c.owner) == (ps.APP, ps.K_DROP, 'app1/nic0'), t.text


def _mac(m):
    return bytes.fromhex(m.replace(':', ''))


def _ipv4(src, dst, proto=17, payload=b'\x00' * 8):
    import socket
    hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr + payload


def drops(br, reg):
    """Packets counted by web1's drop flows, from the switch."""
    cookie = reg.encode(cookies.make(ps.APP, ps.K_DROP, 'web1/nic0', 'acme'))
    out = sh('ovs-ofctl -O OpenFlow14 dump-flows %s cookie=%#x/-1' % (br.name, cookie))
    found = [int(n) for n in re.findall(r'n_packets=(\d+)', out)]
    assert len(found) == 4, out                 # 120, and 125 for IPv4, ARP, IPv6
    return sum(found)


def test_spoofed_packets_move_the_nics_drop_counters_and_legit_ones_do_not(hv1):
    br, reg, policy = hv1
    ip = ips(policy)
    before = drops(br, reg)
    spoofed = [_mac(WEB2) + _mac(WEB1) + b'\x08\x00' + _ipv4(ip[WEB2], ip[WEB2]),          # another source IP
               _mac(WEB2) + _mac('02:00:00:00:66:66') + b'\x08\x00' + _ipv4(ip[WEB1], ip[WEB2])]   # another MAC
    legit = [_mac(WEB2) + _mac(WEB1) + b'\x08\x00' + _ipv4(ip[WEB1], ip[WEB2])]
    for frame in spoofed + legit:
        sh("ovs-ofctl -O OpenFlow14 packet-out %s 'in_port=%d packet=%s actions=table'"
           % (br.name, HV_VM2, (frame + b'\x00' * max(0, 60 - len(frame))).hex()))
    assert wait_until(lambda: drops(br, reg) - before == len(spoofed), 5), br.dump()
