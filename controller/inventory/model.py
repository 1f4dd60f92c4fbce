"""Inventory: what the controller knows about the running network, as plain data.

Event handlers mutate it (under Controller.lock); compilers only read it.  Nothing here
talks to a switch.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

# Port roles.  Physical switch ports start 'pending' (no traffic in or out) until LLDP
# shows a fabric link behind them or the discovery window passes without one ('edge'):
# a port is never flooded to before we know it cannot close a loop.
PENDING, EDGE, FABRIC, UNDECLARED = 'pending', 'edge', 'fabric', 'undeclared-link'
HYPERVISOR = 'hypervisor'            # a leaf port where a hypervisor's br-int LLDP arrives
# Hypervisor br-int port roles, known from the port name at once.
UPLINK, VM, TUNNEL = 'uplink', 'vm', 'tunnel'

UPLINK_PORT_NAME = 'int-to-phy'      # br-int's patch port to br-phy (the lab's naming contract)


@dataclasses.dataclass
class Port:
    no: int
    name: str
    up: bool
    role: str
    since: float = dataclasses.field(default_factory=time.monotonic)   # last up/role change


@dataclasses.dataclass
class SwitchState:
    dpid: int
    name: str
    kind: str                      # 'physical' or 'hypervisor'
    ports: dict[int, Port] = dataclasses.field(default_factory=dict)
    connected_at: float = dataclasses.field(default_factory=time.monotonic)

    def ports_with(self, *roles: str, up: bool = True) -> list[Port]:
        return sorted((p for p in self.ports.values() if p.role in roles and (p.up or not up)),
                      key=lambda p: p.no)


@dataclasses.dataclass(frozen=True)
class Binding:
    """An OVS Interface on a hypervisor's br-int, as its OVSDB row says (OVN/libvirt style)."""
    name: str
    iface_id: str
    mac: str


@dataclasses.dataclass(frozen=True)
class LinkEnd:
    dpid: int
    port: int


