"""The controller core driven by hand: events in, inventory and desired flows out.

No threads are started: each test calls the event methods and desired(dpid) directly, with
fake switch connections that only record what they are sent.
"""
import struct
import time

import pytest

from apps import topology
from controller.core import Controller, hypervisor_port_role
from controller.inventory.model import (EDGE, FABRIC, HYPERVISOR, PENDING, TUNNEL, UPLINK, VM, Binding,
                                        LinkEnd)
from controller.pipeline import cookies, tables
from controller.pipeline.flow import UNTAGGED, vid
from controller.policy.model import Policy
from tests.unit.builders import LEAF1, SPINE1, FakeSwitch, by_table, make_tenant

LEARN = tables.table_id('learn')
MAC_A = '02:00:00:00:00:0a'
MAC_WEB1 = '02:00:0a:0a:00:0b'
WEB1 = 'acme/web1/nic0'


def acme():
    return make_tenant('acme', {'users': 10}, {'web1': [('users', MAC_WEB1)]})


def tagged_frame(src, vlan, dst='ff:ff:ff:ff:ff:ff'):
    mac = lambda m: bytes.fromhex(m.replace(':', ''))   # noqa: E731
    return mac(dst) + mac(src) + struct.pack('!HHH', 0x8100, vlan, 0x0800) + bytes(46)


@pytest.fixture
def ctl(fabric):
    c = Controller(fabric)
    yield c
    c.stop()


def connect(ctl, dpid, ports):
    conn = FakeSwitch(dpid)
    ctl.switch_up(conn, ports)
    return conn


def leaf1_up(ctl, edge_after_window=True):
    """leaf1 with uplinks 1, 2 and edge ports 3, 4; its quiet ports settle into edge ports."""
    conn = connect(ctl, LEAF1, [(1, 'leaf1-eth1', True), (2, 'leaf1-eth2', True),
                                (3, 'leaf1-eth3', True), (4, 'leaf1-eth4', True)])
    if edge_after_window:
        topology.classify_ports(ctl.fabric, ctl.inv, time.monotonic() + topology.DISCOVERY_WINDOW)
    return conn


def test_a_switch_that_is_not_in_the_fabric_is_left_alone(ctl):
    conn = connect(ctl, 0xdead, [(1, 'eth1', True)])
    assert ctl.inv.switches == {}
    assert ctl.conns == {}
    assert ctl.desired(0xdead) == set()
    assert conn.reads == 0 and conn.applied == []


def test_a_physical_switch_comes_up_with_every_port_pending(ctl):
    conn = leaf1_up(ctl, edge_after_window=False)
    sw = ctl.inv.switches[LEAF1]
    assert (sw.name, sw.kind) == ('leaf1', 'physical')
    assert {no: p.role for no, p in sw.ports.items()} == {1: PENDING, 2: PENDING, 3: PENDING, 4: PENDING}
    assert ctl.conns[LEAF1] is conn
    assert ctl.settling(LEAF1)
    flows = ctl.desired(LEAF1)
    # nothing is admitted before discovery, except LLDP to the controller
    assert {f.match_dict().get('eth_type') for f in by_table(flows, 'classify') if f.priority} == {0x88cc}


def test_hypervisor_port_roles_come_from_their_names():
    assert hypervisor_port_role('int-to-phy') == UPLINK
    assert hypervisor_port_role('vxlan_sys_4789') == TUNNEL
    assert hypervisor_port_role('vxlan0') == TUNNEL
    assert hypervisor_port_role('tap-web1') == VM


def test_a_hypervisor_br_int_gets_port_roles_from_names_at_once(ctl, fabric):
    hv = fabric.hypervisors['hv2'].dpid
    connect(ctl, hv, [(1, 'int-to-phy', True), (2, 'tap-web1', True), (3, 'vxlan0', True),
                      (4, 'tap-db1', False)])
    sw = ctl.inv.switches[hv]
    assert (sw.name, sw.kind) == ('hv2', 'hypervisor')
    assert {no: p.role for no, p in sw.ports.items()} == {1: UPLINK, 2: VM, 3: TUNNEL, 4: VM}
    assert not ctl.settling(hv)
    flows = ctl.desired(hv)                                  # every flow passed tables.check
    vm_admission = {f.match_dict()['vlan_vid'] for f in by_table(flows, 'classify')
                    if f.match_dict().get('in_port') == 2}
    assert vm_admission == {UNTAGGED}
    assert not [f for f in by_table(flows, 'classify') if f.match_dict().get('in_port') in (3, 4)]


