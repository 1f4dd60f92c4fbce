"""Overlay networks as flows on a hypervisor's br-int: tunnels only toward VTEPs with
members, accepted only from them with the network's VNI, never learned from."""
from __future__ import annotations

from apps import vxlan_overlay as ov
from controller.inventory.model import Binding, Inventory
from controller.pipeline import tables
from controller.policy.model import Policy
from tests.unit.builders import HV_TUN, HV_VM2, HV_VM3, add_hypervisor, by_table, make_tenant

MAC1, MAC2, MAC3 = '02:00:32:00:00:01', '02:00:32:00:00:02', '02:00:32:00:00:03'


def setup(fabric):
    tenant = make_tenant('initech', {'apps': {'vni': 5020}, 'ops': {'vni': 5021}},
                         {'a1': [('apps', MAC1)], 'a2': [('apps', MAC2)], 'o3': [('ops', MAC3)]})
    policy = Policy(fabric).with_tenants([tenant])
    inv = Inventory()
    hv = {n: add_hypervisor(inv, fabric, n) for n in ('hv1', 'hv3', 'hv4')}
    inv.bindings[hv['hv1']] = {HV_VM2: Binding('vnet0', 'initech/a1/nic0', MAC1)}
    inv.bindings[hv['hv3']] = {HV_VM2: Binding('vnet1', 'initech/a2/nic0', MAC2)}
    inv.bindings[hv['hv4']] = {HV_VM3: Binding('vnet2', 'initech/o3/nic0', MAC3)}
    return policy, inv, hv


def flows_on(policy, inv, dpid):
    flows = ov.compile_flows(policy, inv, dpid)
    for f in flows:
        tables.check(f)
    return flows


def test_a_remote_member_is_reached_straight_through_the_tunnel_with_the_vni(fabric):
    policy, inv, hv = setup(fabric)
    l2 = {f.match_dict()['eth_dst']: f.actions for f in by_table(flows_on(policy, inv, hv['hv1']), 'l2')}
    assert l2[MAC2] == (('pop_vlan',), ('set_field', 'tunnel_id', 5020), ('set_field', 'tun_ipv4_dst', '172.16.2.11'),
                        ('output', HV_TUN))
    assert l2[MAC1] == (('pop_vlan',), ('output', HV_VM2))
    assert MAC3 not in l2                                   # another VNI: not known here at all


def test_broadcasts_are_replicated_only_to_vteps_with_members(fabric):
    policy, inv, hv = setup(fabric)
    local = policy.overlay_vlans[('initech', 'apps')]
    flood = [f for f in by_table(flows_on(policy, inv, hv['hv1']), 'flood') if 'in_port' not in f.match_dict()]
    assert [f.actions for f in flood] == [(('pop_vlan',), ('output', HV_VM2), ('set_field', 'tunnel_id', 5020),
                                           ('set_field', 'tun_ipv4_dst', '172.16.2.11'), ('output', HV_TUN))]
    assert flood[0].match_dict()['vlan_vid'] & 0xfff == local
    # from the tunnel: local ports only (split horizon)
    back = [f for f in by_table(flows_on(policy, inv, hv['hv1']), 'flood') if 'in_port' in f.match_dict()]
    assert [f.actions for f in back] == [(('pop_vlan',), ('output', HV_VM2))]


def test_the_tunnel_is_accepted_only_from_member_vteps_with_the_vni_and_never_learned_from(fabric):
    policy, inv, hv = setup(fabric)
    rx = by_table(flows_on(policy, inv, hv['hv1']), 'classify')
    assert {(f.match_dict()['tunnel_id'], f.match_dict()['tun_ipv4_src']) for f in rx} == {(5020, '172.16.2.11')}
    assert all(f.goto == 'l2' for f in rx)                # skips the learn table


def test_a_hypervisor_without_members_gets_nothing_for_that_network(fabric):
    policy, inv, hv = setup(fabric)
    assert not [f for f in flows_on(policy, inv, hv['hv4']) if f.match_dict().get('tunnel_id') == 5020]
    del inv.bindings[hv['hv3']]
    # a2 gone: a1's network has no remote member, so no tunnel output at all
    assert not [f for f in flows_on(policy, inv, hv['hv1']) if ('output', HV_TUN) in f.actions]


def test_local_vlans_never_collide_with_fabric_vlans(fabric):
    policy, _, _ = setup(fabric)
    used = set(policy.vlans_in_use()) | {v for h in fabric.hypervisors.values() for v in h.trunk_vlans}
    assert set(policy.overlay_vlans.values()).isdisjoint(used)
    assert len(set(policy.overlay_vlans.values())) == 2
