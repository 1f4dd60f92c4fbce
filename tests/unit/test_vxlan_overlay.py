"""Overlay networks as flows on a hypervisor's br-int: tunnels only toward VTEPs with
members, accepted only from them with the network's VNI, never learned from."""
from __future__ import annotations

from apps import learning_switch, vlan_portgroups
from apps import vxlan_overlay as ov
from controller.inventory.model import Binding, Inventory
from controller.pipeline import cookies, ids, registers as R
from controller.pipeline.flow import UNTAGGED, vid
from controller.policy.model import Policy
from tests.unit.builders import (HV_TUN, HV_UPLINK, HV_VM2, HV_VM3, add_hypervisor, assert_only_misses,
                                 assert_reaches, by_table, make_tenant, miss, switch_flows)

MAC1, MAC2, MAC3 = '02:00:32:00:00:01', '02:00:32:00:00:02', '02:00:32:00:00:03'


def setup(fabric):
    tenant = make_tenant('initech', {'apps': {'vni': 5020}, 'ops': {'vni': 5021}},
                         {'a1': [('apps', MAC1)], 'a2': [('apps', MAC2)], 'o3': [('ops', MAC3)]})
    policy = Policy(fabric).with_tenants([tenant])
    inv = Inventory()
    hv = {n: add_hypervisor(inv, fabric, n) for n in ('hv1', 'hv3', 'hv4')}
    inv.bind(hv['hv1'], {HV_VM2: Binding('vnet0', 'initech/a1/nic0', MAC1)})
    inv.bind(hv['hv3'], {HV_VM2: Binding('vnet1', 'initech/a2/nic0', MAC2)})
    inv.bind(hv['hv4'], {HV_VM3: Binding('vnet2', 'initech/o3/nic0', MAC3)})
    return policy, inv, hv


def flows_on(policy, inv, dpid):
    """This app's flows on one switch."""
    return {f for f in switch_flows(policy, inv, dpid) if cookies.app_of(f.cookie) == ov.APP}


def test_a_remote_member_is_reached_straight_through_the_tunnel_with_the_vni(fabric):
    policy, inv, hv = setup(fabric)
    local = policy.overlay_vlans[('initech', 'apps')]
    flows = switch_flows(policy, inv, hv['hv1'])
    l2 = {f.match_dict()['eth_dst']: f for f in by_table(flows, 'l2_lookup') if cookies.app_of(f.cookie) == ov.APP}
    for f in l2.values():
        assert f.match_dict()['vlan_vid'] == vid(local)
    # the remote member: its VTEP and the tunnel port; the tunnel's emission pops the local
    # VLAN and sets the network's VNI
    assert_reaches(flows, l2[MAC2], HV_TUN, local,
                   [('pop_vlan',), ('set_field', 'tunnel_id', 5020), ('output', HV_TUN)],
                   before=[('set_field', 'tun_ipv4_dst', '172.16.2.11')])
    # the local member: its VM port, untagged
    assert_reaches(flows, l2[MAC1], HV_VM2, local, [('pop_vlan',), ('output', HV_VM2)])
    assert MAC3 not in l2                                   # another VNI: not known here at all
    # the local VLAN never leaves through the uplink, tagged or not: the uplink does not carry
    # it, so nothing chooses the uplink for it, and it has no emission of its own there
    assert not vlan_portgroups.port_vlans(policy, inv, hv['hv1'])[HV_UPLINK].carries(local)
    assert not [f for f in by_table(flows, 'l2_lookup') if f.match_dict().get('vlan_vid') == vid(local)
                and ('set_field', R.OUT_PORT, HV_UPLINK) in f.actions]
    assert not [f for f in by_table(flows, 'flood') if f.match_dict().get('vlan_vid') == vid(local)
                and ('output', HV_UPLINK) in f.actions]
    assert not [f for f in by_table(flows, 'output') if f.match_dict().get(R.OUT_PORT) == HV_UPLINK
                and f.match_dict().get('vlan_vid') == vid(local)]


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
    local = policy.overlay_vlans[('initech', 'apps')]
    flows = switch_flows(policy, inv, hv['hv1'])
    rx = {f for f in by_table(flows, 'port_sec') if f.match_dict().get('in_port') == HV_TUN}
    assert {(f.match_dict()['tunnel_id'], f.match_dict()['tun_ipv4_src']) for f in rx} == {(5020, '172.16.2.11')}
    assert all(f.actions == (('push_vlan', local),) and f.goto == 'classify' for f in rx)
    # never learned from: every frame from the tunnel passes learn above any learning entry,
    # without a copy to the controller
    no_learn, = (f for f in by_table(flows, 'learn') if f.match_dict() == {'in_port': HV_TUN})
    assert no_learn.actions == () and no_learn.goto == 'arp_rsp'
    assert no_learn.priority > max(f.priority for f in by_table(flows, 'learn') if f is not no_learn)
    # the network's frames carry its context from classify on
    ctx, = (f for f in by_table(flows, 'classify') if f.match_dict() == {'vlan_vid': vid(local)})
    assert ctx.actions == tuple(learning_switch.context_actions(policy, 'initech', 'apps')) and ctx.goto == 'learn'


