"""The learning switch: VLAN admission, flooding on the tree, MAC learning and ageing.

leaf2 of the example mesh: port 1 to spine1 (on the flood tree), port 2 to spine2 (fabric but
off the tree: spine2 hangs off leaf1), ports 3 and 4 edge, port 5 a hypervisor port (hv3's
br-int LLDP arrives there), port 9 pending (just plugged in).
hv1's br-int: port 1 `int-to-phy` uplink, ports 2 and 3 VMs (unbound), port 4 the VXLAN tunnel,
ports 5 and 6 VMs bound to acme/web2 (VLAN 10) and globex/app2 (VLAN 20).
The example's native VLAN is 1 and every hypervisor trunk allows 10, 20 and 30.  The `policy`
fixture has two tenants: acme's port-group on VLAN 10 and globex's on VLAN 20, so the VLANs in
use are 1, 10 and 20 (30 is allowed on the trunks but nobody uses it).  VLAN pruning: a
hypervisor's uplink, and the leaf port it is on, carry only the tenant VLANs of the nics bound
on that hypervisor; so hv3 hosts acme/web1 (VLAN 10) and globex/app1 (VLAN 20), and hv1 web2
and app2, unless a test says otherwise.
"""
import pytest

from apps import learning_switch as ls, underlay_routing, vlan_portgroups
from controller.inventory.model import HYPERVISOR, PENDING, TUNNEL, UPLINK, VM, Binding, Inventory, Port
from controller.pipeline import cookies, registers as R, tables
from controller.pipeline.flow import UNTAGGED, Flow, vid
from controller.pipeline.reconciler import diff
from controller.policy.fabric import parse_fabric
from controller.policy.model import Policy
from tests.unit.builders import (EXAMPLE_FABRIC, LEAF2, add_switch, assert_only_misses, assert_reaches, by_table,
                                 cabled_mesh, emission, example_fabric, hypervisor_seen, make_tenant, miss,
                                 switch_flows)

TREE, OFF_TREE, EDGE3, EDGE4, HV5, NEW = 1, 2, 3, 4, 5, 9
UPLINK_P, VM2, VM3, TUN, VM5, VM6 = 1, 2, 3, 4, 5, 6
MAC_A, MAC_B, MAC_C = '02:00:00:00:00:0a', '02:00:00:00:00:0b', '02:00:00:00:00:0c'
MAC_WEB1, MAC_WEB2 = '02:00:0a:0a:00:01', '02:00:0a:0a:00:02'
MAC_APP1, MAC_APP2 = '02:00:14:14:00:01', '02:00:14:14:00:02'
# bound nics: iface-id -> (MAC, VLAN)
NICS = {'acme/web1/nic0': (MAC_WEB1, 10), 'acme/web2/nic0': (MAC_WEB2, 10),
        'globex/app1/nic0': (MAC_APP1, 20), 'globex/app2/nic0': (MAC_APP2, 20)}
ANY_VLAN = 'any'        # emitted(): the key of a port's one trunk emission (it matches no VLAN)


def two_tenants(fabric):
    return Policy(fabric).with_tenants([
        make_tenant('acme', {'users': 10}, {'web1': [('users', MAC_WEB1)], 'web2': [('users', MAC_WEB2)]}),
        make_tenant('globex', {'apps': 20}, {'app1': [('apps', MAC_APP1)], 'app2': [('apps', MAC_APP2)]})])


def bind(inv, dpid, ports):
    """A hypervisor's OVSDB bindings: {ofport: iface-id}."""
    inv.bind(dpid, {no: Binding('tap%d' % no, iface, NICS[iface][0]) for no, iface in ports.items()})


@pytest.fixture
def policy(fabric):
    return two_tenants(fabric)


