"""Bonded hypervisor uplinks: a leaf's bond members folded into one port for the core, the
flow rewrite for them, and the status `dvsctl show uplinks` reports."""
import time
import types

import pytest

from apps import topology
from controller import bonds
from controller.bonds import BondedController, Lag, expand, fold_ports
from controller.inventory import bonds as inv_bonds
from controller.inventory.bonds import Bond, Member, uplink_status
from controller.inventory.model import EDGE, FABRIC, HYPERVISOR, LinkEnd
from controller.pipeline import cookies, incremental, tables
from controller.pipeline.flow import IN_PORT, Flow, vid
from controller.policy.model import Policy
from tests.unit.builders import LEAF1, SPINE1, FakeSwitch, by_table, make_tenant

MAC_A = '02:00:00:00:00:0a'


def lag(up=(3, 4)):
    return Lag('b1', (3, 4), frozenset(up))


# ---- the flow rewrite ------------------------------------------------------------------------

def test_output_to_a_bond_becomes_a_bundle_over_its_members():
    f = Flow.make('l2', 100, {'vlan_vid': vid(10), 'eth_dst': MAC_A}, [('output', 3)], cookie=cookies.make('learning_switch'))
    out = expand({f}, [lag()])
    assert [g.actions for g in out if g.table == 'l2'] == [(('bundle', 'hrw', (3, 4)),)]


def test_the_other_members_are_folded_into_the_anchor_for_the_whole_pipeline():
    out = expand(set(), [lag()])
    folds = {f for f in out if ('resubmit', 'port_sec') in f.actions}
    # the in_port itself is rewritten: resubmit(3,...) would only look up as port 3 (OVS puts the
    # real in_port back for the actions), and later tables would see member 4 again
    assert {(f.match_dict()['in_port'], f.actions) for f in folds} == {
        (4, (('set_in_port', 3), ('resubmit', 'port_sec')))}
    for f in folds:
        assert f.table == 'port_sec'                       # first: every later stage sees the anchor
        assert f.priority > 1000                           # ahead of LLDP
    for f in out:
        tables.check(f)                                    # bonds may write port_sec (and in_port there)
        assert cookies.app_of(f.cookie) == 'bonds'


def test_a_frame_from_the_bond_chosen_for_the_bond_is_dropped_not_hairpinned():
    """After the fold every frame from the bond has in_port=anchor, so OVS's own 'no output to
    the ingress port' only covers the bundle picking the anchor: the output stage drops the rest."""
    c = cookies.make('learning_switch')
    emit = {Flow.make('output', 100, {'reg15': 3}, [('output', 3)], cookie=c),
            Flow.make('output', 110, {'reg15': 3, 'vlan_vid': vid(1)}, [('pop_vlan',), ('output', 3)], cookie=c)}
    for g in (lag(), lag(up=(4,))):
        out = by_table(expand(emit, [g]), 'output')
        drops = [f for f in out if cookies.app_of(f.cookie) == 'bonds']
        assert [(f.match_dict(), f.actions) for f in drops] == [({'in_port': g.anchor, 'reg15': 3}, ())]
        assert drops[0].priority > max(f.priority for f in out if f not in drops)
        for f in out:
            tables.check(f)
    assert by_table(expand(emit, []), 'output') == emit                  # no bond: nothing added


def test_a_bond_whose_first_member_is_down_is_anchored_on_the_next():
    g = lag(up=(4,))
    assert g.logical == 3 and g.anchor == 4
    f = Flow.make('classify', 100, {'in_port': 3, 'vlan_vid': 0}, [('push_vlan', 1)], goto='learn',
                  cookie=cookies.make('learning_switch'))
    arp = Flow.make('classify', 500, {'in_port': 3, 'eth_type': 0x0806}, [('output', IN_PORT)],
                    cookie=cookies.make('underlay_routing'))
    out = expand({f, arp}, [g])
    assert {x.match_dict()['in_port'] for x in by_table(out, 'classify') if cookies.app_of(x.cookie) != 'bonds'} == {4}
    assert [x.actions for x in out if x.priority == 500] == [(('output', IN_PORT),)]   # replies leave by the anchor
    assert {x.match_dict()['in_port'] for x in by_table(out, 'port_sec') if cookies.app_of(x.cookie) == 'bonds'} == {3}


