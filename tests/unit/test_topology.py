"""Topology: LLDP frames, port roles from what LLDP shows, and the loop-free flood tree."""
import struct

import pytest

from apps import learning_switch, topology
from apps.topology import DISCOVERY_WINDOW, LINK_TIMEOUT, classify_ports, flood_tree, lldp_frame, parse_lldp
from controller.inventory.model import (EDGE, FABRIC, HYPERVISOR, PENDING, UNDECLARED, UPLINK, VM,
                                        Inventory, LinkEnd)
from controller.pipeline import tables
from controller.policy.model import Policy, default_hypervisor_dpid
from tests.unit.builders import (HV_UPLINK, LEAF1, LEAF2, SPINE1, SPINE2, add_hypervisor, add_switch,
                                 cabled_mesh, hypervisor_seen, see_link)


def tlv(t, value):
    return struct.pack('!H', t << 9 | len(value)) + value


def eth(ethertype, dst='0180c200000e', src='001122334455'):
    return bytes.fromhex(dst + src) + struct.pack('!H', ethertype)


# ---- LLDP frames ------------------------------------------------------------------------------

@pytest.mark.parametrize('dpid,port', [(0x201, 1), (0x101, 4), (2**64 - 1, 0xfffffeff),
                                       (default_hypervisor_dpid('hv1'), 65534)])
def test_lldp_frame_round_trips(dpid, port):
    assert parse_lldp(lldp_frame(dpid, port)) == LinkEnd(dpid, port)


def test_lldp_frame_goes_to_the_nearest_bridge_group_as_ethertype_88cc():
    f = lldp_frame(0x201, 3)
    assert f[:6] == bytes.fromhex('0180c200000e')
    assert f[12:14] == b'\x88\xcc'
    assert f.endswith(b'\x00\x00')                      # End of LLDPDU


def test_a_non_lldp_frame_is_not_a_link():
    ipv4 = eth(0x0800, dst='020000000001') + bytes(40)
    assert parse_lldp(ipv4) is None
    assert parse_lldp(b'') is None
    assert parse_lldp(lldp_frame(0x201, 3)[:13]) is None


def test_lldp_from_another_vendor_is_not_a_link():
    mac_chassis = tlv(1, b'\x04' + bytes.fromhex('001122334455'))
    ttl, end = tlv(3, b'\x00\x78'), tlv(0, b'')
    ifname = eth(0x88cc) + mac_chassis + tlv(2, b'\x05eth0') + ttl + end              # lldpd style
    local_name = eth(0x88cc) + mac_chassis + tlv(2, b'\x07Ethernet1/1') + ttl + end   # named port id
    local_number = eth(0x88cc) + mac_chassis + tlv(2, b'\x07513') + ttl + end        # ifIndex port id
    assert parse_lldp(ifname) is None
    assert parse_lldp(local_name) is None
    assert parse_lldp(local_number) is None


def test_lldp_with_our_chassis_but_a_garbled_id_is_not_a_link():
    ttl, end = tlv(3, b'\x00\x78'), tlv(0, b'')
    bad_dpid = eth(0x88cc) + tlv(1, b'\x07opendvs:zz') + tlv(2, b'\x071') + ttl + end
    bad_port = eth(0x88cc) + tlv(1, b'\x07opendvs:%016x' % 0x201) + tlv(2, b'\x07one') + ttl + end
    no_port = eth(0x88cc) + tlv(1, b'\x07opendvs:%016x' % 0x201) + ttl + end
    assert parse_lldp(bad_dpid) is None
    assert parse_lldp(bad_port) is None
    assert parse_lldp(no_port) is None


# ---- the topology app's own flows -------------------------------------------------------------

def test_physical_switches_and_hypervisors_send_lldp_to_the_controller(fabric):
    inv = Inventory()
    add_switch(inv, LEAF1, 'leaf1', ports={1: PENDING})
    hv = add_switch(inv, fabric.hypervisors['hv1'].dpid, 'hv1', kind='hypervisor', ports={1: VM})
    policy = Policy(fabric)
    flows = topology.compile_flows(policy, inv, LEAF1)
    assert len(flows) == 1
    f, = flows
    assert (f.table, f.match_dict(), f.actions) == (
        'port_sec', {'eth_type': 0x88cc, 'eth_dst': '01:80:c2:00:00:0e'}, (('output', 'controller'),))
    assert f.goto is None                               # never admitted into a VLAN
    # ahead of VLAN admission, the routed underlay and tunnel admission; only a bond's fold
    # (controller/bonds.py) comes first, and it just rewrites in_port and resubmits to port_sec,
    # and a VM/edge port shut for a MAC-limit violation (learning_switch), which hears nothing
    others = [hi for app, (_, hi) in tables.BY_NAME['port_sec'].bands.items() if app not in (topology.APP, 'bonds')]
    assert others and f.priority > max(set(others) - {learning_switch.P_SHUTDOWN})
    assert tables.BY_NAME['port_sec'].bands['bonds'][0] > f.priority
    tables.check(f)
    # a hypervisor's br-int hears its leaf the same way (and LLDP is never learned or flooded)
    assert topology.compile_flows(policy, inv, hv.dpid) == {f}
    assert topology.compile_flows(policy, inv, 0x999) == set()


