"""Pipeline v2 on a real OVS, no Mininet: a hypervisor's and a leaf's compiled flows loaded
into a scratch bridge, each packet asked of ofproto/trace.  Real OVS is the oracle: what
must reach and what must not, stage by stage, with every step's cookie mapped back to the
app and YAML that made it."""
from __future__ import annotations

import pytest

from apps.underlay_routing import ROUTER_MAC
from controller.inventory.model import Binding
from controller.pipeline import cookies
from controller.pipeline.flow import vid
from controller.policy.model import Policy
from tests.ovs.pipeline_bridge import PipelineBridge
from tests.support import is_root
from tests.unit.builders import (HV_TUN, HV_UPLINK, HV_VM2, HV_VM3, add_hypervisor, cabled_mesh, example_fabric,
                                 hypervisor_seen, make_tenant, switch_flows)

pytestmark = pytest.mark.skipif(not is_root(), reason='needs root and the OVS daemons')

WEB1, WEB2, APP1, APP2, DB9 = ('02:00:0a:00:00:%02x' % i for i in (1, 2, 3, 4, 9))
# a VM's frames carry its own addresses (apps/port_security.py drops anything else)
OWN_IP = {WEB1: '10.4.0.10', WEB2: '10.4.0.11', APP1: '10.4.1.12', APP2: '10.4.1.13'}
INGRESS = ['port_sec', 'classify', 'learn', 'arp_rsp', 'acl_in', 'l3', 'l2_lookup', 'acl_out', 'output']


def world():
    fabric = example_fabric()
    acme = make_tenant('acme', {'users': 10, 'servers': {'vni': 5020}},
                       {'web1': [('users', WEB1)], 'web2': [('users', WEB2)],
                        'app1': [('servers', APP1)], 'app2': [('servers', APP2)]})
    globex = make_tenant('globex', {'data': 40}, {'db9': [('data', DB9)]})
    policy = Policy(fabric).with_tenants([acme, globex])
    inv, _ = cabled_mesh(fabric)
    hv1, hv3 = add_hypervisor(inv, fabric, 'hv1'), add_hypervisor(inv, fabric, 'hv3')
    inv.vtep_macs[hv1], inv.vtep_macs[hv3] = '02:dd:00:00:00:01', '02:dd:00:00:00:03'
    inv.bind(hv1, {HV_VM2: Binding('vnet0', 'acme/web1/nic0', WEB1), HV_VM3: Binding('vnet1', 'acme/app1/nic0', APP1)})
    inv.bind(hv3, {HV_VM2: Binding('vnet0', 'acme/web2/nic0', WEB2), HV_VM3: Binding('vnet1', 'acme/app2/nic0', APP2)})
    leaf1 = fabric.switches['leaf1'].dpid
    hypervisor_seen(fabric, inv, leaf1, 9, hv1)
    hypervisor_seen(fabric, inv, fabric.switches['leaf2'].dpid, 9, hv3)
    return fabric, policy, inv, hv1, leaf1


@pytest.fixture(scope='module')
def hv1():
    fabric, policy, inv, hv, _ = world()
    reg = cookies.Registry()
    with PipelineBridge(ports=[HV_UPLINK, HV_VM2, HV_VM3], tunnel=HV_TUN) as br:
        br.load(switch_flows(policy, inv, hv), registry=reg)
        assert OWN_IP == {b.nic.mac: str(b.nic.ip) for b in policy.nics.values() if b.tenant.name == 'acme'}
        yield br, reg, policy, fabric


def names(trace):
    return [s.name for s in trace.steps]


def test_a_vm_reaches_a_vm_of_its_port_group_on_another_hypervisor_through_every_stage(hv1):
    br, reg, policy, _ = hv1
    t = br.trace(HV_VM2, eth_src=WEB1, eth_dst=WEB2, eth_type=0x0800, ipv4_src=OWN_IP[WEB1])
    assert names(t) == INGRESS
    assert t.output_ports == [HV_UPLINK] and 'push_vlan(vid=10' in t.datapath_actions
    classify = next(s for s in t.steps if s.name == 'classify')
    assert any('%s' % policy.ids.tenant['acme'] in a and 'REG12' in a.upper() for a in classify.actions), classify
    # every step's cookie leads back to its app (and the nic's to its tenant)
    l2 = next(s for s in t.steps if s.name == 'l2_lookup')
    owner = reg.decode(l2.cookie)
    assert (owner.app, owner.tenant, owner.owner) == ('vlan_portgroups', 'acme', 'web2/nic0')
    assert cookies.app_of(reg.decode(next(s for s in t.steps if s.name == 'output').cookie)) == 'learning_switch'


def test_an_overlay_vm_reaches_its_peer_through_the_tunnel_with_vni_and_vtep(hv1):
    br, _, _, fabric = hv1
    t = br.trace(HV_VM3, eth_src=APP1, eth_dst=APP2, eth_type=0x0800, ipv4_src=OWN_IP[APP1])
    assert names(t)[-3:] == ['l2_lookup', 'acl_out', 'output']
    final = t.final_flow
    assert final.get('tun_dst') == str(fabric.hypervisors['hv3'].vtep)
    out = next(s for s in t.steps if s.name == 'output')
    assert 'set_field:%#x->tun_id' % 5020 in out.actions and 'output:%d' % HV_TUN in out.actions, out
    assert not t.output_ports        # (no route to the VTEP on this machine: the datapath stops there)


