"""Flood protection (controller/floods.py): per-port metered packet-ins that never meter the
frame, full VM/edge ports shut (violation: shutdown) or dropping unknown sources (restrict),
and learning state that stays bounded and O(1) per packet-in under a storm of new source MACs."""
import pytest

from apps import learning_switch as ls, vlan_portgroups
from controller import floods, metrics
from controller.api.service import PolicyService
from controller.cli import remote
from controller.policy.store import PolicyStore
from controller.core import Controller
from controller.floods import MacTable, RefusedTable
from controller.inventory.model import EDGE, Inventory
from controller.pipeline import actions as A, cookies, tables
from controller.pipeline.flow import CONTROLLER
from controller.policy.model import Policy
from tests.unit.builders import LEAF1, LEAF2, FakeSwitch, by_table, example_fabric, switch_flows
from tests.unit.test_core import LEARN, leaf1_up, tagged_frame
from tests.unit.test_learning_switch import EDGE3, EDGE4, HV5, TREE, VM2, hv_network, leaf_network, two_tenants

PUNT = tables.table_id('punt')


def mac(i: int) -> str:
    return '02:%02x:%02x:%02x:%02x:%02x' % tuple((i >> s) & 0xff for s in (32, 24, 16, 8, 0))


@pytest.fixture
def limited():
    """violation: restrict -- a full port drops only the new sources, and remembers them."""
    return example_fabric(max_macs_per_port=4, violation='restrict')


@pytest.fixture
def shutting():
    """The default violation, shutdown, with a short hold time."""
    return example_fabric(max_macs_per_port=4, errdisable_recovery=7)


def shut_flows(flows):
    return {f.match_dict()['in_port']: f for f in by_table(flows, 'port_sec') if f.priority == ls.P_SHUTDOWN}


def guards(flows):
    return {f.match_dict()['in_port']: f for f in by_table(flows, 'learn') if f.priority == ls.P_GUARD}


def punts(flows):
    return {f.match_dict()['in_port']: f for f in by_table(flows, 'punt') if f.priority}


# ---- bounded state -------------------------------------------------------------------------------

def test_the_mac_table_keeps_its_per_port_counts_through_every_change():
    t = MacTable({(1, mac(1)): 3, (1, mac(2)): 3, (1, mac(3)): 4})
    assert (t.on_port(3), t.on_port(4), t.on_port(5)) == (2, 1, 0)
    t[(1, mac(1))] = 4                             # a move
    t[(1, mac(9))] = 5
    del t[(1, mac(2))]
    assert t.pop((1, mac(3))) == 4 and t.pop((1, mac(3)), None) is None
    t.setdefault((2, mac(1)), 3)
    t.setdefault((2, mac(1)), 9)                   # already there: unchanged
    assert dict(t.per_port) == {4: 1, 5: 1, 3: 1}
    assert t == {(1, mac(1)): 4, (1, mac(9)): 5, (2, mac(1)): 3}
    t.clear()
    assert t.on_port(4) == 0 and not t.per_port


def test_the_refused_table_is_capped_per_port_and_overall_evicting_the_oldest():
    r = RefusedTable(per_port=3, total=5)
    for i in range(10):                            # one port: its 3 newest stay
        r.add((1, mac(i), 7))
    assert list(r) == [(1, mac(i), 7) for i in (7, 8, 9)] and r.evicted == 7
    for i in range(10, 13):                        # another port: the switch's oldest go
        r.add((1, mac(i), 8))
    assert len(r) == 5 and r.on_port(7) == 2 and r.on_port(8) == 3
    assert (1, mac(7), 7) not in r and (1, mac(12), 8) in r
    r.add((1, mac(12), 8))                         # already there: nothing moves
    assert len(r) == 5
    r -= {k for k in r if k[2] == 8}
    r.discard((1, mac(99), 7))
    assert r == {(1, mac(8), 7), (1, mac(9), 7)}


