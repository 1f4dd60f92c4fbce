"""Follow one packet through the real switches: ofproto/trace on the vswitchd where it is, then
on the next one, wherever its datapath actions send it, until it reaches a VM port, leaves
the fabric, or no port at all (dropped).

The switches are told apart by the vswitchd they live in (its appctl control socket) and the
bridge inside it: a hypervisor's own ovs-vswitchd holds br-int (programmed by the controller)
and br-phy (its uplink and VTEP, a plain learning bridge); the physical leaf/spine switches are
bridges of another vswitchd (the lab's root OVS).  Where a packet leaving one goes next is the
cabling the controller knows (View): LLDP links, the leaf port each hypervisor was found on,
each hypervisor's VTEP.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import subprocess

from apps import topology
from controller.inventory.model import TUNNEL, UPLINK, LinkEnd
from controller.trace import ofproto

MAX_HOPS = 16
LOCAL_PORT = 65534              # a bridge's own port (OFPP_LOCAL), the host side of it
TIMEOUT = 5                     # s ovs-appctl waits for its vswitchd
CT_NEXT = 'trk,new'             # each recirculation through conntrack: a new connection
CT_RECIRCS = 3                  # how many of them a single trace may go through
# the order ofproto/trace wants a flow's fields in (a field after the one it depends on)
ORDER = ('tun_id', 'tun_src', 'tun_dst', 'dl_vlan', 'dl_src', 'dl_dst', 'dl_type', 'nw_src', 'nw_dst', 'nw_proto',
         'nw_ttl', 'tp_src', 'tp_dst', 'icmp_type', 'icmp_code', 'tcp_flags')


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a switch's trace runs: its vswitchd (the appctl target: a control socket path;
    None: ovs-appctl's default, the local vswitchd) and its bridge there."""
    target: str | None
    bridge: str

    def appctl(self) -> list[str]:
        return ['ovs-appctl', '--timeout=%d' % TIMEOUT] + (['-t', self.target] if self.target else [])


@dataclasses.dataclass(frozen=True)
class View:
    """What the controller knows that says where a packet goes next."""
    policy: object
    inv: object                             # an Inventory snapshot
    places: dict                            # dpid -> Place
    bond_anchor: dict = dataclasses.field(default_factory=dict)   # (dpid, member ofport) -> logical port

    def switch(self, dpid: int):
        return self.inv.switches.get(dpid)

    def dpid_of(self, target: str | None, bridge: str) -> int | None:
        for dpid, p in self.places.items():
            if p.target == target and p.bridge == bridge:
                return dpid
        return None


@dataclasses.dataclass(frozen=True)
class Hop:
    dpid: int
    switch: str
    place: Place
    in_port: str                  # a port name or number of place.bridge
    fields: tuple                 # ((flow field, value), ...)
    via: str                      # how the packet got here

    def flow(self) -> str:
        """The flow in ofproto/trace's syntax (tp_src/tp_dst, as OVS prints them, become
        udp_src/udp_dst for UDP: the parser takes tp_* for TCP only)."""
        f = dict(self.fields)
        l4 = {'6': 'tcp', '17': 'udp'}.get(f.get('nw_proto', ''), 'tp')
        return ','.join(['in_port=%s' % self.in_port] + ['%s=%s' % (k.replace('tp', l4, 1) if k.startswith('tp_') else k,
                                                                   f[k]) for k in ORDER if k in f])


@dataclasses.dataclass(frozen=True)
class End:
    """Where a branch of the packet's path stops, other than a drop."""
    kind: str                     # 'delivered' | 'left' | 'lost' | 'local' (the host's own port)
    switch: str
    port: str
    text: str
    iface_id: str | None = None   # delivered: the nic's binding


@dataclasses.dataclass
class HopResult:
    hop: Hop
    trace: ofproto.Trace | None = None
    error: str | None = None
    exits: list = dataclasses.field(default_factory=list)     # (DpPort, Exit, Hop | End)
    to_controller: int = 0
    notes: list = dataclasses.field(default_factory=list)

    @property
    def dropped(self) -> bool:
        """Traced, and sent nowhere but (maybe) to the host's own port."""
        return self.trace is not None and all(isinstance(n, End) and n.kind == 'local' for _, _, n in self.exits)


def run(argv: list[str]) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT + 5)
    if r.returncode:
        raise RuntimeError((r.stderr or r.stdout).strip() or '%s exited %d' % (argv[0], r.returncode))
    return r.stdout


