"""The routed underlay as flows: each leaf is its rack's gateway, racks reach each other over
the spines with ECMP, and a VTEP is delivered to its hypervisor's port with its MAC."""
from __future__ import annotations

import ipaddress

import pytest

from apps import topology, underlay_routing as ur
from controller.pipeline import registers as R, tables
from controller.pipeline.flow import IN_PORT, UNTAGGED, vid
from controller.policy.model import Policy
from controller.inventory.model import FABRIC, PENDING, Binding
from tests.unit.builders import (HV_VM2, add_hypervisor, assert_only_misses, assert_reaches, by_table, cabled_mesh,
                                 emission, hypervisor_seen, make_tenant, miss, switch_flows)

VTEP_MAC = '0e:00:00:00:00:01'
MAC_WEB1 = '02:00:0a:0a:00:0b'


def lab(fabric):
    inv, ends = cabled_mesh(fabric, edge_ports=0)
    leaf1 = fabric.switches['leaf1'].dpid
    hv1 = add_hypervisor(inv, fabric, 'hv1')
    hypervisor_seen(fabric, inv, leaf1, 5, hv1)
    inv.vtep_macs[hv1] = VTEP_MAC
    return inv, ends, leaf1


def acme_on_hv1(fabric, inv):
    """acme's users network on VLAN 10, with a VM bound on hv1: hv1's trunk (leaf1 port 5)
    carries VLAN 10 tagged besides the native VLAN untagged."""
    inv.bind(fabric.hypervisors['hv1'].dpid, {HV_VM2: Binding('tap-web1', 'acme/web1/nic0', MAC_WEB1)})
    return Policy(fabric).with_tenants([make_tenant('acme', {'users': 10}, {'web1': [('users', MAC_WEB1)]})])


def routed_admission(flows, port):
    """The underlay's port_sec flow for a port: untagged IP to the router MAC, on to l3."""
    f, = (f for f in by_table(flows, 'port_sec') if f.priority == ur.P_ROUTED
          and f.match_dict().get('in_port') == port and f.match_dict().get('eth_type') == ur.ETH_IP)
    assert f.match_dict() == {'in_port': port, 'vlan_vid': UNTAGGED, 'eth_type': ur.ETH_IP, 'eth_dst': ur.ROUTER_MAC}
    assert f.actions == () and f.goto == 'l3'
    return f


def routes_to(flows, address):
    """The l3 flows (priority > 0) whose destination covers an address."""
    ip = ipaddress.IPv4Address(address)
    out = []
    for f in by_table(flows, 'l3'):
        dst = f.match_dict().get('ipv4_dst')
        if f.priority and dst is not None:
            net = ipaddress.IPv4Network(dst if isinstance(dst, str) else '%s/%s' % dst)
            if ip in net:
                out.append(f)
    return out


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


def test_a_cable_heard_one_way_only_carries_no_route_until_its_far_end_admits(fabric):
    """spine1 hears leaf2 over their cable before leaf2 hears spine1: leaf2 does not admit
    routed frames from it yet, so neither spine1 nor leaf1 (through spine1) routes rack 2 over it."""
    inv, ends, leaf1 = lab(fabric)
    spine_end, leaf_end = ends[('spine1', 'leaf2')], ends[('leaf2', 'spine1')]
    inv.switches[leaf_end.dpid].ports[leaf_end.port].role = PENDING        # rediscovering
    del inv.links[leaf_end]
    leaf2_flows = flows_of(fabric, inv, 'leaf2')
    assert not [f for f in by_table(leaf2_flows, 'port_sec') if f.match_dict().get('in_port') == leaf_end.port]
    assert not routes_to(flows_of(fabric, inv, 'spine1'), '172.16.2.11')
    route, = [f for f in by_table(flows_of(fabric, inv, 'leaf1'), 'l3') if f.priority == ur.P_REMOTE]
    to_spine2 = ends[('leaf1', 'spine2')].port
    assert route.actions == (('dec_ttl',), ('set_field', R.OUT_PORT, to_spine2))       # no hashing onto spine1
    inv.switches[leaf_end.dpid].ports[leaf_end.port].role = FABRIC          # heard both ways: used
    inv.links[leaf_end] = (spine_end, 0.0)
    assert routes_to(flows_of(fabric, inv, 'spine1'), '172.16.2.11')
    route, = [f for f in by_table(flows_of(fabric, inv, 'leaf1'), 'l3') if f.priority == ur.P_REMOTE]
    assert route.actions == (('dec_ttl',), ('multipath', 2, R.ECMP))


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
    routed_admission(flows, ends[('leaf1', 'spine1')].port)                 # admitted as routed, to l3 ...
    assert routes_to(flows, '10.99.0.1') == []                              # ... no route for it ...
    # ... so the no-route drop takes it, above the l3 miss (which would bridge it); it takes
    # exactly the frames admitted as routed
    unrouted, = (f for f in by_table(flows, 'l3') if f.priority == ur.P_UNROUTED)
    assert unrouted.match_dict() == {'eth_type': ur.ETH_IP, 'eth_dst': ur.ROUTER_MAC, 'vlan_vid': UNTAGGED}
    assert unrouted.actions == () and unrouted.goto is None
    assert unrouted.priority > miss(flows, 'l3').priority and miss(flows, 'l3').goto == 'l2_lookup'