def leaf_network(fabric, hv3_hosts=('acme/web1/nic0', 'globex/app1/nic0')):
    """leaf2 with its neighbours; hv3 (on port 5) hosts these nics on its VM ports 2, 3..."""
    inv, _ = cabled_mesh(fabric)
    inv.switches[LEAF2].ports[NEW] = Port(NEW, 'leaf2-eth9', True, PENDING, since=0.0)
    hv3 = fabric.hypervisors['hv3'].dpid
    add_switch(inv, hv3, 'hv3', kind='hypervisor', ports={UPLINK_P: (UPLINK, 'int-to-phy'),
                                                          VM2: (VM, 'tap-a'), VM3: (VM, 'tap-b')})
    bind(inv, hv3, {VM2 + i: iface for i, iface in enumerate(hv3_hosts)})
    hypervisor_seen(fabric, inv, LEAF2, HV5, hv3)
    assert inv.switches[LEAF2].ports[HV5].role == HYPERVISOR
    assert inv.switches[LEAF2].ports[NEW].role == PENDING
    return inv


def hv_network(fabric, hosts=('acme/web2/nic0', 'globex/app2/nic0')):
    """hv1's br-int: VM ports 2 and 3 unbound, and these nics bound on VM ports 5, 6..."""
    inv = Inventory()
    dpid = fabric.hypervisors['hv1'].dpid
    add_switch(inv, dpid, 'hv1', kind='hypervisor', ports={
        UPLINK_P: (UPLINK, 'int-to-phy'), VM2: (VM, 'tap-web1'), VM3: (VM, 'tap-db1'),
        TUN: (TUNNEL, 'vxlan0'), VM5: (VM, 'tap-web2'), VM6: (VM, 'tap-app2')})
    bind(inv, dpid, {VM5 + i: iface for i, iface in enumerate(hosts)})
    return inv, dpid


def admitted(flows, port):
    """{vlan_vid match: actions} of the port_sec (admission) flows for one ingress port."""
    return {f.match_dict()['vlan_vid']: f.actions for f in by_table(flows, 'port_sec')
            if f.match_dict().get('in_port') == port and cookies.app_of(f.cookie) == 'learning_switch'}


def emitted(flows, port):
    """{vlan_vid match: actions} of the output-stage flows that emit out of one port (ANY_VLAN:
    the port's trunk flow, which matches the out-port only)."""
    return {f.match_dict().get('vlan_vid', ANY_VLAN): f.actions for f in by_table(flows, 'output')
            if f.match_dict().get(R.OUT_PORT) == port}




def flood_actions(flows, vlan):
    out = [f.actions for f in by_table(flows, 'flood') if f.match_dict() == {'vlan_vid': vid(vlan)}]
    assert len(out) <= 1
    return out[0] if out else None


def output_ports(actions):
    return {a[1] for a in actions if a[0] == 'output'}


def learned(flows, mac):
    """The learn (source) and l2_lookup (destination) flows for one MAC."""
    src = {f for f in by_table(flows, 'learn') if f.match_dict().get('eth_src') == mac}
    dst = {f for f in by_table(flows, 'l2_lookup') if f.match_dict().get('eth_dst') == mac}
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


