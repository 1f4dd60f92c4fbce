"""VLAN port-groups: which VLANs every port carries, and proactive forwarding for bound VM nics.

The lab: the example mesh (leaf ports 1 to spine1, 2 to spine2, 3 and 4 edge; the flood tree
is spine1-leaf1, spine1-leaf2, spine2-leaf1), plus hv1 and hv2 on leaf1 ports 5 and 6 and hv3
on leaf2 port 5, each found by its br-int LLDP.  Each br-int: uplink 1, VM ports 2 and 3,
tunnel 4.  Two tenants: acme (users on VLAN 10, servers a VXLAN overlay) and globex (apps on
VLAN 20).  acme/web1 is bound on hv1 port 2, globex/app1 on hv3 port 2; hv2 hosts nothing.
VLAN pruning: a hypervisor's uplink (and its leaf port) carries only the tenant VLANs of the
nics bound on it, so hv1 carries VLAN 10, hv3 VLAN 20 and hv2 none; fabric cables carry every
VLAN in use.
"""
import pytest

from apps import learning_switch, topology, vlan_portgroups as vp
from apps.vlan_portgroups import PortVlans
from controller import core
from controller.inventory.model import VM, Binding, LinkEnd, Port
from controller.pipeline import cookies, ids, registers as R, tables
from controller.pipeline.flow import UNTAGGED, vid
from controller.pipeline.reconciler import diff
from controller.policy.fabric import parse_fabric
from controller.policy.model import Policy
from tests.unit.builders import (EXAMPLE_FABRIC, HV_TUN, HV_UPLINK, HV_VM2, HV_VM3, LEAF1, LEAF2,
                                 SPINE1, SPINE2, add_hypervisor, assert_reaches, by_table, cabled_mesh,
                                 hypervisor_seen, make_tenant)

MAC_WEB1, MAC_WEB2, MAC_DB1 = '02:00:0a:0a:00:0b', '02:00:0a:0a:00:0c', '02:00:0a:14:00:15'
MAC_APP1, MAC_OTHER = '02:00:14:00:00:0b', '02:00:00:00:99:01'
MAC_APP2, MAC_APP3 = '02:00:14:00:00:0c', '02:00:14:00:00:0d'
HV_PORT = {'hv1': (LEAF1, 5), 'hv2': (LEAF1, 6), 'hv3': (LEAF2, 5)}


def acme(**changes):
    workloads = {'web1': [('users', changes.get('web1_mac', MAC_WEB1))],
                 'db1': [('servers', MAC_DB1)]}
    workloads.update(changes.get('more', {}))
    return make_tenant('acme', {'users': 10, 'servers': {'vni': 5020}}, workloads)


def globex(*more):
    """globex/app1, and app2, app3... if asked for."""
    macs = {'app1': MAC_APP1, 'app2': MAC_APP2, 'app3': MAC_APP3}
    return make_tenant('globex', {'apps': 20}, {w: [('apps', macs[w])] for w in ('app1',) + more})


def with_web2(fabric):
    """The lab's tenants, acme with a second VLAN 10 workload (web2)."""
    return Policy(fabric).with_tenants([acme(more={'web2': [('users', MAC_WEB2)]}), globex()])


def lab(fabric, hypervisors=('hv1', 'hv2', 'hv3')):
    """(inventory, {name: dpid}, cabling ends) with nothing bound yet."""
    inv, ends = cabled_mesh(fabric)
    dpids = {'spine1': SPINE1, 'spine2': SPINE2, 'leaf1': LEAF1, 'leaf2': LEAF2}
    for name in ('hv1', 'hv2', 'hv3'):
        dpids[name] = add_hypervisor(inv, fabric, name)
        if name in hypervisors:
            leaf, port = HV_PORT[name]
            hypervisor_seen(fabric, inv, leaf, port, dpids[name])
    return inv, dpids, ends


def bind(inv, dpid, port, iface_id, mac):
    """One more interface in a hypervisor's OVSDB (the inventory relocates its nics)."""
    inv.bind(dpid, {**inv.bindings.get(dpid, {}), port: Binding('tap%d' % port, iface_id, mac)})


def unbind(inv, dpid, port):
    inv.bind(dpid, {no: b for no, b in inv.bindings.get(dpid, {}).items() if no != port})


def bound_lab(fabric):
    inv, sw, ends = lab(fabric)
    bind(inv, sw['hv1'], HV_VM2, 'acme/web1/nic0', MAC_WEB1)
    bind(inv, sw['hv3'], HV_VM2, 'globex/app1/nic0', MAC_APP1)
    return inv, sw, ends


