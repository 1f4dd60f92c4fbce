"""Bonded hypervisor uplinks on a physical switch: several OpenFlow ports made one.

A hypervisor with `uplinks: 2+` is cabled to its leaf by a bond on both ends (LACP, or
active-backup).  Open vSwitch runs LACP for the leaf's bond, but in a bridge controlled by
OpenFlow (fail_mode=secure) each member stays its own OpenFlow port; only NORMAL knows the
bond.  So the controller presents the bond to the core and apps as ONE port -- its lowest
member's number, the *logical port* -- and rewrites each compiled flow for the switch:

  in_port=logical       ->  in_port=anchor (the lowest member that is up); the other members
                            are folded into it by a port_sec flow `in_port=m ->
                            load:anchor->NXM_OF_IN_PORT[], resubmit(,port_sec)`, so the whole
                            pipeline (learning, flood split horizon, LLDP and packet-ins) sees
                            one port.  Not `resubmit(anchor,port_sec)`: OVS restores the real
                            in_port before running the matched flow's actions, so every later
                            table would see the member (a learn miss -- a packet-in -- for every
                            frame, and floods reflected into the bond)
  output:logical        ->  bundle(symmetric_l4, hrw | active_backup, members): the switch
                            picks a live member itself (LACP-aware: a member LACP has not
                            enabled is not live), so a member cut needs no controller
  flood to the bond     ->  plus a copy one priority up for frames that came in on the bond,
                            without the bond: a bond never gets back what it sent (a real
                            switch's LAG; the hypervisor's own bond would learn its MACs back)
  known unicast from    ->  dropped: an output-stage flow `in_port=anchor, OUT_PORT=logical ->
  the bond to the bond      drop` above the emission flows.  OVS drops output to the ingress
                            port, but after the fold the ingress port is the anchor, so the
                            bundle's pick of the *other* member (or of the member the frame
                            really came in on) would go out: a hairpin into the bond

A member going down or up is no port event for the core while another member is up: the
flood tree is not recomputed and no learned MAC is flushed.  Only the aggregate going down
(every member) is.  Which ports are bonds comes from the switches' OVSDB
(controller/inventory/bonds.py), and each hypervisor's br-phy bond from its own OVSDB; both
feed `dvsctl show uplinks`.
"""
from __future__ import annotations

import dataclasses
import logging

from controller.core import Controller
from controller.inventory import bonds as inv_bonds
from controller.pipeline import actions as A, cookies, registers as R
from controller.pipeline.flow import Flow

LOG = logging.getLogger('opendvs.bonds')
APP = 'bonds'
P_FOLD = 2000                       # port_sec's 'bonds' band: above everything there (LLDP is 1000)
P_HAIRPIN = 200                     # output's 'bonds' band: above every emission flow (at most 150)
FOLD_TABLE = 'port_sec'
FLOOD_TABLE = 'flood'
OUTPUT_TABLE = 'output'


@dataclasses.dataclass(frozen=True)
class Lag:
    """One bond on one switch, as the flow rewrite needs it."""
    name: str
    members: tuple[int, ...]        # OpenFlow ports, sorted; members[0] is the logical port
    up: frozenset[int]              # members whose link is up now
    algorithm: str = 'hrw'          # 'hrw' (spread by hash) | 'active_backup'

    @property
    def logical(self) -> int:
        return self.members[0]

    @property
    def anchor(self) -> int:
        """The member frames from the bond are processed as: the lowest that is up."""
        return min(self.up) if self.up else self.logical


def fold_ports(ports: list[tuple[int, str, bool]], lags) -> list[tuple[int, str, bool]]:
    """The switch's ports as the core sees them: each bond one port (its logical number, up
    while any member is up), its other members hidden."""
    raw = {no: (name, up) for no, name, up in ports}
    hidden, out = set(), []
    for lag in lags:
        hidden.update(lag.members[1:])
    for no, (name, up) in sorted(raw.items()):
        if no in hidden:
            continue
        lag = next((g for g in lags if g.logical == no), None)
        if lag is not None:
            up = any(raw.get(m, ('', False))[1] for m in lag.members)
        out.append((no, name, up))
    return out


def _bundle(lag: Lag) -> tuple:
    return A.bundle(lag.algorithm, lag.members)