def test_each_table_ends_in_a_miss_flow_made_by_the_pipeline_not_the_learning_switch(fabric):
    flows = ls.compile_flows(Policy(fabric), leaf_network(fabric), LEAF2)
    assert {f for f in flows if f.priority == 0} == set()
    generated = tables.miss_flows()
    misses = {f.table: f for f in generated if f.priority == 0}
    assert set(misses) == set(tables.BY_NAME)                              # one per declared table
    assert len([f for f in generated if f.priority == 0]) == len(tables.TABLES)
    for f in generated:
        assert cookies.app_of(f.cookie) == tables.PIPELINE
        assert f.priority != 0 or f.match_dict() == {}
        tables.check(f)
    assert misses['port_sec'].actions == () and misses['port_sec'].goto is None        # not admitted: drop
    assert misses['classify'].actions == () and misses['classify'].goto == 'learn'     # native: registers stay 0
    # an unknown source is copied to the controller *and* forwarded
    assert misses['learn'].actions == (('output', 'controller'),) and misses['learn'].goto == 'arp_rsp'
    assert misses['arp_rsp'].actions == () and misses['arp_rsp'].goto == 'acl_in'
    assert misses['acl_in'].actions == () and misses['acl_in'].goto == 'l3'
    assert misses['l3'].actions == () and misses['l3'].goto == 'l2_lookup'
    assert misses['ecmp'].actions == () and misses['ecmp'].goto is None
    # an unknown destination: the flood out-port, which the output stage hands to flood
    assert misses['l2_lookup'].actions == (('set_field', R.OUT_PORT, R.FLOOD),)
    assert misses['l2_lookup'].goto == 'acl_out'
    assert misses['acl_out'].actions == () and misses['acl_out'].goto == 'output'
    assert misses['output'].actions == () and misses['output'].goto is None           # no such port: drop
    assert misses['flood'].actions == () and misses['flood'].goto is None
    handover, = (f for f in generated if f.priority != 0)
    assert handover.table == 'output' and handover.match_dict() == {R.OUT_PORT: R.FLOOD}
    assert handover.actions == () and handover.goto == 'flood'
    # no port's emission takes the flood out-port for itself
    assert all(f.match_dict()[R.OUT_PORT] != R.FLOOD for f in by_table(flows, 'output'))


def test_untagged_frames_on_an_edge_port_get_the_native_vlan(fabric, policy):
    flows = ls.compile_flows(policy, leaf_network(fabric), LEAF2)
    assert admitted(flows, EDGE3)[UNTAGGED] == (('push_vlan', 1),)
    f, = (f for f in by_table(flows, 'port_sec')
          if f.match_dict() == {'in_port': EDGE3, 'vlan_vid': UNTAGGED})
    assert f.goto == 'classify'


def test_an_edge_port_takes_only_untagged_frames_into_the_native_vlan(fabric, policy):
    # an unknown host is not a trunk: tenant VLANs in use are not admitted from it, tagged
    flows = ls.compile_flows(policy, leaf_network(fabric), LEAF2)
    assert admitted(flows, EDGE3) == {UNTAGGED: (('push_vlan', 1),)}
    assert admitted(flows, EDGE4) == {UNTAGGED: (('push_vlan', 1),)}


def test_a_fabric_port_on_the_tree_takes_every_vlan_in_use_tagged_and_nothing_untagged(fabric, policy):
    flows = ls.compile_flows(policy, leaf_network(fabric), LEAF2)
    assert admitted(flows, TREE) == {vid(1): (), vid(10): (), vid(20): ()}     # not 30: unused


def test_a_hypervisor_port_takes_the_vlans_its_vms_need_tagged_and_the_native_untagged(fabric, policy):
    flows = ls.compile_flows(policy, leaf_network(fabric), LEAF2)
    assert admitted(flows, HV5) == {UNTAGGED: (('push_vlan', 1),), vid(10): (), vid(20): ()}


@pytest.mark.parametrize('hosts', [(), ('acme/web1/nic0',), ('globex/app1/nic0',)])
def test_a_hypervisor_port_carries_only_the_vlans_of_the_nics_bound_on_its_hypervisor(fabric, policy, hosts):
    inv = leaf_network(fabric, hv3_hosts=hosts)
    need = {NICS[i][1] for i in hosts}                       # VLAN pruning
    ls.learn(fabric, inv, LEAF2, HV5, 10, MAC_A)
    ls.learn(fabric, inv, LEAF2, HV5, 20, MAC_B)
    flows = ls.compile_flows(policy, inv, LEAF2)
    assert admitted(flows, HV5) == {UNTAGGED: (('push_vlan', 1),), **{vid(v): () for v in need}}
    for v, mac in ((10, MAC_A), (20, MAC_B)):
        # a VLAN hv3 does not need: neither flooded to it nor learned behind it ...
        assert (HV5 in output_ports(flood_actions(flows, v))) == (v in need), v
        assert (learned(flows, mac) != (set(), set())) == (v in need), v
        # ... yet still carried on the fabric, and classified there
        assert TREE in output_ports(flood_actions(flows, v)) and vid(v) in admitted(flows, TREE)
    assert {f.match_dict()['vlan_vid'] for f in by_table(flows, 'classify')} == {vid(10), vid(20)}
    # a tagged trunk leaves by one flow for the whole port; with nothing to tag, it has none
    assert (ANY_VLAN in emitted(flows, HV5)) == bool(need)
    assert emitted(flows, HV5)[vid(1)] == (('pop_vlan',), ('output', HV5))


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