@pytest.fixture
def policy(fabric):
    return Policy(fabric).with_tenants([acme(), globex()])


def desired(policy, inv, dpid):
    """What the controller wants on one switch: every app's flows and the pipeline's misses,
    each checked, none clashing (as Controller.desired)."""
    flows = tables.miss_flows() if dpid in inv.switches else set()
    for app in core.APPS:
        mine = app.compile_flows(policy, inv, dpid)
        assert all(cookies.app_of(f.cookie) == app.APP for f in mine), app
        flows |= mine
    for f in flows:
        tables.check(f)
    core.no_clash(flows)
    return flows


def known(flows, mac):
    """{table: flow} of this app's proactive entries for one MAC (at most one per table)."""
    out = {}
    for f in flows:
        m = f.match_dict()
        if cookies.app_of(f.cookie) == vp.APP and mac in (m.get('eth_dst'), m.get('eth_src')):
            assert f.table not in out, f
            out[f.table] = f
    return out


def admitted(flows, port):
    return {f.match_dict()['vlan_vid']: f.actions for f in by_table(flows, 'port_sec')
            if f.match_dict().get('in_port') == port and cookies.app_of(f.cookie) == 'learning_switch'}


def flood(flows, vlan):
    out = [f.actions for f in by_table(flows, 'flood') if f.match_dict() == {'vlan_vid': vid(vlan)}]
    assert len(out) <= 1
    return out[0] if out else None


def outputs(actions):
    return {a[1] for a in actions or () if a[0] == 'output'}


def tenant_of(cookie):
    """The tenant a flow is for (None: the fabric's own)."""
    return cookie.tenant


# ---- access ports --------------------------------------------------------------------------------

def test_a_bound_vm_port_is_an_access_port_of_its_networks_vlan(fabric, policy):
    inv, sw, _ = bound_lab(fabric)
    hv1 = sw['hv1']
    assert vp.port_vlans(policy, inv, hv1)[HV_VM2] == PortVlans(untagged=10)
    flows = desired(policy, inv, hv1)
    assert admitted(flows, HV_VM2) == {UNTAGGED: (('push_vlan', 10),)}      # the VM sends untagged
    # VLAN 10 floods reach it untagged; the native VLAN's no longer do
    assert flood(flows, 10) == (('output', HV_UPLINK), ('pop_vlan',), ('output', HV_VM2))
    assert flood(flows, 1) == (('pop_vlan',), ('output', HV_UPLINK), ('output', HV_VM3))


def test_an_unbound_port_stays_in_the_native_vlan(fabric, policy):
    inv, sw, _ = bound_lab(fabric)
    bind(inv, sw['hv2'], HV_VM3, 'nobody/vm/nic0', MAC_OTHER)               # an iface-id no policy has
    for dpid, port in ((sw['hv2'], HV_VM3), (sw['hv3'], HV_VM3)):         # ... and no binding at all
        assert vp.port_vlans(policy, inv, dpid)[port] == PortVlans(untagged=1)
        assert admitted(desired(policy, inv, dpid), port) == {UNTAGGED: (('push_vlan', 1),)}
    assert all(known(desired(policy, inv, d), MAC_OTHER) == {} for d in sw.values())
    # a binding for a tenant that has not been applied yet is unbound too
    no_tenants = Policy(fabric)
    assert vp.port_vlans(no_tenants, inv, sw['hv1'])[HV_VM2] == PortVlans(untagged=1)
    assert all(vp.compile_flows(no_tenants, inv, d) == set() for d in sw.values())


def test_an_overlay_nic_rides_its_networks_local_vlan_and_is_no_port_group_member(fabric, policy):
    inv, sw, _ = bound_lab(fabric)
    bind(inv, sw['hv2'], HV_VM2, 'acme/db1/nic0', MAC_DB1)                  # acme/servers is a vni
    local = policy.overlay_vlans[('acme', 'servers')]
    assert vp.port_vlans(policy, inv, sw['hv2'])[HV_VM2] == PortVlans(untagged=local)
    assert local not in policy.vlans_in_use() and local > 4000             # never on a trunk
    for d in sw.values():                                                   # port-groups know nothing of it
        assert known(desired(policy, inv, d), MAC_DB1) == {}
    uplink = vp.port_vlans(policy, inv, sw['hv2'])[HV_UPLINK]
    assert not uplink.carries(local)


# ---- proactive entries for bound nics --------------------------------------------------------------

