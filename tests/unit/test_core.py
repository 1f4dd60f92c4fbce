"""The controller core driven by hand: events in, inventory and desired flows out.

No threads are started: each test calls the event methods and desired(dpid) directly, with
fake switch connections that only record what they are sent.
"""
import struct
import time
import types

import pytest

from apps import learning_switch, topology
from controller import core
from controller.core import Controller, hypervisor_port_role
from controller.inventory.model import (EDGE, FABRIC, HYPERVISOR, PENDING, TUNNEL, UPLINK, VM, Binding,
                                        LinkEnd)
from controller.pipeline import cookies, registers as R, tables
from controller.pipeline.flow import UNTAGGED, Flow, vid
from controller.policy.model import Policy
from tests.unit.builders import LEAF1, SPINE1, FakeSwitch, assert_reaches, by_table, make_tenant

LEARN = tables.table_id('learn')
MAC_A = '02:00:00:00:00:0a'
MAC_WEB1, MAC_WEB2 = '02:00:0a:0a:00:0b', '02:00:0a:0a:00:0c'
WEB1, WEB2 = 'acme/web1/nic0', 'acme/web2/nic0'


def acme():
    """acme/users on VLAN 10, with two workloads.  VLAN pruning: a hypervisor's trunk (and its
    leaf port) carries VLAN 10 only while a VLAN 10 nic is bound on that hypervisor."""
    return make_tenant('acme', {'users': 10}, {'web1': [('users', MAC_WEB1)], 'web2': [('users', MAC_WEB2)]})


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
    assert {f.match_dict().get('eth_type') for f in by_table(flows, 'port_sec') if f.priority} == {0x88cc}


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
    vm_admission = {f.match_dict()['vlan_vid'] for f in by_table(flows, 'port_sec')
                    if f.match_dict().get('in_port') == 2}
    assert vm_admission == {UNTAGGED}
    assert not [f for f in by_table(flows, 'port_sec') if f.match_dict().get('in_port') in (3, 4)]
    assert not [f for f in by_table(flows, 'output') if f.match_dict().get(R.OUT_PORT) in (3, 4)]


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
    # an untagged frame on edge port 3 got the native tag in port_sec before it came up to us
    ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(MAC_A, 1))
    assert ctl.inv.macs[LEAF1] == {(1, MAC_A): 3}
    assert LEAF1 in ctl._dirty
    flows = ctl.desired(LEAF1)
    l2 = {f.match_dict()['eth_dst']: f for f in by_table(flows, 'l2_lookup') if f.priority}
    assert set(l2) == {MAC_A}
    assert_reaches(flows, l2[MAC_A], 3, 1, [('pop_vlan',), ('output', 3)])


def test_a_tenant_vlan_frame_from_a_hypervisor_port_is_learned_and_reached_tagged(fabric):
    ctl = Controller(Policy(fabric).with_tenants([acme()]))
    leaf1_up(ctl)
    hv = fabric.hypervisors['hv1'].dpid
    connect(ctl, hv, [(1, 'int-to-phy', True), (2, 'tap-web1', True)])
    ctl.bindings_changed(hv, {2: Binding('tap-web1', WEB1, MAC_WEB1)})     # hv1 hosts a VLAN 10 VM
    ctl.packet_in(LEAF1, 3, 0, topology.lldp_frame(hv, 1))
    ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(MAC_A, 10))
    assert ctl.inv.macs[LEAF1] == {(10, MAC_A): 3}
    flows = ctl.desired(LEAF1)
    d, = (f for f in by_table(flows, 'l2_lookup') if f.match_dict().get('eth_dst') == MAC_A)
    assert d.match_dict()['vlan_vid'] == vid(10)
    assert_reaches(flows, d, 3, 10, [('output', 3)])
    assert d.cookie.tenant == 'acme'
    assert ctl.cookies.encode(d.cookie) & cookies.TENANT_MASK == ctl.cookies.tenant_match('acme')[0] != 0


