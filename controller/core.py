"""The controller core, free of any OpenFlow framework: events in, converged switches out.

controller/ofp.py turns os-ken events into calls on Controller; handlers here only update
the inventory and mark switches dirty.  One worker thread converges dirty switches through
the reconciler (it may block on switch replies, which the event loop delivers), and one
ticker thread sends LLDP and settles port roles.
"""
from __future__ import annotations

import logging
import struct
import threading
import time

from apps import learning_switch, topology, underlay_routing, vlan_portgroups, vxlan_overlay
from controller import metrics
from controller.inventory.model import (PENDING, TUNNEL, UPLINK, UPLINK_PORT_NAME, VM, Binding,
                                        Inventory, LinkEnd, Port, SwitchState)
from controller.policy.model import Fabric, Policy
from controller.pipeline import cookies, tables
from controller.pipeline.flow import Flow
from controller.pipeline import reconciler
from controller.pipeline.reconciler import Reconciler

LOG = logging.getLogger('opendvs.core')
APPS = (topology, learning_switch, vlan_portgroups, underlay_routing, vxlan_overlay)  # compile_flows(policy, inv, dpid)
TICK = 0.25
SETTLE = topology.DISCOVERY_WINDOW + topology.LLDP_INTERVAL
BINDINGS_WAIT = 5.0          # s a reconnected hypervisor waits for its OVSDB bindings at most


def hypervisor_port_role(name: str) -> str:
    if name == UPLINK_PORT_NAME:
        return UPLINK
    if name.startswith('vxlan'):
        return TUNNEL
    return VM