def test_a_bound_mac_gets_proactive_entries_on_its_hypervisor(fabric, policy):
    inv, sw, _ = bound_lab(fabric)
    flows = desired(policy, inv, sw['hv1'])
    entries = known(flows, MAC_WEB1)
    dst, src = entries['l2_lookup'], entries['learn']
    assert dst.priority == src.priority == 150 > learning_switch.P_MAC
    assert dst.match_dict() == {'vlan_vid': vid(10), 'eth_dst': MAC_WEB1}
    assert_reaches(flows, dst, HV_VM2, 10, [('pop_vlan',), ('output', HV_VM2)])   # delivered untagged
    # its source is known: no packet-in, no learning, no ageing
    assert src.match_dict() == {'in_port': HV_VM2, 'vlan_vid': vid(10), 'eth_src': MAC_WEB1}
    assert src.goto == 'arp_rsp' and src.actions == ()
    assert src.idle_timeout == 0 and not src.notify_removal
    assert {tenant_of(dst.cookie), tenant_of(src.cookie)} == {'acme'}
    assert {dst.cookie.owner, src.cookie.owner} == {'web1/nic0'}


def test_on_another_hypervisor_with_a_vm_on_its_vlan_the_mac_goes_out_of_the_uplink_tagged(fabric):
    policy = with_web2(fabric)
    inv, sw, _ = bound_lab(fabric)
    bind(inv, sw['hv2'], HV_VM3, 'acme/web2/nic0', MAC_WEB2)              # hv2 now has a VLAN 10 VM
    flows = desired(policy, inv, sw['hv2'])
    entries = known(flows, MAC_WEB1)
    assert entries['l2_lookup'].match_dict() == {'vlan_vid': vid(10), 'eth_dst': MAC_WEB1}
    # its source is known on the uplink too: never copied to the controller, never learned
    assert entries['learn'].match_dict() == {'in_port': HV_UPLINK, 'vlan_vid': vid(10), 'eth_src': MAC_WEB1}
    assert_reaches(flows, entries['l2_lookup'], HV_UPLINK, 10, [('output', HV_UPLINK)])
    assert entries['l2_lookup'].priority == 150


def test_a_hypervisor_with_no_vm_on_a_vlan_has_no_entries_for_that_vlans_macs(fabric, policy):
    inv, sw, _ = bound_lab(fabric)
    for other in ('hv2', 'hv3'):                         # no VLAN 10 VM on either: VLAN 10 is pruned
        flows = desired(policy, inv, sw[other])
        assert known(flows, MAC_WEB1) == {}, other
        assert not vp.port_vlans(policy, inv, sw[other])[HV_UPLINK].carries(10), other
        assert not [f for f in flows if f.match_dict().get('vlan_vid') == vid(10)], other


def test_on_its_leaf_the_mac_goes_out_of_the_hypervisor_port_elsewhere_toward_that_leaf(fabric, policy):
    inv, sw, ends = bound_lab(fabric)
    tree = topology.flood_tree(inv)
    expect = {
        # acme/web1 on hv1, behind leaf1 port 5
        MAC_WEB1: {LEAF1: 5, SPINE1: ends[('spine1', 'leaf1')].port,
                   SPINE2: ends[('spine2', 'leaf1')].port, LEAF2: ends[('leaf2', 'spine1')].port},
        # globex/app1 on hv3, behind leaf2 port 5; spine2 reaches leaf2 over the tree, via leaf1
        MAC_APP1: {LEAF2: 5, SPINE1: ends[('spine1', 'leaf2')].port,
                   LEAF1: ends[('leaf1', 'spine1')].port, SPINE2: ends[('spine2', 'leaf1')].port},
    }
    for leaf, mac in ((LEAF1, MAC_WEB1), (LEAF2, MAC_APP1)):
        assert {d: p for d, p in expect[mac].items() if d != leaf} == topology.toward(inv, tree, leaf)
    for mac, vlan in ((MAC_WEB1, 10), (MAC_APP1, 20)):
        for dpid, port in expect[mac].items():
            flows = desired(policy, inv, dpid)
            entries = known(flows, mac)
            assert entries['l2_lookup'].match_dict() == {'vlan_vid': vid(vlan), 'eth_dst': mac}
            # frames from it come in where frames to it go out: a known source, not learned
            assert entries['learn'].match_dict() == {'in_port': port, 'vlan_vid': vid(vlan), 'eth_src': mac}
            assert_reaches(flows, entries['l2_lookup'], port, vlan, [('output', port)])   # tagged