def test_a_hypervisor_without_members_gets_nothing_for_that_network(fabric):
    policy, inv, hv = setup(fabric)
    assert not [f for f in flows_on(policy, inv, hv['hv4']) if f.match_dict().get('tunnel_id') == 5020]
    assert ('initech', 'apps') not in {(f.cookie.tenant, f.cookie.owner) for f in flows_on(policy, inv, hv['hv4'])}
    assert [f for f in flows_on(policy, inv, hv['hv1']) if ('output', HV_TUN) in f.actions
            and f.table == 'flood']
    inv.unbind(hv['hv3'])
    # a2 gone: a1's network has no remote member, so nothing goes into the tunnel: no entry
    # chooses it, no flood replicates to it, nothing is accepted from it
    flows = switch_flows(policy, inv, hv['hv1'])
    assert not [f for f in flows if ('set_field', R.OUT_PORT, HV_TUN) in f.actions]
    assert not [f for f in by_table(flows, 'flood') if ('output', HV_TUN) in f.actions]
    assert not [f for f in flows if f.match_dict().get('in_port') == HV_TUN and f.table == 'port_sec']


def test_local_vlans_never_collide_with_fabric_vlans(fabric):
    policy, _, _ = setup(fabric)
    used = set(policy.vlans_in_use()) | {v for h in fabric.hypervisors.values() for v in h.trunk_vlans}
    assert set(policy.overlay_vlans.values()).isdisjoint(used)
    assert len(set(policy.overlay_vlans.values())) == 2


def test_local_vlans_are_allocated_from_4094_down_in_name_order_not_vni_order(fabric):
    # 'ops' sorts after 'apps' but has the lower VNI: names decide on a fresh store
    tenant = make_tenant('initech', {'ops': {'vni': 5001}, 'apps': {'vni': 5999}})
    policy = Policy(fabric).with_tenants([tenant])
    assert dict(policy.overlay_vlans) == {('initech', 'apps'): 4094, ('initech', 'ops'): 4093}


def test_another_tenants_overlay_never_moves_a_tenants_local_vlans(fabric):
    policy, inv, hv = setup(fabric)
    store = ids.IdStore()                                  # one controller's store, as it runs
    first = policy.with_ids(ids.bind(store, policy))
    # 'acme' sorts first: on a fresh store it would take 4094 and push initech's down
    bigger = policy.with_tenants([make_tenant('acme', {'net': {'vni': 6000}})] + list(policy.tenants.values()))
    assert bigger.overlay_vlans[('initech', 'apps')] != first.overlay_vlans[('initech', 'apps')]
    then = bigger.with_ids(ids.bind(store, bigger))
    assert {k: v for k, v in then.overlay_vlans.items() if k[0] == 'initech'} == dict(first.overlay_vlans)
    assert then.overlay_vlans[('acme', 'net')] not in first.overlay_vlans.values()
    # so initech's flows carry the same numbers: nothing of theirs is rewritten
    def initech(p):
        return {f for f in switch_flows(p, inv, hv['hv1']) if f.cookie.tenant == 'initech'}
    assert initech(first) and initech(first) == initech(then)