def test_a_flood_never_goes_back_into_the_bond_it_came_from():
    c = cookies.make('learning_switch')
    f = Flow.make('flood', 100, {'vlan_vid': vid(1)}, [('output', 1), ('pop_vlan',), ('output', 3), ('output', 5)], cookie=c)
    only_bond = Flow.make('flood', 100, {'vlan_vid': vid(10)}, [('pop_vlan',), ('output', 3)], cookie=c)
    out = by_table(expand({f, only_bond}, [lag()]), 'flood')
    got = {(x.priority, tuple(sorted(x.match_dict().items())), x.actions) for x in out}
    bundle = ('bundle', 'hrw', (3, 4))
    assert got == {
        (100, (('vlan_vid', vid(1)),), (('output', 1), ('pop_vlan',), bundle, ('output', 5))),
        (101, (('in_port', 3), ('vlan_vid', vid(1))), (('output', 1), ('pop_vlan',), ('output', 5))),
        (100, (('vlan_vid', vid(10)),), (('pop_vlan',), bundle)),
        (101, (('in_port', 3), ('vlan_vid', vid(10))), ()),             # nowhere else to go: drop
    }
    for x in out:
        tables.check(x)


def test_no_bonds_changes_nothing():
    f = Flow.make('l2', 100, {'vlan_vid': vid(10)}, [('output', 3)], cookie=cookies.make('learning_switch'))
    assert expand({f}, []) == {f}


def test_fold_ports_shows_one_port_up_while_any_member_is():
    ports = [(1, 'l1', True), (3, 'u1', False), (4, 'u1m1', True), (5, 'e', True)]
    assert fold_ports(ports, [lag()]) == [(1, 'l1', True), (3, 'u1', True), (5, 'e', True)]
    down = [(3, 'u1', False), (4, 'u1m1', False)]
    assert fold_ports(down, [lag()]) == [(3, 'u1', False)]


# ---- the controller: members are no port events for the core ------------------------------------

def leaf_bond(up=(True, True), lacp='active'):
    return Bond('tleaf1', 'tb1', 'balance-tcp', lacp, (Member('tu1', 3, up[0], True), Member('tu1m1', 4, up[1], True)))


def bonded_leaf(fabric):
    """leaf1 with bond tb1 (ports 3 and 4) to hv1, whose LLDP came in on member 4; port 1 a
    fabric link to spine1, 2 and 5 edge ports; tenant acme on VLAN 10.  (ctl, leaf, hv dpid)"""
    ctl = BondedController(Policy(fabric).with_tenants([make_tenant('acme', {'users': 10})]))
    ctl.switch_bonds_changed({'tleaf1': (LEAF1, {'tb1': leaf_bond()})})
    leaf = FakeSwitch(LEAF1)
    ctl.switch_up(leaf, [(1, 'l1', True), (2, 'l2', True), (3, 'tu1', True), (4, 'tu1m1', True), (5, 'e', True)])
    spine = FakeSwitch(SPINE1)
    ctl.switch_up(spine, [(1, 's1', True)])
    ctl.packet_in(LEAF1, 1, 0, topology.lldp_frame(SPINE1, 1))
    ctl.packet_in(SPINE1, 1, 0, topology.lldp_frame(LEAF1, 1))
    hv = fabric.hypervisors['hv1'].dpid
    ctl.switch_up(FakeSwitch(hv), [(1, 'int-to-phy', True)])
    ctl.packet_in(LEAF1, 4, 0, topology.lldp_frame(hv, 1))          # its LLDP came in on the 2nd member
    with ctl.lock:
        topology.classify_ports(ctl.fabric, ctl.inv, time.monotonic() + topology.DISCOVERY_WINDOW)
        ctl._topology_changed()
    return ctl, leaf, hv


@pytest.fixture
def bonded(fabric):
    ctl, leaf, hv = bonded_leaf(fabric)
    yield ctl, leaf, hv
    ctl.stop()


def test_the_core_sees_a_bond_as_one_hypervisor_port(bonded):
    ctl, leaf, hv = bonded
    ports = ctl.inv.switches[LEAF1].ports
    assert sorted(ports) == [1, 2, 3, 5]                                   # member 4 folded into 3
    assert ports[3].role == HYPERVISOR and ports[1].role == FABRIC and ports[5].role == EDGE
    assert ctl.inv.hv_ports == {LinkEnd(LEAF1, 3): hv}                     # LLDP: which port (bond)