def test_a_hypervisor_not_yet_heard_on_its_leaf_is_reached_by_learning_on_physical_switches(fabric):
    policy = with_web2(fabric)
    inv, sw, _ = lab(fabric, hypervisors=('hv2', 'hv3'))                     # no LLDP from hv1 yet
    bind(inv, sw['hv1'], HV_VM2, 'acme/web1/nic0', MAC_WEB1)
    bind(inv, sw['hv3'], HV_VM3, 'acme/web2/nic0', MAC_WEB2)              # a VLAN 10 VM on hv3
    for name in ('spine1', 'spine2', 'leaf1', 'leaf2'):
        assert known(desired(policy, inv, sw[name]), MAC_WEB1) == {}
    flows = desired(policy, inv, sw['hv3'])
    assert_reaches(flows, known(flows, MAC_WEB1)['l2_lookup'], HV_UPLINK, 10, [('output', HV_UPLINK)])


def test_a_vm_port_that_goes_down_loses_its_entries_everywhere(fabric, policy):
    inv, sw, _ = bound_lab(fabric)
    app1_before = {name: known(desired(policy, inv, d), MAC_APP1) for name, d in sw.items()}
    assert app1_before['hv3'] and app1_before['leaf2'] and app1_before['leaf1']
    inv.switches[sw['hv1']].ports[HV_VM2].up = False
    assert HV_VM2 not in vp.port_vlans(policy, inv, sw['hv1'])
    assert all(known(desired(policy, inv, d), MAC_WEB1) == {} for d in sw.values())
    # others are unaffected
    assert {name: known(desired(policy, inv, d), MAC_APP1) for name, d in sw.items()} == app1_before


def test_a_vm_that_moves_is_followed_by_its_entries(fabric):
    policy = with_web2(fabric)
    inv, sw, ends = bound_lab(fabric)
    bind(inv, sw['hv2'], HV_VM3, 'acme/web2/nic0', MAC_WEB2)              # hv2 keeps a VLAN 10 VM
    unbind(inv, sw['hv1'], HV_VM2)                                          # detached from hv1 ...
    bind(inv, sw['hv3'], HV_VM3, 'acme/web1/nic0', MAC_WEB1)               # ... attached on hv3
    assert inv.locations['acme/web1/nic0'] == (sw['hv3'], HV_VM3)
    expect = {'hv2': (HV_UPLINK, [('output', HV_UPLINK)]), 'hv3': (HV_VM3, [('pop_vlan',), ('output', HV_VM3)]),
              'leaf1': (ends[('leaf1', 'spine1')].port, [('output', ends[('leaf1', 'spine1')].port)]),
              'leaf2': (5, [('output', 5)])}
    for name, (port, emit) in expect.items():
        flows = desired(policy, inv, sw[name])
        assert_reaches(flows, known(flows, MAC_WEB1)['l2_lookup'], port, 10, emit)
    assert vp.port_vlans(policy, inv, sw['hv1'])[HV_VM2] == PortVlans(untagged=1)
    # hv1 has no VLAN 10 VM left: its trunk and its leaf port drop VLAN 10, and nothing there
    # knows web1 any more
    assert vp.port_vlans(policy, inv, sw['hv1'])[HV_UPLINK] == PortVlans(untagged=1)
    assert vp.port_vlans(policy, inv, LEAF1)[5] == PortVlans(untagged=1)
    assert known(desired(policy, inv, sw['hv1']), MAC_WEB1) == {}


# ---- trunks ------------------------------------------------------------------------------------------