def test_the_tunnel_is_never_learned_from_even_before_any_overlay_member_is_here(fabric):
    policy, inv, hv = setup(fabric)
    inv.unbind(hv['hv1'])
    for flows in (switch_flows(policy, inv, hv['hv1']), switch_flows(Policy(fabric), inv, hv['hv1'])):
        no_learn, = (f for f in by_table(flows, 'learn') if f.match_dict() == {'in_port': HV_TUN})
        assert no_learn.priority == ov.P_NO_LEARN and no_learn.actions == () and no_learn.goto == 'arp_rsp'
        assert cookies.app_of(no_learn.cookie) == ov.APP and no_learn.cookie.tenant is None
        # ... and nothing is let in from it
        assert not [f for f in by_table(flows, 'port_sec') if f.match_dict().get('in_port') == HV_TUN]
    # a switch with no tunnel port has none
    inv.switches[hv['hv1']].ports.pop(HV_TUN)
    assert not [f for f in switch_flows(policy, inv, hv['hv1']) if f.match_dict().get('in_port') == HV_TUN]


def test_the_overlay_compiles_as_a_union_of_per_network_units(fabric):
    policy, inv, hv = setup(fabric)
    for d in hv.values():
        tun = ov.context(policy, inv, d)
        assert tun == HV_TUN
        keys = list(ov.units(policy, inv, d))
        parts = [ov.compile_switch(policy, inv, d, tun)] + [ov.compile_unit(policy, inv, d, k, tun) for k in keys]
        assert set().union(*parts) == ov.compile_flows(policy, inv, d)
    # one unit per network with a member on that hypervisor
    assert list(ov.units(policy, inv, hv['hv1'])) == [('initech', 'apps')]
    assert list(ov.units(policy, inv, hv['hv4'])) == [('initech', 'ops')]


def tunnel_admission(flows, src, vni):
    """The port_sec flow that takes frames from the tunnel with this source VTEP and VNI, or None."""
    out = [f for f in by_table(flows, 'port_sec')
           if f.match_dict() == {'in_port': HV_TUN, 'tunnel_id': vni, 'tun_ipv4_src': src}]
    assert len(out) <= 1
    return out[0] if out else None


def test_a_member_reaches_a_remote_member_through_every_stage_into_the_tunnel(fabric):
    policy, inv, hv = setup(fabric)
    local = policy.overlay_vlans[('initech', 'apps')]
    hv1 = switch_flows(policy, inv, hv['hv1'])
    # a1 (hv1 port 2) sends untagged: it gets its network's local VLAN ...
    admit, = (f for f in by_table(hv1, 'port_sec') if f.match_dict() == {'in_port': HV_VM2, 'vlan_vid': UNTAGGED})
    assert admit.actions == (('push_vlan', local),) and admit.goto == 'classify'
    # ... the network's context ...
    ctx, = (f for f in by_table(hv1, 'classify') if f.match_dict() == {'vlan_vid': vid(local)})
    assert ctx.goto == 'learn'
    # ... its known source goes on without a copy to the controller ...
    src, = (f for f in by_table(hv1, 'learn') if f.match_dict().get('eth_src') == MAC1)
    assert src.match_dict() == {'in_port': HV_VM2, 'vlan_vid': vid(local), 'eth_src': MAC1}
    assert src.actions == () and src.goto == 'arp_rsp'
    assert_only_misses(hv1, 'arp_rsp', 'acl_in', 'acl_out')
    assert not [f for f in by_table(hv1, 'l3') if f.priority] and miss(hv1, 'l3').goto == 'l2_lookup'
    # ... and a2 (on hv3) is reached through the tunnel, untagged, with the VNI and hv3's VTEP
    dst, = (f for f in by_table(hv1, 'l2_lookup') if f.match_dict() == {'vlan_vid': vid(local), 'eth_dst': MAC2})
    assert_reaches(hv1, dst, HV_TUN, local, [('pop_vlan',), ('set_field', 'tunnel_id', 5020), ('output', HV_TUN)],
                   before=[('set_field', 'tun_ipv4_dst', '172.16.2.11')])