def test_a_storm_of_new_sources_on_one_port_leaves_bounded_state_and_never_scans_the_table(limited, monkeypatch):
    inv = leaf_network(limited)
    for i in range(2000):                          # other ports' MACs: a big table to (not) scan
        ls.learn(limited, inv, LEAF2, TREE, 10, mac(0x100000 + i))
    monkeypatch.setattr(Inventory, 'macs_on_port', lambda *a: pytest.fail('learn() scanned the MAC table'))
    changed = sum(ls.learn(limited, inv, LEAF2, EDGE3, 10, mac(i)) for i in range(20000))
    assert changed == 20000                        # each new source is one change (a learn or a refusal)
    assert inv.macs[LEAF2].on_port(EDGE3) == limited.learning.max_macs_per_port == 4
    assert len(inv.refused[LEAF2]) == inv.refused[LEAF2].on_port(EDGE3) == floods.REFUSED_PER_PORT
    # many ports flooding at once: the switch's cap holds
    for port in (EDGE3, EDGE4):
        for i in range(20000):
            ls.learn(limited, inv, LEAF2, port, 20, mac(0x200000 + i))
    assert len(inv.refused[LEAF2]) <= floods.REFUSED_PER_SWITCH
    flows = ls.compile_flows(Policy(limited), inv, LEAF2)
    refused_flows = [f for f in by_table(flows, 'learn') if cookies.kind_of(f.cookie) == ls.K_REFUSED]
    assert len(refused_flows) <= 2 * floods.REFUSED_PER_PORT


def test_a_switch_rebuilt_from_its_flows_gets_bounded_tables(limited):
    inv = leaf_network(limited)
    for i in range(6):
        ls.learn(limited, inv, LEAF2, EDGE3, 1, mac(i))
    flows = ls.compile_flows(Policy(limited), inv, LEAF2)
    fresh = leaf_network(limited)
    ls.adopt(fresh, LEAF2, flows)
    assert isinstance(fresh.macs[LEAF2], MacTable) and isinstance(fresh.refused[LEAF2], RefusedTable)
    assert fresh.macs[LEAF2] == inv.macs[LEAF2] and fresh.refused[LEAF2] == inv.refused[LEAF2]
    assert fresh.macs[LEAF2].on_port(EDGE3) == 4


# ---- compiled flows ------------------------------------------------------------------------------

def test_every_learning_port_copies_unknown_sources_through_its_own_meter_and_goes_on(fabric):
    inv = leaf_network(fabric)
    flows = ls.compile_flows(Policy(fabric), inv, LEAF2)
    g, p = guards(flows), punts(flows)
    assert set(g) == set(p) == set(vlan_portgroups.port_vlans(Policy(fabric), inv, LEAF2)) == {TREE, EDGE3, EDGE4, HV5}
    for no, f in g.items():
        # VM/edge ports (edge 3, 4) forward unknown sources through a meter too, in storm_ctl
        # (after the copy left: that meter never slows the controller's hearing); trunks do not
        assert f.actions == (A.clone(A.output_trunc(no, floods.TRUNC), A.resubmit('punt')),)
        assert f.goto == ('storm_ctl' if no in (EDGE3, EDGE4) else 'arp_rsp') and f.match_dict() == {'in_port': no}
        storm = [s for s in by_table(flows, 'storm_ctl') if s.match_dict() == {'in_port': no}]
        assert [(s.actions, s.goto) for s in storm] == ([((A.meter(floods.unknown_meter(no)),), 'arp_rsp')]
                                                        if no in (EDGE3, EDGE4) else [])
        assert p[no].actions == (A.meter(floods.port_meter(no)), A.output(CONTROLLER)) and p[no].goto is None
        assert cookies.kind_of(f.cookie) == cookies.kind_of(p[no].cookie) == ls.K_GUARD
    for f in flows | tables.miss_flows():
        tables.check(f)                            # deep: actions, clone body, match prerequisites
    # the guard sits below every known source
    assert all(f.priority > ls.P_GUARD for f in by_table(flows, 'learn') if 'eth_src' in f.match_dict())