@dataclasses.dataclass
class Inventory:
    switches: dict[int, SwitchState] = dataclasses.field(default_factory=dict)
    # LLDP-seen links, keyed by the receiving end: rx end -> (tx end, last seen)
    links: dict[LinkEnd, tuple[LinkEnd, float]] = dataclasses.field(default_factory=dict)
    # learned MACs per switch: (vlan, mac) -> port number
    macs: dict[int, dict[tuple[int, str], int]] = dataclasses.field(default_factory=dict)
    # sources refused on a port over its MAC limit: dpid -> {(vlan, mac, port)}
    refused: dict[int, set[tuple[int, str, int]]] = dataclasses.field(default_factory=dict)
    # VM/edge ports shut for a MAC-limit violation (learning.violation: shutdown): dpid -> ports;
    # each is a drop flow the switch removes after errdisable_recovery (and reports)
    shutdown: dict[int, set[int]] = dataclasses.field(default_factory=dict)
    # leaf port -> the hypervisor (br-int dpid) whose LLDP arrived there; kept while the port is
    # up, even when that hypervisor's controller session (and so its LLDP) is gone
    hv_ports: dict[LinkEnd, int] = dataclasses.field(default_factory=dict)
    # hypervisor br-int dpid -> the MAC of its VTEP (br-phy's internal port), from its OVSDB
    vtep_macs: dict[int, str] = dataclasses.field(default_factory=dict)
    # hypervisor br-int dpid -> {ofport: Binding}, from that hypervisor's OVSDB
    bindings: dict[int, dict[int, Binding]] = dataclasses.field(default_factory=dict)
    # iface-id -> (hypervisor dpid, ofport): where a nic *is* -- the one place its traffic goes.
    # A nic bound in a second place (a live migration) stays where it is until the new port is
    # activated (its first GARP/RARP, core.activate) or its old place is gone
    locations: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    # hypervisor dpid -> iface-ids with an Interface row in its OVSDB but no port (ofport -1): a
    # VM in flight.  While a nic's row stays where it is located, a new place waits for activation
    claims: dict[int, frozenset[str]] = dataclasses.field(default_factory=dict)
    # (iface-id, hypervisor dpid) -> why that binding can never become the nic's location (a VLAN
    # nic bound on a hypervisor whose trunk lacks the VLAN), from the core's check (relocate)
    refused_places: dict[tuple[str, int], str] = dataclasses.field(default_factory=dict)
    # cables the fabric file names the ports of, both directions (apps/topology.declared_ends),
    # and the physical switches whose other ports are edge ports from the start (open_at_once):
    # set from the fabric, replaced (never edited) when it changes
    declared: Mapping[LinkEnd, LinkEnd] = dataclasses.field(default_factory=dict)
    open_at_once: frozenset[int] = frozenset()

    def bind(self, dpid: int, bindings: dict[int, Binding], claims=frozenset(), refuse=None) -> set[str]:
        """A hypervisor's bound interfaces, as its OVSDB now says; the iface-ids that moved.
        claims: the iface-ids of rows there without a port.  refuse(iface_id, dpid) -> a reason
        why that nic may never be located on that hypervisor, or None."""
        self.bindings[dpid] = dict(bindings)
        self.claims[dpid] = frozenset(claims)
        return self.relocate(refuse)

    def unbind(self, dpid: int, refuse=None) -> set[str]:
        self.bindings.pop(dpid, None)
        self.claims.pop(dpid, None)
        return self.relocate(refuse)

    def relocate(self, refuse=None) -> set[str]:
        """Bring locations in line with bindings; the iface-ids whose location changed.

        A nic keeps its location while its port is bound there, or while its row is still
        claimed there (the VM is in flight); its other places then wait for activation.
        Otherwise it goes to its first eligible place, at once: a first binding, or the old
        place is gone and there is nothing left to protect."""
        seen: dict[str, list[tuple[int, int]]] = {}
        self.refused_places = {}
        for dpid, ports in sorted(self.bindings.items()):
            for no, b in sorted(ports.items()):
                why = refuse(b.iface_id, dpid) if refuse is not None else None
                if why:
                    self.refused_places[(b.iface_id, dpid)] = why
                else:
                    seen.setdefault(b.iface_id, []).append((dpid, no))
        changed = set()
        for iface_id in set(self.locations) | set(seen):
            now, places = self.locations.get(iface_id), seen.get(iface_id, [])
            if now in places or (now is not None and iface_id in self.claims.get(now[0], ())
                                 and now[1] not in self.bindings.get(now[0], {})):
                continue            # (a claim holds its place only while no other nic took the port)
            if places:
                self.locations[iface_id] = places[0]
            else:
                del self.locations[iface_id]
            changed.add(iface_id)
        return changed

    def activate(self, dpid: int, port: int) -> str | None:
        """The nic bound at (dpid, port) showed itself there (a GARP/RARP): make it its location.
        Its iface-id if its location changed, None if it was there already or may not be."""
        b = self.bindings.get(dpid, {}).get(port)
        if b is None or (b.iface_id, dpid) in self.refused_places or self.locations.get(b.iface_id) == (dpid, port):
            return None
        self.locations[b.iface_id] = (dpid, port)
        return b.iface_id

    def places(self, iface_id: str) -> list[tuple[int, int, str]]:
        """Every port bound to a nic: (dpid, ofport, state), state 'active' (its location),
        'pending' (waiting for activation) or 'refused'."""
        out = []
        for dpid, ports in sorted(self.bindings.items()):
            for no, b in sorted(ports.items()):
                if b.iface_id == iface_id:
                    state = ('refused' if (iface_id, dpid) in self.refused_places else
                             'active' if self.locations.get(iface_id) == (dpid, no) else 'pending')
                    out.append((dpid, no, state))
        return out

    def snapshot(self) -> 'Inventory':
        """A copy compilers can read while events change this one.  Ports, Bindings and link
        ends are shared: the controller replaces them, it never edits one in place."""
        return Inventory(
            switches={d: SwitchState(sw.dpid, sw.name, sw.kind, dict(sw.ports), sw.connected_at)
                      for d, sw in self.switches.items()},
            links=dict(self.links), macs={d: dict(m) for d, m in self.macs.items()},
            refused={d: set(r) for d, r in self.refused.items()}, hv_ports=dict(self.hv_ports),
            shutdown={d: set(s) for d, s in self.shutdown.items()},
            vtep_macs=dict(self.vtep_macs), bindings={d: dict(b) for d, b in self.bindings.items()},
            locations=dict(self.locations), claims=dict(self.claims), refused_places=dict(self.refused_places),
            declared=self.declared, open_at_once=self.open_at_once)

    def macs_on_port(self, dpid: int, port: int) -> list[tuple[int, str]]:
        return [k for k, p in self.macs.get(dpid, {}).items() if p == port]

    def forget_port(self, dpid: int, port: int) -> bool:
        """Drop what was learned on a port (it went down or away).  True if anything changed."""
        table = self.macs.get(dpid, {})
        gone = self.macs_on_port(dpid, port)
        for k in gone:
            del table[k]
        refused = self.refused.get(dpid, set())
        stale = {r for r in refused if r[2] == port}
        refused -= stale
        return bool(gone or stale)
