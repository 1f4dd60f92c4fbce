"""The learning switch: VLAN admission, flooding on the tree, MAC learning and ageing.

leaf2 of the example mesh: port 1 to spine1 (on the flood tree), port 2 to spine2 (fabric but
off the tree: spine2 hangs off leaf1), ports 3 and 4 edge, port 5 a hypervisor port (hv3's
br-int LLDP arrives there), port 9 pending (just plugged in).
hv1's br-int: port 1 `int-to-phy` uplink, ports 2 and 3 VMs (unbound), port 4 the VXLAN tunnel.
The example's native VLAN is 1 and every hypervisor trunk allows 10, 20 and 30.  The `policy`
fixture has two tenants: acme's port-group on VLAN 10 and globex's on VLAN 20, so the VLANs in
use are 1, 10 and 20 (30 is allowed on the trunks but nobody uses it).
"""
import pytest

from apps import learning_switch as ls
from controller.inventory.model import HYPERVISOR, PENDING, TUNNEL, UPLINK, VM, Inventory, Port
from controller.pipeline import cookies, tables
from controller.pipeline.flow import UNTAGGED, Flow, vid
from controller.pipeline.reconciler import diff
from controller.policy.fabric import parse_fabric
from controller.policy.model import Policy
from tests.unit.builders import (EXAMPLE_FABRIC, LEAF2, add_switch, by_table, cabled_mesh,
                                 example_fabric, hypervisor_seen, make_tenant)

TREE, OFF_TREE, EDGE3, EDGE4, HV5, NEW = 1, 2, 3, 4, 5, 9
UPLINK_P, VM2, VM3, TUN = 1, 2, 3, 4
MAC_A, MAC_B, MAC_C = '02:00:00:00:00:0a', '02:00:00:00:00:0b', '02:00:00:00:00:0c'


def two_tenants(fabric):
    return Policy(fabric).with_tenants([make_tenant('acme', {'users': 10}),
                                        make_tenant('globex', {'apps': 20})])


@pytest.fixture
def policy(fabric):
    return two_tenants(fabric)


def leaf_network(fabric):
    inv, _ = cabled_mesh(fabric)
    inv.switches[LEAF2].ports[NEW] = Port(NEW, 'leaf2-eth9', True, PENDING, since=0.0)
    hv3 = fabric.hypervisors['hv3'].dpid
    add_switch(inv, hv3, 'hv3', kind='hypervisor', ports={UPLINK_P: (UPLINK, 'int-to-phy')})
    hypervisor_seen(fabric, inv, LEAF2, HV5, hv3)
    assert inv.switches[LEAF2].ports[HV5].role == HYPERVISOR
    assert inv.switches[LEAF2].ports[NEW].role == PENDING
    return inv


def hv_network(fabric):
    inv = Inventory()
    dpid = fabric.hypervisors['hv1'].dpid
    add_switch(inv, dpid, 'hv1', kind='hypervisor', ports={
        UPLINK_P: (UPLINK, 'int-to-phy'), VM2: (VM, 'tap-web1'), VM3: (VM, 'tap-db1'),
        TUN: (TUNNEL, 'vxlan0')})
    return inv, dpid


def admitted(flows, port):
    """{vlan_vid match: actions} of the classify flows for one ingress port."""
    return {f.match_dict()['vlan_vid']: f.actions for f in by_table(flows, 'classify')
            if f.match_dict().get('in_port') == port and cookies.app_of(f.cookie) == 'learning_switch'}


def flood_actions(flows, vlan):
    out = [f.actions for f in by_table(flows, 'flood') if f.match_dict() == {'vlan_vid': vid(vlan)}]
    assert len(out) <= 1
    return out[0] if out else None


def output_ports(actions):
    return {a[1] for a in actions if a[0] == 'output'}


def learned(flows, mac):
    """The learn (source) and l2 (destination) flows for one MAC."""
    src = {f for f in by_table(flows, 'learn') if f.match_dict().get('eth_src') == mac}
    dst = {f for f in by_table(flows, 'l2') if f.match_dict().get('eth_dst') == mac}
    return src, dst


# ---- a physical leaf ---------------------------------------------------------------------------