def test_frames_from_other_tables_or_untagged_are_not_learned(ctl):
    leaf1_up(ctl)
    for other in ('port_sec', 'classify', 'l2_lookup', 'output', 'flood'):
        ctl.packet_in(LEAF1, 3, tables.table_id(other), tagged_frame(MAC_A, 10))
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


def test_a_physical_switch_away_keeps_its_cables_for_a_grace_then_is_forgotten(ctl):
    conn = leaf1_up(ctl)
    connect(ctl, SPINE1, [(1, 'spine1-eth1', True)])
    ctl.packet_in(LEAF1, 1, 0, topology.lldp_frame(SPINE1, 1))
    ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(MAC_A, 10))
    links = dict(ctl.inv.links)
    ctl.switch_down(FakeSwitch(LEAF1))                       # a stale connection: ignored
    assert LEAF1 in ctl.inv.switches
    ctl.switch_down(conn)
    # its session dropped, its flows still forward: it stays in the topology, not connected
    assert LEAF1 in ctl.inv.switches and LEAF1 not in ctl.conns
    assert LEAF1 not in ctl.inv.macs                         # read back from its flows on return
    later = time.monotonic() + topology.LINK_TIMEOUT + 1     # no LLDP crosses it meanwhile
    topology.expire(ctl.fabric, ctl.inv, later, held=set(ctl._away))
    assert ctl.inv.links == links
    ctl._forget_away(time.monotonic() + core.AWAY_GRACE)
    assert LEAF1 not in ctl.inv.switches and ctl.inv.links == {}


def test_a_physical_switch_back_within_the_grace_keeps_its_port_roles_and_its_neighbours_their_flows(ctl):
    conn = leaf1_up(ctl)
    spine = connect(ctl, SPINE1, [(1, 'spine1-eth1', True)])
    ctl.packet_in(LEAF1, 1, 0, topology.lldp_frame(SPINE1, 1))
    ctl.packet_in(SPINE1, 1, 0, topology.lldp_frame(LEAF1, 1))
    roles = {no: p.role for no, p in ctl.inv.switches[LEAF1].ports.items()}
    assert roles[1] == FABRIC
    spine_flows, leaf_flows = ctl.desired(SPINE1), ctl.desired(LEAF1)
    ctl.switch_down(conn)
    away_since = time.monotonic()
    assert ctl.desired(SPINE1) == spine_flows                # no reroute, no flood tree change
    # back (its management link returned, or its OVS restarted): ports that stayed up keep
    # their roles; port 4 went down meanwhile and waits for discovery again
    back = connect(ctl, LEAF1, [(1, 'leaf1-eth1', True), (2, 'leaf1-eth2', True),
                                (3, 'leaf1-eth3', True), (4, 'leaf1-eth4', False)])
    # its cables were not heard while it was away: they get LINK_TIMEOUT from its return
    assert all(seen >= away_since for _, seen in ctl.inv.links.values())
    now = {no: p.role for no, p in ctl.inv.switches[LEAF1].ports.items()}
    assert {no: r for no, r in now.items() if no != 4} == {no: r for no, r in roles.items() if no != 4}
    assert now[4] == PENDING
    assert ctl.desired(SPINE1) == spine_flows and ctl.conns[LEAF1] is back and spine is ctl.conns[SPINE1]
    assert ctl.desired(LEAF1) != leaf_flows                  # (port 4 is down now)
    # empty on return (its OVS restarted): programmed at once, no settle
    assert ctl._load(LEAF1) and not ctl.settling(LEAF1)


# ---- hypervisors on their leaf, bindings, policy ------------------------------------------------

def hv1_on_leaf1_port3(ctl, fabric):
    """leaf1 (edge ports 3 and 4 settled) and hv1's br-int, whose LLDP arrives on leaf1 port 3."""
    leaf = leaf1_up(ctl)
    hv = fabric.hypervisors['hv1'].dpid
    hv_conn = connect(ctl, hv, [(1, 'int-to-phy', True), (2, 'tap-web1', True)])
    ctl.packet_in(LEAF1, 3, 0, topology.lldp_frame(hv, 1))
    return leaf, hv_conn, hv


