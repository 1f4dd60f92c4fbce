"""Named cables: fabric links that name their ports carry traffic before LLDP has seen them,
and a switch whose every cable is named opens its other ports at once (issue 11 part 1)."""
import pytest

from apps import topology
from apps.topology import classify_ports, flood_tree
from controller.inventory.model import EDGE, FABRIC, PENDING, UNDECLARED, Inventory, LinkEnd
from controller.policy.errors import PolicyError
from controller.policy.fabric import parse_fabric
from tests.unit.builders import add_switch

S1, S2, L1, L2 = 0x101, 0x102, 0x201, 0x202

# 2 spines x 2 leaves, every cable named: spine port n goes to leaf n, leaf port n to spine n
NAMED = """
switches:
  spine1: {dpid: 0x101}
  spine2: {dpid: 0x102}
  leaf1: {dpid: 0x201}
  leaf2: {dpid: 0x202}
links:
  - [spine1:1, leaf1:1]
  - [spine1:2, leaf2:1]
  - [spine2:1, leaf1:2]
  - [spine2:2, leaf2:2]
"""


def mesh(text=NAMED, up=True):
    """The named 2x2 mesh connected, nothing heard by LLDP yet; ports 3 and 4 of each leaf
    go to hosts.  Returns (fabric, inventory, {dpid: SwitchState})."""
    fabric = parse_fabric(text)
    inv = Inventory()
    topology.use_fabric(fabric, inv)
    sws = {S1: add_switch(inv, S1, 'spine1', ports={1: (PENDING, None, up), 2: (PENDING, None, up)}),
           S2: add_switch(inv, S2, 'spine2', ports={1: (PENDING, None, up), 2: (PENDING, None, up)})}
    for dpid, name in ((L1, 'leaf1'), (L2, 'leaf2')):
        sws[dpid] = add_switch(inv, dpid, name, ports={n: (PENDING, None, up) for n in (1, 2, 3, 4)})
    return fabric, inv, sws


def roles(sw):
    return {no: p.role for no, p in sorted(sw.ports.items())}


def test_the_fabric_file_names_a_cables_ports():
    fabric = parse_fabric(NAMED)
    assert fabric.links == (('leaf1', 'spine1'), ('leaf2', 'spine1'), ('leaf1', 'spine2'), ('leaf2', 'spine2'))
    # (a, b) sorted by name -> (port on a, port on b)
    assert dict(fabric.link_ports) == {('leaf1', 'spine1'): (1, 1), ('leaf2', 'spine1'): (1, 2),
                                       ('leaf1', 'spine2'): (2, 1), ('leaf2', 'spine2'): (2, 2)}
    ends = topology.declared_ends(fabric)
    assert ends[LinkEnd(S1, 2)] == LinkEnd(L2, 1) and ends[LinkEnd(L2, 1)] == LinkEnd(S1, 2)
    assert topology.open_at_once(fabric) == {S1, S2, L1, L2}


@pytest.mark.parametrize('links,error', [
    ('[spine1:1, leaf1]', 'links[0]: name the ports of both ends of a cable, or of neither'),
    ('[spine1:x, leaf1:1]', "links[0]: 'spine1:x': the port after the colon is an OpenFlow port number"),
    ('[spine1:0, leaf1:1]', "links[0]: 'spine1:0': the port after the colon"),
    ('[spine9:1, leaf1:1]', "links[0]: switch 'spine9' is not defined in switches"),
    ('[spine1:1, leaf1:1]\n  - [spine1:1, leaf2:1]', 'links[1]: port spine1:1 is already cabled (links[0] at'),
])
def test_a_bad_named_cable_is_reported_at_its_line(links, error):
    text = NAMED.split('links:')[0] + 'links:\n  - ' + links + '\n'
    with pytest.raises(PolicyError) as e:
        parse_fabric(text, 'fabric.yaml')
    assert error in str(e.value)
    assert 'fabric.yaml:' in str(e.value)


def test_named_cables_carry_traffic_before_lldp_and_the_tree_has_no_loop():
    fabric, inv, sws = mesh()
    classify_ports(fabric, inv, now=0.0)
    assert roles(sws[S1]) == {1: FABRIC, 2: FABRIC}
    assert roles(sws[L1]) == {1: FABRIC, 2: FABRIC, 3: EDGE, 4: EDGE}     # every cable named: hosts at once
    tree = flood_tree(inv)
    # 4 switches, 3 cables of the 4 on the tree: one spine-leaf cable left out, no loop
    assert len(tree) == 6
    assert topology.peer(inv, L2, 1) == LinkEnd(S1, 2)
    assert topology.toward(inv, tree, L2)[L1] in (1, 2)