def test_a_port_emits_untagged_on_access_and_tagged_on_trunks_with_one_flow_per_port(fabric, policy):
    inv = leaf_network(fabric)
    for port, vlan in ((EDGE3, 1), (TREE, 10), (HV5, 20), (TREE, 1), (HV5, 1)):
        ls.learn(fabric, inv, LEAF2, port, vlan, '02:00:00:00:%02x:%02x' % (port, vlan))
    flows = ls.compile_flows(policy, inv, LEAF2)
    # access (edge) ports: the native VLAN, its tag popped
    assert emitted(flows, EDGE3) == {vid(1): (('pop_vlan',), ('output', EDGE3))}
    assert emitted(flows, EDGE4) == {vid(1): (('pop_vlan',), ('output', EDGE4))}
    # trunks: one flow for the whole port, the frame left tagged, whatever its VLAN; the
    # untagged (native) VLAN of a hypervisor trunk, popped, above it
    assert emitted(flows, TREE) == {ANY_VLAN: (('output', TREE),)}
    assert emitted(flows, HV5) == {vid(1): (('pop_vlan',), ('output', HV5)), ANY_VLAN: (('output', HV5),)}
    assert emitted(flows, NEW) == {} and emitted(flows, OFF_TREE) == {}
    for f in by_table(flows, 'output'):
        assert f.goto is None
        if 'vlan_vid' in f.match_dict():                     # an untagged VLAN: the native's, no tenant's
            assert f.priority == ls.P_UNTAGGED == 110 and f.cookie.tenant is None
        else:
            assert f.priority == ls.P_PORT == 100 < ls.P_UNTAGGED
            assert f.cookie.owner == 'port:%d' % f.match_dict()[R.OUT_PORT] and f.cookie.tenant is None
    for port, vlan, actions in ((EDGE3, 1, [('pop_vlan',), ('output', EDGE3)]), (TREE, 1, [('output', TREE)]),
                                (TREE, 10, [('output', TREE)]), (TREE, 20, [('output', TREE)]),
                                (HV5, 1, [('pop_vlan',), ('output', HV5)]), (HV5, 10, [('output', HV5)]),
                                (HV5, 20, [('output', HV5)])):
        assert emission(flows, port, vlan) == tuple(actions), (port, vlan)
    # the trunk flow does not list its VLANs: only VLANs a port carries are ever chosen for it
    ports = vlan_portgroups.port_vlans(policy, inv, LEAF2)
    for f in by_table(flows, 'l2_lookup'):
        port = dict((a[1], a[2]) for a in f.actions if a[0] == 'set_field')[R.OUT_PORT]
        assert ports[port].carries(f.match_dict()['vlan_vid'] & 0xfff), f
    for f in by_table(flows, 'flood'):
        assert all(ports[p].carries(f.match_dict()['vlan_vid'] & 0xfff) for p in output_ports(f.actions)), f