def test_a_frame_from_the_tunnel_reaches_local_members_only_and_is_never_learned(fabric):
    policy, inv, hv = setup(fabric)
    local = policy.overlay_vlans[('initech', 'apps')]
    hv1 = switch_flows(policy, inv, hv['hv1'])
    # from hv3's VTEP with the VNI: into the local VLAN ...
    rx = tunnel_admission(hv1, '172.16.2.11', 5020)
    assert rx.actions == (('push_vlan', local),) and rx.goto == 'classify'
    # ... never learned, nor copied to the controller ...
    no_learn, = (f for f in by_table(hv1, 'learn') if f.match_dict() == {'in_port': HV_TUN})
    assert no_learn.actions == () and no_learn.goto == 'arp_rsp'
    assert no_learn.priority > max(f.priority for f in by_table(hv1, 'learn') if f is not no_learn)
    # ... to a1's port, untagged
    dst, = (f for f in by_table(hv1, 'l2_lookup') if f.match_dict() == {'vlan_vid': vid(local), 'eth_dst': MAC1})
    assert_reaches(hv1, dst, HV_VM2, local, [('pop_vlan',), ('output', HV_VM2)])
    # a broadcast from the tunnel: local members only (split horizon), never back into it;
    # it takes the in_port flood above the network's own
    assert not [f for f in by_table(hv1, 'l2_lookup') if f.match_dict().get('eth_dst') == 'ff:ff:ff:ff:ff:ff']
    back, = (f for f in by_table(hv1, 'flood') if f.match_dict() == {'in_port': HV_TUN, 'vlan_vid': vid(local)})
    mine, = (f for f in by_table(hv1, 'flood') if f.match_dict() == {'vlan_vid': vid(local)})
    assert back.priority > mine.priority
    assert back.actions == (('pop_vlan',), ('output', HV_VM2))


def test_a_members_broadcast_goes_into_the_tunnel_once_per_member_vtep_never_tagged(fabric):
    policy, inv, hv = setup(fabric)
    local = policy.overlay_vlans[('initech', 'apps')]
    hv1 = switch_flows(policy, inv, hv['hv1'])
    # a broadcast from a1 has no entry: the flood out-port, handed to the network's flood
    assert not [f for f in by_table(hv1, 'l2_lookup') if f.match_dict().get('eth_dst') == 'ff:ff:ff:ff:ff:ff']
    assert miss(hv1, 'l2_lookup').actions == (('set_field', R.OUT_PORT, R.FLOOD),)
    mine, = (f for f in by_table(hv1, 'flood') if f.match_dict() == {'vlan_vid': vid(local)})
    # the tag is popped before anything leaves; local members, then the VNI and each member
    # VTEP (only hv3's) through the tunnel; a1's own port is skipped by OVS
    assert mine.actions == (('pop_vlan',), ('output', HV_VM2), ('set_field', 'tunnel_id', 5020),
                            ('set_field', 'tun_ipv4_dst', '172.16.2.11'), ('output', HV_TUN))
    assert [a for a in mine.actions if a[0] == 'output'] == [('output', HV_VM2), ('output', HV_TUN)]


def test_the_tunnel_drops_other_vteps_and_other_vnis_at_admission(fabric):
    policy, inv, hv = setup(fabric)
    hv1 = switch_flows(policy, inv, hv['hv1'])
    for src, vni in (('172.16.9.9', 5020),            # a VTEP with no member of the network
                     ('172.16.2.11', 5021)):          # a member VTEP, but a VNI hv1 does not host
        assert tunnel_admission(hv1, src, vni) is None, (src, vni)
    # the tunnel's only admissions are of member VTEPs with the VNI; the rest is port_sec's drop
    assert [f for f in by_table(hv1, 'port_sec') if f.match_dict().get('in_port') == HV_TUN] == \
        [tunnel_admission(hv1, '172.16.2.11', 5020)]
    anyport = [f for f in by_table(hv1, 'port_sec') if f.priority and 'in_port' not in f.match_dict()]
    assert all(f.match_dict()['eth_type'] == 0x88cc and f.goto is None for f in anyport)    # LLDP only
    assert miss(hv1, 'port_sec').actions == () and miss(hv1, 'port_sec').goto is None
