"""A leaf's compiled flows for a bonded hypervisor on a scratch bridge, asked with ofproto/trace:
a frame that came in on a bond member never goes back into the bond.  Known unicast to a MAC
behind the same bond is dropped (as OVS drops output to the ingress port of an ordinary port),
not sent out of the other member nor out of the member it came in on; a flood leaves by every
port but the bond.  Frames from elsewhere still reach the bond by one member, spread over both."""
from __future__ import annotations

import pytest

from controller.pipeline import cookies, tables
from tests.ovs.pipeline_bridge import PipelineBridge
from tests.support import sh
from tests.unit.builders import LEAF1, example_fabric
from tests.unit.test_bonds import _frame, bonded_leaf

MAC_A, MAC_C = '02:00:00:00:00:0a', '02:00:00:00:00:0c'     # behind the bond (ports 3+4)
MAC_E = '02:00:00:00:00:0e'                                  # on edge port 5
BCAST = 'ff:ff:ff:ff:ff:ff'
SOURCES = range(1000, 1016)        # TCP source ports: flows the bundle's hash spreads over both members


@pytest.fixture
def leaf():
    ctl, _, _ = bonded_leaf(example_fabric())
    learn = tables.table_id('learn')
    for port, mac in ((4, MAC_A), (3, MAC_C), (5, MAC_E)):       # native VLAN 1, untagged on these ports
        ctl.packet_in(LEAF1, port, learn, _frame(mac, 1))
    assert ctl.inv.macs[LEAF1] == {(1, MAC_A): 3, (1, MAC_C): 3, (1, MAC_E): 5}
    try:
        with PipelineBridge(ports=[1, 2, 3, 4, 5]) as br:
            for n in br.ports:             # the bundle picks only live members: links up
                sh('ip link set %sp%d up' % (br.name, n))
            br.load(ctl.desired(LEAF1), registry=cookies.Registry())
            yield ctl, br
    finally:
        ctl.stop()


def tcp(sport: int, src: str, dst: str) -> dict:
    return dict(eth_src=src, eth_dst=dst, eth_type=0x0800, ipv4_src='10.1.0.1', ipv4_dst='10.1.0.2',
                ip_proto=6, tcp_src=sport, tcp_dst=80)


def check_no_hairpin(br, members, bond_up):
    # from an edge port: exactly one live member per flow, and the flows use every live one
    picked = {tuple(br.trace(in_port=5, **tcp(s, MAC_E, MAC_A)).output_ports) for s in SOURCES}
    assert picked == {(m,) for m in bond_up}
    for member in members:
        for s in SOURCES:
            t = br.trace(in_port=member, **tcp(s, MAC_C, MAC_A))
            assert t.dropped, 'member %d, tcp_src %d: hairpin into the bond\n%s' % (member, s, t.text)
        # what must still work from the bond: known unicast out of another port
        assert br.trace(in_port=member, **tcp(1000, MAC_C, MAC_E)).output_ports == [5]


def test_known_unicast_from_the_bond_to_the_same_bond_is_dropped(leaf):
    _, br = leaf
    check_no_hairpin(br, members=(3, 4), bond_up=(3, 4))


def test_a_flood_from_a_bond_member_never_goes_back_into_the_bond(leaf):
    _, br = leaf
    for member in (3, 4):
        for dst in (BCAST, '02:00:00:00:00:99'):                  # broadcast, unknown unicast
            t = br.trace(in_port=member, **tcp(1000, MAC_C, dst))
            assert sorted(t.output_ports) == [1, 2, 5], t.text
    out = br.trace(in_port=5, **tcp(1000, MAC_E, BCAST)).output_ports
    assert sorted(p for p in out if p not in (3, 4)) == [1, 2] and len([p for p in out if p in (3, 4)]) == 1

