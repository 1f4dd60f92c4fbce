"""The anycast gateway on a real OVS, no Mininet: hv1's compiled flows in a scratch bridge,
each packet asked of ofproto/trace.  Tenant acme routes between users (VLAN 10), servers
(VNI 5020) and db (VLAN 20); tenant zeta uses the very same subnets and addresses."""
from __future__ import annotations

import pytest

from apps import anycast_gateway as gw
from controller.pipeline import cookies
from controller.pipeline.flow import vid
from tests.ovs.pipeline_bridge import PipelineBridge
from tests.support import is_root
from tests.unit.builders import (APP1, APP2, DB1, HV_TUN, HV_UPLINK, HV_VM2, HV_VM3, HV_VM5, WEB1, WEB2, ZWEB,
                                 example_fabric, routing_world as world, switch_flows)

pytestmark = pytest.mark.skipif(not is_root(), reason='needs root and the OVS daemons')

def ip(policy, tenant, workload):
    return str(policy.tenants[tenant].workloads[workload].nics[0].ip)


def gateway(policy, tenant, net):
    return str(policy.tenants[tenant].networks[net].gateway)


@pytest.fixture(scope='module')
def hv1():
    fabric, policy, inv, hv = world()
    reg = cookies.Registry()
    with PipelineBridge(ports=[HV_UPLINK, HV_VM2, HV_VM3, HV_VM5], tunnel=HV_TUN) as br:
        br.load(switch_flows(policy, inv, hv), registry=reg,
                meters=['meter=%d,pktps,band=type=drop,rate=%d' % (gw.METER, gw.METER_PPS)])
        yield br, reg, policy, fabric


def routed(br, src_port, src_mac, dst_ip, ttl=64, **more):
    """A routed IPv4 packet from a VM, with its own addresses (port security drops any other)."""
    return br.trace(src_port, eth_src=src_mac, eth_dst=GW_MAC, eth_type=0x0800,
                    ipv4_src=OWN_IP[src_mac], ipv4_dst=dst_ip, nw_ttl=ttl, **more)


OWN_IP = {b.nic.mac: str(b.nic.ip) for b in world()[1].nics.values()}


GW_MAC = example_fabric().gateway_mac


def test_the_gateway_answers_arp_on_the_vm_port_and_nothing_leaves(hv1):
    br, reg, policy, _ = hv1
    for net in ('users', 'db'):     # its own gateway; another network's gateway is not on this segment
        t = br.trace(HV_VM2, eth_src=WEB1, eth_dst='ff:ff:ff:ff:ff:ff', eth_type=0x0806, arp_op=1,
                     arp_spa=ip(policy, 'acme', 'web1'), arp_tpa=gateway(policy, 'acme', net), arp_sha=WEB1)
        if net == 'users':
            assert t.output_ports == [HV_VM2], t.text
            f = t.final_flow
            assert (f.get('arp_op'), f.get('arp_sha'), f.get('dl_src'), f.get('dl_dst')) == ('2', GW_MAC, GW_MAC, WEB1)
            assert f.get('arp_spa') == gateway(policy, 'acme', 'users')
            assert reg.decode(next(s for s in t.steps if s.name == 'arp_rsp').cookie).app == gw.APP
        else:
            assert HV_VM2 not in t.output_ports and GW_MAC not in t.datapath_actions


def test_arp_for_a_known_vm_is_answered_here_and_an_unknown_one_is_flooded(hv1):
    br, _, policy, _ = hv1
    t = br.trace(HV_VM2, eth_src=WEB1, eth_dst='ff:ff:ff:ff:ff:ff', eth_type=0x0806, arp_op=1,
                 arp_spa=ip(policy, 'acme', 'web1'), arp_tpa=ip(policy, 'acme', 'web2'), arp_sha=WEB1)
    assert t.output_ports == [HV_VM2] and t.final_flow.get('arp_sha') == WEB2, t.text
    t = br.trace(HV_VM2, eth_src=WEB1, eth_dst='ff:ff:ff:ff:ff:ff', eth_type=0x0806, arp_op=1,
                 arp_spa=ip(policy, 'acme', 'web1'), arp_tpa='10.4.0.99', arp_sha=WEB1)
    assert HV_UPLINK in t.output_ports and t.final_flow.get('arp_op') != '2'
    # its own address (gratuitous ARP) is not answered either
    t = br.trace(HV_VM2, eth_src=WEB1, eth_dst='ff:ff:ff:ff:ff:ff', eth_type=0x0806, arp_op=1,
                 arp_spa=ip(policy, 'acme', 'web1'), arp_tpa=ip(policy, 'acme', 'web1'), arp_sha=WEB1)
    assert HV_VM2 not in t.output_ports
    # from the uplink, ARP is never answered by this hypervisor
    t = br.trace(HV_UPLINK, vlan_vid=vid(10), eth_src=WEB2, eth_dst='ff:ff:ff:ff:ff:ff', eth_type=0x0806, arp_op=1,
                 arp_tpa=gateway(policy, 'acme', 'users'), arp_sha=WEB2)
    assert HV_UPLINK not in t.output_ports and t.final_flow.get('arp_op') != '2'


def test_routed_into_a_vlan_network_of_another_hypervisor_over_the_uplink(hv1):
    br, _, policy, _ = hv1
    t = routed(br, HV_VM2, WEB1, ip(policy, 'acme', 'db1'))
    assert t.output_ports == [HV_UPLINK], t.text
    assert 'push_vlan(vid=20' in t.datapath_actions
    f = t.final_flow
    assert (f.get('dl_src'), f.get('dl_dst'), f.get('nw_ttl')) == (GW_MAC, DB1, '63')