def test_hypervisor_trunks_carry_the_vlans_their_vms_need_tagged_and_the_native_untagged(fabric, policy):
    inv, sw, _ = bound_lab(fabric)
    # each hypervisor's uplink and its leaf port: the VLANs of the nics bound on it (30 is
    # allowed but nobody uses it; hv2 hosts nothing, so only the native VLAN)
    for name, trunk in (('hv1', PortVlans(frozenset({10}), 1)), ('hv2', PortVlans(untagged=1)),
                        ('hv3', PortVlans(frozenset({20}), 1))):
        leaf, port = HV_PORT[name]
        assert vp.port_vlans(policy, inv, sw[name])[HV_UPLINK] == trunk, name
        assert vp.port_vlans(policy, inv, leaf)[port] == trunk, name
    assert vp.port_vlans(policy, inv, LEAF1)[3] == PortVlans(untagged=1)                # edge
    # fabric cables carry every VLAN in use, whoever needs it
    assert vp.port_vlans(policy, inv, LEAF1)[1] == PortVlans(frozenset({1, 10, 20}))    # tree
    assert vp.port_vlans(policy, inv, LEAF2)[1] == PortVlans(frozenset({1, 10, 20}))
    assert 2 not in vp.port_vlans(policy, inv, LEAF2)          # leaf2-spine2 is off the tree
    assert HV_TUN not in vp.port_vlans(policy, inv, sw['hv2'])
    # an overlay nic adds nothing to a trunk; a VLAN nic bound there adds its VLAN at once,
    # even while it is still located elsewhere (a live migration arriving)
    bind(inv, sw['hv2'], HV_VM2, 'acme/db1/nic0', MAC_DB1)
    assert vp.port_vlans(policy, inv, sw['hv2'])[HV_UPLINK] == PortVlans(untagged=1)
    bind(inv, sw['hv2'], HV_VM3, 'globex/app1/nic0', MAC_APP1)
    assert inv.locations['globex/app1/nic0'] == (sw['hv3'], HV_VM2)
    assert vp.port_vlans(policy, inv, sw['hv2'])[HV_UPLINK] == PortVlans(frozenset({20}), 1)
    assert vp.port_vlans(policy, inv, LEAF1)[6] == PortVlans(frozenset({20}), 1)


def test_a_hypervisor_with_no_vm_on_a_vlan_neither_admits_nor_floods_it(fabric, policy):
    inv, sw, _ = bound_lab(fabric)
    for name, carried, pruned in (('hv1', 10, 20), ('hv3', 20, 10)):
        leaf, port = HV_PORT[name]
        hv, lf = desired(policy, inv, sw[name]), desired(policy, inv, leaf)
        assert admitted(hv, HV_UPLINK) == {UNTAGGED: (('push_vlan', 1),), vid(carried): ()}, name
        assert admitted(lf, port) == {UNTAGGED: (('push_vlan', 1),), vid(carried): ()}, name
        assert flood(hv, pruned) is None, name                                  # no port of hv carries it
        assert HV_UPLINK in outputs(flood(hv, carried)), name
        assert port not in outputs(flood(lf, pruned)) and port in outputs(flood(lf, carried)), name
        # no VLAN -> registers either: nothing of the pruned VLAN gets in
        assert {f.match_dict()['vlan_vid'] for f in by_table(hv, 'classify')
                if cookies.app_of(f.cookie) == 'learning_switch'} == {vid(carried)}, name
    hv2 = desired(policy, inv, sw['hv2'])
    assert admitted(hv2, HV_UPLINK) == {UNTAGGED: (('push_vlan', 1),)}
    assert admitted(desired(policy, inv, LEAF1), 6) == {UNTAGGED: (('push_vlan', 1),)}
    assert flood(hv2, 10) is None and flood(hv2, 20) is None
    assert not [f for f in by_table(hv2, 'classify') if f.priority]
    # a tagged trunk emits through one flow for the whole port, no tenant's (only VLANs the
    # port carries are ever chosen for it); a port with no tagged VLAN has none
    trunk, = (f for f in by_table(desired(policy, inv, sw['hv1']), 'output')
              if f.match_dict() == {R.OUT_PORT: HV_UPLINK})
    assert trunk.actions == (('output', HV_UPLINK),) and trunk.cookie.tenant is None
    assert not [f for f in by_table(hv2, 'output') if f.match_dict() == {R.OUT_PORT: HV_UPLINK}]


