"""Small builders shared by the unit tests: fabrics, inventories, cabling, fake switches."""
import ipaddress
import re
import pathlib

from apps import topology
from controller.inventory.model import (FABRIC, PENDING, TUNNEL, UPLINK, VM, Binding, Inventory, LinkEnd, Port,
                                        SwitchState)
from controller.pipeline import registers, tables
from controller.pipeline.flow import UNTAGGED, Flow, vid
from controller.policy.fabric import parse_fabric
from controller.policy.model import Network, Nic, Policy, Security, Tenant, Workload, frozen_map

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE_FABRIC = ROOT / 'examples' / 'fabric.yaml'

# dpids of examples/fabric.yaml
SPINE1, SPINE2, LEAF1, LEAF2 = 0x101, 0x102, 0x201, 0x202


def example_fabric(**learning):
    """examples/fabric.yaml, optionally with other `learning:` settings."""
    text = EXAMPLE_FABRIC.read_text()
    if learning:
        text = re.sub(r'learning:\n(  .*\n)+', 'learning: {%s}\n' % ', '.join('%s: %s' % kv for kv in learning.items()),
                      text, count=1)
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


def make_tenant(name, networks, workloads=None, security=None):
    """A Tenant built by hand.  networks: {name: vlan} (an int) or {name: {'vni': n}}, with
    'routed': True for a network with a gateway (its subnet's first address; without one a
    network is an L2 island); workloads: {name: [(network, mac), ...]} (nic i is the i-th pair)."""
    nets = {}
    for i, (net, spec) in enumerate(networks.items()):
        subnet = ipaddress.IPv4Network('10.%d.%d.0/24' % (len(name) % 200, i))
        kw = {'vlan': spec} if isinstance(spec, int) else dict(spec)
        nets[net] = Network(net, subnet, gateway=subnet[1] if kw.pop('routed', False) else None, **kw)
    wls = {}
    for j, (wl, nics) in enumerate((workloads or {}).items()):
        wls[wl] = Workload(wl, (), tuple(
            Nic(i, net, mac.lower(), nets[net].subnet[10 + j]) for i, (net, mac) in enumerate(nics)))
    # no `security:` section unless given: open inside (apps/microseg.py compiles nothing)
    return Tenant(name, '%s.yaml' % name, frozen_map(nets), frozen_map(wls), security or Security(default='allow'))


# a hypervisor br-int as the lab builds it: uplink patch port 1, VM ports 2 and 3, tunnel 4
HV_UPLINK, HV_VM2, HV_VM3, HV_TUN = 1, 2, 3, 4


def add_hypervisor(inv: Inventory, fabric, name: str) -> int:
    dpid = fabric.hypervisors[name].dpid
    add_switch(inv, dpid, name, kind='hypervisor', ports={
        HV_UPLINK: (UPLINK, 'int-to-phy'), HV_VM2: (VM, 'tap-%s-a' % name),
        HV_VM3: (VM, 'tap-%s-b' % name), HV_TUN: (TUNNEL, 'vxlan0')})
    return dpid


def hypervisor_seen(fabric, inv: Inventory, leaf: int, port: int, hv: int, now: float = 0.0) -> None:
    """Plug a hypervisor's uplink into leaf port `port` and let its LLDP arrive there."""
    sw = inv.switches[leaf]
    if port not in sw.ports:
        sw.ports[port] = Port(port, '%s-eth%d' % (sw.name, port), True, PENDING, since=now)
    topology.link_seen(fabric, inv, LinkEnd(leaf, port), LinkEnd(hv, HV_UPLINK), now=now)


def switch_flows(policy, inv: Inventory, dpid: int) -> set:
    """What the controller wants on one switch (as Controller.desired): the pipeline's miss
    flows and every app's flows, each checked against its table, none clashing."""
    from controller import core
    flows = set(tables.miss_flows()) if dpid in inv.switches else set()
    for app in core.APPS:
        flows |= app.compile_flows(policy, inv, dpid)
    for f in flows:
        tables.check(f)
    core.no_clash(flows)
    return flows


def by_table(flows, table):
    return {f for f in flows if f.table == table}


def miss(flows, table):
    """A table's miss flow (priority 0, the pipeline's)."""
    f, = (f for f in by_table(flows, table) if f.priority == 0)
    return f


def assert_only_misses(flows, *names):
    """These stages hold nothing but their miss flow, which goes on to the next table: every
    frame passes them untouched."""
    for t in names:
        m = miss(flows, t)
        assert by_table(flows, t) == {m}, (t, by_table(flows, t) - {m})
        assert m.actions == () and (m.goto,) == tables.BY_NAME[t].miss[1:], m


def emission(flows, port, vlan):
    """The output-stage actions that emit a frame of `vlan` (None: an untagged, routed frame)
    chosen for `port`, or None.  A port has at most one flow for that very tag (its untagged
    VLAN's pop, the routed emission, an overlay's tunnel) and at most one for the whole port
    (a trunk: every VLAN it carries leaves tagged); the tag's own flow must outrank the
    port's, so it is the one that emits."""
    tag = UNTAGGED if vlan is None else vid(vlan)
    out = by_table(flows, 'output')
    own = [f for f in out if f.match_dict() == {registers.OUT_PORT: port, 'vlan_vid': tag}]
    whole = [f for f in out if f.match_dict() == {registers.OUT_PORT: port}]
    assert len(own) <= 1 and len(whole) <= 1, (own, whole)
    if own and whole:
        assert own[0].priority > whole[0].priority, (own, whole)
    chosen = own or whole
    return chosen[0].actions if chosen else None