def admitted(flows, port):
    return {f.match_dict()['vlan_vid']: f.actions for f in by_table(flows, 'port_sec')
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
    # a trunk, but nothing is bound on hv1 yet: only the native VLAN (VLAN pruning)
    assert admitted(ctl.desired(LEAF1), 3) == {UNTAGGED: (('push_vlan', 1),)}
    ctl.bindings_changed(hv, {2: Binding('tap-web1', WEB1, MAC_WEB1)})     # a VLAN 10 VM on hv1
    flows = ctl.desired(LEAF1)
    assert admitted(flows, 3) == {UNTAGGED: (('push_vlan', 1),), vid(10): ()}
    assert admitted(flows, 4) == {UNTAGGED: (('push_vlan', 1),)}            # still a plain edge port


def test_a_hypervisor_session_that_drops_leaves_its_leaf_port_carrying_its_trunk(fabric):
    ctl = Controller(Policy(fabric).with_tenants([acme()]))
    _, hv_conn, hv = hv1_on_leaf1_port3(ctl, fabric)
    ctl.bindings_changed(hv, {2: Binding('tap-web1', WEB1, MAC_WEB1)})     # a VLAN 10 VM on hv1
    assert vid(10) in admitted(ctl.desired(LEAF1), 3)
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
    assert ctl.inv.locations == {WEB1: (hv, 2)}
    assert admitted(ctl.desired(hv), 2) == {UNTAGGED: (('push_vlan', 10),)}
    flows = ctl.desired(LEAF1)
    known = {f.match_dict()['eth_dst']: f for f in by_table(flows, 'l2_lookup') if f.priority == 150}
    assert set(known) == {MAC_WEB1}
    assert_reaches(flows, known[MAC_WEB1], 3, 10, [('output', 3)])     # toward hv1, tagged
    ctl._dirty.clear()
    ctl.bindings_changed(hv, dict(bindings))
    assert ctl._dirty == set()
    ctl.bindings_changed(hv, {})                                        # the VM went away
    assert ctl._dirty == {LEAF1, hv}
    assert ctl.inv.locations == {}
    assert admitted(ctl.desired(hv), 2) == {UNTAGGED: (('push_vlan', 1),)}
    assert not [f for f in ctl.desired(LEAF1) if f.match_dict().get('eth_dst') == MAC_WEB1]


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
    assert ctl.inv.locations == {WEB1: (hv, 2)}
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
    # adding a tenant only adds (or changes in place): nothing of the fabric's goes away but
    # the native-VLAN emission of the VM port that now is an access port of the tenant VLAN
    assert out['leaf1'].delete == ()
    gone, = out['hv1'].delete
    assert (gone.table, gone.match_dict()) == ('output', {R.OUT_PORT: 2, 'vlan_vid': vid(1)})
    hv_add = {(f.table, f.priority, tuple(sorted(f.match_dict().items()))): f.actions for f in out['hv1'].add}
    assert hv_add[('port_sec', 100, (('in_port', 2), ('vlan_vid', UNTAGGED)))] == (('push_vlan', 10),)
    assert hv_add[('l2_lookup', 150, (('eth_dst', MAC_WEB1), ('vlan_vid', vid(10))))] == (('set_field', R.OUT_PORT, 2),)
    assert hv_add[('output', 110, ((R.OUT_PORT, 2), ('vlan_vid', vid(10))))] == (('pop_vlan',), ('output', 2))
    # hv1 now hosts a VLAN 10 VM: its uplink, and the leaf port it is on, become tagged trunks,
    # emitted by one flow per port
    assert hv_add[('port_sec', 100, (('in_port', 1), ('vlan_vid', vid(10))))] == ()
    assert hv_add[('output', 100, ((R.OUT_PORT, 1),))] == (('output', 1),)
    leaf_add = {(f.table, tuple(sorted(f.match_dict().items()))): f.actions for f in out['leaf1'].add}
    assert leaf_add[('port_sec', (('in_port', 3), ('vlan_vid', vid(10))))] == ()
    assert leaf_add[('l2_lookup', (('eth_dst', MAC_WEB1), ('vlan_vid', vid(10))))] == (('set_field', R.OUT_PORT, 3),)
    assert leaf_add[('output', ((R.OUT_PORT, 3),))] == (('output', 3),)
    for d in out.values():
        for f in d.add:
            tables.check(f)


def test_apply_policy_converges_every_switch_before_it_returns(fabric, monkeypatch):
    # long after start: the whole picture is in (hv3 and hv4 never connect here), so
    # converging deletes as well as adds (picture_complete is tested on its own below)
    monkeypatch.setattr(core, 'PICTURE_WAIT', 0.0)
    ctl = Controller(fabric)
    hv1, hv2 = fabric.hypervisors['hv1'].dpid, fabric.hypervisors['hv2'].dpid
    conns = {hv1: FakeSwitch(hv1), hv2: FakeSwitch(hv2)}
    ctl.start()
    try:
        for c in conns.values():
            ctl.switch_up(c, [(1, 'int-to-phy', True), (2, 'tap-vm', True)])
        ctl.bindings_changed(hv1, {2: Binding('tap-vm', WEB1, MAC_WEB1)})
        ctl.bindings_changed(hv2, {2: Binding('tap-vm', WEB2, MAC_WEB2)})
        ctl.apply_policy(Policy(fabric), timeout=10)                  # a barrier: the loads are done
        assert all(c.flows == ctl.desired(d) for d, c in conns.items())
        applied = {d: len(c.applied) for d, c in conns.items()}

        candidate = Policy(fabric).with_tenants([acme()])
        out = ctl.apply_policy(candidate, timeout=10)

        assert ctl.policy == candidate and ctl.policy.ids.tenant == {'acme': ctl.ids.peek('tenant', 'acme')}
        assert set(out) == {'hv1', 'hv2'}
        assert all(c.flows == ctl.desired(d) for d, c in conns.items())
        assert {d: len(c.applied) for d, c in conns.items()} == {d: n + 1 for d, n in applied.items()}
        # what went to each is exactly its diff: the bound port leaves the native VLAN
        for d, name in ((hv1, 'hv1'), (hv2, 'hv2')):
            assert (conns[d].applied[-1][0], conns[d].applied[-1][1]) == (list(out[name].delete),
                                                                          list(out[name].add))
            assert [(f.table, f.match_dict()) for f in out[name].delete] == [('output', {R.OUT_PORT: 2,
                                                                                         'vlan_vid': vid(1)})]
        # each knows the other's VLAN 10 VM, via its uplink
        assert any(f.match_dict().get('eth_dst') == MAC_WEB1 for f in out['hv2'].add)
        assert any(f.match_dict().get('eth_dst') == MAC_WEB2 for f in out['hv1'].add)

        again = ctl.apply_policy(candidate, timeout=10)               # the same policy: nothing moves
        assert not any(again.values())
        assert {d: len(c.applied) for d, c in conns.items()} == {d: n + 1 for d, n in applied.items()}
    finally:
        ctl.stop()


# ---- Core v2: generated misses, clashes, the whole picture, retries, stable ids -------------------

def test_every_known_switch_gets_the_pipelines_miss_flows(ctl, fabric):
    leaf1_up(ctl)
    hv = fabric.hypervisors['hv1'].dpid
    connect(ctl, hv, [(1, 'int-to-phy', True)])
    for dpid in (LEAF1, hv):
        flows = ctl.desired(dpid)
        assert tables.miss_flows() <= flows
        misses = {f.table for f in flows if f.priority == 0}
        assert misses == set(tables.BY_NAME)                   # every table ends in one
        assert all(cookies.app_of(f.cookie) == tables.PIPELINE for f in flows if f.priority == 0)
    assert ctl.desired(0xdead) == set()                         # not a switch of ours: nothing


def _rogue(flow):
    """An app that compiles one given flow (to make a clash)."""
    return types.SimpleNamespace(APP=cookies.app_of(flow.cookie), compile_flows=lambda policy, inv, dpid: {flow})


def test_two_flows_with_the_same_table_priority_and_match_but_other_actions_or_owner_clash(ctl, monkeypatch):
    leaf1_up(ctl)
    flood, = (f for f in by_table(ctl.desired(LEAF1), 'flood') if f.match_dict() == {'vlan_vid': vid(1)})
    other_actions = Flow.make('flood', flood.priority, flood.match_dict(), [('output', 3)], cookie=flood.cookie)
    other_owner = Flow.make('flood', flood.priority, flood.match_dict(), flood.actions,
                            cookie=cookies.make('learning_switch', 0, 'someone-else'))
    apps = ctl.apps
    for rogue in (other_actions, other_owner):
        monkeypatch.setattr(ctl, 'apps', apps + (_rogue(rogue),))
        with pytest.raises(tables.PipelineError, match='clash'):
            ctl.desired(LEAF1)
    # the very same flow compiled twice is no clash
    monkeypatch.setattr(ctl, 'apps', apps + (_rogue(flood),))
    assert flood in ctl.desired(LEAF1)
    with pytest.raises(tables.PipelineError, match='clash'):
        core.no_clash([flood, other_actions])


HV_PORTS = [(1, 'int-to-phy', True), (2, 'tap-a', True), (3, 'tap-b', True)]


def load(ctl, conn):
    """What the worker does first for a (re)connected switch: read what it holds."""
    assert conn.dpid in ctl._loads
    ctl._loads.remove(conn.dpid)
    learning_switch.adopt(ctl.inv, conn.dpid, ctl.rec.load(conn))


def test_after_a_restart_flows_toward_another_hypervisors_vm_stay_until_that_hypervisor_reports(fabric):
    policy = Policy(fabric).with_tenants([acme()])
    hvs = {name: h.dpid for name, h in fabric.hypervisors.items()}
    web1_on_hv1 = {2: Binding('tap-web1', WEB1, MAC_WEB1)}
    web2_on_hv2 = {2: Binding('tap-web2', WEB2, MAC_WEB2)}                # hv2 has a VLAN 10 VM too
    # what the previous controller left on hv2: web1, on hv1, is reached through the uplink
    before = Controller(policy)
    connect(before, hvs['hv1'], HV_PORTS)
    connect(before, hvs['hv2'], HV_PORTS)
    for name, dpid in hvs.items():
        before.bindings_changed(dpid, {'hv1': web1_on_hv1, 'hv2': web2_on_hv2}.get(name, {}))
    held = before.desired(hvs['hv2'])
    toward_web1 = {f for f in held if f.match_dict().get('eth_dst') == MAC_WEB1}
    assert {f.table for f in toward_web1} == {'l2_lookup'}

    ctl = Controller(policy)                                   # the restart: both reconnect
    connect(ctl, hvs['hv1'], HV_PORTS)
    conn = FakeSwitch(hvs['hv2'], held)
    ctl.switch_up(conn, HV_PORTS)
    load(ctl, conn)
    ctl.bindings_changed(hvs['hv2'], web2_on_hv2)              # hv2 reports first ...
    assert not ctl.picture_complete()
    assert not toward_web1 & ctl.desired(hvs['hv2'])           # ... where web1 is is not known yet
    ctl._converge(conn)
    assert toward_web1 <= conn.flows                           # but what hv2 holds toward it stays
    assert all(not delete for delete, _ in conn.applied)       # nothing at all is deleted
    for name in ('hv3', 'hv4'):
        ctl.bindings_changed(hvs[name], {})
    assert not ctl.picture_complete()                          # hv1 still has not reported
    ctl._converge(conn)
    assert toward_web1 <= conn.flows and all(not delete for delete, _ in conn.applied)

    ctl.bindings_changed(hvs['hv1'], web1_on_hv1)              # the last one: the whole picture
    assert ctl.picture_complete()
    ctl._converge(conn)
    assert conn.flows == ctl.desired(hvs['hv2']) and toward_web1 <= conn.flows
    ctl.bindings_changed(hvs['hv1'], {})                       # from now on a VM that goes, goes
    ctl._converge(conn)
    assert not toward_web1 & conn.flows


def test_once_the_picture_wait_has_passed_switches_are_programmed_from_what_is_known(fabric, monkeypatch):
    monkeypatch.setattr(core, 'PICTURE_WAIT', 0.0)
    policy = Policy(fabric).with_tenants([acme()])
    hv1, hv2 = fabric.hypervisors['hv1'].dpid, fabric.hypervisors['hv2'].dpid
    web2_on_hv2 = {2: Binding('tap-web2', WEB2, MAC_WEB2)}                # hv2 has a VLAN 10 VM too
    before = Controller(policy)
    connect(before, hv1, HV_PORTS)
    connect(before, hv2, HV_PORTS)
    before.bindings_changed(hv1, {2: Binding('tap-web1', WEB1, MAC_WEB1)})
    before.bindings_changed(hv2, web2_on_hv2)
    held = before.desired(hv2)
    toward_web1 = {f for f in held if f.match_dict().get('eth_dst') == MAC_WEB1}
    assert toward_web1
    ctl = Controller(policy)
    connect(ctl, hv1, HV_PORTS)
    conn = FakeSwitch(hv2, held)
    ctl.switch_up(conn, HV_PORTS)
    load(ctl, conn)
    ctl.bindings_changed(hv2, web2_on_hv2)
    assert ctl.picture_complete()                              # hv1 never reported: too late now
    ctl._converge(conn)
    assert not toward_web1 & conn.flows and conn.flows == ctl.desired(hv2)


class Flaky(FakeSwitch):
    """A switch that refuses the next `failing` changes; nothing_applied says whether a
    refusal changed nothing (a rejected bundle) or left the switch unknown."""

    def __init__(self, dpid, nothing_applied, flows=()):
        super().__init__(dpid, flows)
        self.nothing_applied, self.failing, self.tries = nothing_applied, 0, []

    def apply(self, delete, add):
        if not self.failing:
            return super().apply(delete, add)
        self.failing -= 1
        self.tries.append(time.monotonic())
        e = RuntimeError('refused')
        e.nothing_applied = self.nothing_applied
        raise e


def _until(what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.005)


@pytest.mark.parametrize('nothing_applied', [True, False])
def test_a_failing_switch_is_retried_with_doubling_backoff(fabric, monkeypatch, nothing_applied):
    monkeypatch.setattr(core, 'RETRY_FIRST', 0.04)
    monkeypatch.setattr(core, 'RETRY_MAX', 0.16)
    monkeypatch.setattr(core, 'TICK', 0.005)
    monkeypatch.setattr(core, 'PICTURE_WAIT', 0.0)             # steady state: changes go out
    hv = fabric.hypervisors['hv1'].dpid
    conn = Flaky(hv, nothing_applied)
    ctl = Controller(fabric)
    ctl.start()
    try:
        ctl.switch_up(conn, HV_PORTS)
        _until(lambda: conn.applied and not ctl._settle_until.get(hv) and not ctl._dirty)
        reads = conn.reads
        conn.failing = 10 ** 6
        ctl.packet_in(hv, 2, LEARN, tagged_frame(MAC_A, 1))    # something new to send: it fails
        _until(lambda: len(conn.tries) >= 5)
        with ctl.lock:
            _, backoff = ctl._retry[hv]
    finally:
        ctl.stop()
    gaps = [b - a for a, b in zip(conn.tries, conn.tries[1:])][:4]
    for gap, want in zip(gaps, (0.04, 0.08, 0.16, 0.16)):
        assert gap >= want * 0.9, gaps                         # never sooner than its backoff
    assert backoff == 0.16                                     # doubled, up to RETRY_MAX
    # a refusal that changed nothing keeps what we know the switch holds; any other error
    # makes us read the switch again before the next try
    assert (conn.reads == reads) is nothing_applied
    assert nothing_applied or conn.reads >= reads + 4


def test_a_dry_run_allocates_no_ids_in_the_controllers_store(ctl, fabric):
    _, _, hv = hv1_on_leaf1_port3(ctl, fabric)
    ctl.bindings_changed(hv, {2: Binding('tap-web1', WEB1, MAC_WEB1)})     # leaf1 port 3 will carry VLAN 10
    out = ctl.apply_policy(Policy(fabric).with_tenants([acme()]), dry_run=True)
    classify, = (f for f in out['leaf1'].add if f.table == 'classify' and f.priority)   # acme's VLAN gets ids ...
    assert dict(a[1:] for a in classify.actions)[R.TENANT]
    assert ctl.ids.peek('tenant', 'acme') is None                           # ... from a scratch copy only
    assert ctl.ids.peek('network', 'acme/users') is None and ctl.ids.peek('zone', 'acme') is None


def test_a_learned_entry_that_ages_out_is_forgotten_from_its_64_bit_cookie(ctl):
    conn = leaf1_up(ctl)
    ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(MAC_A, 1))
    ctl.rec.converge(conn, ctl.desired(LEAF1), before_apply=ctl._register)
    src, = (f for f in by_table(ctl.desired(LEAF1), 'learn') if f.match_dict().get('eth_src') == MAC_A)
    assert src.cookie.owner is None                            # learned: no owner id to allocate
    wire = Flow.make(src.table, src.priority, src.match_dict(), cookie=ctl.cookies.encode(src.cookie))
    assert isinstance(wire.cookie, int)
    ctl.flow_removed(LEAF1, wire)                              # as the switch reports it
    assert ctl.inv.macs[LEAF1] == {}
    assert src not in ctl.rec.installed(LEAF1)


