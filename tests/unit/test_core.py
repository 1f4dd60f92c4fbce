"""The controller core driven by hand: events in, inventory and desired flows out.

No threads are started: each test calls the event methods and desired(dpid) directly, with
fake switch connections that only record what they are sent.
"""
import struct
import time

import pytest

from apps import topology
from controller.core import Controller, hypervisor_port_role
from controller.inventory.model import EDGE, FABRIC, PENDING, TUNNEL, UPLINK, VM, LinkEnd
from controller.pipeline import tables
from controller.pipeline.flow import UNTAGGED
from tests.unit.builders import LEAF1, SPINE1, FakeSwitch, by_table

LEARN = tables.table_id('learn')
MAC_A = '02:00:00:00:00:0a'


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


def test_send_lldp_goes_out_of_every_up_port_of_physical_switches(ctl, fabric):
    conn = leaf1_up(ctl)
    hv_conn = connect(ctl, fabric.hypervisors['hv1'].dpid, [(1, 'int-to-phy', True)])
    ctl.send_lldp()
    assert sorted(p for p, _ in conn.sent) == [1, 2, 3, 4]
    assert all(topology.parse_lldp(d) == LinkEnd(LEAF1, p) for p, d in conn.sent)
    assert hv_conn.sent == []


def test_a_tagged_frame_from_the_learn_table_learns_its_source(ctl):
    leaf1_up(ctl)
    ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(MAC_A, 10))
    assert ctl.inv.macs[LEAF1] == {(10, MAC_A): 3}
    assert LEAF1 in ctl._dirty
    l2 = {f.match_dict()['eth_dst']: f.actions for f in by_table(ctl.desired(LEAF1), 'l2') if f.priority}
    assert l2 == {MAC_A: (('output', 3),)}


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
    ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(MAC_A, 10))
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
