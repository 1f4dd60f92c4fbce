"""Fabric topology: LLDP link discovery between physical switches and the loop-free flood tree.

The fabric file says which switches are cabled together; LLDP says which *ports* those
cables are on and whether they are up.  Only links both declared and seen carry traffic --
unless the file names a cable's ports (`[spine1:1, leaf1:3]`, like Faucet's stack ports):
such a cable carries traffic as soon as both ports are up, and LLDP only verifies it (a
different neighbour on either port voids it).  A switch all of whose cables are named, with
no hypervisor on it, opens its other ports as edge ports at once instead of after the
discovery window.
The flood tree is a BFS from the lowest connected dpid, so a 2-spine x 2-leaf mesh floods
without loops; when a link goes down the tree is recomputed from what is left.
"""
from __future__ import annotations

import dataclasses
import struct
import time
from collections import deque

from controller.inventory.model import (EDGE, FABRIC, HYPERVISOR, PENDING, UNDECLARED, Inventory,
                                        LinkEnd)
from controller.pipeline import cookies
from controller.pipeline.flow import CONTROLLER, Flow

APP = 'topology'
LLDP_ETHERTYPE = 0x88cc
LLDP_DST = '01:80:c2:00:00:0e'
LLDP_SRC = b'\x02\x00\x00\x00\xdd\x01'
CHASSIS_PREFIX = b'opendvs:'
DISCOVERY_WINDOW = 1.5    # s a new/returning port waits for LLDP before it may become an edge port
LLDP_INTERVAL = 1.0       # s between LLDP rounds
LINK_TIMEOUT = 3.5        # s without LLDP before a link is considered gone


def lldp_frame(dpid: int, port: int) -> bytes:
    """A minimal LLDP frame naming the sending switch (chassis) and port."""
    def tlv(t, value):
        return struct.pack('!H', t << 9 | len(value)) + value
    chassis = tlv(1, b'\x07' + CHASSIS_PREFIX + b'%016x' % dpid)
    port_id = tlv(2, b'\x07' + b'%d' % port)
    ttl = tlv(3, struct.pack('!H', 120))
    eth = bytes.fromhex(LLDP_DST.replace(':', '')) + LLDP_SRC + struct.pack('!H', LLDP_ETHERTYPE)
    return eth + chassis + port_id + ttl + tlv(0, b'')


def parse_lldp(data: bytes) -> LinkEnd | None:
    """The (dpid, port) an opendvs LLDP frame was sent from, or None for anything else."""
    if len(data) < 14 or struct.unpack('!H', data[12:14])[0] != LLDP_ETHERTYPE:
        return None
    pos, dpid, port = 14, None, None
    while pos + 2 <= len(data):
        head, = struct.unpack('!H', data[pos:pos + 2])
        t, n = head >> 9, head & 0x1ff
        value = data[pos + 2:pos + 2 + n]
        pos += 2 + n
        if t == 0:
            break
        try:                        # another vendor's port ids are often names: not ours
            if t == 1 and value[1:].startswith(CHASSIS_PREFIX):
                dpid = int(value[1 + len(CHASSIS_PREFIX):], 16)
            elif t == 2 and value[:1] == b'\x07':
                port = int(value[1:])
        except ValueError:
            return None
    if dpid is None or port is None:
        return None
    return LinkEnd(dpid, port)


def compile_flows(policy, inv: Inventory, dpid: int) -> set[Flow]:
    """LLDP to the controller, ahead of VLAN admission: physical switches learn their cables
    and which leaf port each hypervisor is on; a hypervisor's br-int hears its leaf."""
    if dpid not in inv.switches:
        return set()
    return {Flow.make('port_sec', 1000, {'eth_type': LLDP_ETHERTYPE, 'eth_dst': LLDP_DST},
                      [('output', CONTROLLER)], cookie=cookies.make(APP, 1, 'lldp'))}


# ---- link state -------------------------------------------------------------------------

def declared_pairs(fabric) -> set[frozenset[int]]:
    """The fabric's links as unordered dpid pairs."""
    return {frozenset((fabric.switches[a].dpid, fabric.switches[b].dpid)) for a, b in fabric.links}