def test_a_tenant_vlan_gives_its_frames_the_network_tenant_and_zone_ids(fabric, policy):
    flows = ls.compile_flows(policy, leaf_network(fabric), LEAF2)
    ids = policy.ids
    by_vlan = {f.match_dict()['vlan_vid']: f for f in by_table(flows, 'classify')}
    assert set(by_vlan) == {vid(10), vid(20)}               # the native VLAN: the miss, registers 0
    for v, tenant, net in ((10, 'acme', 'users'), (20, 'globex', 'apps')):
        f = by_vlan[vid(v)]
        assert f.actions == (('set_field', R.NETWORK, ids.network[(tenant, net)]),
                             ('set_field', R.TENANT, ids.tenant[tenant]),
                             ('set_field', R.ZONE, ids.zone[tenant]))
        assert f.goto == 'learn' and f.cookie.tenant == tenant
    assert ids.network[('acme', 'users')] != ids.network[('globex', 'apps')]
    assert ids.tenant['acme'] != ids.tenant['globex'] and ids.zone['acme'] != ids.zone['globex']
    assert 0 not in (ids.tenant['acme'], ids.tenant['globex'], ids.network[('acme', 'users')])


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
    assert emission(flows, NEW, 1) == (('pop_vlan',), ('output', NEW))


def test_a_switch_we_do_not_know_gets_no_flows(fabric, policy):
    assert ls.compile_flows(policy, Inventory(), LEAF2) == set()


