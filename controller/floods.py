"""Flood protection: what a VM sending thousands of new source MACs a second (or an ARP storm
with forged senders) may cost the controller, and the bounded state that keeps it so.

Controller-bound copies are metered per port.  Every port of the learning switch has a
guard flow in `learn` (apps/learning_switch.py, priority 90, below every known source):

    learn  in_port=P  ->  clone(output(port=P,max_len=64), resubmit(,punt)), goto arp_rsp
    punt   in_port=P  ->  meter:port_meter(P), CONTROLLER

The frame goes on whatever the meter does: a meter instruction drops the *whole* packet when
over its rate, so it sits on the punt flow, reached only inside the clone.  The truncated
output back to the in_port is a no-op (OVS never sends a frame back where it came from:
"skipping output to input port") that is there for OVS 3.1: its clone() is translated
inline -- no datapath clone, so the meter drops the frame itself (seen: ping 98-100 % loss
with clone(resubmit) alone) -- unless the clone's own actions include one it calls
irreversible (meter, ct, nat, output_trunc, encap...).  Of those, only output_trunc needs no
IP match and can be made to do nothing; to the controller it is refused by ovs-ofctl.  OVS
after d7ec77f6 ("Use datapath actions for reversibility check", 2026) decides on the
datapath actions and needs no hint.  Verified with ofproto/trace (`clone(meter(0),
userspace(...))`) and traffic: tests/ovs/test_floods.py.

On a VM or edge port (the ports with a MAC limit) frames from not-yet-learned sources are
also *forwarded* through a meter of their own, unknown_meter(P), in the storm_ctl table that
the guard goes to -- after the clone, so it holds back the frames and never the copies:

    learn      in_port=P  ->  clone(...punt...), goto storm_ctl
    storm_ctl  in_port=P  ->  meter:unknown_meter(P), goto arp_rsp

Storm control for unknown sources: a VM emitting thousands of new MACs a second floods the
fabric with at most UNKNOWN_PPS of them (burst UNKNOWN_BURST) while the controller fills its
port, and every switch that sees one learns it (a packet-in and a flow-mod each).  The
burst is small for that reason: with 50, the leaked sources' learning on the other seven
lab switches took the probe across the flooder's hypervisor to 9-17 ms in the flood's first
second, with 4 to 4-8 ms (1-4 ms before the flood; bench/README.md, "Floods").  The controller still hears every copy at the punt meter's
rate: a meter instruction drops the whole packet, so on the guard itself it held the copies
back to the storm rate too, and a full port took seconds to notice.  A nic's own MAC (from
its binding) and learned MACs match above the guard and never meet either meter; trunks and
fabric ports have no unknown-source meter.

Once a VM or edge port holds its max_macs_per_port learned MACs, its guard drops frames
from unknown sources instead (no copy, no flooding of forged sources into the VLAN).  The
next new source it sends is a violation (learning.violation, Cisco port-security's words):
  shutdown  (the default) the port is shut for errdisable_recovery seconds: one drop flow on
            in_port above everything in port_sec (apps/learning_switch.py, P_SHUTDOWN) with
            that hard_timeout; the switch removes it and reports (flow removed), and the port
            learns again.  What the port had learned is forgotten, as on a port that went down.
            Why: a drop that matches in_port alone is one megaflow for every forged source,
            while the learn table matches eth_src, so in restrict mode each new MAC is an
            upcall on the datapath thread that forwards everyone else's packets (measured:
            19-41 ms probe spikes against 2-11 ms baselines in restrict mode; within the
            baseline's 2x with shutdown).
  restrict  only the new sources are dropped (remembered in the RefusedTable below); a source
            that ages out reopens the port.

Meter ids are port based, not allocated: port_meter(P) = METER_BASE + P and unknown_meter(P)
= UNKNOWN_BASE + P (OpenFlow ports are < 0xff00, so ids stay under OVS's max_meter 262144
and clear of the anycast gateway's meter 1).  A restarted controller finds the same ids;
nothing is stored.  The core creates
a port's meter when the switch connects or the port appears, before any flow that uses it
(the same connection keeps the order), and deletes it when the port is deleted.

Bounded state (learn() is O(1) per packet-in):
  MacTable      a switch's learned (VLAN, MAC) -> port, with a count per port kept as it
                changes, so the per-port limit check does not scan the table
  RefusedTable  a switch's refused (VLAN, MAC, port), insertion-ordered, at most
                REFUSED_PER_PORT per port and REFUSED_PER_SWITCH per switch; adding past a
                cap evicts the oldest of that port (or of the switch).  Each entry is also a
                drop flow on the switch, so the caps bound its flow table as well.
"""
from __future__ import annotations

import collections

from controller.pipeline import actions as A