# ---- port roles -------------------------------------------------------------------------------

def test_a_quiet_port_stays_pending_until_the_discovery_window_has_passed(fabric):
    inv = Inventory()
    sw = add_switch(inv, LEAF1, 'leaf1', ports={3: PENDING})     # up since t=0
    assert classify_ports(fabric, inv, now=DISCOVERY_WINDOW - 0.1) is False
    assert sw.ports[3].role == PENDING
    assert classify_ports(fabric, inv, now=DISCOVERY_WINDOW) is True
    assert sw.ports[3].role == EDGE
    assert sw.ports[3].since == DISCOVERY_WINDOW
    assert classify_ports(fabric, inv, now=100) is False          # settled
    assert sw.ports[3].role == EDGE


def test_a_down_port_never_becomes_an_edge_port(fabric):
    inv = Inventory()
    sw = add_switch(inv, LEAF1, 'leaf1', ports={3: (PENDING, 'leaf1-eth3', False)})
    classify_ports(fabric, inv, now=100)
    assert sw.ports[3].role == PENDING


def test_an_edge_port_that_goes_down_is_pending_again(fabric):
    inv = Inventory()
    sw = add_switch(inv, LEAF1, 'leaf1', ports={3: EDGE})
    sw.ports[3].up = False
    assert classify_ports(fabric, inv, now=100) is True
    assert sw.ports[3].role == PENDING


def test_lldp_from_a_declared_peer_makes_a_fabric_port(fabric):
    inv = Inventory()
    leaf = add_switch(inv, LEAF1, 'leaf1', ports={1: PENDING})
    add_switch(inv, SPINE1, 'spine1', ports={1: PENDING})
    inv.links[LinkEnd(LEAF1, 1)] = (LinkEnd(SPINE1, 1), 0.0)
    assert classify_ports(fabric, inv, now=0.1) is True
    assert leaf.ports[1].role == FABRIC


def test_lldp_from_a_peer_the_fabric_does_not_declare_is_an_undeclared_link(fabric):
    inv = Inventory()
    l1 = add_switch(inv, LEAF1, 'leaf1', ports={5: PENDING})
    l2 = add_switch(inv, LEAF2, 'leaf2', ports={5: EDGE})
    see_link(inv, LinkEnd(LEAF1, 5), LinkEnd(LEAF2, 5))           # leaf-to-leaf: not in links:
    classify_ports(fabric, inv, now=100)
    assert l1.ports[5].role == UNDECLARED
    assert l2.ports[5].role == UNDECLARED
    assert flood_tree(inv) == set()


def test_link_seen_makes_the_port_a_fabric_port_at_once(fabric):
    inv = Inventory()
    leaf = add_switch(inv, LEAF1, 'leaf1', ports={1: PENDING})
    add_switch(inv, SPINE1, 'spine1', ports={1: PENDING})
    assert topology.link_seen(fabric, inv, LinkEnd(LEAF1, 1), LinkEnd(SPINE1, 1), now=0.5) is True
    assert inv.links[LinkEnd(LEAF1, 1)] == (LinkEnd(SPINE1, 1), 0.5)
    assert leaf.ports[1].role == FABRIC
    # the next LLDP round over the same cable only refreshes the time
    assert topology.link_seen(fabric, inv, LinkEnd(LEAF1, 1), LinkEnd(SPINE1, 1), now=1.2) is False
    assert inv.links[LinkEnd(LEAF1, 1)] == (LinkEnd(SPINE1, 1), 1.2)


def test_a_silent_link_expires_and_its_port_waits_before_becoming_an_edge(fabric):
    inv = Inventory()
    leaf = add_switch(inv, LEAF1, 'leaf1', ports={1: FABRIC})
    add_switch(inv, SPINE1, 'spine1', ports={1: FABRIC})
    see_link(inv, LinkEnd(LEAF1, 1), LinkEnd(SPINE1, 1), now=10.0)
    assert topology.expire(fabric, inv, now=10.0 + LINK_TIMEOUT) is False    # not yet
    assert topology.expire(fabric, inv, now=10.1 + LINK_TIMEOUT) is True
    assert inv.links == {}
    assert leaf.ports[1].role == PENDING                           # not straight to edge
    t = 10.1 + LINK_TIMEOUT
    classify_ports(fabric, inv, now=t + DISCOVERY_WINDOW)
    assert leaf.ports[1].role == EDGE