def test_per_vlan_flows_carry_the_tenant_that_owns_the_vlan(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    ls.learn(fabric, inv, LEAF2, HV5, 10, MAC_B)
    ls.learn(fabric, inv, LEAF2, TREE, 20, MAC_C)
    flows = ls.compile_flows(policy, inv, LEAF2)

    def vlan_of(f):
        return f.match_dict().get('vlan_vid', UNTAGGED) & 0xfff
    by_vlan = {}
    for f in flows:
        assert f.priority != 0, f                             # table misses are the pipeline's
        v = vlan_of(f) or dict(f.actions).get('push_vlan')
        by_vlan.setdefault(v, set()).add(f.cookie.tenant)
    # a trunk's one emission flow serves every VLAN it carries: the fabric's, no tenant's
    trunks = {f for f in by_table(flows, 'output') if 'vlan_vid' not in f.match_dict()}
    assert {f.match_dict()[R.OUT_PORT] for f in trunks} == {TREE, HV5}
    assert by_vlan.pop(None) == {None}
    assert by_vlan == {1: {None}, 10: {'acme'}, 20: {'globex'}}
    # learned entries too, so one tenant's flows can be selected with cookie=X/mask
    registry = cookies.Registry()
    value, mask = registry.tenant_match('acme')
    assert value and value != registry.tenant_match('globex')[0]
    mine = {f for f in flows if registry.encode(f.cookie) & mask == value}
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
    assert emitted(flows, VM2) == {vid(1): (('pop_vlan',), ('output', VM2))}
    assert emitted(flows, VM3) == {vid(1): (('pop_vlan',), ('output', VM3))}


def test_the_uplink_admits_the_trunk_vlans_its_vms_need(fabric, policy):
    inv, hv = hv_network(fabric)
    flows = ls.compile_flows(policy, inv, hv)
    assert admitted(flows, UPLINK_P) == {UNTAGGED: (('push_vlan', 1),), vid(10): (), vid(20): ()}
    assert emitted(flows, UPLINK_P) == {vid(1): (('pop_vlan',), ('output', UPLINK_P)),
                                        ANY_VLAN: (('output', UPLINK_P),)}
    assert emission(flows, UPLINK_P, 10) == emission(flows, UPLINK_P, 20) == (('output', UPLINK_P),)
    assert set(admitted(ls.compile_flows(Policy(fabric), inv, hv), UPLINK_P)) == {UNTAGGED}


@pytest.mark.parametrize('hosts', [(), ('acme/web2/nic0',)])
def test_a_hypervisor_with_no_vm_on_a_vlan_neither_admits_nor_floods_it(fabric, policy, hosts):
    inv, hv = hv_network(fabric, hosts=hosts)
    need = {NICS[i][1] for i in hosts}
    ls.learn(fabric, inv, hv, UPLINK_P, 10, MAC_A)
    ls.learn(fabric, inv, hv, UPLINK_P, 20, MAC_B)
    flows = ls.compile_flows(policy, inv, hv)
    assert admitted(flows, UPLINK_P) == {UNTAGGED: (('push_vlan', 1),), **{vid(v): () for v in need}}
    for v, mac in ((10, MAC_A), (20, MAC_B)):
        assert (flood_actions(flows, v) is not None) == (v in need), v
        assert (learned(flows, mac) != (set(), set())) == (v in need), v      # nor knows MACs behind the uplink
    # classify: only the VLANs some port of the switch carries
    assert {f.match_dict()['vlan_vid'] for f in by_table(flows, 'classify')} == {vid(v) for v in need}
    assert (ANY_VLAN in emitted(flows, UPLINK_P)) == bool(need)


def test_the_uplink_follows_this_hypervisors_own_trunk_list():
    text = EXAMPLE_FABRIC.read_text().replace(
        'hv1: {leaf: leaf1, vtep: 172.16.1.11, trunk_vlans: [10, 20, 30, 40]',
        'hv1: {leaf: leaf1, vtep: 172.16.1.11, trunk_vlans: [20]')
    fabric = parse_fabric(text)
    assert fabric.hypervisors['hv1'].trunk_vlans == (20,)
    inv, hv = hv_network(fabric)                             # a VM on VLAN 10 and one on VLAN 20
    flows = ls.compile_flows(two_tenants(fabric), inv, hv)
    assert set(admitted(flows, UPLINK_P)) == {UNTAGGED, vid(20)}
    # VLAN 10 never crosses hv1's trunk: its floods reach the local VM only
    assert flood_actions(flows, 10) == (('pop_vlan',), ('output', VM5))
    assert UPLINK_P in output_ports(flood_actions(flows, 20))


def test_the_tunnel_port_is_not_part_of_the_learning_switch(fabric, policy):
    inv, hv = hv_network(fabric)
    flows = ls.compile_flows(policy, inv, hv)
    assert admitted(flows, TUN) == {}
    assert emitted(flows, TUN) == {}
    assert all(TUN not in output_ports(f.actions) for f in flows)


def test_hypervisor_floods(fabric, policy):
    inv, hv = hv_network(fabric)
    flows = ls.compile_flows(policy, inv, hv)
    assert flood_actions(flows, 1) == (('pop_vlan',), ('output', UPLINK_P), ('output', VM2), ('output', VM3))
    assert flood_actions(flows, 10) == (('output', UPLINK_P), ('pop_vlan',), ('output', VM5))
    assert flood_actions(flows, 20) == (('output', UPLINK_P), ('pop_vlan',), ('output', VM6))
    assert flood_actions(flows, 30) is None                  # trunked but not in use


# ---- learning ----------------------------------------------------------------------------------

def test_a_new_mac_gets_a_source_and_a_destination_entry(fabric, policy):
    inv = leaf_network(fabric)
    assert ls.learn(fabric, inv, LEAF2, HV5, 10, MAC_A) is True
    assert inv.macs[LEAF2] == {(10, MAC_A): HV5}
    flows = ls.compile_flows(policy, inv, LEAF2)
    src, dst = learned(flows, MAC_A)
    s, = src
    assert s.match_dict() == {'in_port': HV5, 'vlan_vid': vid(10), 'eth_src': MAC_A}
    assert s.goto == 'arp_rsp' and s.actions == ()
    assert s.idle_timeout == fabric.learning.mac_age == 300
    assert s.notify_removal is True
    d, = dst
    assert d.match_dict() == {'vlan_vid': vid(10), 'eth_dst': MAC_A}
    assert_reaches(flows, d, HV5, 10, [('output', HV5)])            # a trunk: the frame stays tagged
    assert d.idle_timeout == 0                                # ages with its source entry
    assert s.cookie.owner is None and d.cookie.owner is None  # learned: the match says which MAC


def test_a_native_vlan_mac_on_an_edge_port_is_reached_untagged(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    flows = ls.compile_flows(policy, inv, LEAF2)
    _, (d,) = learned(flows, MAC_A)
    assert_reaches(flows, d, EDGE3, 1, [('pop_vlan',), ('output', EDGE3)])


def test_a_native_vlan_mac_behind_a_hypervisor_port_is_reached_untagged(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, HV5, 1, MAC_A)
    flows = ls.compile_flows(policy, inv, LEAF2)
    _, (d,) = learned(flows, MAC_A)
    assert_reaches(flows, d, HV5, 1, [('pop_vlan',), ('output', HV5)])


def test_a_native_vlan_mac_behind_the_fabric_is_reached_tagged(fabric, policy):
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, TREE, 1, MAC_A)
    flows = ls.compile_flows(policy, inv, LEAF2)
    _, (d,) = learned(flows, MAC_A)
    assert_reaches(flows, d, TREE, 1, [('output', TREE)])


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
    assert_reaches(after, d, EDGE4, 1, [('pop_vlan',), ('output', EDGE4)])
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
    """violation: restrict (shutdown, the default: tests/unit/test_floods.py)."""
    return example_fabric(max_macs_per_port=2, violation='restrict')


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
               Flow.make('l2_lookup', 100, {'vlan_vid': vid(10), 'eth_dst': MAC_B}, [('set_field', R.OUT_PORT, 3)],
                         goto='acl_out', cookie=cookies.make('learning_switch', ls.K_DST))}
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
    assert s.cookie.tenant == 'acme'                         # a tenant cookie is still a learned entry
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