def test_an_lldp_frame_from_a_neighbour_records_the_link(ctl):
    leaf1_up(ctl, edge_after_window=False)
    connect(ctl, SPINE1, [(1, 'spine1-eth1', True)])
    ctl.packet_in(LEAF1, 1, 0, topology.lldp_frame(SPINE1, 1))
    assert LinkEnd(LEAF1, 1) in ctl.inv.links
    assert ctl.inv.links[LinkEnd(LEAF1, 1)][0] == LinkEnd(SPINE1, 1)
    assert ctl.inv.switches[LEAF1].ports[1].role == FABRIC
    assert ctl.inv.macs == {}                                 # LLDP is never learned


def test_lldp_from_a_switch_that_is_not_connected_is_ignored(ctl):
    leaf1_up(ctl, edge_after_window=False)
    ctl.packet_in(LEAF1, 1, 0, topology.lldp_frame(SPINE1, 1))
    assert ctl.inv.links == {}


def test_send_lldp_goes_out_of_physical_ports_and_hypervisor_uplinks(ctl, fabric):
    conn = leaf1_up(ctl)
    hv_conn = connect(ctl, fabric.hypervisors['hv1'].dpid, [(1, 'int-to-phy', True)])
    ctl.send_lldp()
    assert sorted(p for p, _ in conn.sent) == [1, 2, 3, 4]
    assert all(topology.parse_lldp(d) == LinkEnd(LEAF1, p) for p, d in conn.sent)
    # a hypervisor announces itself on its uplink only, so its leaf learns where it is
    assert [(p, topology.parse_lldp(d)) for p, d in hv_conn.sent] == [
        (1, LinkEnd(fabric.hypervisors['hv1'].dpid, 1))]


def test_a_tagged_frame_from_the_learn_table_learns_its_source(ctl):
    leaf1_up(ctl)
    # an untagged frame on edge port 3 got the native tag in classify before it came up to us
    ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(MAC_A, 1))
    assert ctl.inv.macs[LEAF1] == {(1, MAC_A): 3}
    assert LEAF1 in ctl._dirty
    l2 = {f.match_dict()['eth_dst']: f.actions for f in by_table(ctl.desired(LEAF1), 'l2') if f.priority}
    assert l2 == {MAC_A: (('pop_vlan',), ('output', 3))}


def test_a_tenant_vlan_frame_from_a_hypervisor_port_is_learned_and_reached_tagged(fabric):
    ctl = Controller(Policy(fabric).with_tenants([acme()]))
    leaf1_up(ctl)
    hv = fabric.hypervisors['hv1'].dpid
    connect(ctl, hv, [(1, 'int-to-phy', True)])
    ctl.packet_in(LEAF1, 3, 0, topology.lldp_frame(hv, 1))
    ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(MAC_A, 10))
    assert ctl.inv.macs[LEAF1] == {(10, MAC_A): 3}
    d, = (f for f in by_table(ctl.desired(LEAF1), 'l2') if f.match_dict().get('eth_dst') == MAC_A)
    assert d.match_dict()['vlan_vid'] == vid(10)
    assert d.actions == (('output', 3),)
    assert d.cookie & cookies.TENANT_MASK == cookies.tenant_match('acme')[0]


def test_frames_from_other_tables_or_untagged_are_not_learned(ctl):
    leaf1_up(ctl)
    ctl.packet_in(LEAF1, 3, tables.table_id('classify'), tagged_frame(MAC_A, 10))
    untagged = tagged_frame(MAC_A, 10)[:12] + struct.pack('!H', 0x0800) + bytes(46)
    ctl.packet_in(LEAF1, 3, LEARN, untagged)
    ctl.packet_in(LEAF1, 3, LEARN, b'\x00' * 10)              # runt
    ctl.packet_in(0xdead, 3, LEARN, tagged_frame(MAC_A, 10))  # unknown switch
    assert ctl.inv.macs.get(LEAF1, {}) == {}