def test_a_vlan_outside_a_hypervisors_trunk_is_neither_admitted_from_nor_flooded_to_it():
    text = EXAMPLE_FABRIC.read_text().replace(
        'hv3: {leaf: leaf2, vtep: 172.16.2.11, trunk_vlans: [10, 20, 30, 40]}',
        'hv3: {leaf: leaf2, vtep: 172.16.2.11, trunk_vlans: [10]}')
    fabric = parse_fabric(text)
    assert fabric.hypervisors['hv3'].trunk_vlans == (10,)
    policy = Policy(fabric).with_tenants([acme(), globex('app2', 'app3')])
    inv, sw, _ = lab(fabric)
    bind(inv, sw['hv1'], HV_VM3, 'globex/app1/nic0', MAC_APP1)             # a VLAN 20 VM on hv1
    bind(inv, sw['hv2'], HV_VM3, 'globex/app3/nic0', MAC_APP3)             # ... and on hv2
    # hv3 hosts a VM on VLAN 10 and one on VLAN 20, but its trunk allows only 10
    bind(inv, sw['hv3'], HV_VM2, 'acme/web1/nic0', MAC_WEB1)
    bind(inv, sw['hv3'], HV_VM3, 'globex/app2/nic0', MAC_APP2)
    hv3, leaf2 = desired(policy, inv, sw['hv3']), desired(policy, inv, LEAF2)
    # hv3's uplink and the leaf port it is on: VLAN 20 is not let in ...
    assert admitted(hv3, HV_UPLINK) == {UNTAGGED: (('push_vlan', 1),), vid(10): ()}
    assert admitted(leaf2, 5) == {UNTAGGED: (('push_vlan', 1),), vid(10): ()}
    # ... nor sent out, flooded or known (its VLAN 20 VM stays on hv3)
    assert outputs(flood(hv3, 20)) == {HV_VM3}
    assert HV_UPLINK in outputs(flood(hv3, 10))
    assert 5 not in outputs(flood(leaf2, 20)) and outputs(flood(leaf2, 20))  # still on the tree
    assert 5 in outputs(flood(leaf2, 10))
    assert known(hv3, MAC_APP1) == {}
    learning_switch.learn(fabric, inv, LEAF2, 5, 20, MAC_OTHER)            # even if it were learned
    assert not [f for f in desired(policy, inv, LEAF2) if MAC_OTHER in f.match_dict().values()]
    # hv1 allows VLAN 20: the same VM is reached from hv2 (app3's) through its uplink, and on
    # leaf1 through hv1's port 5
    flows = desired(policy, inv, sw['hv2'])
    assert_reaches(flows, known(flows, MAC_APP1)['l2_lookup'], HV_UPLINK, 20, [('output', HV_UPLINK)])
    flows = desired(policy, inv, LEAF1)
    assert_reaches(flows, known(flows, MAC_APP1)['l2_lookup'], 5, 20, [('output', 5)])


def test_a_hypervisor_port_keeps_its_trunk_when_the_hypervisors_lldp_stops(fabric, policy):
    inv, sw, _ = bound_lab(fabric)
    before = vp.port_vlans(policy, inv, LEAF1)[5]
    topology.port_down(inv, sw['hv1'], HV_UPLINK)              # its session dropped: no more LLDP
    assert topology.peer(inv, LEAF1, 5) is None
    # the data plane must not depend on the hypervisor's controller session
    assert vp.port_vlans(policy, inv, LEAF1)[5] == before and before.tagged
    flows = desired(policy, inv, LEAF1)
    assert vid(10) in admitted(flows, 5)
    assert_reaches(flows, known(flows, MAC_WEB1)['l2_lookup'], 5, 10, [('output', 5)])   # still toward hv1


# ---- tenants and cookies -----------------------------------------------------------------------------

def test_two_tenants_flows_carry_different_tenant_ids(fabric, policy):
    inv, sw, _ = bound_lab(fabric)
    registry = cookies.Registry()                          # as the controller sends them
    a, g = registry.tenant_match('acme'), registry.tenant_match('globex')
    assert a[1] == g[1] == cookies.TENANT_MASK and a[0] != g[0] and a[0] and g[0]
    # physical switches carry both tenants; a hypervisor only the tenants of its VMs (hv1:
    # acme/web1, hv3: globex/app1, hv2: none)
    present = {'hv1': {'acme'}, 'hv2': set(), 'hv3': {'globex'}}
    for name, dpid in sw.items():
        flows = desired(policy, inv, dpid)
        mine = {f for f in flows if registry.encode(f.cookie) & a[1] == a[0]}
        theirs = {f for f in flows if registry.encode(f.cookie) & g[1] == g[0]}
        assert mine == {f for f in flows if tenant_of(f.cookie) == 'acme'}, name
        assert theirs == {f for f in flows if tenant_of(f.cookie) == 'globex'}, name
        assert {t for t, fs in (('acme', mine), ('globex', theirs)) if fs} == present.get(name, {'acme', 'globex'}), name
        # acme's flows are about VLAN 10 only, globex's about VLAN 20 only (a port security
        # drop is about its VM port only)
        assert {f.match_dict().get('vlan_vid', UNTAGGED) & 0xfff or dict(f.actions)['push_vlan']
                for f in mine if f.actions or f.goto} <= {10}, name
        assert {f.match_dict().get('vlan_vid', UNTAGGED) & 0xfff or dict(f.actions)['push_vlan']
                for f in theirs if f.actions or f.goto} <= {20}, name
        assert bool(known(flows, MAC_WEB1)) == ('acme' in present.get(name, {'acme'})), name
        assert all(f in mine for f in known(flows, MAC_WEB1).values())
        assert all(f in theirs for f in known(flows, MAC_APP1).values())
        # fabric-level flows (the native VLAN, LLDP, table misses, the flood hand-over) carry no tenant
        fabric_level = {f for f in flows if f.match_dict().get('vlan_vid') == vid(1) or f.priority in (0, 1, 1000)}
        assert fabric_level and all(tenant_of(f.cookie) is None for f in fabric_level), name
        assert all(registry.encode(f.cookie) & cookies.TENANT_MASK == 0 for f in fabric_level), name