def test_port_down_forgets_the_link_in_both_directions():
    inv = Inventory()
    see_link(inv, LinkEnd(LEAF1, 1), LinkEnd(SPINE1, 1))
    see_link(inv, LinkEnd(LEAF1, 2), LinkEnd(SPINE2, 1))
    topology.port_down(inv, SPINE1, 1)
    assert set(inv.links) == {LinkEnd(LEAF1, 2), LinkEnd(SPINE2, 1)}


def test_lldp_from_a_hypervisor_makes_a_hypervisor_port(fabric):
    inv = Inventory()
    leaf = add_switch(inv, LEAF1, 'leaf1', ports={5: PENDING})
    hv = add_hypervisor(inv, fabric, 'hv1')
    assert topology.link_seen(fabric, inv, LinkEnd(LEAF1, 5), LinkEnd(hv, HV_UPLINK), now=0.5) is True
    assert leaf.ports[5].role == HYPERVISOR                 # at once: no discovery window to wait
    assert inv.switches[hv].ports[HV_UPLINK].role == UPLINK  # br-int roles come from names
    assert topology.peer(inv, LEAF1, 5) == LinkEnd(hv, HV_UPLINK)
    assert topology.hypervisor_ports(inv) == {hv: LinkEnd(LEAF1, 5)}
    assert flood_tree(inv) == set()                         # a hypervisor is not part of the tree


def test_lldp_from_a_hypervisor_the_controller_does_not_know_is_no_hypervisor_port(fabric):
    inv = Inventory()
    leaf = add_switch(inv, LEAF1, 'leaf1', ports={5: PENDING})
    hv = fabric.hypervisors['hv1'].dpid                     # not connected: not in the inventory
    topology.link_seen(fabric, inv, LinkEnd(LEAF1, 5), LinkEnd(hv, HV_UPLINK), now=0.5)
    assert leaf.ports[5].role == UNDECLARED
    assert topology.hypervisor_ports(inv) == {}


def test_a_hypervisor_port_stays_one_while_up_after_its_lldp_stops(fabric):
    inv = Inventory()
    leaf = add_switch(inv, LEAF1, 'leaf1', ports={5: PENDING})
    hv = add_hypervisor(inv, fabric, 'hv1')
    hypervisor_seen(fabric, inv, LEAF1, 5, hv, now=1.0)
    # the hypervisor's controller session drops: no more LLDP from it, but its cable is there
    del inv.switches[hv]
    topology.expire(fabric, inv, now=2.0 + LINK_TIMEOUT + DISCOVERY_WINDOW)
    assert inv.links == {}
    assert leaf.ports[5].role == HYPERVISOR
    assert topology.hypervisor_ports(inv) == {hv: LinkEnd(LEAF1, 5)}   # still remembered behind it
    leaf.ports[5].up = False
    topology.port_down(inv, LEAF1, 5)
    classify_ports(fabric, inv, now=100)
    assert leaf.ports[5].role == PENDING                    # a cable that goes down is not sticky
    assert topology.hypervisor_ports(inv) == {}


def test_a_hypervisor_port_becomes_a_fabric_port_when_a_switch_shows_up_behind_it(fabric):
    inv = Inventory()
    leaf = add_switch(inv, LEAF1, 'leaf1', ports={1: PENDING})
    add_switch(inv, SPINE1, 'spine1', ports={1: FABRIC})
    hv = add_hypervisor(inv, fabric, 'hv1')
    hypervisor_seen(fabric, inv, LEAF1, 1, hv)
    assert leaf.ports[1].role == HYPERVISOR
    topology.link_seen(fabric, inv, LinkEnd(LEAF1, 1), LinkEnd(SPINE1, 1), now=1.0)
    assert leaf.ports[1].role == FABRIC