def test_a_port_going_down_forgets_the_macs_learned_on_it(ctl):
    leaf1_up(ctl)
    ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(MAC_A, 10))
    ctl.packet_in(LEAF1, 4, LEARN, tagged_frame('02:00:00:00:00:0b', 10))
    ctl.port_status(LEAF1, 'modify', 3, 'leaf1-eth3', False)
    assert ctl.inv.macs[LEAF1] == {(10, '02:00:00:00:00:0b'): 4}
    port = ctl.inv.switches[LEAF1].ports[3]
    assert (port.up, port.role) == (False, PENDING)
    assert 3 not in {a[1] for f in by_table(ctl.desired(LEAF1), 'flood') for a in f.actions
                     if a[0] == 'output'}


def test_a_port_that_comes_back_waits_for_discovery_again(ctl):
    leaf1_up(ctl)
    assert ctl.inv.switches[LEAF1].ports[3].role == EDGE
    ctl.port_status(LEAF1, 'modify', 3, 'leaf1-eth3', False)
    ctl.port_status(LEAF1, 'modify', 3, 'leaf1-eth3', True)
    assert ctl.inv.switches[LEAF1].ports[3].role == PENDING


def test_a_deleted_port_is_gone_with_its_macs(ctl):
    leaf1_up(ctl)
    ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(MAC_A, 10))
    ctl.port_status(LEAF1, 'delete', 3, 'leaf1-eth3', False)
    assert 3 not in ctl.inv.switches[LEAF1].ports
    assert ctl.inv.macs[LEAF1] == {}


def test_an_aged_out_mac_is_forgotten_and_the_reconciler_knows_it_is_gone(ctl):
    conn = leaf1_up(ctl)
    ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(MAC_A, 1))
    ctl.rec.converge(conn, ctl.desired(LEAF1))
    src, = (f for f in by_table(ctl.desired(LEAF1), 'learn') if f.match_dict().get('eth_src') == MAC_A)
    ctl.flow_removed(LEAF1, src)
    assert ctl.inv.macs[LEAF1] == {}
    assert src not in ctl.rec.installed(LEAF1)


def test_switch_down_forgets_the_switch_its_links_and_its_macs(ctl):
    conn = leaf1_up(ctl)
    connect(ctl, SPINE1, [(1, 'spine1-eth1', True)])
    ctl.packet_in(LEAF1, 1, 0, topology.lldp_frame(SPINE1, 1))
    ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(MAC_A, 10))
    ctl.switch_down(FakeSwitch(LEAF1))                       # a stale connection: ignored
    assert LEAF1 in ctl.inv.switches
    ctl.switch_down(conn)
    assert LEAF1 not in ctl.inv.switches and LEAF1 not in ctl.conns
    assert LEAF1 not in ctl.inv.macs
    assert ctl.inv.links == {}


# ---- hypervisors on their leaf, bindings, policy ------------------------------------------------

def hv1_on_leaf1_port3(ctl, fabric):
    """leaf1 (edge ports 3 and 4 settled) and hv1's br-int, whose LLDP arrives on leaf1 port 3."""
    leaf = leaf1_up(ctl)
    hv = fabric.hypervisors['hv1'].dpid
    hv_conn = connect(ctl, hv, [(1, 'int-to-phy', True), (2, 'tap-web1', True)])
    ctl.packet_in(LEAF1, 3, 0, topology.lldp_frame(hv, 1))
    return leaf, hv_conn, hv


def admitted(flows, port):
    return {f.match_dict()['vlan_vid']: f.actions for f in by_table(flows, 'classify')
            if f.match_dict().get('in_port') == port and cookies.app_of(f.cookie) == 'learning_switch'}


def test_a_controller_built_from_a_fabric_runs_it_with_no_tenants(ctl, fabric):
    assert ctl.policy == Policy(fabric)
    assert ctl.fabric is fabric
    assert ctl.policy.tenants == {}