class Controller:
    def __init__(self, policy: Policy | Fabric, watch_bindings=None):
        """watch_bindings(name, address, on_change) -> watcher with stop(): follows a
        hypervisor's OVSDB bindings (controller.inventory.ovsdb.BindingWatcher); None in tests."""
        self.policy = policy if isinstance(policy, Policy) else Policy(policy)
        self._watch_bindings = watch_bindings
        self._watchers: dict[int, object] = {}
        self._generation = 0                   # bumped after every converge pass (apply waits on it)
        self.last_diff: dict[int, object] = {}
        self.inv = Inventory()
        self.rec = Reconciler()
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self.conns: dict[int, object] = {}
        self._loads: list[int] = []            # switches whose flows must be read first
        self._dirty: set[int] = set()
        self._retry: set[int] = set()
        self._settle_until: dict[int, float] = {}
        self._tree: set = set()
        self._stopped = False
        metrics.watch(self)                    # /metrics reads switches, flows, bindings, MACs at scrape time
        self._threads = [threading.Thread(target=self._guard(self._work), name='converge', daemon=True),
                         threading.Thread(target=self._guard(self._tick), name='ticker', daemon=True)]

    @property
    def fabric(self) -> Fabric:
        return self.policy.fabric

    def start(self):
        for t in self._threads:
            t.start()

    def stop(self):
        with self.lock:
            self._stopped = True
            self._wake.notify_all()
            for w in self._watchers.values():
                w.stop()

    # ---- compile ----------------------------------------------------------------------

    def desired(self, dpid: int) -> set[Flow]:
        """Every app's flows for one switch, each checked against its table declaration."""
        with self.lock:
            flows = set()
            for app in APPS:
                flows |= app.compile_flows(self.policy, self.inv, dpid)
        for f in flows:
            tables.check(f)
        return flows

    def settling(self, dpid: int) -> bool:
        return time.monotonic() < self._settle_until.get(dpid, 0)

    # ---- events (from the OpenFlow shim; thin, never block on a switch) ----------------

    def switch_up(self, conn, ports: list[tuple[int, str, bool]]) -> None:
        node = self.fabric.switch_by_dpid(conn.dpid)
        if node is None:
            LOG.warning('datapath %016x is not in %s: left alone', conn.dpid, self.fabric.source)
            return
        kind = 'hypervisor' if node.name in self.fabric.hypervisors else 'physical'
        with self.lock:
            sw = SwitchState(conn.dpid, node.name, kind)
            for no, name, up in ports:
                sw.ports[no] = Port(no, name, up, self._initial_role(kind, name))
            self.inv.switches[conn.dpid] = sw
            self.conns[conn.dpid] = conn
            self.rec.forget(conn.dpid)
            # settle: keep what the switch holds until we know enough to compute it right --
            # its cables (physical) or which VM is on which port (hypervisor: OVSDB bindings)
            wait = SETTLE if kind == 'physical' else (BINDINGS_WAIT if self._watch_bindings else 0)
            self._settle_until[conn.dpid] = time.monotonic() + wait
            self._loads.append(conn.dpid)
            self._wake.notify_all()
            if kind == 'hypervisor':
                self._follow_bindings(node.name, conn)
        LOG.info('%s %s (%016x) connected with %d ports', kind, node.name, conn.dpid, len(ports))

    def switch_down(self, conn) -> None:
        with self.lock:
            if self.conns.get(conn.dpid) is not conn:
                return                          # an older connection of a switch that is back
            del self.conns[conn.dpid]
            self.rec.forget(conn.dpid)
            sw = self.inv.switches.pop(conn.dpid, None)
            for no in (sw.ports if sw else ()):
                topology.port_down(self.inv, conn.dpid, no)
            self.inv.macs.pop(conn.dpid, None)
            self.inv.refused.pop(conn.dpid, None)
            self._topology_changed()
        LOG.info('switch %016x disconnected', conn.dpid)

    def _follow_bindings(self, name: str, conn) -> None:
        old = self._watchers.pop(conn.dpid, None)
        if old is not None:
            old.stop()
        address = getattr(conn, 'address', None)
        if self._watch_bindings is None or not address:
            return
        dpid = conn.dpid
        self._watchers[dpid] = self._watch_bindings(
            name, address, lambda bindings, vtep_mac=None: self.bindings_changed(dpid, bindings, vtep_mac))

    def bindings_changed(self, dpid: int, bindings: dict[int, Binding], vtep_mac: str | None = None) -> None:
        """A hypervisor's bound interfaces (or its VTEP's MAC) changed in its OVSDB: every
        switch's known-nic and underlay flows may."""
        with self.lock:
            if (self.inv.bindings.get(dpid) == bindings and self.inv.vtep_macs.get(dpid) == vtep_mac
                    and not self._settle_until.get(dpid)):
                return
            self.inv.bindings[dpid] = dict(bindings)
            if vtep_mac:
                self.inv.vtep_macs[dpid] = vtep_mac.lower()
            if self._settle_until.get(dpid):
                self._settle_until[dpid] = 0          # the first snapshot: it may be programmed now
            LOG.info('%016x bindings: %s', dpid, sorted(b.iface_id for b in bindings.values()))
            for d in self.inv.switches:
                self._mark(d)

    def port_status(self, dpid: int, reason: str, no: int, name: str, up: bool) -> None:
        with self.lock:
            sw = self.inv.switches.get(dpid)
            if sw is None:
                return
            old = sw.ports.get(no)
            if reason == 'delete':
                sw.ports.pop(no, None)
            elif old is None or old.up != up:
                sw.ports[no] = Port(no, name, up, self._initial_role(sw.kind, name))
            else:
                return
            if reason == 'delete' or not up:
                self.inv.forget_port(dpid, no)
                topology.port_down(self.inv, dpid, no)
            LOG.info('%s port %d (%s) %s', sw.name, no, name, reason if reason == 'delete' else
                     ('up' if up else 'down'))
            if sw.kind == 'physical':
                topology.classify_ports(self.fabric, self.inv, time.monotonic())
                self._topology_changed()
            self._mark(dpid)

    def packet_in(self, dpid: int, in_port: int, table_id: int, data: bytes) -> None:
        with self.lock:
            sw = self.inv.switches.get(dpid)
            if sw is None:
                return
            tx = topology.parse_lldp(data)
            if tx is not None:
                if tx.dpid in self.inv.switches and topology.link_seen(
                        self.fabric, self.inv, LinkEnd(dpid, in_port), tx):
                    self._topology_changed()
                return
            if table_id != tables.table_id('learn') or len(data) < 14:
                return
            vlan = _vlan_of(data)
            src = ':'.join('%02x' % b for b in data[6:12])
            if vlan is not None and learning_switch.learn(self.fabric, self.inv, dpid, in_port, vlan, src):
                self._mark(dpid)

    def flow_removed(self, dpid: int, flow: Flow) -> None:
        with self.lock:
            self.rec.removed(dpid, flow.key)
            if learning_switch.forget(self.inv, dpid, flow):
                self._mark(dpid)

    # ---- policy (from the API thread) ------------------------------------------------------

    def apply_policy(self, candidate: Policy, dry_run: bool = False, timeout: float = 60) -> dict:
        """Make `candidate` the running policy and wait until every connected switch has
        converged to it.  Returns {switch name: Diff}; with dry_run nothing changes (the diff is
        computed against what each switch holds).  Raises RuntimeError if a switch failed."""
        with self.lock:
            names = {d: sw.name for d, sw in self.inv.switches.items() if d in self.conns}
            if dry_run:
                running = self.policy
                self.policy = candidate
                try:
                    want = {d: self.desired(d) for d in names}
                finally:
                    self.policy = running
                return {names[d]: reconciler.diff(want[d], self.rec.installed(d) or set()) for d in names}
            self.policy = candidate
            self.last_diff = {}
            for d in names:
                self._mark(d)
            target = self._generation
            self._wake.notify_all()              # the worker bumps the generation when done
            deadline = time.monotonic() + timeout
            while self._generation <= target and time.monotonic() < deadline:
                self._wake.wait(deadline - time.monotonic())
            failed = sorted(names[d] for d in names if d in self._retry or d in self._dirty)
            if failed:
                raise RuntimeError('switches not converged (will keep retrying): %s' % ', '.join(failed))
            return {names[d]: self.last_diff.get(d, reconciler.Diff()) for d in names}

    # ---- helpers ----------------------------------------------------------------------

    @staticmethod
    def _initial_role(kind: str, name: str) -> str:
        return PENDING if kind == 'physical' else hypervisor_port_role(name)

    def _mark(self, dpid: int) -> None:
        self._dirty.add(dpid)
        self._wake.notify_all()

    def _topology_changed(self) -> None:
        """Port roles changed: recompute the tree; if it moved, forget MACs learned over it."""
        tree = topology.flood_tree(self.inv)
        if tree != self._tree:
            self._tree = tree
            # While switches (re)connect the tree is being rediscovered, not changed: keep the
            # MACs adopted from their flows so a controller restart touches nothing.
            if not any(self.settling(d) for d in self.inv.switches):
                learning_switch.flush_fabric_macs(self.inv)
            LOG.info('flood tree: %s', sorted((e.dpid, e.port) for e in tree))
        for dpid, sw in self.inv.switches.items():
            if sw.kind == 'physical':
                self._mark(dpid)

    # ---- worker: the only thread that writes to switches --------------------------------

    def _work(self) -> None:
        while True:
            with self.lock:
                while not (self._stopped or self._loads or self._dirty):
                    self._generation += 1          # everything asked for so far is done
                    self._wake.notify_all()
                    self._wake.wait()
                if self._stopped:
                    return
                if self._loads:
                    dpid, load = self._loads.pop(0), True
                else:
                    dpid, load = min(self._dirty), False
                    self._dirty.discard(dpid)
                conn = self.conns.get(dpid)
            if conn is None:
                continue
            try:
                if load:
                    installed = self.rec.load(conn)
                    with self.lock:
                        learning_switch.adopt(self.inv, dpid, installed)
                self._converge(conn)
                if load:
                    self.send_lldp()
                with self.lock:
                    self._retry.discard(dpid)
            except Exception:
                LOG.exception('converging switch %016x failed; will retry', dpid)
                with self.lock:
                    self.rec.forget(dpid)
                    self._retry.add(dpid)

    def _converge(self, conn) -> None:
        desired = self.desired(conn.dpid)
        if self.settling(conn.dpid):
            # Just connected: keep whatever the switch holds (it forwards while we rediscover
            # the topology) and only add what discovery itself needs.
            have = self.rec.installed(conn.dpid) or set()
            keys = {f.key for f in have}
            desired = have | {f for f in desired if f.key not in keys
                              and cookies.app_of(f.cookie) == topology.APP}
        self.last_diff[conn.dpid] = self.rec.converge(conn, desired)

    # ---- ticker: LLDP, link ageing, settling ------------------------------------------

    def _tick(self) -> None:
        next_lldp = 0.0
        while not self._stopped:
            time.sleep(TICK)
            now = time.monotonic()
            if now >= next_lldp:
                next_lldp = now + topology.LLDP_INTERVAL
                self.send_lldp()
            with self.lock:
                if topology.expire(self.fabric, self.inv, now):
                    self._topology_changed()
                for dpid, until in list(self._settle_until.items()):
                    if until and now >= until:
                        self._settle_until[dpid] = 0
                        self._mark(dpid)
                for dpid in self._retry:
                    self._mark(dpid)
                self._retry.clear()

    def send_lldp(self) -> None:
        with self.lock:
            out = [(self.conns.get(d), d, p.no) for d, sw in self.inv.switches.items()
                   for p in sw.ports.values() if p.up and (sw.kind == 'physical' or p.role == UPLINK)]
        for conn, dpid, no in out:
            if conn is not None:
                conn.packet_out(no, topology.lldp_frame(dpid, no))

    def _guard(self, fn):
        def run():
            try:
                fn()
            except Exception:
                LOG.exception('%s thread died', fn.__name__)
        return run


def _vlan_of(data: bytes) -> int | None:
    """The 802.1Q VLAN of a frame (our pipeline tags everything before `learn`)."""
    if struct.unpack('!H', data[12:14])[0] != 0x8100 or len(data) < 16:
        return None
    return struct.unpack('!H', data[14:16])[0] & 0xfff