def test_a_member_flapping_keeps_the_tree_and_the_learned_macs(bonded):
    ctl, leaf, hv = bonded
    assert ctl.packet_in(LEAF1, 4, tables.table_id('learn'), _frame(MAC_A, 10)) is None
    assert ctl.inv.macs[LEAF1] == {(10, MAC_A): 3}                         # learned on the bond
    tree, macs, roles = set(ctl._tree), dict(ctl.inv.macs[LEAF1]), _roles(ctl)
    before = ctl.desired(LEAF1)
    for no in (3, 4):
        ctl.port_status(LEAF1, 'modify', no, 'x', False)
        assert ctl.inv.switches[LEAF1].ports[3].up                       # the other member is up
        assert (ctl._tree, ctl.inv.macs[LEAF1], _roles(ctl)) == (tree, macs, roles)
        ctl.port_status(LEAF1, 'modify', no, 'x', True)
        assert (ctl._tree, ctl.inv.macs[LEAF1], _roles(ctl)) == (tree, macs, roles)
    assert ctl.desired(LEAF1) == before


def test_the_first_member_down_moves_the_anchor_and_both_down_is_a_port_down(bonded):
    ctl, leaf, hv = bonded
    ctl.port_status(LEAF1, 'modify', 3, 'tu1', False)
    flows = ctl.desired(LEAF1)
    assert {f.match_dict()['in_port'] for f in by_table(flows, 'port_sec')
            if cookies.app_of(f.cookie) == 'learning_switch' and 'in_port' in f.match_dict()} >= {4}
    assert not any(f.match_dict().get('in_port') == 3 and cookies.app_of(f.cookie) != 'bonds' for f in flows)
    ctl.port_status(LEAF1, 'modify', 4, 'tu1m1', False)
    assert not ctl.inv.switches[LEAF1].ports[3].up                       # the whole bond is down now


def test_packet_outs_to_the_bond_leave_by_a_live_member(bonded):
    ctl, leaf, hv = bonded
    ctl.port_status(LEAF1, 'modify', 3, 'tu1', False)
    ctl.conns[LEAF1].packet_out(3, b'x')
    assert leaf.sent == [(4, b'x')]


def test_a_bond_learned_after_the_switch_connected_is_folded_then(fabric):
    ctl = BondedController(Policy(fabric))
    ctl.switch_up(FakeSwitch(LEAF1), [(3, 'tu1', True), (4, 'tu1m1', True)])
    assert sorted(ctl.inv.switches[LEAF1].ports) == [3, 4]
    ctl.switch_bonds_changed({'tleaf1': (LEAF1, {'tb1': leaf_bond()}), 'other': (0x999, {})})
    assert sorted(ctl.inv.switches[LEAF1].ports) == [3]
    ctl.stop()


def test_bonds_of_another_lab_with_the_same_dpids_are_not_ours(fabric):
    ctl = BondedController(Policy(fabric), ofp_port=6653)
    ctl.switch_up(FakeSwitch(LEAF1), [(3, 'tu1', True), (4, 'tu1m1', True)])
    ctl.switch_bonds_changed({'xleaf1': (LEAF1, {'xb1': leaf_bond()}, ('tcp:127.0.0.1:7000',))})
    assert sorted(ctl.inv.switches[LEAF1].ports) == [3, 4]
    ctl.switch_bonds_changed({'xleaf1': (LEAF1, {'xb1': leaf_bond()}, ('tcp:127.0.0.1:7000',)),
                              'tleaf1': (LEAF1, {'tb1': leaf_bond()}, ('tcp:127.0.0.1:6653',))})
    assert sorted(ctl.inv.switches[LEAF1].ports) == [3]
    ctl.stop()


def test_the_uplinks_view_reports_both_ends(bonded):
    ctl, leaf, hv = bonded
    hv_end = Bond('br-phy', 'bond0', 'balance-tcp', 'active', (Member('phy0', 1, True, True), Member('phy1', 2, True, True)))
    ctl._hv_bonds_changed(hv, {'br-phy': (None, {'bond0': hv_end})})
    row = next(r for r in ctl.uplinks() if r['hypervisor'] == 'hv1')
    assert (row['status'], row['leaf_port'], row['leaf_bond']['name'], row['hv_bond']['name']) == ('ok', 3, 'tb1', 'bond0')
    assert row['members'] == ['tu1:up/current', 'tu1m1:up/current', 'phy0:up/current', 'phy1:up/current']
    assert next(r for r in ctl.uplinks() if r['hypervisor'] == 'hv2')['status'] == 'single'