def test_a_full_vm_or_edge_port_drops_unknown_sources_and_a_trunk_never_fills(limited):
    inv = leaf_network(limited)
    for i in range(4):
        ls.learn(limited, inv, LEAF2, EDGE3, 1, mac(i))
        ls.learn(limited, inv, LEAF2, HV5, 10, mac(100 + i))
    ls.learn(limited, inv, LEAF2, HV5, 10, mac(200))
    flows = ls.compile_flows(Policy(limited), inv, LEAF2)
    g = guards(flows)
    assert g[EDGE3].actions == () and g[EDGE3].goto is None          # full: dropped, no copy
    assert g[EDGE4].goto == 'storm_ctl' and g[HV5].goto == 'arp_rsp'   # not full / not limited
    assert EDGE3 in punts(flows)                                     # the meter flow stays
    # one source ages out: the port copies and forwards unknown sources again
    del inv.macs[LEAF2][(1, mac(0))]
    assert guards(ls.compile_flows(Policy(limited), inv, LEAF2))[EDGE3].goto == 'storm_ctl'


def test_a_full_vm_port_on_a_hypervisor_drops_unknown_sources(limited):
    inv, hv = hv_network(limited)
    for i in range(4):
        ls.learn(limited, inv, hv, VM2, 1, mac(i))
    flows = ls.compile_flows(Policy(limited), inv, hv)
    assert guards(flows)[VM2].actions == ()


def test_meter_ids_are_port_based_and_only_real_ports_get_one():
    assert floods.port_meter(1) == floods.METER_BASE + 1 != 1         # clear of the gateway's meter 1
    assert floods.port_meter(0xfeff) <= 262144                        # OVS max_meter
    assert floods.port_meter(0xfffffffe) is None and floods.port_meter(0) is None
    assert floods.unknown_meter(0xfeff) <= 262144 and floods.unknown_meter(0xfffffffe) is None
    assert floods.port_meters(3) == [(floods.port_meter(3), floods.PUNT_PPS, floods.PUNT_BURST),
                                     (floods.unknown_meter(3), floods.UNKNOWN_PPS, floods.UNKNOWN_BURST)]
    assert len({m for p in range(1, 0xff00) for m, _, _ in floods.port_meters(p)}) == 2 * 0xfeff   # no clash


def test_a_meter_or_instruction_cannot_go_inside_a_clone():
    with pytest.raises(A.ActionError):
        A.check(A.clone(A.meter(5), A.output(CONTROLLER)))
    with pytest.raises(A.ActionError):
        A.check(A.output_trunc(3, 10))               # shorter than an Ethernet header
    A.check(floods.punt(3))


# ---- the core: meters with the ports, packet-ins from punt -------------------------------------

def test_meters_are_made_with_the_ports_and_deleted_with_them(fabric):
    ctl = Controller(fabric)
    try:
        conn = leaf1_up(ctl)
        want = lambda n: {m: (pps, burst) for m, pps, burst in floods.port_meters(n)}     # noqa: E731
        assert conn.meters == {**want(1), **want(2), **want(3), **want(4)}
        ctl.port_status(LEAF1, 'add', 7, 'leaf1-eth7', True)
        assert want(7).items() <= conn.meters.items()
        ctl.port_status(LEAF1, 'delete', 3, 'leaf1-eth3', False)
        assert not set(want(3)) & set(conn.meters)
        # every meter a flow of the switch uses exists
        flows = ctl.desired(LEAF1)
        used = {a[1] for f in flows for a in f.actions if a[0] == 'meter'}
        assert used and used <= set(conn.meters)
    finally:
        ctl.stop()


def test_a_copy_from_the_punt_table_is_learned_and_one_from_elsewhere_is_not(fabric):
    ctl = Controller(fabric)
    try:
        leaf1_up(ctl)
        ctl.packet_in(LEAF1, 3, PUNT, tagged_frame(mac(1), 1))
        ctl.packet_in(LEAF1, 4, LEARN, tagged_frame(mac(2), 1))            # the miss: still learned
        ctl.packet_in(LEAF1, 4, tables.table_id('arp_rsp'), tagged_frame(mac(3), 1))
        assert ctl.inv.macs[LEAF1] == {(1, mac(1)): 3, (1, mac(2)): 4}
        assert ctl.inv.switches[LEAF1].ports[3].role == EDGE
    finally:
        ctl.stop()


def test_a_fake_switch_without_meters_is_still_driven():
    class NoMeters(FakeSwitch):
        set_meter = delete_meter = None
    ctl = Controller(example_fabric())
    try:
        ctl.switch_up(NoMeters(LEAF1), [(1, 'leaf1-eth1', True)])
        ctl.port_status(LEAF1, 'delete', 1, 'leaf1-eth1', False)
    finally:
        ctl.stop()