# ---- every stage of a leaf, from its compiled flows --------------------------------------------

BROADCAST = 'ff:ff:ff:ff:ff:ff'


def leaf_with_macs(fabric, policy):
    """Every app's flows on leaf2 with MAC_A learned on edge port 3 (native VLAN) and MAC_B
    behind the hypervisor port (VLAN 10)."""
    inv = leaf_network(fabric)
    ls.learn(fabric, inv, LEAF2, EDGE3, 1, MAC_A)
    ls.learn(fabric, inv, LEAF2, HV5, 10, MAC_B)
    return switch_flows(policy, inv, LEAF2)


def admission(flows, port, tag):
    """The port_sec flow that bridges frames with this tag (UNTAGGED or vid(v)) from a port."""
    f, = (f for f in by_table(flows, 'port_sec') if f.match_dict() == {'in_port': port, 'vlan_vid': tag})
    assert f.goto == 'classify', f
    return f


def l2_entry(flows, vlan, mac):
    f, = (f for f in by_table(flows, 'l2_lookup') if f.match_dict() == {'vlan_vid': vid(vlan), 'eth_dst': mac})
    return f


def test_bridged_frames_pass_the_stages_between_admission_and_lookup_untouched(fabric, policy):
    flows = leaf_with_macs(fabric, policy)
    # classify only gives a tenant VLAN its registers, and goes on to learn; the native VLAN
    # takes the miss (registers 0)
    for f in by_table(flows, 'classify'):
        assert f.goto == 'learn' and {a[:2] for a in f.actions} <= {('set_field', R.NETWORK), ('set_field', R.TENANT),
                                                                    ('set_field', R.ZONE)}, f
    assert not [f for f in by_table(flows, 'classify') if f.match_dict() == {'vlan_vid': vid(1)}]
    assert_only_misses(flows, 'arp_rsp', 'acl_in', 'acl_out')
    # l3 routes untagged frames only; every bridged frame has its VLAN tag by now
    assert all(f.match_dict()['vlan_vid'] == UNTAGGED for f in by_table(flows, 'l3') if f.priority)
    assert miss(flows, 'l3').actions == () and miss(flows, 'l3').goto == 'l2_lookup'