# ---- status ------------------------------------------------------------------------------------

def hv_end(up=(True, True), current=(True, True), lacp='active'):
    return Bond('br-phy', 'bond0', 'balance-tcp', lacp,
                tuple(Member('phy%d' % i, i + 1, u, c if lacp != 'off' else None) for i, (u, c) in enumerate(zip(up, current))))


def test_uplink_status():
    assert uplink_status(1, 'lacp', None, None) == ('single', [])
    assert uplink_status(2, 'lacp', leaf_bond(), hv_end()) == ('ok', [])
    status, problems = uplink_status(2, 'lacp', leaf_bond(up=(False, True)), hv_end(up=(False, True), current=(False, True)))
    assert status == 'degraded' and 'link down: tu1, phy0' in problems
    # the leaf end does not speak LACP: the hypervisor's members hear nobody and stay unused
    status, problems = uplink_status(2, 'lacp', leaf_bond(lacp='off'), hv_end(current=(False, False)))
    assert status == 'no-lacp-partner'
    assert 'no LACP from the partner on phy0, phy1' in problems
    assert any('lacp=off' in p for p in problems)
    assert uplink_status(2, 'lacp', None, hv_end())[0] == 'misconfigured'
    assert uplink_status(2, 'lacp', leaf_bond(up=(False, False)), hv_end(up=(False, False), current=(False, False)))[0] == 'down'


def _roles(ctl):
    return {(d, p.no): p.role for d, sw in ctl.inv.switches.items() for p in sw.ports.values()}


def _frame(src, vlan, dst='ff:ff:ff:ff:ff:ff'):
    import struct
    mac = lambda m: bytes.fromhex(m.replace(':', ''))   # noqa: E731
    return mac(dst) + mac(src) + struct.pack('!HHH', 0x8100, vlan, 0x0800) + bytes(46)


# ---- the OpenFlow codec round-trips the new actions -------------------------------------------

def test_bundle_and_resubmit_round_trip_through_the_codec():
    ofp = pytest.importorskip('controller.ofp')
    from os_ken.ofproto import ofproto_v1_4, ofproto_v1_4_parser
    dp = types.SimpleNamespace(ofproto=ofproto_v1_4, ofproto_parser=ofproto_v1_4_parser)
    acts = (('bundle', 'hrw', (3, 4)), ('bundle', 'active_backup', (5, 6, 7)),
            ('set_in_port', 3), ('resubmit', 'port_sec'))
    encoded = ofp.to_actions(dp, acts)
    for a in encoded:                                   # what goes on the wire must serialise
        a.serialize(bytearray(), 0)
    assert ofp.from_actions(dp, encoded) == acts


assert bonds.APP in cookies.APPS and inv_bonds.OK == 'ok'


def test_our_own_delete_of_a_re_keyed_learned_entry_forgets_no_mac(bonded):
    ctl, leaf, hv = bonded
    ctl.packet_in(LEAF1, 4, tables.table_id('learn'), _frame(MAC_A, 1))
    learned = next(f for f in ctl.desired(LEAF1) if f.table == 'learn' and f.match_dict().get('eth_src') == MAC_A)
    ctl.rec._installed[LEAF1] = {f.key: f for f in ctl.desired(LEAF1)}
    ctl.port_status(LEAF1, 'modify', 3, 'tu1', False)             # anchor moves: the entry is re-keyed
    ctl.flow_removed(LEAF1, learned)                               # OVS reports our delete (even before
    assert ctl.inv.macs[LEAF1] == {(1, MAC_A): 3}                  # the reconciler heard the commit)
    ctl.rec._installed[LEAF1] = {f.key: f for f in ctl.desired(LEAF1)}
    ctl.flow_removed(LEAF1, learned)
    assert ctl.inv.macs[LEAF1] == {(1, MAC_A): 3}
    moved = next(f for f in ctl.desired(LEAF1) if f.table == 'learn' and f.match_dict().get('eth_src') == MAC_A)
    assert moved.match_dict()['in_port'] == 4
    ctl.flow_removed(LEAF1, moved)                                 # a real idle timeout: forgotten
    assert ctl.inv.macs[LEAF1] == {}