def follow(view: View, start: Hop, runner=run, max_hops: int = MAX_HOPS) -> list[HopResult]:
    """Trace `start`, then every hop its exits lead to, breadth first, at most max_hops."""
    results, queue, seen = [], [start], set()
    ports: dict = {}
    while queue and len(results) < max_hops:
        hop = queue.pop(0)
        key = (hop.dpid, hop.place, hop.in_port, hop.fields)
        if key in seen:
            continue
        seen.add(key)
        res = HopResult(hop)
        results.append(res)
        try:
            text = runner(hop.place.appctl() + ['ofproto/trace'] + ['--ct-next', CT_NEXT] * CT_RECIRCS
                          + [hop.place.bridge, hop.flow()])
            res.trace = ofproto.parse(text)
        except (RuntimeError, OSError, subprocess.SubprocessError, ofproto.TraceError) as e:
            res.error = 'cannot trace on %s (%s): %s' % (hop.switch, hop.place.bridge, e)
            continue
        out = ofproto.outcome(res.trace)
        res.to_controller, res.notes = out.to_controller, out.notes
        if not out.exits:
            continue
        if hop.place.target not in ports:
            try:
                ports[hop.place.target] = ofproto.parse_dpif_show(runner(hop.place.appctl() + ['dpif/show']))
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                res.error = 'cannot read the ports of %s: %s' % (hop.switch, e)
                continue
        by_dp = _dp_ports(ports[hop.place.target], hop.place.bridge)
        for ex in out.exits:
            port = by_dp.get(ex.dp_port)
            nxt = _next(view, hop, port, ex, runner)
            res.exits.append((port, ex, nxt))
            if isinstance(nxt, Hop):
                queue.append(nxt)
    return results


def _dp_ports(ports: list, bridge: str) -> dict:
    """Datapath port number -> DpPort, in the datapath the traced bridge is in (a vswitchd may
    run more than one, e.g. system and netdev, each numbering its ports from 0)."""
    dp = next((p.datapath for p in ports if p.bridge == bridge), None)
    return {p.dp_port: p for p in ports if p.dp_port is not None and (dp is None or p.datapath == dp)}


def _fields(ex: ofproto.Exit, start_fields: tuple) -> dict:
    f = dict(ex.fields)
    if 'tcp_flags' in dict(start_fields):       # printed as words; the L4 header never changes here
        f['tcp_flags'] = dict(start_fields)['tcp_flags']
    return f


def _next(view: View, hop: Hop, port, ex: ofproto.Exit, runner):
    """Where a packet leaving `hop`'s vswitchd by `port` arrives: the next Hop, or an End."""
    fields, encap = _fields(ex, hop.fields), dict(ex.encap)
    hv = view.switch(hop.dpid)
    from_hv = hv is not None and hv.kind == 'hypervisor'
    if ex.dp_port in (ofproto.TUNNEL, ofproto.BOND):
        if encap.get('dst'):
            return _tunnel(view, hop, encap, fields)
        if from_hv:
            return _uplink(view, hop, hop.dpid, 'bond', fields, runner)
        return End('lost', hop.switch, 'bond', 'leaves %s by a bond (hashed, member unknown)' % hop.switch)
    if port is None:
        return End('lost', hop.switch, 'dp port %d' % ex.dp_port, 'leaves %s by datapath port %d, which '
                   'dpif/show does not list' % (hop.switch, ex.dp_port))
    if port.ofport == LOCAL_PORT or port.name == port.bridge:
        return End('local', hop.switch, port.name, 'to the %s bridge\'s own port (the host\'s IP stack)'
                   % port.bridge)
    dpid = view.dpid_of(hop.place.target, port.bridge)
    if dpid is None or view.switch(dpid) is None:
        # a bridge the controller does not program: a hypervisor's br-phy, toward the leaf
        if not from_hv:
            return End('left', hop.switch, port.name, 'leaves %s by %s (bridge %s, not a fabric switch)'
                       % (hop.switch, port.name, port.bridge))
        return _tunnel(view, hop, encap, fields) if encap.get('dst') else \
            _uplink(view, hop, hop.dpid, port.name, fields, runner)
    return _switch_port(view, hop, dpid, port, encap, fields, runner)


def _switch_port(view: View, hop: Hop, dpid: int, port, encap: dict, fields: dict, runner):
    """Out of a port of a switch the controller programs: a VM nic, the tunnel or uplink of a
    hypervisor, a cable of a physical switch, or the edge."""
    sw = view.switch(dpid)
    no = view.bond_anchor.get((dpid, port.ofport), port.ofport)
    p = sw.ports.get(no)
    if sw.kind == 'hypervisor':
        b = view.inv.bindings.get(dpid, {}).get(no)
        if b is not None:
            return End('delivered', sw.name, port.name, 'delivered to %s on %s (port %s)' % (b.iface_id, sw.name,
                                                                                              port.name), b.iface_id)
        if p is not None and p.role == TUNNEL and encap.get('dst'):
            return _tunnel(view, hop, encap, fields)
        if p is not None and p.role == UPLINK:
            return _uplink(view, hop, dpid, port.name, fields, runner)
        return End('left', sw.name, port.name, 'leaves %s by port %s (%s), bound to no nic'
                   % (sw.name, port.name, p.role if p else 'unknown to the controller'))
    peer = topology.peer(view.inv, dpid, no)
    if peer is None:
        return End('left', sw.name, port.name, 'leaves the fabric at %s port %s (%s: no LLDP neighbour)'
                   % (sw.name, port.name, p.role if p else 'unknown port'))
    return _enter(view, hop, peer, 'cable from %s port %s' % (sw.name, port.name), fields, runner)