def test_toward_gives_every_switch_on_the_tree_its_port_toward_a_leaf(fabric):
    inv, ends = cabled_mesh(fabric)
    tree = flood_tree(inv)
    # the tree: spine1-leaf1, spine1-leaf2, spine2-leaf1 (spine2-leaf2 is off the tree)
    assert topology.toward(inv, tree, LEAF1) == {
        SPINE1: ends[('spine1', 'leaf1')].port, SPINE2: ends[('spine2', 'leaf1')].port,
        LEAF2: ends[('leaf2', 'spine1')].port}
    assert topology.toward(inv, tree, LEAF2) == {
        SPINE1: ends[('spine1', 'leaf2')].port, LEAF1: ends[('leaf1', 'spine1')].port,
        SPINE2: ends[('spine2', 'leaf1')].port}             # the long way round, on the tree
    assert all(LinkEnd(d, p) in tree for d, p in topology.toward(inv, tree, LEAF2).items())


def test_hypervisor_ports_are_left_alone(fabric):
    inv = Inventory()
    hv = add_switch(inv, fabric.hypervisors['hv1'].dpid, 'hv1', kind='hypervisor', ports={2: VM})
    assert classify_ports(fabric, inv, now=100) is False
    assert hv.ports[2].role == VM


# ---- the flood tree ---------------------------------------------------------------------------

def tree_edges(inv, tree):
    """The switch pairs whose link has both ends on the tree."""
    return {frozenset((rx.dpid, tx.dpid)) for rx, (tx, _) in inv.links.items()
            if rx in tree and tx in tree}


def assert_spanning_tree(inv, tree, switches):
    edges = tree_edges(inv, tree)
    assert len(edges) == len(switches) - 1
    parent = {s: s for s in switches}                 # union-find: no edge may close a cycle

    def root(s):
        while parent[s] != s:
            s = parent[s]
        return s
    for a, b in (tuple(e) for e in edges):
        assert root(a) != root(b), 'cycle through %x-%x' % (a, b)
        parent[root(a)] = root(b)
    assert len({root(s) for s in switches}) == 1, 'not every switch is reached'
    return edges


def test_mesh_is_wired_as_declared(fabric):
    inv, ends = cabled_mesh(fabric)
    assert len(inv.links) == 8                         # 4 cables, seen both ways
    assert classify_ports(fabric, inv, now=0.0) is False   # every cabled port already fabric
    assert {p.role for sw in inv.switches.values() for p in sw.ports.values()} == {FABRIC, EDGE}


def test_flood_tree_of_the_two_by_two_mesh_spans_every_switch_without_a_loop(fabric):
    inv, ends = cabled_mesh(fabric)
    tree = flood_tree(inv)
    edges = assert_spanning_tree(inv, tree, {SPINE1, SPINE2, LEAF1, LEAF2})
    # BFS from the lowest dpid (spine1): both leaves hang off spine1, spine2 off leaf1
    assert edges == {frozenset((SPINE1, LEAF1)), frozenset((SPINE1, LEAF2)), frozenset((SPINE2, LEAF1))}
    assert ends[('leaf2', 'spine2')] not in tree and ends[('spine2', 'leaf2')] not in tree
    assert len(tree) == 6                              # two ends per tree link, no edge ports


def test_flood_tree_is_rebuilt_around_a_cut_tree_link(fabric):
    inv, ends = cabled_mesh(fabric)
    cut = ends[('spine1', 'leaf1')]
    assert cut in flood_tree(inv)
    topology.port_down(inv, cut.dpid, cut.port)
    classify_ports(fabric, inv, now=1.0)
    assert inv.switches[LEAF1].ports[ends[('leaf1', 'spine1')].port].role == PENDING
    tree = flood_tree(inv)
    edges = assert_spanning_tree(inv, tree, {SPINE1, SPINE2, LEAF1, LEAF2})
    assert frozenset((SPINE1, LEAF1)) not in edges
    assert cut not in tree and ends[('leaf1', 'spine1')] not in tree
    assert ends[('leaf2', 'spine2')] in tree           # the spare link now carries floods


def test_a_link_only_one_side_calls_fabric_is_not_on_the_tree(fabric):
    inv, ends = cabled_mesh(fabric)
    inv.switches[LEAF2].ports[ends[('leaf2', 'spine1')].port].role = PENDING
    tree = flood_tree(inv)
    assert ends[('spine1', 'leaf2')] not in tree
    assert_spanning_tree(inv, tree, {SPINE1, SPINE2, LEAF1, LEAF2})    # via spine2 instead


def test_a_switch_cut_off_from_the_rest_roots_its_own_tree(fabric):
    inv, ends = cabled_mesh(fabric)
    for peer in ('spine1', 'spine2'):
        e = ends[('leaf2', peer)]
        topology.port_down(inv, e.dpid, e.port)
    classify_ports(fabric, inv, now=1.0)
    tree = flood_tree(inv)
    assert_spanning_tree(inv, tree, {SPINE1, SPINE2, LEAF1})
    assert not any(e.dpid == LEAF2 for e in tree)