def test_a_retry_after_a_failed_apply_still_keeps_what_the_switch_holds_until_the_picture_is_complete(
        fabric, monkeypatch):
    monkeypatch.setattr(core, 'RETRY_FIRST', 0.02)
    monkeypatch.setattr(core, 'TICK', 0.005)
    policy = Policy(fabric).with_tenants([acme()])
    hv1, hv2 = fabric.hypervisors['hv1'].dpid, fabric.hypervisors['hv2'].dpid
    web2_on_hv2 = {2: Binding('tap-web2', WEB2, MAC_WEB2)}                # hv2 has a VLAN 10 VM too
    before = Controller(policy)
    connect(before, hv1, HV_PORTS)
    connect(before, hv2, HV_PORTS)
    before.bindings_changed(hv1, {2: Binding('tap-web1', WEB1, MAC_WEB1)})
    before.bindings_changed(hv2, web2_on_hv2)
    held = before.desired(hv2)
    toward_web1 = {f for f in held if f.match_dict().get('eth_dst') == MAC_WEB1}
    assert toward_web1

    ctl = Controller(policy)                                   # restarted; hv1 has not reported
    lldp = {f for f in held if cookies.app_of(f.cookie) == 'topology'}
    conn = Flaky(hv2, nothing_applied=False, flows=held - lldp)
    conn.failing = 1                     # the first change (discovery's LLDP flow) fails, half applied
    ctl.start()
    try:
        ctl.switch_up(FakeSwitch(hv1), HV_PORTS)
        ctl.switch_up(conn, HV_PORTS)
        ctl.bindings_changed(hv2, web2_on_hv2)
        _until(lambda: lldp <= conn.flows)                     # retried, after reading the switch again
        assert len(conn.tries) == 1 and conn.reads >= 2
        assert not ctl.picture_complete()
        assert toward_web1 <= conn.flows
        # while the picture is incomplete nothing but discovery goes out: a learned MAC waits
        ctl.packet_in(hv2, 3, LEARN, tagged_frame(MAC_A, 1))
        _until(lambda: not ctl._dirty and not ctl._loads)
        assert not any(f.match_dict().get('eth_src') == MAC_A for f in conn.flows)
        assert toward_web1 <= conn.flows
    finally:
        ctl.stop()


