"""The routed underlay as flows: each leaf is its rack's gateway, racks reach each other over
the spines with ECMP, and a VTEP is delivered to its hypervisor's port with its MAC."""
from __future__ import annotations

from apps import topology, underlay_routing as ur
from controller.pipeline import tables
from controller.pipeline.flow import IN_PORT, UNTAGGED
from controller.policy.model import Policy
from tests.unit.builders import add_hypervisor, by_table, cabled_mesh, hypervisor_seen

VTEP_MAC = '0e:00:00:00:00:01'


def lab(fabric):
    inv, ends = cabled_mesh(fabric, edge_ports=0)
    leaf1 = fabric.switches['leaf1'].dpid
    hv1 = add_hypervisor(inv, fabric, 'hv1')
    hypervisor_seen(fabric, inv, leaf1, 5, hv1)
    inv.vtep_macs[hv1] = VTEP_MAC
    return inv, ends, leaf1


def flows_of(fabric, inv, name):
    flows = ur.compile_flows(Policy(fabric), inv, fabric.switches[name].dpid)
    for f in flows:
        tables.check(f)
    return flows


def test_a_leaf_answers_arp_for_its_rack_gateway_on_hypervisor_ports_only(fabric):
    inv, _, _ = lab(fabric)
    arp = [f for f in by_table(flows_of(fabric, inv, 'leaf1'), 'classify') if f.match_dict().get('eth_type') == ur.ETH_ARP]
    assert len(arp) == 1
    m = arp[0].match_dict()
    assert (m['in_port'], m['vlan_vid'], m['arp_op'], m['arp_tpa']) == (5, UNTAGGED, 1, '172.16.1.1')
    assert ('set_field', 'arp_sha', ur.ROUTER_MAC) in arp[0].actions and arp[0].actions[-1] == ('output', IN_PORT)
    assert not [f for f in by_table(flows_of(fabric, inv, 'spine1'), 'classify') if f.match_dict().get('eth_type') == ur.ETH_ARP]


def test_a_vtep_of_the_rack_goes_straight_to_its_hypervisor_with_its_mac(fabric):
    inv, _, _ = lab(fabric)
    local = [f for f in by_table(flows_of(fabric, inv, 'leaf1'), 'l3') if f.priority == ur.P_LOCAL]
    assert [(f.match_dict()['ipv4_dst'], f.actions) for f in local] == [
        ('172.16.1.11', (('set_field', 'eth_src', ur.ROUTER_MAC), ('set_field', 'eth_dst', VTEP_MAC), ('dec_ttl',),
                         ('output', 5)))]
    del inv.vtep_macs[fabric.hypervisors['hv1'].dpid]          # MAC not known yet: no guess
    assert not [f for f in by_table(flows_of(fabric, inv, 'leaf1'), 'l3') if f.priority == ur.P_LOCAL]


def test_another_rack_is_reached_over_both_spines_and_over_one_after_a_cut(fabric):
    inv, ends, leaf1 = lab(fabric)
    flows = flows_of(fabric, inv, 'leaf1')
    route = [f for f in by_table(flows, 'l3') if f.priority == ur.P_REMOTE]
    assert len(route) == 1 and route[0].match_dict()['ipv4_dst'] == ('172.16.2.0', '255.255.255.0')
    assert route[0].actions == (('dec_ttl',), ('multipath', 2, 'reg0')) and route[0].goto == 'ecmp'
    to_spines = sorted(ends[('leaf1', s)].port for s in ('spine1', 'spine2'))
    assert sorted(f.actions[0][1] for f in by_table(flows, 'ecmp')) == to_spines
    # spines route the rack straight to its leaf
    spine = [f for f in by_table(flows_of(fabric, inv, 'spine1'), 'l3') if f.match_dict()['ipv4_dst'][0] == '172.16.2.0']
    assert spine[0].actions == (('dec_ttl',), ('output', ends[('spine1', 'leaf2')].port))
    # cut leaf1-spine1: one way left, no hashing
    topology.port_down(inv, leaf1, ends[('leaf1', 'spine1')].port)
    inv.switches[leaf1].ports[ends[('leaf1', 'spine1')].port].up = False
    topology.classify_ports(fabric, inv, now=100)
    flows = flows_of(fabric, inv, 'leaf1')
    assert not by_table(flows, 'ecmp')
    route = [f for f in by_table(flows, 'l3') if f.priority == ur.P_REMOTE]
    assert route[0].actions == (('dec_ttl',), ('output', ends[('leaf1', 'spine2')].port))


def test_routed_frames_are_admitted_untagged_to_the_router_mac_from_cables_and_hypervisors(fabric):
    inv, ends, _ = lab(fabric)
    admit = {f.match_dict()['in_port'] for f in by_table(flows_of(fabric, inv, 'leaf1'), 'classify')
             if f.match_dict().get('eth_dst') == ur.ROUTER_MAC}
    assert admit == {ends[('leaf1', 'spine1')].port, ends[('leaf1', 'spine2')].port, 5}


def test_hypervisors_get_no_underlay_flows(fabric):
    inv, _, _ = lab(fabric)
    assert ur.compile_flows(Policy(fabric), inv, fabric.hypervisors['hv1'].dpid) == set()