def test_a_vtep_is_reached_through_every_stage_of_its_leaf(fabric):
    inv, ends, leaf1 = lab(fabric)
    flows = switch_flows(acme_on_hv1(fabric, inv), inv, leaf1)            # port 5 is a tagged trunk too
    # from spine2: admitted as routed, straight to l3 (no classify or learn for routed frames)
    routed_admission(flows, ends[('leaf1', 'spine2')].port)
    # the one route that covers the VTEP: its hypervisor, the frame rewritten for it with its
    # TTL decremented, emitted untagged out of the hypervisor port
    route, = routes_to(flows, '172.16.1.11')
    assert route.match_dict() == {'eth_type': ur.ETH_IP, 'eth_dst': ur.ROUTER_MAC, 'vlan_vid': UNTAGGED,
                                  'ipv4_dst': '172.16.1.11'}
    assert_reaches(flows, route, 5, None, [('output', 5)],
                   before=[('set_field', 'eth_src', ur.ROUTER_MAC), ('set_field', 'eth_dst', VTEP_MAC), ('dec_ttl',)])
    assert_only_misses(flows, 'acl_out')
    # the port's bridged trunk emission (every frame chosen for it) is below the routed one
    trunk, = (f for f in by_table(flows, 'output') if f.match_dict() == {R.OUT_PORT: 5})
    assert trunk.priority < ur.P_EMIT


BRIDGED = {     # a bridged IP frame (not to the router MAC) whose destination is an underlay address
    'to a VTEP of the rack': '172.16.1.11',
    'to another rack': '172.16.2.20',
}


# every bridged frame passes l3 now (acl_in -> l3 -> l2_lookup): the underlay's routes must
# take only frames sent to the router MAC
@pytest.mark.parametrize('case', sorted(BRIDGED))
def test_a_bridged_frame_to_an_underlay_address_is_bridged_not_routed(fabric, case):
    inv, ends, leaf1 = lab(fabric)
    flows = switch_flows(acme_on_hv1(fabric, inv), inv, leaf1)
    # a broadcast from hv1's trunk, on acme's VLAN (tagged) or the native VLAN (untagged, then
    # tagged 1): bridged -- the underlay's admission takes only frames to the router MAC
    assert [f.actions for f in by_table(flows, 'port_sec') if f.match_dict() == {'in_port': 5, 'vlan_vid': vid(10)}
            and f.goto == 'classify'] == [()]
    assert [f.actions for f in by_table(flows, 'port_sec') if f.match_dict() == {'in_port': 5, 'vlan_vid': UNTAGGED}
            and f.goto == 'classify'] == [(('push_vlan', 1),)]
    assert all(f.match_dict().get('eth_dst') == ur.ROUTER_MAC for f in by_table(flows, 'port_sec')
               if f.goto == 'l3')
    # even to an underlay address: every route to it (and the no-route drop) matches the
    # router MAC and untagged frames only (ECMP is reached from routes alone)
    assert routes_to(flows, BRIDGED[case])
    for f in by_table(flows, 'l3'):
        if f.priority:
            assert f.match_dict()['eth_dst'] == ur.ROUTER_MAC and f.match_dict()['vlan_vid'] == UNTAGGED, f
    # so it takes the l3 miss to l2_lookup (no entry for a broadcast) and floods within its
    # VLAN onto the fabric, nothing rewritten
    assert miss(flows, 'l3').actions == () and miss(flows, 'l3').goto == 'l2_lookup'
    assert not [f for f in by_table(flows, 'l2_lookup') if f.match_dict().get('eth_dst') == 'ff:ff:ff:ff:ff:ff']
    for v in (1, 10):
        flood, = (f for f in by_table(flows, 'flood') if f.match_dict() == {'vlan_vid': vid(v)})
        assert {a[0] for a in flood.actions} <= {'output', 'pop_vlan'}, flood
        assert {a[1] for a in flood.actions if a[0] == 'output'} - {5}, flood


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
    flows = switch_flows(acme_on_hv1(fabric, inv), inv, leaf1)
    port, tag = TO_ROUTER[case]['in_port'], TO_ROUTER[case].get('vlan_vid', UNTAGGED)
    # not admitted as routed: the underlay's admission is for untagged frames from cables and
    # hypervisor ports only ...
    routed = [f for f in by_table(flows, 'port_sec') if f.goto == 'l3' and f.match_dict()['in_port'] == port]
    assert all(f.match_dict()['vlan_vid'] == UNTAGGED for f in routed)
    assert tag != UNTAGGED or not routed
    # ... it is bridged in, with a VLAN tag, whatever its destination MAC ...
    bridged, = (f for f in by_table(flows, 'port_sec') if f.match_dict() == {'in_port': port, 'vlan_vid': tag})
    assert bridged.goto == 'classify'
    assert (tag == UNTAGGED) == (bridged.actions == (('push_vlan', 1),)) and (tag != UNTAGGED) == (bridged.actions == ())
    # ... so no route, however it covers the destination, takes it: routes are for untagged frames
    routes = routes_to(flows, dst)
    assert routes and all(f.match_dict()['vlan_vid'] == UNTAGGED for f in routes)
    assert all(f.match_dict()['vlan_vid'] == UNTAGGED for f in by_table(flows, 'l3') if f.priority)
    # and nothing else rewrites it for the VTEP
    assert not [f for f in flows if f.table not in ('l3', 'ecmp') and
                (('dec_ttl',) in f.actions or ('set_field', 'eth_dst', VTEP_MAC) in f.actions)]