def assert_reaches(flows, entry, port, vlan, actions, before=()):
    """End to end: the l2_lookup/l3 `entry` picks `port` (out-port register, then acl_out)
    and the switch's output stage emits its frames of `vlan` out of it with `actions`.
    before: the actions the entry takes ahead of the out-port load (e.g. a tunnel address)."""
    assert entry.actions == tuple(before) + (('set_field', registers.OUT_PORT, port),), entry
    assert entry.goto == 'acl_out', entry
    assert emission(flows, port, vlan) == tuple(actions), (port, vlan, emission(flows, port, vlan))


class FakeSwitch:
    """A connected switch for the reconciler/controller: holds flows, records every call."""

    def __init__(self, dpid: int, flows=()):
        self.dpid = dpid
        self.flows = set(flows)
        self.reads = 0
        self.applied: list[tuple[list[Flow], list[Flow]]] = []
        self.sent: list[tuple[int, bytes]] = []
        self.meters: dict[int, tuple[int, int]] = {}
        self.counters: list[tuple[int, int, int]] = []     # (cookie, packets, bytes) per flow

    def read_flows(self) -> set:
        self.reads += 1
        return set(self.flows)

    def apply(self, delete, add) -> None:
        self.applied.append((list(delete), list(add)))
        keys = {f.key for f in delete} | {f.key for f in add}
        self.flows = {f for f in self.flows if f.key not in keys} | set(add)

    def packet_out(self, port: int, data: bytes) -> None:
        self.sent.append((port, data))

    def set_meter(self, meter_id: int, pps: int, burst: int) -> None:
        self.meters[meter_id] = (pps, burst)

    def delete_meter(self, meter_id: int) -> None:
        self.meters.pop(meter_id, None)

    def flow_counters(self, cookie: int, mask: int, timeout: float = 10.0) -> list[tuple[int, int, int]]:
        """The entries of self.counters whose cookie is under cookie/mask."""
        return [c for c in self.counters if c[0] & mask == cookie]


# ---- a routing world (apps/anycast_gateway.py) ----------------------------------------------

WEB1, APP1, WEB2, APP2, DB1, ZWEB = ('02:00:0a:00:00:%02x' % i for i in (1, 2, 3, 4, 5, 6))
HV_VM5 = 5                                        # a third VM port on hv1: zeta's


def routing_world():
    """hv1 and hv3 (two racks) with tenant acme routing between users (VLAN 10), servers
    (VNI 5020) and db (VLAN 20), and tenant zeta on the very same subnets and addresses:
    (fabric, policy, inventory, hv1's dpid)."""
    fabric = example_fabric()
    nets = {'users': {'vlan': 10, 'routed': True}, 'servers': {'vni': 5020, 'routed': True},
            'db': {'vlan': 20, 'routed': True}}
    acme = make_tenant('acme', nets, {'web1': [('users', WEB1)], 'app1': [('servers', APP1)],
                                      'web2': [('users', WEB2)], 'app2': [('servers', APP2)], 'db1': [('db', DB1)]})
    # same name length: the same subnets, and zweb the same address as acme's web1
    zeta = make_tenant('zeta', {'users': {'vlan': 30, 'routed': True}, 'servers': {'vni': 6020, 'routed': True},
                                'db': {'vlan': 40, 'routed': True}}, {'zweb': [('users', ZWEB)]})
    policy = Policy(fabric).with_tenants([acme, zeta])
    inv, _ = cabled_mesh(fabric)
    hv1, hv3 = add_hypervisor(inv, fabric, 'hv1'), add_hypervisor(inv, fabric, 'hv3')
    inv.switches[hv1].ports[HV_VM5] = Port(HV_VM5, 'tap-hv1-c', True, VM)
    inv.switches[hv3].ports[HV_VM5] = Port(HV_VM5, 'tap-hv3-c', True, VM)
    inv.bind(hv1, {HV_VM2: Binding('vnet0', 'acme/web1/nic0', WEB1), HV_VM3: Binding('vnet1', 'acme/app1/nic0', APP1),
                   HV_VM5: Binding('vnet2', 'zeta/zweb/nic0', ZWEB)})
    inv.bind(hv3, {HV_VM2: Binding('vnet0', 'acme/web2/nic0', WEB2), HV_VM3: Binding('vnet1', 'acme/app2/nic0', APP2),
                   HV_VM5: Binding('vnet2', 'acme/db1/nic0', DB1)})
    hypervisor_seen(fabric, inv, fabric.switches['leaf1'].dpid, 9, hv1)
    hypervisor_seen(fabric, inv, fabric.switches['leaf2'].dpid, 9, hv3)
    return fabric, policy, inv, hv1