def test_routed_into_an_overlay_network_through_the_tunnel_and_locally(hv1):
    br, _, policy, fabric = hv1
    t = routed(br, HV_VM2, WEB1, ip(policy, 'acme', 'app2'))
    out = next(s for s in t.steps if s.name == 'output')
    assert 'set_field:%#x->tun_id' % 5020 in out.actions and 'output:%d' % HV_TUN in out.actions, t.text
    assert t.final_flow.get('tun_dst') == str(fabric.hypervisors['hv3'].vtep)
    assert (t.final_flow.get('dl_dst'), t.final_flow.get('nw_ttl')) == (APP2, '63')
    t = routed(br, HV_VM2, WEB1, ip(policy, 'acme', 'app1'))          # on this hypervisor
    assert t.output_ports == [HV_VM3] and t.final_flow.get('dl_dst') == APP1, t.text
    t = routed(br, HV_VM3, APP1, ip(policy, 'acme', 'web2'))          # overlay -> VLAN, other rack
    assert t.output_ports == [HV_UPLINK] and 'push_vlan(vid=10' in t.datapath_actions, t.text


def test_an_address_without_a_workload_and_other_tenants_are_dropped_in_l3(hv1):
    br, reg, policy, _ = hv1
    for dst in ('10.4.2.99', '192.0.2.1'):            # acme's db subnet, no workload; outside acme
        t = routed(br, HV_VM2, WEB1, dst)
        assert t.dropped, t.text
        l3 = next(s for s in t.steps if s.name == 'l3')
        assert reg.decode(l3.cookie).app == gw.APP and reg.decode(l3.cookie).kind == gw.K_DROP
    # zeta's web VM uses acme web1's address: its routed frames stay in zeta (no zeta VM elsewhere)
    t = routed(br, HV_VM5, ZWEB, ip(policy, 'acme', 'app1'))
    assert t.dropped and HV_VM3 not in t.output_ports, t.text


def test_the_gateway_answers_ping_and_ttl_one_goes_to_the_controller_metered(hv1):
    br, _, policy, _ = hv1
    for net in ('users', 'db'):
        t = br.trace(HV_VM2, eth_src=WEB1, eth_dst=GW_MAC, eth_type=0x0800, ip_proto=1, icmpv4_type=8,
                     ipv4_src=ip(policy, 'acme', 'web1'), ipv4_dst=gateway(policy, 'acme', net), nw_ttl=1)
        f = t.final_flow
        assert t.output_ports == [HV_VM2], t.text
        assert (f.get('icmp_type'), f.get('nw_src'), f.get('dl_dst')) == ('0', gateway(policy, 'acme', net), WEB1)
    t = routed(br, HV_VM2, WEB1, ip(policy, 'acme', 'db1'), ttl=1)
    l3 = next(s for s in t.steps if s.name == 'l3')
    assert any('meter:%d' % gw.METER in a for a in l3.actions) and 'CONTROLLER' in ' '.join(l3.actions).upper()
    assert HV_UPLINK not in t.output_ports


def test_routed_frames_arriving_from_the_uplink_are_delivered_and_the_gateway_mac_is_never_learned(hv1):
    br, reg, policy, _ = hv1
    t = br.trace(HV_UPLINK, vlan_vid=vid(10), eth_src=GW_MAC, eth_dst=WEB1, eth_type=0x0800,
                 ipv4_dst=ip(policy, 'acme', 'web1'), nw_ttl=63)
    assert t.output_ports == [HV_VM2], t.text
    assert 'CONTROLLER' not in ' '.join(a for s in t.steps for a in s.actions).upper()
    # a VM sending from the gateway MAC is dropped: by port security (not its own MAC) on a
    # bound port, before the learn stage that drops it from anywhere else
    t = br.trace(HV_VM2, eth_src=GW_MAC, eth_dst=WEB2, eth_type=0x0800, ipv4_src=OWN_IP[WEB1])
    assert t.dropped and [s.name for s in t.steps] == ['port_sec'], t.text
    assert cookies.app_of(reg.decode(t.steps[0].cookie)) == 'port_security'


def test_time_exceeded_comes_from_the_gateway_of_the_senders_network():
    fabric, policy, _, _ = world()
    users = policy.tenants['acme'].networks['users']
    import struct
    ip_hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 28, 1, 0, 1, 17, 0, bytes([10, 4, 0, 10]), bytes([10, 4, 2, 14]))
    frame = bytes.fromhex(GW_MAC.replace(':', '')) + bytes.fromhex(WEB1.replace(':', '')) + \
        struct.pack('!HH', 0x8100, 10) + b'\x08\x00' + ip_hdr + b'\x00' * 8
    out = gw.time_exceeded(policy, frame)
    assert out[:6] == bytes.fromhex(WEB1.replace(':', '')) and out[6:12] == bytes.fromhex(GW_MAC.replace(':', ''))
    assert out[12:14] == b'\x08\x00' and out[14 + 12:14 + 16] == users.gateway.packed
    assert out[14 + 20] == 11 and out[14 + 28:14 + 48] == ip_hdr     # type 11, the offending header quoted
    assert gw._checksum(out[14:34]) == 0 and gw._checksum(out[34:]) == 0
    # never an answer to an ICMP error, nor to a frame of a VLAN nobody routes
    err = ip_hdr[:9] + b'\x01' + ip_hdr[10:]
    assert gw.time_exceeded(policy, frame[:18] + err + b'\x0b' + b'\x00' * 7) is None
    assert gw.time_exceeded(policy, frame[:14] + struct.pack('!H', 99) + frame[16:]) is None