# ---- make before break across switches ----------------------------------------------------------

class Recorded(FakeSwitch):
    """A FakeSwitch that writes each bundle it gets to one log shared by every switch."""

    def __init__(self, dpid, log):
        super().__init__(dpid)
        self.log = log

    def apply(self, delete, add) -> None:
        replaced = [f for f in add if f.key in {g.key for g in self.flows}]
        self.log.append((self.dpid, list(delete), list(add), replaced))
        super().apply(delete, add)


def test_a_cable_back_up_is_admitted_and_routed_at_every_switch_before_any_switch_sends_over_it(fabric, monkeypatch):
    """spine1-leaf2 comes back: leaf1 may hash rack 2's traffic onto spine1 only once spine1
    routes it to leaf2 and leaf2 admits it from spine1 (one switch after another, the leaf
    first reprogrammed dropped what it sent there until the far leaf was programmed)."""
    monkeypatch.setattr(core, 'PICTURE_WAIT', 0.0)
    from tests.unit.builders import cabled_mesh, see_link
    ctl = Controller(fabric)
    mesh, ends = cabled_mesh(fabric)
    log = []
    conns = {}
    for dpid, sw in mesh.switches.items():
        conns[dpid] = Recorded(dpid, log)
        ctl.switch_up(conns[dpid], [(p.no, p.name, True) for p in sw.ports.values()])
    with ctl.lock:
        for dpid, sw in mesh.switches.items():
            for p in sw.ports.values():
                ctl.inv.switches[dpid].ports[p.no] = p
        ctl.inv.links.update(mesh.links)
        ctl._settle_until.clear()
        ctl._topology_changed()

    def converge():
        with ctl.lock:
            batch = sorted(ctl._dirty, key=ctl._converge_order)
            ctl._dirty.clear()
        ctl._converge_batch(batch)

    converge()
    assert all(c.flows == ctl.desired(d) for d, c in conns.items())
    spine_end, leaf_end = ends[('spine1', 'leaf2')], ends[('leaf2', 'spine1')]
    ports = {e: ctl.inv.switches[e.dpid].ports[e.port] for e in (spine_end, leaf_end)}
    for e in ports:
        ctl.port_status(e.dpid, 'modify', e.port, ports[e].name, False)
    converge()
    assert all(c.flows == ctl.desired(d) for d, c in conns.items())

    del log[:]
    with ctl.lock:
        for e, p in ports.items():
            ctl.inv.switches[e.dpid].ports[e.port] = p          # up again, LLDP seen both ways
        see_link(ctl.inv, spine_end, leaf_end, time.monotonic())
        ctl._topology_changed()
    converge()
    assert all(c.flows == ctl.desired(d) for d, c in conns.items())
    first_break = next(i for i, (_, delete, _, replaced) in enumerate(log) if delete or replaced)
    from apps import underlay_routing
    fabric_adds = [(i, d, f) for i, (d, _, add, replaced) in enumerate(log) for f in add
                   if f not in replaced and cookies.app_of(f.cookie) == underlay_routing.APP]
    late = [(hex(d), str(f)) for i, d, f in fabric_adds if i > first_break]
    assert fabric_adds and not late, late
    names = {d: n for n, s in fabric.switches.items() for d in [s.dpid]}
    # among what went ahead: leaf2 admits routed frames from spine1, spine1 routes to rack 2
    ahead = [(names[d], f) for i, d, f in fabric_adds]
    assert any(n == 'leaf2' and f.table == 'port_sec'
               and f.match_dict().get('in_port') == leaf_end.port for n, f in ahead)
    assert any(n == 'spine1' and f.table == 'l3' for n, f in ahead)