def _uplink(view: View, hop: Hop, hv: int, port: str, fields: dict, runner):
    """A hypervisor's frame leaving by its uplink: the leaf port its LLDP was found on."""
    leaf = next((rx for rx, d in sorted(view.inv.hv_ports.items(), key=lambda kv: (kv[0].dpid, kv[0].port))
                 if d == hv), None)
    name = view.switch(hv).name
    if leaf is None:
        return End('lost', name, port, 'leaves %s by its uplink %s, but the controller does not know which leaf '
                   'port that is (no LLDP from it)' % (name, port))
    return _enter(view, hop, leaf, 'uplink of %s' % name, fields, runner)


def _enter(view: View, hop: Hop, end: LinkEnd, via: str, fields: dict, runner):
    """The packet arriving at a switch port: a physical switch's, or a hypervisor's uplink."""
    sw, place = view.switch(end.dpid), view.places.get(end.dpid)
    if sw is None or place is None:
        return End('lost', hop.switch, '-', '%s: arrives at dpid %016x port %d, which the controller cannot trace '
                   '(not connected, or its vswitchd is not reachable)' % (via, end.dpid, end.port))
    if sw.kind != 'hypervisor':
        return Hop(end.dpid, sw.name, place, str(end.port), tuple(sorted(fields.items())), via)
    uplink = _hv_uplink_entry(place, sw, runner)
    if uplink is None:
        return End('lost', sw.name, '-', '%s: cannot find the uplink of %s in its dpif/show' % (via, sw.name))
    bridge, port = uplink
    return Hop(end.dpid, sw.name, Place(place.target, bridge), port, tuple(sorted(fields.items())), via)


def _hv_uplink_entry(place: Place, sw, runner) -> tuple[str, str] | None:
    """(bridge, port) where a frame from the leaf enters a hypervisor: br-int's uplink port when
    it is a real port, else the first physical port of the bridge its patch peer is on (the
    lab's br-phy: `phy0`, or a bond member)."""
    up = sw.ports_with(UPLINK, up=False)
    try:
        ports = ofproto.parse_dpif_show(runner(place.appctl() + ['dpif/show']))
    except (RuntimeError, OSError, subprocess.SubprocessError):
        return None
    mine = {p.name: p for p in ports if p.bridge == place.bridge}
    if not up or up[0].name not in mine:
        return None
    patch = mine[up[0].name]
    if patch.kind != 'patch':
        return place.bridge, str(up[0].no)
    peer = next((p for p in ports if p.name == patch.peer), None)
    if peer is None:
        return None
    phys = sorted((p for p in ports if p.bridge == peer.bridge and p.kind not in ('patch', 'tap', 'internal')
                   and p.ofport not in (None, 65534)), key=lambda p: p.name)
    return (peer.bridge, phys[0].name) if phys else None


def _tunnel(view: View, hop: Hop, encap: dict, fields: dict):
    """A VXLAN packet to a VTEP: the hypervisor whose VTEP it is, at its tunnel port."""
    fabric = view.policy.fabric
    dst = ipaddress.ip_address(encap['dst'])
    hv = next((h for h in fabric.hypervisors.values() if h.vtep == dst), None)
    if hv is None:
        return End('left', hop.switch, 'vxlan', 'tunnelled (VNI %s) to %s, which is no hypervisor\'s VTEP'
                   % (encap.get('vni'), dst))
    sw, place = view.switch(hv.dpid), view.places.get(hv.dpid)
    tun = sw.ports_with(TUNNEL, up=False) if sw is not None else []
    if sw is None or place is None or not tun:
        return End('lost', hop.switch, 'vxlan', 'tunnelled (VNI %s) to %s, which the controller cannot trace '
                   '(not connected, no tunnel port, or its vswitchd is not reachable)' % (encap.get('vni'), hv.name))
    fields = dict(fields, tun_id=encap.get('vni', '0'), tun_dst=str(dst))
    here = next((h for h in fabric.hypervisors.values() if h.dpid == hop.dpid), None)
    src = encap.get('src') or (str(here.vtep) if here is not None else None)
    if src:
        fields['tun_src'] = src
    fields.pop('dl_vlan', None)
    return Hop(hv.dpid, hv.name, place, str(tun[0].no), tuple(sorted(fields.items())),
               'VXLAN tunnel from %s (VNI %s)' % (hop.switch, encap.get('vni')))