def test_lldp_from_a_hypervisor_uplink_makes_its_leaf_port_a_hypervisor_trunk(fabric):
    ctl = Controller(Policy(fabric).with_tenants([acme()]))
    _, _, hv = hv1_on_leaf1_port3(ctl, fabric)
    assert ctl.inv.switches[LEAF1].ports[3].role == HYPERVISOR
    assert ctl.inv.links[LinkEnd(LEAF1, 3)][0] == LinkEnd(hv, 1)
    flows = ctl.desired(LEAF1)
    assert admitted(flows, 3) == {UNTAGGED: (('push_vlan', 1),), vid(10): ()}
    assert admitted(flows, 4) == {UNTAGGED: (('push_vlan', 1),)}            # still a plain edge port


def test_a_hypervisor_session_that_drops_leaves_its_leaf_port_carrying_its_trunk(fabric):
    ctl = Controller(Policy(fabric).with_tenants([acme()]))
    _, hv_conn, hv = hv1_on_leaf1_port3(ctl, fabric)
    ctl.switch_down(hv_conn)
    assert LinkEnd(LEAF1, 3) not in ctl.inv.links
    topology.expire(ctl.fabric, ctl.inv, time.monotonic() + topology.LINK_TIMEOUT + 1)
    assert ctl.inv.switches[LEAF1].ports[3].role == HYPERVISOR            # its cable is still there
    flows = ctl.desired(LEAF1)                                             # and the leaf still compiles
    assert admitted(flows, 3) == {UNTAGGED: (('push_vlan', 1),), vid(10): ()}   # its tenant VLAN still flows


def test_new_bindings_recompile_every_switch_and_the_same_bindings_nothing(fabric):
    ctl = Controller(Policy(fabric).with_tenants([acme()]))
    _, _, hv = hv1_on_leaf1_port3(ctl, fabric)
    assert admitted(ctl.desired(hv), 2) == {UNTAGGED: (('push_vlan', 1),)}   # unbound: native
    ctl._dirty.clear()
    bindings = {2: Binding('tap-web1', WEB1, MAC_WEB1)}
    ctl.bindings_changed(hv, bindings)
    assert ctl.inv.bindings[hv] == bindings
    assert ctl._dirty == {LEAF1, hv}
    assert admitted(ctl.desired(hv), 2) == {UNTAGGED: (('push_vlan', 10),)}
    known = {f.match_dict()['eth_dst']: f.actions for f in by_table(ctl.desired(LEAF1), 'l2')
             if f.priority == 150}
    assert known == {MAC_WEB1: (('output', 3),)}                        # toward hv1, tagged
    ctl._dirty.clear()
    ctl.bindings_changed(hv, dict(bindings))
    assert ctl._dirty == set()
    ctl.bindings_changed(hv, {})                                        # the VM went away
    assert ctl._dirty == {LEAF1, hv}
    assert admitted(ctl.desired(hv), 2) == {UNTAGGED: (('push_vlan', 1),)}


class FakeWatcher:
    def __init__(self, name, address, on_change):
        self.name, self.address, self.on_change, self.stopped = name, address, on_change, False

    def stop(self):
        self.stopped = True


def test_a_connected_hypervisor_has_its_bindings_followed_until_it_reconnects(fabric):
    watchers = []
    ctl = Controller(Policy(fabric).with_tenants([acme()]),
                     watch_bindings=lambda *a: watchers.append(FakeWatcher(*a)) or watchers[-1])
    hv = fabric.hypervisors['hv1'].dpid
    conn = FakeSwitch(hv)
    conn.address = '192.168.200.11'
    ctl.switch_up(conn, [(1, 'int-to-phy', True), (2, 'tap-web1', True)])
    w, = watchers
    assert (w.name, w.address) == ('hv1', '192.168.200.11')
    w.on_change({2: Binding('tap-web1', WEB1, MAC_WEB1)})
    assert ctl.inv.bindings[hv] == {2: Binding('tap-web1', WEB1, MAC_WEB1)}
    again = FakeSwitch(hv)
    again.address = conn.address
    ctl.switch_up(again, [(1, 'int-to-phy', True)])
    assert w.stopped and len(watchers) == 2 and not watchers[1].stopped
    ctl.stop()
    assert watchers[1].stopped
    leaf = FakeSwitch(LEAF1)
    leaf.address = '127.0.0.1'
    Controller(fabric, watch_bindings=lambda *a: watchers.append(FakeWatcher(*a))).switch_up(
        leaf, [(1, 'leaf1-eth1', True)])
    assert len(watchers) == 2                                           # physical switches have none