CHANGES = {     # name: (acme after the change, the hypervisor that gets its first VLAN 10 VM or loses its last)
    'a MAC changes': (lambda: acme(web1_mac='02:00:0a:0a:00:ff'), None),
    'a workload is added': (lambda: acme(more={'web2': [('users', MAC_WEB2)]}), 'hv2'),
    'a workload is removed': (lambda: make_tenant('acme', {'users': 10, 'servers': {'vni': 5020}},
                                                  {'db1': [('servers', MAC_DB1)]}), 'hv1'),
}


@pytest.mark.parametrize('change', sorted(CHANGES))
def test_changing_one_tenants_workloads_leaves_the_other_tenants_flows_identical(fabric, policy, change):
    inv, sw, _ = bound_lab(fabric)
    bind(inv, sw['hv2'], HV_VM3, 'acme/web2/nic0', MAC_WEB2)              # attached, known once added
    learning_switch.learn(fabric, inv, LEAF2, 3, 1, MAC_OTHER)
    changed, trunk_moves_on = CHANGES[change]
    # the fabric's own flows that may move: where a hypervisor's uplink gains its first tagged
    # VLAN or loses its last, that uplink's and its leaf port's one trunk emission (no tenant's)
    may_move = {}
    if trunk_moves_on:
        leaf, port = HV_PORT[trunk_moves_on]
        may_move = {trunk_moves_on: {('output', 100, ((R.OUT_PORT, HV_UPLINK),))},
                    {LEAF1: 'leaf1', LEAF2: 'leaf2'}[leaf]: {('output', 100, ((R.OUT_PORT, port),))}}
        # the VM port that gains (web2's) or loses (web1's) its port-group: its flood guard
        vm_port = HV_VM3 if change == 'a workload is added' else HV_VM2
        may_move[trunk_moves_on] |= {('learn', 90, (('in_port', vm_port),)), ('punt', 100, (('in_port', vm_port),)),
                                     ('storm_ctl', 100, (('in_port', vm_port),))}
    store = ids.IdStore()                                  # one controller's stable ids, as it runs
    policy = policy.with_ids(ids.bind(store, policy))
    after_policy = Policy(fabric).with_tenants([changed(), globex()])
    after_policy = after_policy.with_ids(ids.bind(store, after_policy))
    acme_id, globex_id = 'acme', 'globex'
    changed_anything = False
    for name, dpid in sw.items():
        before, after = desired(policy, inv, dpid), desired(after_policy, inv, dpid)
        assert ({f for f in before if tenant_of(f.cookie) == globex_id}
                == {f for f in after if tenant_of(f.cookie) == globex_id}), name
        d = diff(after, before)
        changed_anything |= bool(d)
        assert globex_id not in {tenant_of(f.cookie) for f in d.add + d.delete}, name
        # only the changed tenant's flows move, and the trunk emissions above
        fabric_moved = {f.key for f in d.add + d.delete if tenant_of(f.cookie) != acme_id}
        assert all(tenant_of(f.cookie) in (acme_id, None) for f in d.add + d.delete), name
        assert fabric_moved == may_move.get(name, set()), (name, fabric_moved)
    assert changed_anything


def test_removing_a_tenant_leaves_the_other_tenants_flows_identical(fabric, policy):
    inv, sw, _ = bound_lab(fabric)
    store = ids.IdStore()                                  # one controller's stable ids, as it runs
    policy = policy.with_ids(ids.bind(store, policy))
    only_globex = Policy(fabric).with_tenants([globex()])
    only_globex = only_globex.with_ids(ids.bind(store, only_globex))
    globex_id = 'globex'
    for dpid in sw.values():
        before, after = desired(policy, inv, dpid), desired(only_globex, inv, dpid)
        assert ({f for f in before if tenant_of(f.cookie) == globex_id}
                == {f for f in after if tenant_of(f.cookie) == globex_id})
        assert not any(tenant_of(f.cookie) == 'acme' for f in after)
        assert flood(after, 10) is None