def declared_ends(fabric) -> dict[LinkEnd, LinkEnd]:
    """The cables whose ports the fabric names: each end -> the other end (both directions)."""
    out = {}
    for (a, b), (pa, pb) in fabric.link_ports.items():
        ea, eb = LinkEnd(fabric.switches[a].dpid, pa), LinkEnd(fabric.switches[b].dpid, pb)
        out[ea], out[eb] = eb, ea
    return out


def open_at_once(fabric) -> frozenset[int]:
    """Physical switches whose ports need no discovery window: every cable of theirs is named
    (or the fabric is that one switch) and no hypervisor hangs off them (a hypervisor's leaf
    port is known only from its LLDP)."""
    leaves = {h.leaf for h in fabric.hypervisors.values()}
    out = set()
    for name, sw in fabric.switches.items():
        mine = [link for link in fabric.links if name in link]
        if name not in leaves and (mine or len(fabric.switches) == 1) and all(c in fabric.link_ports for c in mine):
            out.add(sw.dpid)
    return frozenset(out)


def use_fabric(fabric, inv: Inventory) -> None:
    """Give the inventory the fabric's named cables (at start, and when the fabric changes)."""
    inv.declared, inv.open_at_once = declared_ends(fabric), open_at_once(fabric)


def link_seen(fabric, inv: Inventory, rx: LinkEnd, tx: LinkEnd, now: float | None = None) -> bool:
    """Record an LLDP frame received on rx from tx.  True if port roles changed."""
    now = time.monotonic() if now is None else now
    new = rx not in inv.links or inv.links[rx][0] != tx
    inv.links[rx] = (tx, now)
    sender = inv.switches.get(tx.dpid)
    if sender is not None and sender.kind == 'hypervisor':
        inv.hv_ports[rx] = tx.dpid
    else:
        inv.hv_ports.pop(rx, None)
    return classify_ports(fabric, inv, now) or new


def expire(fabric, inv: Inventory, now: float | None = None, held=frozenset()) -> bool:
    """Age out silent links and settle pending ports.  True if port roles changed.  Links at
    a switch in `held` (its session is down: no LLDP of it is sent or heard) stay."""
    now = time.monotonic() if now is None else now
    for rx, (tx, seen) in list(inv.links.items()):
        if now - seen > LINK_TIMEOUT and rx.dpid not in held and tx.dpid not in held:
            del inv.links[rx]
    return classify_ports(fabric, inv, now)


def port_down(inv: Inventory, dpid: int, port: int) -> None:
    """A cable cut: forget links on this port at once (both directions)."""
    end = LinkEnd(dpid, port)
    inv.hv_ports.pop(end, None)
    for rx, (tx, _) in list(inv.links.items()):
        if rx == end or tx == end:
            del inv.links[rx]


def classify_ports(fabric, inv: Inventory, now: float) -> bool:
    """Give each physical port its role from the links seen.  True if any role changed."""
    pairs = declared_pairs(fabric)
    changed = False
    for sw in inv.switches.values():
        if sw.kind != 'physical':
            continue
        for p in list(sw.ports.values()):
            role = _role(pairs, inv, sw.dpid, p, now)
            if role != p.role:
                # a new Port, never an edit: snapshots share Port objects (Inventory.snapshot)
                sw.ports[p.no] = dataclasses.replace(p, role=role, since=now)
                changed = True
    return changed


def _role(pairs, inv, dpid, port, now):
    end = LinkEnd(dpid, port.no)
    if port.up and end in inv.hv_ports:
        return HYPERVISOR           # a hypervisor's controller session may drop: its cable has not
    link, named = inv.links.get(end), inv.declared.get(end)
    if link is not None:
        if named is not None and link[0] != named:
            return UNDECLARED       # cabled elsewhere than the fabric file says
        return FABRIC if frozenset((dpid, link[0].dpid)) in pairs else UNDECLARED
    if named is not None and port.up and _verified_or_silent(inv, named, end):
        return FABRIC               # a named cable: traffic at once, LLDP verifies it
    if port.role in (FABRIC, UNDECLARED):
        return PENDING              # a link vanished: wait before flooding onto it again
    if port.role == PENDING and port.up and (dpid in inv.open_at_once or now - port.since >= DISCOVERY_WINDOW):
        return EDGE
    return port.role if port.up else PENDING