def test_a_dry_run_policy_apply_shows_the_changes_and_changes_nothing(ctl, fabric):
    leaf, hv_conn, hv = hv1_on_leaf1_port3(ctl, fabric)
    ctl.bindings_changed(hv, {2: Binding('tap-web1', WEB1, MAC_WEB1)})     # unknown to the policy yet
    for conn in (leaf, hv_conn):
        ctl.rec.converge(conn, ctl.desired(conn.dpid))
    running = ctl.policy
    before = {c.dpid: (set(c.flows), len(c.applied)) for c in (leaf, hv_conn)}
    wanted = {d: ctl.desired(d) for d in (LEAF1, hv)}

    out = ctl.apply_policy(Policy(fabric).with_tenants([acme()]), dry_run=True)

    assert set(out) == {'leaf1', 'hv1'}
    assert ctl.policy is running
    assert {c.dpid: (set(c.flows), len(c.applied)) for c in (leaf, hv_conn)} == before
    assert {d: ctl.desired(d) for d in (LEAF1, hv)} == wanted
    assert ctl.rec.installed(hv) == hv_conn.flows
    # adding a tenant only adds (or changes in place): nothing of the fabric's goes away
    assert out['leaf1'].delete == () and out['hv1'].delete == ()
    hv_add = {(f.table, f.priority, tuple(sorted(f.match_dict().items()))): f.actions for f in out['hv1'].add}
    assert hv_add[('classify', 100, (('in_port', 2), ('vlan_vid', UNTAGGED)))] == (('push_vlan', 10),)
    assert hv_add[('l2', 150, (('eth_dst', MAC_WEB1), ('vlan_vid', vid(10))))] == (('pop_vlan',), ('output', 2))
    leaf_add = {(f.table, tuple(sorted(f.match_dict().items()))): f.actions for f in out['leaf1'].add}
    assert leaf_add[('classify', (('in_port', 3), ('vlan_vid', vid(10))))] == ()
    assert leaf_add[('l2', (('eth_dst', MAC_WEB1), ('vlan_vid', vid(10))))] == (('output', 3),)
    for d in out.values():
        for f in d.add:
            tables.check(f)


def test_apply_policy_converges_every_switch_before_it_returns(fabric):
    ctl = Controller(fabric)
    hv1, hv2 = fabric.hypervisors['hv1'].dpid, fabric.hypervisors['hv2'].dpid
    conns = {hv1: FakeSwitch(hv1), hv2: FakeSwitch(hv2)}
    ctl.start()
    try:
        for c in conns.values():
            ctl.switch_up(c, [(1, 'int-to-phy', True), (2, 'tap-vm', True)])
        ctl.bindings_changed(hv1, {2: Binding('tap-vm', WEB1, MAC_WEB1)})
        ctl.apply_policy(Policy(fabric), timeout=10)                  # a barrier: the loads are done
        assert all(c.flows == ctl.desired(d) for d, c in conns.items())
        applied = {d: len(c.applied) for d, c in conns.items()}

        candidate = Policy(fabric).with_tenants([acme()])
        out = ctl.apply_policy(candidate, timeout=10)

        assert ctl.policy is candidate
        assert set(out) == {'hv1', 'hv2'}
        assert all(c.flows == ctl.desired(d) for d, c in conns.items())
        assert {d: len(c.applied) for d, c in conns.items()} == {d: n + 1 for d, n in applied.items()}
        assert (conns[hv1].applied[-1][0], conns[hv1].applied[-1][1]) == ([], list(out['hv1'].add))
        assert any(f.match_dict().get('eth_dst') == MAC_WEB1 for f in out['hv2'].add)   # via the uplink

        again = ctl.apply_policy(candidate, timeout=10)               # the same policy: nothing moves
        assert not any(again.values())
        assert {d: len(c.applied) for d, c in conns.items()} == {d: n + 1 for d, n in applied.items()}
    finally:
        ctl.stop()