def test_the_guard_action_encodes_as_nx_clone_and_decodes_to_the_same_tuple():
    from os_ken.ofproto import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser

    from controller import ofp as codec

    class DP:
        ofproto, ofproto_parser = ofp, parser
    acts = (floods.punt(7), A.output_trunc(CONTROLLER, 64), A.output(3))
    buf = bytearray()
    for a in codec.to_actions(DP, acts):
        a.serialize(buf, len(buf))
    assert buf[:16] == bytes.fromhex('ffff003000002320002a000000000000')     # NXAST_CLONE, 48 bytes
    back, off = [], 0
    while off < len(buf):
        a = parser.OFPAction.parser(buf, off)
        back.append(a)
        off += a.len
    assert codec.from_actions(DP, back) == acts


# ---- violation: shutdown ---------------------------------------------------------------------------

def test_one_source_past_the_limit_shuts_the_port_with_one_in_port_drop_above_everything(shutting):
    assert example_fabric().learning.violation == 'shutdown'          # the default
    inv = leaf_network(shutting)
    for i in range(4):
        assert ls.learn(shutting, inv, LEAF2, EDGE3, 1, mac(i))
        ls.learn(shutting, inv, LEAF2, EDGE4, 1, mac(100 + i))
    assert not shut_flows(ls.compile_flows(Policy(shutting), inv, LEAF2))
    assert ls.learn(shutting, inv, LEAF2, EDGE3, 1, mac(4))            # the fifth: a violation
    assert ls.is_shut(inv, LEAF2, EDGE3) and not ls.is_shut(inv, LEAF2, EDGE4)
    assert inv.macs[LEAF2].on_port(EDGE3) == 0 and inv.macs[LEAF2].on_port(EDGE4) == 4   # it forgot, like a down port
    assert not inv.refused.get(LEAF2)                                  # nothing remembered per source
    # copies sent before the shutdown landed are not learned; the port stays shut once
    assert not ls.learn(shutting, inv, LEAF2, EDGE3, 1, mac(5))
    assert inv.macs[LEAF2].on_port(EDGE3) == 0
    flows = ls.compile_flows(Policy(shutting), inv, LEAF2)
    f, = shut_flows(flows).values()
    assert (f.match_dict(), f.actions, f.goto) == ({'in_port': EDGE3}, (), None)       # drop, whatever the source
    assert f.hard_timeout == 7 and f.notify_removal and f.idle_timeout == 0
    assert cookies.kind_of(f.cookie) == ls.K_SHUTDOWN and cookies.app_of(f.cookie) == ls.APP
    everything = switch_flows(two_tenants(shutting), inv, LEAF2)                       # checked, no clash
    assert f in everything and f.priority > max(g.priority for g in everything if g.table == 'port_sec' and g != f)


def test_a_trunk_or_a_fabric_port_is_never_shut(shutting):
    inv = leaf_network(shutting)
    for i in range(50):
        ls.learn(shutting, inv, LEAF2, HV5, 10, mac(i))
        ls.learn(shutting, inv, LEAF2, TREE, 10, mac(1000 + i))
    assert not inv.shutdown.get(LEAF2)
    assert inv.macs[LEAF2].on_port(HV5) == inv.macs[LEAF2].on_port(TREE) == 50


def test_the_hold_time_ending_on_the_switch_opens_the_port_again(shutting):
    inv = leaf_network(shutting)
    for i in range(5):
        ls.learn(shutting, inv, LEAF2, EDGE3, 1, mac(i))
    f, = shut_flows(ls.compile_flows(Policy(shutting), inv, LEAF2)).values()
    assert ls.forget(inv, LEAF2, f)                                    # flow removed (hard timeout)
    assert not ls.is_shut(inv, LEAF2, EDGE3) and not ls.forget(inv, LEAF2, f)
    assert not shut_flows(ls.compile_flows(Policy(shutting), inv, LEAF2))
    assert ls.learn(shutting, inv, LEAF2, EDGE3, 1, mac(9))            # it learns again