METER_BASE = 0x10000
MAX_PORT = 0xfeff              # highest OpenFlow port number a meter is made for
PUNT_PPS = 100                 # packet-ins per second per port ...
PUNT_BURST = 100               # ... and the burst a port may send at once
UNKNOWN_BASE = 0x20000
UNKNOWN_PPS = 50               # frames from unlearned sources forwarded per second per VM/edge port
UNKNOWN_BURST = 4             # few: what a flood leaks before its port is full (others learn each; bench/README "Floods")
TRUNC = 64                     # the clone's no-op truncated output (see above)

REFUSED_PER_PORT = 32
REFUSED_PER_SWITCH = 512


def punt(port: int) -> tuple:
    """The guard's action: a copy of the frame to the punt table (see above)."""
    return A.clone(A.output_trunc(port, TRUNC), A.resubmit('punt'))


def port_meter(port: int) -> int | None:
    """The meter of a port's packet-ins (None: not a port that has one)."""
    return METER_BASE + port if isinstance(port, int) and 0 < port <= MAX_PORT else None


def unknown_meter(port: int) -> int | None:
    """The meter of a VM/edge port's frames from unlearned sources."""
    return UNKNOWN_BASE + port if port_meter(port) is not None else None


def port_meters(port: int) -> list[tuple[int, int, int]]:
    """(meter id, pps, burst) of every meter a port has (made whatever its role: roles change)."""
    if port_meter(port) is None:
        return []
    return [(port_meter(port), PUNT_PPS, PUNT_BURST), (unknown_meter(port), UNKNOWN_PPS, UNKNOWN_BURST)]


class MacTable(dict):
    """(vlan, mac) -> port, with how many entries each port has, kept up to date."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.per_port = collections.Counter(self.values())

    def on_port(self, port: int) -> int:
        return self.per_port.get(port, 0)

    def __setitem__(self, key, port) -> None:
        old = self.get(key)
        if old is not None:
            self._drop(old)
        super().__setitem__(key, port)
        self.per_port[port] += 1

    def __delitem__(self, key) -> None:
        port = self[key]
        super().__delitem__(key)
        self._drop(port)

    def pop(self, key, *default):
        if key in self:
            port = self[key]
            del self[key]
            return port
        if default:
            return default[0]
        raise KeyError(key)

    def setdefault(self, key, port=None):
        if key not in self:
            self[key] = port
        return self[key]

    def clear(self) -> None:
        super().clear()
        self.per_port.clear()

    def _drop(self, port) -> None:
        n = self.per_port[port] - 1
        if n > 0:
            self.per_port[port] = n
        else:
            del self.per_port[port]

    def popitem(self):
        raise NotImplementedError('MacTable.popitem')

    def update(self, *args, **kw):
        for k, v in dict(*args, **kw).items():
            self[k] = v


_GONE = object()


class RefusedTable:
    """(vlan, mac, port) refused on one switch, oldest first, capped per port and overall."""

    def __init__(self, items=(), per_port: int = REFUSED_PER_PORT, total: int = REFUSED_PER_SWITCH):
        self.per_port, self.total = per_port, total
        self._all: dict[tuple, None] = {}
        self._ports: dict[int, dict[tuple, None]] = {}
        self.evicted = 0
        for k in items:
            self.add(k)

    def add(self, key: tuple) -> None:
        if key in self._all:
            return
        mine = self._ports.setdefault(key[2], {})
        if len(mine) >= self.per_port:
            self._evict(next(iter(mine)))
        elif len(self._all) >= self.total:
            self._evict(next(iter(self._all)))
        self._all[key] = None
        self._ports.setdefault(key[2], {})[key] = None

    def _evict(self, key) -> None:
        self.discard(key)
        self.evicted += 1

    def discard(self, key: tuple) -> None:
        if self._all.pop(key, _GONE) is _GONE:
            return
        mine = self._ports[key[2]]
        del mine[key]
        if not mine:
            del self._ports[key[2]]

    def on_port(self, port: int) -> int:
        return len(self._ports.get(port, ()))

    def __contains__(self, key) -> bool:
        return key in self._all

    def __iter__(self):
        return iter(list(self._all))

    def __len__(self) -> int:
        return len(self._all)

    def __isub__(self, keys):
        for k in list(keys):
            self.discard(k)
        return self

    def __eq__(self, other) -> bool:
        return set(self._all) == set(other) if isinstance(other, (set, frozenset, RefusedTable)) else NotImplemented

    def __repr__(self) -> str:
        return 'RefusedTable(%r)' % list(self._all)


def mac_table(inv, dpid: int) -> MacTable:
    """The switch's learned table as a MacTable (a plain dict, from a copy or a test, becomes one)."""
    table = inv.macs.get(dpid)
    if not isinstance(table, MacTable):
        table = inv.macs[dpid] = MacTable(table or {})
    return table


def refused_table(inv, dpid: int) -> RefusedTable:
    table = inv.refused.get(dpid)
    if not isinstance(table, RefusedTable):
        table = inv.refused[dpid] = RefusedTable(table or ())
    return table