def test_the_worker_converges_a_bonded_switch_with_its_rewritten_flows(bonded, monkeypatch):
    """Core v2 compiles incrementally and never calls desired(): the rewrite goes through
    Controller.rewrite()/bonded(), and the switch ends up with the same flows as desired()."""
    ctl, leaf, hv = bonded
    monkeypatch.setattr(ctl, 'settling', lambda dpid: False)
    monkeypatch.setattr(ctl, 'picture_complete', lambda: True)
    assert ctl.bonded(LEAF1) and not ctl.bonded(SPINE1)
    ctl.rec.load(leaf)
    ctl._converge(ctl.conns[LEAF1])
    folds = {f for f in leaf.flows if cookies.app_of(f.cookie) == 'bonds'}
    assert {(f.table, f.match_dict()['in_port'], f.actions) for f in folds} == {
        ('port_sec', 4, (('set_in_port', 3), ('resubmit', 'port_sec'))), ('output', 3, ())}
    assert leaf.flows == ctl.desired(LEAF1)
    assert any(('bundle', 'hrw', (3, 4)) in f.actions for f in leaf.flows)
    assert not any(('output', 3) in f.actions for f in leaf.flows)      # the bond is never one member
    for f in leaf.flows:
        tables.check(f)                                                 # the rewrite stays in its bands
    ctl.port_status(LEAF1, 'modify', 3, 'tu1', False)                   # the anchor moves to member 4
    assert ctl._stale.get(LEAF1) is incremental.ALL                     # the whole switch is recompiled
    ctl._converge(ctl.conns[LEAF1])
    assert leaf.flows == ctl.desired(LEAF1)
    assert {(f.table, f.match_dict()['in_port']) for f in leaf.flows if cookies.app_of(f.cookie) == 'bonds'} == {
        ('port_sec', 3), ('output', 4)}
    assert not any(f.match_dict().get('in_port') == 3 for f in leaf.flows if cookies.app_of(f.cookie) != 'bonds')


# ---- /metrics: both ends of each bonded hypervisor's uplinks, from what the watchers report ----

def gauge(name, **labels):
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value(name, labels)


def ends(hv='hv1'):
    """{side: (members, up, enabled, lacp negotiated, degraded)} as /metrics has them."""
    out = {}
    for side in ('leaf', 'hypervisor'):
        got = tuple(gauge('opendvs_bond_' + n, hypervisor=hv, side=side)
                    for n in ('members', 'members_up', 'members_enabled', 'lacp_negotiated', 'degraded'))
        if got != (None,) * 5:
            out[side] = got
    return out


def status(hv='hv1'):
    return [s for s in inv_bonds.BONDED_STATUSES if gauge('opendvs_uplink_status', hypervisor=hv, status=s) == 1]


def test_bond_metrics_follow_a_member_cut_and_its_restore(bonded):
    ctl, leaf, hv = bonded
    # only the leaf's end is known yet (hv1's OVSDB not read): no series for the other end
    assert ends() == {'leaf': (2, 2, 2, 1, 0)} and status() == ['misconfigured']
    ctl._hv_bonds_changed(hv, {'br-phy': (None, {'bond0': hv_end()})})
    assert ends() == {'leaf': (2, 2, 2, 1, 0), 'hypervisor': (2, 2, 2, 1, 0)} and status() == ['ok']
    assert gauge('opendvs_bond_member_up', hypervisor='hv1', side='leaf', member='tu1m1') == 1
    assert gauge('opendvs_bond_member_lacp_negotiated', hypervisor='hv1', side='hypervisor', member='phy1') == 1
    # the second cable cut: both ends lose that member (link and LACP)
    cut = Bond('tleaf1', 'tb1', 'balance-tcp', 'active',
               (Member('tu1', 3, True, True), Member('tu1m1', 4, False, False)))
    ctl.switch_bonds_changed({'tleaf1': (LEAF1, {'tb1': cut})})
    ctl._hv_bonds_changed(hv, {'br-phy': (None, {'bond0': hv_end(up=(True, False), current=(True, False))})})
    assert ends() == {'leaf': (2, 1, 1, 1, 1), 'hypervisor': (2, 1, 1, 1, 1)} and status() == ['degraded']
    for side, member in (('leaf', 'tu1m1'), ('hypervisor', 'phy1')):
        assert gauge('opendvs_bond_member_up', hypervisor='hv1', side=side, member=member) == 0
        assert gauge('opendvs_bond_member_lacp_negotiated', hypervisor='hv1', side=side, member=member) == 0
    assert gauge('opendvs_bond_member_up', hypervisor='hv1', side='leaf', member='tu1') == 1
    # restored
    ctl.switch_bonds_changed({'tleaf1': (LEAF1, {'tb1': leaf_bond()})})
    ctl._hv_bonds_changed(hv, {'br-phy': (None, {'bond0': hv_end()})})
    assert ends() == {'leaf': (2, 2, 2, 1, 0), 'hypervisor': (2, 2, 2, 1, 0)} and status() == ['ok']
    # a single-uplink hypervisor has no bond series at all
    assert ends('hv2') == {} and status('hv2') == []