def test_a_restarted_controller_takes_a_shut_port_back_from_the_switch_and_changes_nothing(shutting):
    inv = leaf_network(shutting)
    for i in range(5):
        ls.learn(shutting, inv, LEAF2, EDGE3, 1, mac(i))
    ls.learn(shutting, inv, LEAF2, EDGE4, 1, mac(77))
    installed = ls.compile_flows(Policy(shutting), inv, LEAF2)
    fresh = leaf_network(shutting)
    ls.adopt(fresh, LEAF2, installed)
    assert fresh.shutdown == {LEAF2: {EDGE3}}
    assert ls.compile_flows(Policy(shutting), fresh, LEAF2) == installed


def test_a_reload_to_restrict_opens_a_shut_port_at_once(shutting, limited):
    inv = leaf_network(shutting)
    for i in range(5):
        ls.learn(shutting, inv, LEAF2, EDGE3, 1, mac(i))
    assert shut_flows(ls.compile_flows(Policy(shutting), inv, LEAF2))
    assert not shut_flows(ls.compile_flows(Policy(limited), inv, LEAF2))      # the switch reports the delete
    assert ls.learn(limited, inv, LEAF2, EDGE3, 1, mac(9))                    # and the port learns again


def test_restrict_refuses_the_new_sources_and_never_shuts(limited):
    inv = leaf_network(limited)
    for i in range(10):
        ls.learn(limited, inv, LEAF2, EDGE3, 1, mac(i))
    assert not inv.shutdown.get(LEAF2) and len(inv.refused[LEAF2]) == 6
    assert not shut_flows(ls.compile_flows(Policy(limited), inv, LEAF2))


def test_the_core_logs_the_shutdown_and_the_recovery_and_forgets_a_deleted_port(shutting, tmp_path):
    ctl = Controller(shutting)
    try:
        conn = leaf1_up(ctl)
        for i in range(5):
            ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(mac(i), 1))
        assert ctl.inv.shutdown == {LEAF1: {3}}
        # the operator sees it: `dvsctl show switches` marks the port, /metrics counts it
        leaf1, = [s for s in PolicyService(ctl, PolicyStore(str(tmp_path))).switches() if s['name'] == 'leaf1']
        assert [p['no'] for p in leaf1['ports'] if p['shut']] == [3]
        assert remote._cell(leaf1['ports']).split() == ['1:edge', '2:edge', '3:edge(shut)', '4:edge']
        metrics.watch(ctl)
        assert 'opendvs_port_shutdown{port="3",switch="leaf1"} 1.0' in metrics.exposition()[0].decode()
        shut, = [e for e in ctl.events.since(0) if e['event'] == 'port_shutdown']
        assert (shut['switch'], shut['port'], shut['name'], shut['mac'], shut['vlan']) == ('leaf1', 3, 'leaf1-eth3', mac(4), 1)
        assert (shut['max_macs'], shut['recovery_s']) == (4, 7)
        ctl.rec.converge(conn, ctl.desired(LEAF1))
        f, = shut_flows(conn.flows).values()
        ctl.flow_removed(LEAF1, f)                                      # the switch's hold time ended
        assert not ctl.inv.shutdown[LEAF1] and f not in ctl.rec.installed(LEAF1)
        assert [e['port'] for e in ctl.events.since(0) if e['event'] == 'port_recovery'] == [3]
        assert not shut_flows(ctl.desired(LEAF1))
        for i in range(10, 15):
            ctl.packet_in(LEAF1, 3, LEARN, tagged_frame(mac(i), 1))
        assert ctl.inv.shutdown == {LEAF1: {3}}
        ctl.port_status(LEAF1, 'delete', 3, 'leaf1-eth3', False)        # its number may come back
        assert ctl.inv.shutdown == {LEAF1: set()}
        # a reload to restrict while a port is shut: it learns again, and no new shutdown is told
        for i in range(20, 25):
            ctl.packet_in(LEAF1, 4, LEARN, tagged_frame(mac(i), 1))
        assert ctl.inv.shutdown == {LEAF1: {4}}
        ctl.policy = Policy(example_fabric(max_macs_per_port=4, violation='restrict'))
        ctl.packet_in(LEAF1, 4, LEARN, tagged_frame(mac(30), 1))
        assert ctl.inv.macs[LEAF1].on_port(4) == 1
        assert len([e for e in ctl.events.since(0) if e['event'] == 'port_shutdown']) == 3
    finally:
        ctl.stop()
