"""The routed underlay as flows: each leaf is its rack's gateway, racks reach each other over
the spines with ECMP, and a VTEP is delivered to its hypervisor's port with its MAC."""
from __future__ import annotations

import pytest

from apps import topology, underlay_routing as ur
from controller.pipeline import registers as R, tables
from controller.pipeline.flow import IN_PORT, UNTAGGED, vid
from controller.policy.model import Policy
from tests.unit.builders import (add_hypervisor, assert_reaches, by_table, cabled_mesh, emission, hypervisor_seen,
                                 make_tenant, switch_flows, walk)

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
    arp = [f for f in by_table(flows_of(fabric, inv, 'leaf1'), 'port_sec') if f.match_dict().get('eth_type') == ur.ETH_ARP]
    assert len(arp) == 1
    m = arp[0].match_dict()
    assert (m['in_port'], m['vlan_vid'], m['arp_op'], m['arp_tpa']) == (5, UNTAGGED, 1, '172.16.1.1')
    assert ('set_field', 'arp_sha', ur.ROUTER_MAC) in arp[0].actions and arp[0].actions[-1] == ('output', IN_PORT)
    assert arp[0].goto is None                              # answered right there, nothing else
    assert not [f for f in by_table(flows_of(fabric, inv, 'spine1'), 'port_sec') if f.match_dict().get('eth_type') == ur.ETH_ARP]


def test_a_vtep_of_the_rack_goes_straight_to_its_hypervisor_with_its_mac(fabric):
    inv, _, _ = lab(fabric)
    flows = flows_of(fabric, inv, 'leaf1')
    local = [f for f in by_table(flows, 'l3') if f.priority == ur.P_LOCAL]
    assert [f.match_dict()['ipv4_dst'] for f in local] == ['172.16.1.11']
    # rewritten for the hypervisor and emitted untagged out of its port
    assert_reaches(flows, local[0], 5, None, [('output', 5)],
                   before=[('set_field', 'eth_src', ur.ROUTER_MAC), ('set_field', 'eth_dst', VTEP_MAC), ('dec_ttl',)])
    del inv.vtep_macs[fabric.hypervisors['hv1'].dpid]          # MAC not known yet: no guess
    assert not [f for f in by_table(flows_of(fabric, inv, 'leaf1'), 'l3') if f.priority == ur.P_LOCAL]


def test_another_rack_is_reached_over_both_spines_and_over_one_after_a_cut(fabric):
    inv, ends, leaf1 = lab(fabric)
    flows = flows_of(fabric, inv, 'leaf1')
    route = [f for f in by_table(flows, 'l3') if f.priority == ur.P_REMOTE]
    assert len(route) == 1 and route[0].match_dict()['ipv4_dst'] == ('172.16.2.0', '255.255.255.0')
    assert route[0].actions == (('dec_ttl',), ('multipath', 2, R.ECMP)) and route[0].goto == 'ecmp'
    to_spines = sorted(ends[('leaf1', s)].port for s in ('spine1', 'spine2'))
    ecmp = sorted(by_table(flows, 'ecmp'), key=lambda f: f.match_dict()[R.ECMP])
    assert [f.match_dict()[R.ECMP] for f in ecmp] == [0, 1]
    assert all(f.match_dict()['ipv4_dst'] == route[0].match_dict()['ipv4_dst'] for f in ecmp)
    assert sorted(f.actions[0][2] for f in ecmp) == to_spines
    for f in ecmp:                                       # each hop: picked, then emitted untagged
        port = f.actions[0][2]
        assert_reaches(flows, f, port, None, [('output', port)])
    # spines route the rack straight to its leaf
    spine_flows = flows_of(fabric, inv, 'spine1')
    spine = [f for f in by_table(spine_flows, 'l3') if f.match_dict().get('ipv4_dst', ('',))[0] == '172.16.2.0']
    to_leaf2 = ends[('spine1', 'leaf2')].port
    assert_reaches(spine_flows, spine[0], to_leaf2, None, [('output', to_leaf2)], before=[('dec_ttl',)])
    # cut leaf1-spine1: one way left, no hashing
    topology.port_down(inv, leaf1, ends[('leaf1', 'spine1')].port)
    inv.switches[leaf1].ports[ends[('leaf1', 'spine1')].port].up = False
    topology.classify_ports(fabric, inv, now=100)
    flows = flows_of(fabric, inv, 'leaf1')
    assert not by_table(flows, 'ecmp')
    route = [f for f in by_table(flows, 'l3') if f.priority == ur.P_REMOTE]
    to_spine2 = ends[('leaf1', 'spine2')].port
    assert_reaches(flows, route[0], to_spine2, None, [('output', to_spine2)], before=[('dec_ttl',)])
    assert emission(flows, ends[('leaf1', 'spine1')].port, None) is None      # the cut cable emits nothing


def test_routed_frames_are_admitted_untagged_to_the_router_mac_from_cables_and_hypervisors(fabric):
    inv, ends, _ = lab(fabric)
    flows = flows_of(fabric, inv, 'leaf1')
    admit = {f.match_dict()['in_port']: f for f in by_table(flows, 'port_sec')
             if f.match_dict().get('eth_dst') == ur.ROUTER_MAC}
    cables_and_hv = {ends[('leaf1', 'spine1')].port, ends[('leaf1', 'spine2')].port, 5}
    assert set(admit) == cables_and_hv
    assert all(f.match_dict()['vlan_vid'] == UNTAGGED and f.goto == 'l3' for f in admit.values())
    # and they leave the same way: untagged, out of those ports only
    assert {f.match_dict()[R.OUT_PORT] for f in by_table(flows, 'output')} == cables_and_hv
    assert all(f.match_dict()['vlan_vid'] == UNTAGGED and f.actions == (('output', f.match_dict()[R.OUT_PORT]),)
               for f in by_table(flows, 'output'))