def test_frames_never_cross_from_a_port_group_into_an_overlay_or_another_tenant(hv1):
    br, _, _, _ = hv1
    for dst in (APP1, APP2, DB9):           # known elsewhere, not on VLAN 10: floods within VLAN 10 only
        t = br.trace(HV_VM2, eth_src=WEB1, eth_dst=dst, eth_type=0x0800, ipv4_src=OWN_IP[WEB1])
        assert HV_VM3 not in t.output_ports and HV_TUN not in t.output_ports, (dst, t.text)
    t = br.trace(HV_VM3, eth_src=APP1, eth_dst=WEB2, eth_type=0x0800, ipv4_src=OWN_IP[APP1])
    assert HV_UPLINK not in t.output_ports and HV_VM2 not in t.output_ports


def test_a_tagged_frame_from_a_vm_and_a_pruned_vlan_from_the_uplink_are_dropped_at_admission(hv1):
    br, _, _, _ = hv1
    for port, vlan in ((HV_VM2, 10), (HV_UPLINK, 40)):     # hv1 has no VM on VLAN 40: pruned
        t = br.trace(port, eth_src=WEB2, eth_dst=WEB1, vlan_vid=vid(vlan), eth_type=0x0800)
        assert t.dropped and names(t) == ['port_sec'], t.text
    t = br.trace(HV_UPLINK, eth_src=WEB2, eth_dst=WEB1, vlan_vid=vid(10), eth_type=0x0800)
    assert t.output_ports == [HV_VM2] and 'pop_vlan' in t.datapath_actions


def test_the_tunnel_admits_only_member_vteps_with_their_vni_and_never_learns(hv1):
    br, _, _, fabric = hv1
    hv3 = str(fabric.hypervisors['hv3'].vtep)
    ok = br.trace(HV_TUN, tunnel_id=5020, tun_ipv4_src=hv3, eth_src=APP2, eth_dst=APP1, eth_type=0x0800)
    assert ok.output_ports == [HV_VM3]
    learn = next(s for s in ok.steps if s.name == 'learn')
    assert 'CONTROLLER' not in ' '.join(learn.actions).upper()
    for vni, src in ((5020, '172.16.2.99'), (5021, hv3)):
        t = br.trace(HV_TUN, tunnel_id=vni, tun_ipv4_src=src, eth_src=APP2, eth_dst=APP1, eth_type=0x0800)
        assert t.dropped and names(t) == ['port_sec'], (vni, src)


def test_a_broadcast_floods_its_port_group_only(hv1):
    br, _, _, _ = hv1
    t = br.trace(HV_VM2, eth_src=WEB1, eth_dst='ff:ff:ff:ff:ff:ff', eth_type=0x0806, arp_op=1,
                 arp_sha=WEB1, arp_spa=OWN_IP[WEB1], arp_tpa='10.4.0.99')
    assert names(t)[-2:] == ['output', 'flood']
    assert t.output_ports == [HV_UPLINK]
    o = br.trace(HV_VM3, eth_src=APP1, eth_dst='ff:ff:ff:ff:ff:ff', eth_type=0x0806, arp_op=1,
                 arp_sha=APP1, arp_spa=OWN_IP[APP1], arp_tpa='10.4.1.99')
    flood = next(s for s in o.steps if s.name == 'flood')
    # replicated to the one member VTEP (this machine has no route to it, so the datapath
    # part of the trace stops there: read the OpenFlow actions) and nowhere else
    assert 'output:%d' % HV_TUN in flood.actions and 'set_field:172.16.2.11->tun_dst' in flood.actions, flood
    assert not {'output:%d' % HV_UPLINK, 'output:%d' % HV_VM2} & set(flood.actions)


def test_the_leaf_routes_only_frames_admitted_as_routed():
    fabric, policy, inv, hv, leaf = world()
    ports = sorted(inv.switches[leaf].ports)
    with PipelineBridge(ports=ports) as br:
        br.load(switch_flows(policy, inv, leaf), registry=cookies.Registry())
        hv_port = 9
        vtep = str(fabric.hypervisors['hv1'].vtep)
        other = str(fabric.hypervisors['hv3'].vtep)
        # from a fabric cable, untagged, to the router MAC: routed to hv1, TTL down by one
        t = br.trace(1, eth_src='02:00:00:00:00:77', eth_dst=ROUTER_MAC, eth_type=0x0800, ipv4_dst=vtep, nw_ttl=64)
        assert t.output_ports == [hv_port] and t.final_flow.get('nw_ttl') == '63'
        assert t.final_flow.get('dl_dst') == '02:dd:00:00:00:01'
        assert [s.name for s in t.steps][:2] == ['port_sec', 'l3']
        # from hv1 toward the other rack: over one of the spine cables
        t = br.trace(hv_port, eth_src='02:dd:00:00:00:01', eth_dst=ROUTER_MAC, eth_type=0x0800, ipv4_dst=other,
                     nw_ttl=64)
        assert len(t.output_ports) == 1 and t.output_ports[0] in (1, 2)
        # an edge host sending to the router MAC is bridged on the native VLAN, never routed
        edge = max(p for p in ports if p != hv_port)
        t = br.trace(edge, eth_src='02:00:00:00:00:88', eth_dst=ROUTER_MAC, eth_type=0x0800, ipv4_dst=vtep,
                     nw_ttl=64)
        l3 = next(s for s in t.steps if s.name == 'l3')
        assert l3.priority == 0, l3                       # the miss: on to bridging
        assert 'dec_ttl' not in ' '.join(a for s in t.steps for a in s.actions)
        assert t.final_flow.get('nw_ttl') in (None, '64')