def _verified_or_silent(inv, end: LinkEnd, other: LinkEnd) -> bool:
    """LLDP heard on `end` names `other`, or nothing is heard there yet."""
    link = inv.links.get(end)
    return link is None or link[0] == other


def _fabric_port(inv, end: LinkEnd) -> bool:
    sw = inv.switches.get(end.dpid)
    p = sw.ports.get(end.port) if sw else None
    return p is not None and p.role == FABRIC


def links(inv: Inventory) -> dict[LinkEnd, LinkEnd]:
    """rx end -> tx end of every cable in use: those LLDP sees, and the named ones whose
    port has the fabric role (up, and LLDP does not contradict the file)."""
    out = {rx: tx for rx, (tx, _) in inv.links.items()}
    for a, b in inv.declared.items():
        if a not in out and _fabric_port(inv, a):
            out[a] = b
    return out


def peer(inv: Inventory, dpid: int, port: int) -> LinkEnd | None:
    """Who is at the other end of (dpid, port): LLDP says, or the fabric file names it."""
    end = LinkEnd(dpid, port)
    link = inv.links.get(end)
    if link is not None:
        return link[0]
    named = inv.declared.get(end)
    return named if named is not None and _fabric_port(inv, end) else None


def both_ends_fabric(inv: Inventory, a: LinkEnd, b: LinkEnd) -> bool:
    """Does the cable a <-> b carry traffic: both its ports have the fabric role?  A cable
    heard one way only is not used yet: its far end does not admit what comes over it."""
    for end in (a, b):
        sw = inv.switches.get(end.dpid)
        p = sw.ports.get(end.port) if sw is not None else None
        if p is None or p.role != FABRIC:
            return False
    return True


def hypervisor_ports(inv: Inventory) -> dict[int, LinkEnd]:
    """hypervisor br-int dpid -> the leaf port its uplink is cabled to (from its LLDP)."""
    out = {}
    for end, hv in inv.hv_ports.items():
        sw = inv.switches.get(end.dpid)
        p = sw.ports.get(end.port) if sw else None
        if p is not None and p.role == HYPERVISOR and p.up:
            out[hv] = end
    return out


def toward(inv: Inventory, tree: set[LinkEnd], target: int) -> dict[int, int]:
    """For every physical switch on the flood tree: the port leading toward switch `target`."""
    adj: dict[int, list[tuple[int, int]]] = {}
    for end in tree:
        other = peer(inv, end.dpid, end.port)
        if other is not None and other in tree:
            adj.setdefault(other.dpid, []).append((end.dpid, end.port))
    out, queue = {}, deque([target])
    seen = {target}
    while queue:
        here = queue.popleft()
        for nxt, port_back in sorted(adj.get(here, [])):
            if nxt not in seen:
                seen.add(nxt)
                out[nxt] = port_back
                queue.append(nxt)
    return out


def flood_tree(inv: Inventory) -> set[LinkEnd]:
    """The ports of physical switches that are on the flood tree (fabric links only)."""
    adj: dict[int, list[tuple[int, int, int]]] = {}
    for rx, tx in links(inv).items():
        if not both_ends_fabric(inv, rx, tx):
            continue
        adj.setdefault(rx.dpid, []).append((tx.dpid, rx.port, tx.port))
        adj.setdefault(tx.dpid, []).append((rx.dpid, tx.port, rx.port))
    tree: set[LinkEnd] = set()
    seen: set[int] = set()
    for root in sorted(d for d, s in inv.switches.items() if s.kind == 'physical'):
        if root in seen:
            continue
        seen.add(root)
        queue = deque([root])
        while queue:
            here = queue.popleft()
            for peer, my_port, peer_port in sorted(set(adj.get(here, []))):
                if peer not in seen:
                    seen.add(peer)
                    tree.update((LinkEnd(here, my_port), LinkEnd(peer, peer_port)))
                    queue.append(peer)
    return tree