def expand(flows, lags) -> set[Flow]:
    """Rewrite one switch's compiled flows for its bonds (see the module docstring)."""
    if not lags:
        return set(flows)
    by_logical = {g.logical: g for g in lags}
    out = set()
    for f in flows:
        m = f.match_dict()
        src = by_logical.get(m.get('in_port'))
        if src is not None and src.anchor != src.logical:
            m['in_port'] = src.anchor
        actions = tuple(_bundle(by_logical[a[1]]) if a[0] == 'output' and a[1] in by_logical else a
                        for a in f.actions)
        out.add(dataclasses.replace(f, match=tuple(sorted(m.items())), actions=actions))
        if f.table == FLOOD_TABLE and 'in_port' not in m:
            for g in lags:
                if _bundle(g) in actions:
                    # split horizon: frames from this bond flood everywhere but back into it
                    rest = tuple(a for a in actions if a != _bundle(g))
                    out.add(dataclasses.replace(
                        f, priority=f.priority + 1, match=tuple(sorted(dict(m, in_port=g.anchor).items())),
                        actions=_trim(rest)))
    for g in lags:
        # from the bond, chosen for the bond (a MAC behind it, a frame looping back): no hairpin
        out.add(Flow.make(OUTPUT_TABLE, P_HAIRPIN, {'in_port': g.anchor, R.OUT_PORT: g.logical}, [],
                          cookie=cookies.make(APP, 2, '%s/hairpin' % g.name)))
        for member in g.members:
            if member != g.anchor:
                out.add(Flow.make(FOLD_TABLE, P_FOLD, {'in_port': member},
                                  [A.set_in_port(g.anchor), A.resubmit(FOLD_TABLE)],
                                  cookie=cookies.make(APP, 1, '%s/%d' % (g.name, member))))
    return out


def _trim(actions: tuple) -> tuple:
    """Drop a trailing pop_vlan that no output follows any more."""
    while actions and actions[-1][0] == 'pop_vlan':
        actions = actions[:-1]
    return actions


class _BondedConn:
    """A switch connection whose packet_out to a bond's logical port leaves by a live member."""

    def __init__(self, conn, owner):
        self._conn, self._owner = conn, owner

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def packet_out(self, port: int, data: bytes) -> None:
        lag = next((g for g in self._owner.lags_of(self._conn.dpid) if g.logical == port), None)
        self._conn.packet_out(lag.anchor if lag else port, data)