def test_a_routed_frame_with_no_route_is_dropped_never_bridged(fabric):
    inv, ends, leaf1 = lab(fabric)
    flows = switch_flows(Policy(fabric), inv, leaf1)
    frame = {'in_port': ends[('leaf1', 'spine1')].port, 'eth_type': ur.ETH_IP, 'eth_dst': ur.ROUTER_MAC,
             'eth_src': '0e:00:00:00:00:99', 'ipv4_dst': '10.99.0.1'}
    out, path = walk(flows, frame)
    assert out == [] and path[-1].table == 'l3' and path[-1].actions == () and path[-1].goto is None


def test_a_vtep_is_reached_end_to_end_through_every_stage(fabric):
    inv, ends, leaf1 = lab(fabric)
    flows = switch_flows(Policy(fabric), inv, leaf1)
    frame = {'in_port': ends[('leaf1', 'spine2')].port, 'eth_type': ur.ETH_IP, 'eth_dst': ur.ROUTER_MAC,
             'eth_src': '0e:00:00:00:00:99', 'ipv4_dst': '172.16.1.11'}
    out, path = walk(flows, frame)
    assert [f.table for f in path] == ['port_sec', 'l3', 'acl_out', 'output']
    (port, sent), = out
    assert port == 5 and sent['vlan_vid'] == UNTAGGED
    assert (sent['eth_src'], sent['eth_dst'], sent['ttl']) == (ur.ROUTER_MAC, VTEP_MAC, 63)


BRIDGED = {     # a bridged IP frame (not to the router MAC) whose destination is an underlay address
    'to a VTEP of the rack': '172.16.1.11',
    'to another rack': '172.16.2.20',
}


# every bridged frame passes l3 now (acl_in -> l3 -> l2_lookup): the underlay's routes must
# take only frames sent to the router MAC
@pytest.mark.parametrize('case', sorted(BRIDGED))
def test_a_bridged_frame_to_an_underlay_address_is_bridged_not_routed(fabric, case):
    inv, ends, leaf1 = lab(fabric)
    policy = Policy(fabric).with_tenants([make_tenant('acme', {'users': 10})])
    flows = switch_flows(policy, inv, leaf1)
    for frame in ({'in_port': 5, 'vlan_vid': vid(10)},          # acme's VLAN, from hv1's trunk
                  {'in_port': 5, 'vlan_vid': UNTAGGED}):         # the native VLAN
        frame.update(eth_type=ur.ETH_IP, eth_src='02:00:00:00:00:01', eth_dst='ff:ff:ff:ff:ff:ff',
                     ipv4_dst=BRIDGED[case])
        out, path = walk(flows, frame)
        assert not [f for f in path if f.table in ('l3', 'ecmp') and f.priority], (case, frame, path)
        assert all(sent['eth_dst'] == 'ff:ff:ff:ff:ff:ff' and 'ttl' not in sent for _, sent in out), out


def test_hypervisors_get_no_underlay_flows(fabric):
    inv, _, _ = lab(fabric)
    assert ur.compile_flows(Policy(fabric), inv, fabric.hypervisors['hv1'].dpid) == set()


TO_ROUTER = {   # frames to the router MAC that did not enter as routed frames (port_sec admits
                # routed frames untagged from hypervisor and fabric ports only)
    'an edge host on the native VLAN': {'in_port': 3},
    'a tenant VLAN from the hypervisor trunk': {'in_port': 5, 'vlan_vid': vid(10)},
    'the native VLAN tagged from a fabric cable': {'in_port': 1, 'vlan_vid': vid(1)},
}


@pytest.mark.parametrize('dst', ['172.16.1.11', '172.16.2.20'])
@pytest.mark.parametrize('case', sorted(TO_ROUTER))
def test_only_frames_admitted_as_routed_are_routed(fabric, case, dst):
    inv, ends = cabled_mesh(fabric, edge_ports=1)              # leaf1: cables 1 and 2, edge port 3
    leaf1 = fabric.switches['leaf1'].dpid
    hv1 = add_hypervisor(inv, fabric, 'hv1')
    hypervisor_seen(fabric, inv, leaf1, 5, hv1)
    inv.vtep_macs[hv1] = VTEP_MAC
    assert inv.switches[leaf1].ports[3].role == 'edge'
    flows = switch_flows(Policy(fabric).with_tenants([make_tenant('acme', {'users': 10})]), inv, leaf1)
    frame = dict(TO_ROUTER[case], eth_type=ur.ETH_IP, eth_src='02:00:00:00:00:77', eth_dst=ur.ROUTER_MAC,
                 ipv4_dst=dst)
    out, path = walk(flows, frame)
    assert path[0].priority != ur.P_ROUTED                   # not admitted as routed ...
    assert not [f for f in path if f.table in ('l3', 'ecmp') and f.actions], path   # ... so never routed
    assert not [s for _, s in out if 'ttl' in s or s['eth_dst'] == VTEP_MAC], out
