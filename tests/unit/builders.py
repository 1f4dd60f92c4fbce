"""Small builders shared by the unit tests: fabrics, inventories, cabling, fake switches."""
import pathlib

from controller.inventory.model import FABRIC, Inventory, LinkEnd, Port, SwitchState
from controller.pipeline.flow import Flow
from controller.policy.fabric import parse_fabric

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE_FABRIC = ROOT / 'examples' / 'fabric.yaml'

# dpids of examples/fabric.yaml
SPINE1, SPINE2, LEAF1, LEAF2 = 0x101, 0x102, 0x201, 0x202


def example_fabric(**learning):
    """examples/fabric.yaml, optionally with other `learning:` settings."""
    text = EXAMPLE_FABRIC.read_text()
    if learning:
        text = text.replace('learning:\n  mac_age: 300\n  max_macs_per_port: 256\n',
                            'learning: {%s}\n' % ', '.join('%s: %s' % kv for kv in learning.items()))
    fab = parse_fabric(text, str(EXAMPLE_FABRIC))
    for k, v in learning.items():
        assert getattr(fab.learning, k) == v, 'the learning override did not apply'
    return fab


def add_switch(inv: Inventory, dpid: int, name: str, kind: str = 'physical',
               ports: dict | None = None) -> SwitchState:
    """Put a switch in the inventory.  ports: {no: role} or {no: (role, name)} or {no: (role, name, up)}."""
    sw = SwitchState(dpid, name, kind)
    for no, spec in (ports or {}).items():
        role, pname, up = (spec, None, True) if isinstance(spec, str) else (tuple(spec) + (True,))[:3]
        sw.ports[no] = Port(no, pname or '%s-eth%d' % (name, no), up, role, since=0.0)
    inv.switches[dpid] = sw
    return sw


def see_link(inv: Inventory, a: LinkEnd, b: LinkEnd, now: float = 0.0) -> None:
    """LLDP seen both ways over the cable a <-> b."""
    inv.links[a] = (b, now)
    inv.links[b] = (a, now)


def cabled_mesh(fabric, edge_ports: int = 2):
    """The example's physical switches with every declared link cabled and seen by LLDP.

    Ports are numbered from 1 in the order of fabric.links; then `edge_ports` more edge ports
    per leaf.  Returns (inventory, {(switch name, peer name): LinkEnd on that switch}).
    """
    inv = Inventory()
    next_port = {name: 1 for name in fabric.switches}
    ends = {}
    for a, b in fabric.links:
        ea = LinkEnd(fabric.switches[a].dpid, next_port[a])
        eb = LinkEnd(fabric.switches[b].dpid, next_port[b])
        next_port[a] += 1
        next_port[b] += 1
        ends[(a, b)], ends[(b, a)] = ea, eb
    for name, sw in fabric.switches.items():
        ports = {e.port: FABRIC for (me, _), e in ends.items() if me == name}
        if sw.role == 'leaf':
            for i in range(edge_ports):
                ports[next_port[name] + i] = 'edge'
        add_switch(inv, sw.dpid, name, ports=ports)
    for (a, b), ea in ends.items():
        if a < b:
            see_link(inv, ea, ends[(b, a)])
    return inv, ends


def by_table(flows, table):
    return {f for f in flows if f.table == table}


class FakeSwitch:
    """A connected switch for the reconciler/controller: holds flows, records every call."""

    def __init__(self, dpid: int, flows=()):
        self.dpid = dpid
        self.flows = set(flows)
        self.reads = 0
        self.applied: list[tuple[list[Flow], list[Flow]]] = []
        self.sent: list[tuple[int, bytes]] = []

    def read_flows(self) -> set:
        self.reads += 1
        return set(self.flows)

    def apply(self, delete, add) -> None:
        self.applied.append((list(delete), list(add)))
        keys = {f.key for f in delete} | {f.key for f in add}
        self.flows = {f for f in self.flows if f.key not in keys} | set(add)

    def packet_out(self, port: int, data: bytes) -> None:
        self.sent.append((port, data))