class BondedController(Controller):
    """The core plus bonded uplinks: folds each bond into one port on the way in, and
    rewrites flows for it on the way out.  switch_ovsdb(on_change) -> watcher follows the
    physical switches' OVSDB; watch_uplinks(name, address, on_change) -> watcher follows a
    hypervisor's (both controller.inventory.bonds.BondWatcher; None in unit tests)."""

    def __init__(self, policy, watch_bindings=None, switch_ovsdb=None, watch_uplinks=None, ofp_port=None,
                 state_dir=None, apps=None):
        super().__init__(policy, watch_bindings=watch_bindings, state_dir=state_dir, apps=apps)
        # a bridge in the switches' OVSDB is ours when its dpid is in the fabric and, if it has
        # controllers, one of them is our OpenFlow port (two labs may share one root OVS)
        self.ofp_port = ofp_port
        self._watch_uplinks = watch_uplinks
        self._bond_watchers: dict[int, object] = {}
        self.switch_bonds: dict[int, dict[str, inv_bonds.Bond]] = {}   # physical dpid -> bonds
        self.hv_bonds: dict[int, dict[str, inv_bonds.Bond]] = {}       # hv br-int dpid -> br-phy bonds
        self.raw_ports: dict[int, dict[int, tuple[str, bool]]] = {}    # as the switch reports them
        self._proxies: dict[int, _BondedConn] = {}
        self._switch_watcher = switch_ovsdb(self.switch_bonds_changed) if switch_ovsdb else None

    def stop(self):
        super().stop()
        for w in [self._switch_watcher, *self._bond_watchers.values()]:
            if w is not None:
                w.stop()

    # ---- which ports are bonds --------------------------------------------------------

    def lags_of(self, dpid: int) -> list[Lag]:
        with self.lock:
            raw = self.raw_ports.get(dpid, {})
            out = []
            for b in self.switch_bonds.get(dpid, {}).values():
                members = tuple(p for p in b.ofports if p in raw)
                if len(members) < 2:
                    continue
                up = frozenset(p for p in members if raw[p][1])
                out.append(Lag(b.name, members, up, 'hrw' if b.lacp != 'off' else 'active_backup'))
            return sorted(out, key=lambda g: g.logical)

    def switch_bonds_changed(self, by_bridge: dict) -> None:
        """The physical switches' OVSDB changed (BondWatcher thread)."""
        with self.lock:
            fabric_dpids = {s.dpid for s in self.fabric.switches.values()}
            new = {dpid: bonds for dpid, bonds, *targets in by_bridge.values()
                   if dpid in fabric_dpids and self._ours(targets[0] if targets else ())}
            if new == self.switch_bonds:
                return
            old_lags = {d: self.lags_of(d) for d in self.raw_ports}
            self.switch_bonds.clear()
            self.switch_bonds.update(new)
            for dpid in self.raw_ports:
                if self.lags_of(dpid) != old_lags[dpid]:
                    self._refold(dpid, old_lags[dpid])

    def _ours(self, targets) -> bool:
        return not (self.ofp_port and targets) or any(t.endswith(':%d' % self.ofp_port) for t in targets)

    def _hv_bonds_changed(self, dpid: int, by_bridge: dict) -> None:
        with self.lock:
            self.hv_bonds[dpid] = {name: b for _, bonds, *_ in by_bridge.values() for name, b in bonds.items()}

    # ---- events: fold members into their bond -------------------------------------------

    def switch_up(self, conn, ports):
        node = self.fabric.switch_by_dpid(conn.dpid)
        if node is None or node.name in self.fabric.hypervisors:
            super().switch_up(conn, ports)
            if node is not None:
                self._follow_uplinks(node.name, conn)
            return
        with self.lock:
            self.raw_ports[conn.dpid] = {no: (name, up) for no, name, up in ports}
            proxy = self._proxies[conn.dpid] = _BondedConn(conn, self)
            folded = fold_ports(ports, self.lags_of(conn.dpid))
        super().switch_up(proxy, folded)

    def switch_down(self, conn):
        with self.lock:
            proxy = self._proxies.get(conn.dpid)
            if proxy is not None and proxy._conn is conn:
                del self._proxies[conn.dpid]
                self.raw_ports.pop(conn.dpid, None)
                conn = proxy
        super().switch_down(conn)

    def port_status(self, dpid, reason, no, name, up):
        with self.lock:
            raw = self.raw_ports.get(dpid)
            if raw is None:                           # a hypervisor, or not connected
                return super().port_status(dpid, reason, no, name, up)
            before = self.lags_of(dpid)
            if reason == 'delete':
                raw.pop(no, None)
            else:
                raw[no] = (name, up)
            if not any(no in g.members for g in before + self.lags_of(dpid)):
                return super().port_status(dpid, reason, no, name, up)
            self._refold(dpid, before)

    def _refold(self, dpid: int, before: list[Lag]) -> None:
        """Tell the core what changed in the folded view; recompile the switch (anchors)."""
        sw = self.inv.switches.get(dpid)
        if sw is None:
            return
        raw = self.raw_ports[dpid]
        shown = {p.no: p.up for p in sw.ports.values()}
        folded = {no: (name, up) for no, name, up in fold_ports(
            [(no, n, u) for no, (n, u) in raw.items()], self.lags_of(dpid))}
        for no in sorted(set(shown) - set(folded)):
            super().port_status(dpid, 'delete', no, sw.ports[no].name, False)
        for no, (name, up) in sorted(folded.items()):
            if no not in shown:
                super().port_status(dpid, 'add', no, name, up)
            elif shown[no] != up:
                super().port_status(dpid, 'modify', no, name, up)
        if self.lags_of(dpid) != before:
            LOG.info('%s bonds: %s', sw.name, ', '.join('%s=%s up %s' % (g.name, list(g.members), sorted(g.up))
                                                        for g in self.lags_of(dpid)) or 'none')
            with self.lock:
                self._invalidate(dpid)        # anchors moved: the whole switch, not a delta

    def packet_in(self, dpid, in_port, table_id, data):
        super().packet_in(dpid, self._logical(dpid, in_port), table_id, data)

    def flow_removed(self, dpid, flow):
        m = flow.match_dict()
        lag = next((g for g in self.lags_of(dpid) if m.get('in_port') in g.members), None)
        if lag is not None:
            with self.lock:
                self.rec.removed(dpid, flow.key)
            if m['in_port'] != lag.anchor:
                # keyed to an earlier anchor: our own delete when the anchor moved (OVS reports
                # deletes of SEND_FLOW_REM entries too, possibly before the bundle's commit reply).
                # The MAC is still on the bond, in the entry keyed to the new anchor.
                return
            flow = dataclasses.replace(flow, match=tuple(sorted(dict(m, in_port=lag.logical).items())))
        super().flow_removed(dpid, flow)

    def _logical(self, dpid: int, port: int) -> int:
        for g in self.lags_of(dpid):
            if port in g.members:
                return g.logical
        return port

    # ---- compile: the core's flows, rewritten for the bonds --------------------------------

    def desired(self, dpid, policy=None):
        return expand(super().desired(dpid, policy), self.lags_of(dpid))

    def bonded(self, dpid) -> bool:
        return bool(self.lags_of(dpid))

    def rewrite(self, dpid, flows):
        """Core v2's hook: the worker's compiled flows, rewritten for this switch's bonds."""
        return expand(flows, self.lags_of(dpid))

    # ---- hypervisor ends, and the operator's view ---------------------------------------------

    def _follow_uplinks(self, name: str, conn) -> None:
        address = getattr(conn, 'address', None)
        if self._watch_uplinks is None or not address:
            return
        dpid = conn.dpid
        with self.lock:
            old = self._bond_watchers.pop(dpid, None)
        if old is not None:
            old.stop()
        w = self._watch_uplinks(name, address, lambda by_bridge: self._hv_bonds_changed(dpid, by_bridge))
        with self.lock:
            self._bond_watchers[dpid] = w

    def uplink_bonds(self):
        """Per hypervisor: (its fabric entry, the leaf port LLDP found it on or None, the leaf's
        bond on that port or None, br-phy's bond or None, status, problems)."""
        from apps import topology
        with self.lock:
            where = topology.hypervisor_ports(self.inv)
            out = []
            for hv in sorted(self.fabric.hypervisors.values(), key=lambda h: h.name):
                end = where.get(hv.dpid)
                leaf_bond = None
                if end is not None:
                    leaf_bond = next((b for b in self.switch_bonds.get(end.dpid, {}).values()
                                      if end.port in b.ofports), None)
                hv_bond = next(iter(self.hv_bonds.get(hv.dpid, {}).values()), None)
                status, problems = inv_bonds.uplink_status(hv.uplinks, hv.bond, leaf_bond, hv_bond)
                out.append((hv, end, leaf_bond, hv_bond, status, problems))
            return out

    def uplinks(self) -> list[dict]:
        """Per hypervisor: its declared uplinks, the leaf port (bond) LLDP found it on, both
        ends' members with link and LACP state, and a status (see inventory.bonds)."""
        with self.lock:
            rows = []
            for hv, end, leaf_bond, hv_bond, status, problems in self.uplink_bonds():
                sw = self.inv.switches.get(end.dpid) if end else None
                rows.append({
                    'hypervisor': hv.name, 'leaf': hv.leaf, 'uplinks': hv.uplinks,
                    'bond': hv.bond if hv.bonded else None, 'status': status, 'problems': problems,
                    'leaf_port': end.port if end else None,
                    'leaf_port_role': sw.ports[end.port].role if sw and end.port in sw.ports else None,
                    'leaf_bond': leaf_bond.as_dict() if leaf_bond else None,
                    'hv_bond': hv_bond.as_dict() if hv_bond else None,
                    'members': _members_cell(leaf_bond, hv_bond),
                })
            return rows


def _members_cell(leaf, hv) -> list[str]:
    out = []
    for b in (leaf, hv):
        if b is not None:
            out += ['%s:%s/%s' % (m.name, 'up' if m.link_up else 'down', inv_bonds._lacp_word(b, m))
                    for m in b.members]
    return out