def test_a_known_mac_is_reached_through_every_stage_of_a_leaf(fabric, policy):
    flows = leaf_with_macs(fabric, policy)
    # the native VLAN from edge port 4: tagged 1 on admission; its unknown source (MAC_C) is
    # copied to the controller and goes on; MAC_A, known on edge port 3, gets it untagged
    assert admission(flows, EDGE4, UNTAGGED).actions == (('push_vlan', 1),)
    assert not [f for f in by_table(flows, 'learn') if f.match_dict().get('eth_src') == MAC_C]
    assert miss(flows, 'learn').actions == (('output', 'controller'),) and miss(flows, 'learn').goto == 'arp_rsp'
    assert_reaches(flows, l2_entry(flows, 1, MAC_A), EDGE3, 1, [('pop_vlan',), ('output', EDGE3)])
    # a tenant VLAN from the tree to a MAC behind the hypervisor port: it stays tagged
    assert admission(flows, TREE, vid(10)).actions == ()
    assert_reaches(flows, l2_entry(flows, 10, MAC_B), HV5, 10, [('output', HV5)])


def test_a_known_source_is_not_copied_up_and_an_unknown_destination_floods_within_its_vlan(fabric, policy):
    flows = leaf_with_macs(fabric, policy)
    # MAC_A's source entry on edge port 3: straight on, no copy to the controller
    src, = (f for f in by_table(flows, 'learn')
            if f.match_dict() == {'in_port': EDGE3, 'vlan_vid': vid(1), 'eth_src': MAC_A})
    assert src.actions == () and src.goto == 'arp_rsp'
    # an unknown destination has no entry: the miss picks the flood out-port, handed to flood
    assert not [f for f in by_table(flows, 'l2_lookup') if f.match_dict().get('eth_dst') in (MAC_C, BROADCAST)]
    assert miss(flows, 'l2_lookup').actions == (('set_field', R.OUT_PORT, R.FLOOD),)
    handover, = (f for f in by_table(flows, 'output') if f.match_dict() == {R.OUT_PORT: R.FLOOD})
    assert handover.actions == () and handover.goto == 'flood'
    # the native VLAN: tagged onto the tree, untagged out of the edge and hypervisor ports
    # (OVS never sends a frame back out of its in_port)
    assert admission(flows, EDGE3, UNTAGGED).actions == (('push_vlan', 1),)
    assert flood_actions(flows, 1) == (('output', TREE), ('pop_vlan',), ('output', EDGE3), ('output', EDGE4),
                                       ('output', HV5))
    # a tenant VLAN broadcast from the hypervisor trunk: to the tree, tagged (and not back)
    assert admission(flows, HV5, vid(20)).actions == ()
    assert flood_actions(flows, 20) == (('output', TREE), ('output', HV5))


def test_pending_and_off_tree_ports_let_nothing_in_for_any_app(fabric, policy):
    flows = leaf_with_macs(fabric, policy)
    # nothing is bridged in from them: a pending port has no admission at all, a cable off the
    # flood tree takes routed frames only (untagged, to the router MAC: ECMP uses every cable)
    assert not [f for f in by_table(flows, 'port_sec') if f.match_dict().get('in_port') == NEW]
    off = [f for f in by_table(flows, 'port_sec') if f.match_dict().get('in_port') == OFF_TREE]
    assert off and all(f.goto == 'l3' and f.match_dict()['vlan_vid'] == UNTAGGED
                       and f.match_dict()['eth_dst'] == underlay_routing.ROUTER_MAC for f in off), off
    # the one admission that names no port is LLDP, to the controller (discovery) ...
    anyport = [f for f in by_table(flows, 'port_sec') if f.priority and 'in_port' not in f.match_dict()]
    assert anyport and all(f.match_dict()['eth_type'] == 0x88cc and f.actions == (('output', 'controller'),)
                           and f.goto is None for f in anyport)
    # ... so any other frame from them, tagged or not, ends in port_sec's drop
    assert miss(flows, 'port_sec').actions == () and miss(flows, 'port_sec').goto is None