# ---- the pipeline ------------------------------------------------------------------------------------

def test_every_flow_of_every_switch_passes_the_table_declarations(fabric):
    policy = with_web2(fabric)
    inv, sw, _ = bound_lab(fabric)
    bind(inv, sw['hv2'], HV_VM2, 'acme/db1/nic0', MAC_DB1)
    bind(inv, sw['hv2'], HV_VM3, 'nobody/vm/nic0', MAC_OTHER)
    inv.switches[sw['hv2']].ports[5] = Port(5, 'tap-hv2-c', True, VM, since=0.0)
    bind(inv, sw['hv2'], 5, 'acme/web2/nic0', MAC_WEB2)                  # a VLAN 10 VM on hv2 too
    learning_switch.learn(fabric, inv, LEAF1, 5, 10, MAC_OTHER)
    learning_switch.learn(fabric, inv, sw['hv3'], HV_UPLINK, 20, MAC_WEB2)
    total = 0
    for dpid in sw.values():
        flows = desired(policy, inv, dpid)                 # desired() runs tables.check on each
        total += len(flows)
        assert any(cookies.app_of(f.cookie) == vp.APP for f in flows)
    assert total > 100
    assert vp.compile_flows(policy, inv, 0x999) == set()
    assert LinkEnd(LEAF1, 5) in inv.links


def test_a_nic_bound_on_two_hypervisors_is_reached_where_it_was_until_it_leaves(fabric, policy):
    inv, sw, ends = bound_lab(fabric)
    bind(inv, sw['hv3'], HV_VM3, 'acme/web1/nic0', MAC_WEB1)               # a live migration to hv3 begins
    assert inv.locations['acme/web1/nic0'] == (sw['hv1'], HV_VM2)
    for name, port in (('hv1', HV_VM2), ('hv3', HV_UPLINK), ('leaf1', 5), ('leaf2', ends[('leaf2', 'spine1')].port)):
        flows = desired(policy, inv, sw[name])
        entries = known(flows, MAC_WEB1)
        assert entries['l2_lookup'].actions == (('set_field', R.OUT_PORT, port),), name
        assert entries['learn'].match_dict()['in_port'] == port, name          # its source, from there
    unbind(inv, sw['hv1'], HV_VM2)                                           # it left hv1
    assert inv.locations['acme/web1/nic0'] == (sw['hv3'], HV_VM3)
    for name, port in (('hv3', HV_VM3), ('leaf1', ends[('leaf1', 'spine1')].port), ('leaf2', 5)):
        entries = known(desired(policy, inv, sw[name]), MAC_WEB1)
        assert entries['l2_lookup'].actions == (('set_field', R.OUT_PORT, port),), name
    assert known(desired(policy, inv, sw['hv1']), MAC_WEB1) == {}            # no VLAN 10 VM left on hv1


def test_port_groups_compile_as_one_unit_per_nic(fabric):
    policy = with_web2(fabric)
    inv, sw, _ = bound_lab(fabric)
    bind(inv, sw['hv2'], HV_VM3, 'acme/web2/nic0', MAC_WEB2)
    bind(inv, sw['hv2'], HV_VM2, 'acme/db1/nic0', MAC_DB1)                  # an overlay nic: not a unit
    for name, dpid in sw.items():
        ctx = vp.context(policy, inv, dpid)
        keys = list(vp.units(policy, inv, dpid))
        parts = [vp.compile_switch(policy, inv, dpid, ctx)] + [vp.compile_unit(policy, inv, dpid, k, ctx) for k in keys]
        assert set().union(*parts) == vp.compile_flows(policy, inv, dpid), name
        # each unit holds that nic's entries only
        for k, part in zip(keys, parts[1:]):
            mac = policy.nics[k].nic.mac
            assert all(mac in f.match_dict().values() for f in part), (name, k)
    # every located VLAN nic on a physical switch; on a hypervisor, those of its own VLANs
    vlan_nics = {'acme/web1/nic0', 'acme/web2/nic0', 'globex/app1/nic0'}
    assert set(vp.units(policy, inv, LEAF1)) == vlan_nics
    assert set(vp.units(policy, inv, sw['hv1'])) == set(vp.units(policy, inv, sw['hv2'])) == {
        'acme/web1/nic0', 'acme/web2/nic0'}
    assert set(vp.units(policy, inv, sw['hv3'])) == {'globex/app1/nic0'}