def test_bond_metrics_report_a_partner_that_does_not_speak_lacp(bonded):
    ctl, leaf, hv = bonded
    static = Bond('tleaf1', 'tb1', 'balance-tcp', 'off', (Member('tu1', 3, True, None), Member('tu1m1', 4, True, None)))
    ctl.switch_bonds_changed({'tleaf1': (LEAF1, {'tb1': static})})
    ctl._hv_bonds_changed(hv, {'br-phy': (None, {'bond0': hv_end(current=(False, False))})})
    # the hypervisor's members hear nobody and carry nothing; the leaf's runs no LACP, as the fabric
    # does not say: both ends are degraded, the uplink is reported as without an LACP partner
    assert ends() == {'leaf': (2, 2, 2, 0, 1), 'hypervisor': (2, 2, 0, 0, 1)}
    assert status() == ['no-lacp-partner']
    assert gauge('opendvs_bond_member_lacp_negotiated', hypervisor='hv1', side='leaf', member='tu1') == 0


def test_end_degraded():
    assert not inv_bonds.end_degraded(2, 'lacp', leaf_bond())
    assert inv_bonds.end_degraded(3, 'lacp', leaf_bond())                       # a member short
    assert inv_bonds.end_degraded(2, 'lacp', leaf_bond(up=(True, False)))
    assert inv_bonds.end_degraded(2, 'lacp', hv_end(current=(True, False)))     # up, no partner
    assert inv_bonds.end_degraded(2, 'active-backup', leaf_bond())             # LACP not declared
    assert not inv_bonds.end_degraded(2, 'active-backup', hv_end(lacp='off'))


def _idl(link_state, lacp_current, dpid=('0000000000000201',)):
    """An OVSDB replica (the shape python-ovs gives) of one leaf bridge with a 2-member LACP bond."""
    NS = types.SimpleNamespace
    members = [NS(name='l1-eth%d' % n, ofport=[n], link_state=link_state, lacp_current=lacp_current)
               for n in (5, 6)]
    port = NS(name='bond-hv1', interfaces=members, bond_mode=['balance-tcp'], lacp=['active'])
    br = NS(name='leaf1', ports=[port], datapath_id=list(dpid), controller=[])
    return NS(tables={'Bridge': NS(rows={1: br})})


def test_a_member_whose_status_columns_are_empty_keeps_its_last_state():
    """datapath_id, link_state and lacp_current are ephemeral: an ovsdb-server restart leaves them empty
    until ovs-vswitchd writes them again.  That is no link flap: the bond stays as it was."""
    ib = inv_bonds
    up = ib.read_bonds(_idl(['up'], [True]))
    bond = up['leaf1'][1]['bond-hv1']
    assert all(bond.usable(m) for m in bond.members)
    after_restart = ib.read_bonds(_idl([], [], dpid=()), up)
    assert after_restart == up
    assert ib.read_bonds(_idl([], [])) != up                  # with nothing to go by: not usable
    down = ib.read_bonds(_idl(['down'], [False]), up)         # what vswitchd writes still counts
    assert not any(down['leaf1'][1]['bond-hv1'].usable(m) for m in down['leaf1'][1]['bond-hv1'].members)