def test_a_named_port_that_is_down_carries_nothing():
    fabric, inv, sws = mesh()
    sws[L1].ports[1].up = False
    classify_ports(fabric, inv, now=0.0)
    assert sws[L1].ports[1].role == PENDING
    assert topology.peer(inv, L1, 1) is None
    assert LinkEnd(S1, 1) not in flood_tree(inv)        # spine1's end alone is no cable


def test_lldp_that_names_another_neighbour_voids_the_named_cable_at_both_ends():
    fabric, inv, sws = mesh()
    classify_ports(fabric, inv, now=0.0)
    # leaf1 port 1 hears spine2 port 1, not spine1 port 1 as the file says
    inv.links[LinkEnd(L1, 1)] = (LinkEnd(S2, 1), 0.5)
    inv.links[LinkEnd(S2, 1)] = (LinkEnd(L1, 1), 0.5)
    classify_ports(fabric, inv, now=0.5)
    assert sws[L1].ports[1].role == UNDECLARED
    assert sws[S1].ports[1].role != FABRIC               # its named peer hears someone else
    assert sws[S2].ports[1].role == UNDECLARED           # named to leaf1 port 2, heard from port 1
    assert not {LinkEnd(L1, 1), LinkEnd(S1, 1), LinkEnd(S2, 1)} & flood_tree(inv)


def test_lldp_that_agrees_keeps_the_cable_and_its_silence_does_not_close_it():
    fabric, inv, sws = mesh()
    inv.links[LinkEnd(L1, 1)] = (LinkEnd(S1, 1), 0.0)
    classify_ports(fabric, inv, now=0.0)
    assert sws[L1].ports[1].role == sws[S1].ports[1].role == FABRIC
    assert topology.expire(fabric, inv, now=100) is False     # LLDP aged out: the file still names it
    assert sws[L1].ports[1].role == FABRIC


def test_a_leaf_with_hypervisors_or_an_unnamed_cable_still_waits_for_discovery():
    text = NAMED.replace('  - [spine2:2, leaf2:2]\n', '  - [spine2, leaf2]\n') + \
        'hypervisors:\n  hv1: {leaf: leaf1, vtep: 172.16.1.11, trunk_vlans: [10]}\n'
    text = text.replace('leaf1: {dpid: 0x201}', 'leaf1: {dpid: 0x201, rack_subnet: 172.16.1.0/24}')
    fabric, inv, sws = mesh(text)
    assert topology.open_at_once(fabric) == {S1}        # spine2 and leaf2: a cable unnamed; leaf1: hv1
    classify_ports(fabric, inv, now=0.0)
    assert roles(sws[L1]) == {1: FABRIC, 2: FABRIC, 3: PENDING, 4: PENDING}
    assert roles(sws[L2])[1] == FABRIC and roles(sws[L2])[2] == PENDING     # the unnamed cable: LLDP
    classify_ports(fabric, inv, now=topology.DISCOVERY_WINDOW)
    assert roles(sws[L1])[3] == EDGE


def test_without_named_ports_nothing_changes():
    fabric, inv, sws = mesh(NAMED.replace(':1,', ',').replace(':2,', ',').replace(':1]', ']').replace(':2]', ']'))
    assert dict(fabric.link_ports) == {} and inv.declared == {} and inv.open_at_once == frozenset()
    classify_ports(fabric, inv, now=0.0)
    assert set(roles(sws[L1]).values()) == {PENDING}
    assert flood_tree(inv) == set()


def test_a_reloaded_fabric_that_puts_a_hypervisor_on_a_named_leaf_closes_its_ports_until_discovery():
    from controller.core import Controller
    from controller.policy.model import Policy
    ctl = Controller(parse_fabric(NAMED))
    assert ctl.inv.open_at_once == {S1, S2, L1, L2}
    text = NAMED.replace('leaf1: {dpid: 0x201}', 'leaf1: {dpid: 0x201, rack_subnet: 172.16.1.0/24}') + \
        'hypervisors:\n  hv1: {leaf: leaf1, vtep: 172.16.1.11, trunk_vlans: [10]}\n'
    ctl.apply_policy(Policy(parse_fabric(text)), timeout=0.1)      # no switch connected: returns at once
    assert ctl.inv.open_at_once == {S1, S2, L2}                     # the cables are the same; leaf1 has hv1 now
    assert ctl.inv.declared == topology.declared_ends(parse_fabric(text))