def test_every_leaf_flow_passes_the_table_declarations(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    ls.learn(fabric, inv, LEAF2, TREE, 10, MAC_B)
    ls.learn(fabric, inv, LEAF2, HV5, 20, MAC_C)
    flows = ls.compile_flows(policy, inv, LEAF2)
    assert len(flows) > 10
    assert all(learned(flows, m) != (set(), set()) for m in (MAC_A, MAC_B, MAC_C))
    for f in flows:
        tables.check(f)
        assert cookies.app_of(f.cookie) == 'learning_switch'


def test_each_table_ends_in_a_miss_flow(fabric):
    flows = ls.compile_flows(Policy(fabric), leaf_network(fabric), LEAF2)
    misses = {f.table: f for f in flows if f.priority == 0}
    assert misses['classify'].actions == () and misses['classify'].goto is None       # drop
    assert misses['learn'].actions == (('output', 'controller'),) and misses['learn'].goto == 'l2'
    assert misses['l2'].actions == () and misses['l2'].goto == 'flood'
    assert misses['flood'].actions == () and misses['flood'].goto is None


def test_untagged_frames_on_an_edge_port_get_the_native_vlan(fabric, policy):
    flows = ls.compile_flows(policy, leaf_network(fabric), LEAF2)
    assert admitted(flows, EDGE3)[UNTAGGED] == (('push_vlan', 1),)
    f, = (f for f in by_table(flows, 'classify')
          if f.match_dict() == {'in_port': EDGE3, 'vlan_vid': UNTAGGED})
    assert f.goto == 'learn'


def test_an_edge_port_takes_only_untagged_frames_into_the_native_vlan(fabric, policy):
    # an unknown host is not a trunk: tenant VLANs in use are not admitted from it, tagged
    flows = ls.compile_flows(policy, leaf_network(fabric), LEAF2)
    assert admitted(flows, EDGE3) == {UNTAGGED: (('push_vlan', 1),)}
    assert admitted(flows, EDGE4) == {UNTAGGED: (('push_vlan', 1),)}


def test_a_fabric_port_on_the_tree_takes_every_vlan_in_use_tagged_and_nothing_untagged(fabric, policy):
    flows = ls.compile_flows(policy, leaf_network(fabric), LEAF2)
    assert admitted(flows, TREE) == {vid(1): (), vid(10): (), vid(20): ()}     # not 30: unused


def test_a_hypervisor_port_takes_its_trunk_vlans_in_use_tagged_and_the_native_untagged(fabric, policy):
    flows = ls.compile_flows(policy, leaf_network(fabric), LEAF2)
    assert admitted(flows, HV5) == {UNTAGGED: (('push_vlan', 1),), vid(10): (), vid(20): ()}


def test_with_no_tenants_only_the_native_vlan_is_carried(fabric):
    flows = ls.compile_flows(Policy(fabric), leaf_network(fabric), LEAF2)
    assert admitted(flows, TREE) == {vid(1): ()}
    assert admitted(flows, HV5) == {UNTAGGED: (('push_vlan', 1),)}
    assert admitted(flows, EDGE3) == {UNTAGGED: (('push_vlan', 1),)}
    assert {f.match_dict()['vlan_vid'] for f in by_table(flows, 'flood') if f.priority} == {vid(1)}


def test_pending_and_off_tree_ports_admit_nothing(fabric, policy):
    flows = ls.compile_flows(policy, leaf_network(fabric), LEAF2)
    assert admitted(flows, NEW) == {}
    assert admitted(flows, OFF_TREE) == {}


def test_floods_go_to_the_ports_that_carry_the_vlan_only(fabric, policy):
    flows = ls.compile_flows(policy, leaf_network(fabric), LEAF2)
    # native VLAN: tagged onto the tree, untagged out of the edge and hypervisor ports
    assert flood_actions(flows, 1) == (('output', TREE), ('pop_vlan',), ('output', EDGE3),
                                       ('output', EDGE4), ('output', HV5))
    # tenant VLANs: tagged onto the tree and the hypervisor trunk, never to unknown hosts
    for v in (10, 20):
        assert flood_actions(flows, v) == (('output', TREE), ('output', HV5))
    for f in by_table(flows, 'flood'):
        assert not output_ports(f.actions) & {NEW, OFF_TREE}, f
    assert flood_actions(flows, 30) is None                  # allowed on trunks, but not in use
    assert flood_actions(flows, 99) is None                  # VLANs the fabric does not carry


def test_a_pending_port_joins_the_floods_once_it_is_an_edge_port(fabric, policy):
    inv = leaf_network(fabric)
    inv.switches[LEAF2].ports[NEW].role = 'edge'
    flows = ls.compile_flows(policy, inv, LEAF2)
    assert NEW in output_ports(flood_actions(flows, 1))
    assert NEW not in output_ports(flood_actions(flows, 10))
    assert UNTAGGED in admitted(flows, NEW)


def test_a_switch_we_do_not_know_gets_no_flows(fabric, policy):
    assert ls.compile_flows(policy, Inventory(), LEAF2) == set()


def tenant_of(cookie):
    return (cookie & cookies.TENANT_MASK) >> 24


def test_per_vlan_flows_carry_the_tenant_that_owns_the_vlan(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    ls.learn(fabric, inv, LEAF2, HV5, 10, MAC_B)
    ls.learn(fabric, inv, LEAF2, TREE, 20, MAC_C)
    flows = ls.compile_flows(policy, inv, LEAF2)
    acme, globex = cookies.tenant_id('acme'), cookies.tenant_id('globex')
    assert acme != globex and acme and globex

    def vlan_of(f):
        return f.match_dict().get('vlan_vid', UNTAGGED) & 0xfff
    by_vlan = {}
    for f in flows:
        if f.priority == 0:
            assert tenant_of(f.cookie) == 0, f                # table misses: fabric-level
            continue
        v = vlan_of(f) or dict(f.actions).get('push_vlan')
        by_vlan.setdefault(v, set()).add(tenant_of(f.cookie))
    assert by_vlan == {1: {0}, 10: {acme}, 20: {globex}}
    # learned entries too, so one tenant's flows can be selected with cookie=X/mask
    value, mask = cookies.tenant_match('acme')
    mine = {f for f in flows if f.cookie & mask == value}
    assert learned(flows, MAC_B)[0] | learned(flows, MAC_B)[1] <= mine
    assert not (learned(flows, MAC_C)[0] | learned(flows, MAC_C)[1]) & mine
    assert all(cookies.app_of(f.cookie) == 'learning_switch' for f in flows)


# ---- a hypervisor br-int -----------------------------------------------------------------------

def test_every_hypervisor_flow_passes_the_table_declarations(fabric, policy):
    inv, hv = hv_network(fabric)
    ls.learn(fabric, inv, hv, VM2, 1, MAC_A)
    ls.learn(fabric, inv, hv, UPLINK_P, 10, MAC_B)
    flows = ls.compile_flows(policy, inv, hv)
    assert learned(flows, MAC_A)[1] and learned(flows, MAC_B)[1]
    for f in flows:
        tables.check(f)


def test_unbound_vm_ports_admit_only_untagged_frames_into_the_native_vlan(fabric, policy):
    inv, hv = hv_network(fabric)
    flows = ls.compile_flows(policy, inv, hv)
    assert admitted(flows, VM2) == {UNTAGGED: (('push_vlan', 1),)}
    assert admitted(flows, VM3) == {UNTAGGED: (('push_vlan', 1),)}


def test_the_uplink_admits_the_hypervisors_trunk_vlans_in_use(fabric, policy):
    inv, hv = hv_network(fabric)
    flows = ls.compile_flows(policy, inv, hv)
    assert admitted(flows, UPLINK_P) == {UNTAGGED: (('push_vlan', 1),), vid(10): (), vid(20): ()}
    assert set(admitted(ls.compile_flows(Policy(fabric), inv, hv), UPLINK_P)) == {UNTAGGED}


def test_the_uplink_follows_this_hypervisors_own_trunk_list():
    text = EXAMPLE_FABRIC.read_text().replace(
        'hv1: {leaf: leaf1, vtep: 172.16.1.11, trunk_vlans: [10, 20, 30, 40]',
        'hv1: {leaf: leaf1, vtep: 172.16.1.11, trunk_vlans: [20]')
    fabric = parse_fabric(text)
    assert fabric.hypervisors['hv1'].trunk_vlans == (20,)
    inv, hv = hv_network(fabric)
    flows = ls.compile_flows(two_tenants(fabric), inv, hv)
    assert set(admitted(flows, UPLINK_P)) == {UNTAGGED, vid(20)}
    assert flood_actions(flows, 10) is None                  # hv1 carries no VLAN 10 at all


def test_the_tunnel_port_is_not_part_of_the_learning_switch(fabric, policy):
    inv, hv = hv_network(fabric)
    flows = ls.compile_flows(policy, inv, hv)
    assert admitted(flows, TUN) == {}
    assert all(TUN not in output_ports(f.actions) for f in flows)


def test_hypervisor_floods(fabric, policy):
    inv, hv = hv_network(fabric)
    flows = ls.compile_flows(policy, inv, hv)
    assert flood_actions(flows, 1) == (('pop_vlan',), ('output', UPLINK_P), ('output', VM2), ('output', VM3))
    assert flood_actions(flows, 10) == (('output', UPLINK_P),)
    assert flood_actions(flows, 20) == (('output', UPLINK_P),)
    assert flood_actions(flows, 30) is None                  # trunked but not in use


# ---- learning ----------------------------------------------------------------------------------

def test_a_new_mac_gets_a_source_and_a_destination_entry(fabric, policy):
    inv = leaf_network(fabric)
    assert ls.learn(fabric, inv, LEAF2, HV5, 10, MAC_A) is True
    assert inv.macs[LEAF2] == {(10, MAC_A): HV5}
    src, dst = learned(ls.compile_flows(policy, inv, LEAF2), MAC_A)
    s, = src
    assert s.match_dict() == {'in_port': HV5, 'vlan_vid': vid(10), 'eth_src': MAC_A}
    assert s.goto == 'l2' and s.actions == ()
    assert s.idle_timeout == fabric.learning.mac_age == 300
    assert s.notify_removal is True
    d, = dst
    assert d.match_dict() == {'vlan_vid': vid(10), 'eth_dst': MAC_A}
    assert d.actions == (('output', HV5),)                   # a trunk: the frame stays tagged
    assert d.idle_timeout == 0                                # ages with its source entry


def test_a_native_vlan_mac_on_an_edge_port_is_reached_untagged(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    _, (d,) = learned(ls.compile_flows(policy, inv, LEAF2), MAC_A)
    assert d.actions == (('pop_vlan',), ('output', EDGE3))


def test_a_native_vlan_mac_behind_a_hypervisor_port_is_reached_untagged(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, HV5, 1, MAC_A)
    _, (d,) = learned(ls.compile_flows(policy, inv, LEAF2), MAC_A)
    assert d.actions == (('pop_vlan',), ('output', HV5))


def test_a_native_vlan_mac_behind_the_fabric_is_reached_tagged(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, TREE, 1, MAC_A)
    _, (d,) = learned(ls.compile_flows(policy, inv, LEAF2), MAC_A)
    assert d.actions == (('output', TREE),)


def test_learning_the_same_mac_on_the_same_port_again_changes_nothing(fabric):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 10, MAC_A)
    assert ls.learn(fabric, inv, LEAF2, EDGE3, 10, MAC_A.upper()) is False
    assert inv.macs[LEAF2] == {(10, MAC_A): EDGE3}


def test_the_same_mac_on_two_vlans_is_two_entries(fabric):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 10, MAC_A)
    ls.learn(fabric, inv, LEAF2, EDGE4, 20, MAC_A)
    assert inv.macs[LEAF2] == {(10, MAC_A): EDGE3, (20, MAC_A): EDGE4}


def test_a_mac_that_moves_is_forgotten_on_its_old_port(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    before = ls.compile_flows(policy, inv, LEAF2)
    assert ls.learn(fabric, inv, LEAF2, EDGE4, 1, MAC_A) is True
    assert inv.macs[LEAF2] == {(1, MAC_A): EDGE4}
    after = ls.compile_flows(policy, inv, LEAF2)
    (s,), (d,) = learned(after, MAC_A)
    assert s.match_dict()['in_port'] == EDGE4
    assert d.actions == (('pop_vlan',), ('output', EDGE4))
    # on the switch: the old source entry goes, the destination entry is replaced in place
    change = diff(after, before)
    (old_s,), (old_d,) = learned(before, MAC_A)
    assert change.delete == (old_s,)
    assert set(change.add) == {s, d}
    assert d.key == old_d.key


def test_a_multicast_or_broadcast_source_is_never_learned(fabric):
    inv = leaf_network(fabric)
    assert ls.learn(fabric, inv, LEAF2, EDGE3, 10, '01:00:5e:00:00:01') is False
    assert ls.learn(fabric, inv, LEAF2, EDGE3, 10, 'ff:ff:ff:ff:ff:ff') is False
    assert ls.learn(fabric, inv, LEAF2, EDGE3, 10, '33:33:00:00:00:01') is False
    assert inv.macs.get(LEAF2, {}) == {}


def test_macs_are_learned_lower_case(fabric):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 10, '02:00:00:00:00:AB')
    assert inv.macs[LEAF2] == {(10, '02:00:00:00:00:ab'): EDGE3}


def test_nothing_is_learned_on_an_unknown_switch_or_port(fabric):
    inv = leaf_network(fabric)
    assert ls.learn(fabric, inv, 0x999, 1, 10, MAC_A) is False
    assert ls.learn(fabric, inv, LEAF2, 77, 10, MAC_A) is False
    assert inv.macs.get(LEAF2, {}) == {}


def test_a_mac_learned_on_a_port_that_stopped_forwarding_is_not_installed(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    assert learned(ls.compile_flows(policy, inv, LEAF2), MAC_A) != (set(), set())
    inv.switches[LEAF2].ports[EDGE3].role = PENDING
    assert learned(ls.compile_flows(policy, inv, LEAF2), MAC_A) == (set(), set())


def test_a_mac_learned_on_a_vlan_its_port_does_not_carry_is_not_installed(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 10, MAC_A)          # edge ports carry the native VLAN only
    ls.learn(fabric, inv, LEAF2, HV5, 30, MAC_B)            # trunked, but no tenant uses VLAN 30
    ls.learn(fabric, inv, LEAF2, HV5, 20, MAC_C)
    flows = ls.compile_flows(policy, inv, LEAF2)
    assert learned(flows, MAC_A) == (set(), set())
    assert learned(flows, MAC_B) == (set(), set())
    assert learned(flows, MAC_C) != (set(), set())


# ---- the per-port MAC limit ----------------------------------------------------------------------

@pytest.fixture
def limited():
    return example_fabric(max_macs_per_port=2)


def test_a_port_over_its_mac_limit_refuses_new_sources_with_a_drop(limited):
    inv = leaf_network(limited)
    assert ls.learn(limited, inv, LEAF2, EDGE3, 1, MAC_A)
    assert ls.learn(limited, inv, LEAF2, EDGE3, 1, MAC_B)
    assert ls.learn(limited, inv, LEAF2, EDGE3, 1, MAC_C) is True        # refused: still a change
    assert inv.macs_on_port(LEAF2, EDGE3) == [(1, MAC_A), (1, MAC_B)]
    assert inv.refused[LEAF2] == {(1, MAC_C, EDGE3)}
    src, dst = learned(ls.compile_flows(Policy(limited), inv, LEAF2), MAC_C)
    drop, = src
    assert drop.match_dict() == {'in_port': EDGE3, 'vlan_vid': vid(1), 'eth_src': MAC_C}
    assert drop.actions == () and drop.goto is None                       # dropped, not forwarded
    assert drop.idle_timeout == 300 and drop.notify_removal
    assert cookies.kind_of(drop.cookie) == ls.K_REFUSED
    tables.check(drop)
    assert dst == set()                                                   # nobody sends to it


def test_a_full_port_learns_no_more_and_a_refused_source_is_refused_once(limited):
    inv = leaf_network(limited)
    for mac in (MAC_A, MAC_B, MAC_C):
        ls.learn(limited, inv, LEAF2, EDGE3, 10, mac)
    assert ls.learn(limited, inv, LEAF2, EDGE3, 10, MAC_C) is False     # already refused
    assert ls.learn(limited, inv, LEAF2, EDGE3, 20, '02:00:00:00:00:0d') is True
    assert len(inv.macs_on_port(LEAF2, EDGE3)) == 2
    assert len(inv.refused[LEAF2]) == 2
    assert ls.learn(limited, inv, LEAF2, EDGE4, 10, MAC_C) is True       # other ports still learn
    assert inv.macs[LEAF2][(10, MAC_C)] == EDGE4


def test_fabric_ports_have_no_mac_limit(limited):
    inv = leaf_network(limited)
    macs = ['02:00:00:00:01:%02x' % i for i in range(5)]
    for m in macs:
        assert ls.learn(limited, inv, LEAF2, TREE, 10, m)
    assert len(inv.macs_on_port(LEAF2, TREE)) == 5
    assert LEAF2 not in inv.refused


def test_vm_ports_have_the_mac_limit_too(limited):
    inv, hv = hv_network(limited)
    for mac in (MAC_A, MAC_B, MAC_C):
        ls.learn(limited, inv, hv, VM2, 1, mac)
    assert inv.refused[hv] == {(1, MAC_C, VM2)}


# ---- restart, ageing, tree changes ---------------------------------------------------------------

def test_adopt_rebuilds_the_mac_table_from_the_switchs_flows(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    ls.learn(fabric, inv, LEAF2, HV5, 10, MAC_B)
    ls.learn(fabric, inv, LEAF2, TREE, 20, MAC_C)
    on_switch = ls.compile_flows(policy, inv, LEAF2)

    restarted = leaf_network(fabric)                      # a new controller: no MACs known
    assert ls.compile_flows(policy, restarted, LEAF2) != on_switch
    ls.adopt(restarted, LEAF2, on_switch)
    assert restarted.macs[LEAF2] == {(1, MAC_A): EDGE3, (10, MAC_B): HV5, (20, MAC_C): TREE}
    assert ls.compile_flows(policy, restarted, LEAF2) == on_switch
    assert not diff(ls.compile_flows(policy, restarted, LEAF2), on_switch)


def test_adopt_ignores_flows_that_are_not_learned_sources(fabric):
    inv = leaf_network(fabric)
    foreign = {Flow.make('learn', 100, {'in_port': 3, 'vlan_vid': vid(10), 'eth_src': MAC_A},
                         cookie=cookies.make('topology', ls.K_SRC)),
               Flow.make('l2', 100, {'vlan_vid': vid(10), 'eth_dst': MAC_B}, [('output', 3)],
                         cookie=cookies.make('learning_switch', ls.K_DST))}
    ls.adopt(inv, LEAF2, foreign)
    assert inv.macs[LEAF2] == {}


def aged_out(flow):
    """The flow as a flow-removed notice carries it (no actions, goto or timeouts)."""
    return Flow.make(flow.table, flow.priority, flow.match_dict(), cookie=flow.cookie)


def test_a_mac_that_ages_out_on_the_switch_is_forgotten(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_B)
    (s,), _ = learned(ls.compile_flows(policy, inv, LEAF2), MAC_A)
    assert ls.forget(inv, LEAF2, aged_out(s)) is True
    assert inv.macs[LEAF2] == {(1, MAC_B): EDGE3}
    assert learned(ls.compile_flows(policy, inv, LEAF2), MAC_A) == (set(), set())


def test_a_tenant_vlan_mac_that_ages_out_is_forgotten_too(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, HV5, 10, MAC_A)
    (s,), _ = learned(ls.compile_flows(policy, inv, LEAF2), MAC_A)
    assert s.cookie & cookies.TENANT_MASK                    # a tenant cookie is still a learned entry
    assert ls.forget(inv, LEAF2, aged_out(s)) is True
    assert inv.macs[LEAF2] == {}


def test_the_old_entry_of_a_moved_mac_ageing_out_keeps_the_new_one(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    (old,), _ = learned(ls.compile_flows(policy, inv, LEAF2), MAC_A)
    ls.learn(fabric, inv, LEAF2, EDGE4, 1, MAC_A)
    assert ls.forget(inv, LEAF2, aged_out(old)) is False
    assert inv.macs[LEAF2] == {(1, MAC_A): EDGE4}


def test_a_refused_source_that_goes_quiet_may_try_again(limited):
    inv = leaf_network(limited)
    for mac in (MAC_A, MAC_B, MAC_C):
        ls.learn(limited, inv, LEAF2, EDGE3, 1, mac)
    (drop,), _ = learned(ls.compile_flows(Policy(limited), inv, LEAF2), MAC_C)
    assert ls.forget(inv, LEAF2, aged_out(drop)) is True
    assert inv.refused[LEAF2] == set()


def test_forget_ignores_flows_that_are_not_learned_entries(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    _, (d,) = learned(ls.compile_flows(policy, inv, LEAF2), MAC_A)
    assert ls.forget(inv, LEAF2, aged_out(d)) is False
    assert inv.macs[LEAF2] == {(1, MAC_A): EDGE3}


def test_a_flood_tree_change_keeps_edge_and_hypervisor_port_macs_and_drops_fabric_macs(fabric):
    inv = leaf_network(fabric)
    hv_inv, hv = hv_network(fabric)
    inv.switches[hv] = hv_inv.switches[hv]
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    ls.learn(fabric, inv, LEAF2, TREE, 10, MAC_B)
    ls.learn(fabric, inv, LEAF2, OFF_TREE, 20, MAC_C)
    ls.learn(fabric, inv, LEAF2, HV5, 20, MAC_A)             # a VM behind hv3: it has not moved
    ls.learn(fabric, inv, hv, UPLINK_P, 10, MAC_B)            # hypervisors keep their table
    ls.flush_fabric_macs(inv)
    assert inv.macs[LEAF2] == {(1, MAC_A): EDGE3, (20, MAC_A): HV5}
    assert inv.macs[hv] == {(10, MAC_B): UPLINK_P}
