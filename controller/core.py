"""The controller core, free of any OpenFlow framework: events in, converged switches out.

controller/ofp.py turns os-ken events into calls on Controller; handlers here only update
the inventory and mark switches dirty.  One worker thread converges dirty switches through
the reconciler (it may block on switch replies, which the event loop delivers), and one
ticker thread sends LLDP and settles port roles.
"""
from __future__ import annotations

import dataclasses
import gc
import importlib
import logging
import struct
import threading
import time

from apps import (anycast_gateway, learning_switch, microseg, port_security, topology, underlay_routing,
                  vlan_portgroups)
from controller import eventlog, floods, metrics
from controller.inventory.model import (PENDING, TUNNEL, UPLINK, UPLINK_PORT_NAME, VM, Binding,
                                        Inventory, LinkEnd, Port, SwitchState)
from controller.policy.model import Fabric, Policy
from controller.pipeline import cookies, ids as idstore, incremental, tables
from controller.pipeline.incremental import ALL
from controller.pipeline.flow import Flow
from controller.pipeline import reconciler
from controller.pipeline.reconciler import Reconciler

LOG = logging.getLogger('opendvs.core')
TICK = 0.25
SETTLE = topology.DISCOVERY_WINDOW + topology.LLDP_INTERVAL
BINDINGS_WAIT = 5.0          # s a reconnected hypervisor waits for its OVSDB bindings at most
PICTURE_WAIT = 10.0          # s after start at most before switches are programmed from what is known
RETRY_FIRST, RETRY_MAX = 0.25, 8.0   # s between retries of a failing switch: doubling backoff
AWAY_GRACE = 30.0            # s a physical switch whose session dropped stays in the topology


def load_apps(names=None) -> tuple:
    """The app modules that run, from the one registry (cookies.APPS): every registered app
    that has a module in apps/ (or just `names`), in the registry's order."""
    mods = []
    for name in names or cookies.APPS:
        try:
            mods.append(importlib.import_module('apps.%s' % name))
        except ModuleNotFoundError as e:
            if e.name != 'apps.%s' % name or names:
                raise
    return tuple(m for m in mods if hasattr(m, 'compile_flows'))


APPS = load_apps()           # compile_flows(policy, inv, dpid) -> set[Flow]


def no_clash(flows) -> None:
    """Two flows with the same table, priority and match but other actions or owner: OVS
    would keep one of them at random.  That is a compile error, never resolved silently."""
    seen: dict[tuple, Flow] = {}
    for f in flows:
        other = seen.setdefault(f.key, f)
        if other is not f:
            raise tables.PipelineError('clash in table %s at priority %d, same match:\n  %s\n  %s'
                                       % (f.table, f.priority, other, f))


def hypervisor_port_role(name: str) -> str:
    if name == UPLINK_PORT_NAME:
        return UPLINK
    if name.startswith('vxlan'):
        return TUNNEL
    return VM


# Fabric forwarding is make before break across switches: in one converge pass the new flows
# of these apps go to every switch before any switch replaces or deletes a flow.  (A tenant's
# policy stays atomic per switch: half a set-based ACL added could briefly allow what neither
# the old nor the new version allows.)
MAKE_BEFORE_BREAK = frozenset({topology.APP, underlay_routing.APP})


@dataclasses.dataclass
class _Plan:
    """One switch's compiled change in a converge pass."""
    conn: object
    policy: Policy
    compiled: incremental.Compiled
    removed: set
    added: set
    keeping: bool          # settling, or the picture is not whole: keep what the switch holds
    early: reconciler.Diff = reconciler.Diff()     # what make before break sent ahead


class Controller:
    def __init__(self, policy: Policy | Fabric, watch_bindings=None, state_dir=None, apps=None):
        """watch_bindings(name, address, on_change) -> watcher with stop(): follows a
        hypervisor's OVSDB bindings (controller.inventory.ovsdb.BindingWatcher); None in tests.
        state_dir: where stable ids and the cookie registry persist (None: in memory).
        apps: the names of the apps that run (None: every app of APPS; their dependencies
        are added, see controller.capabilities); self.apps are their modules."""
        from controller import capabilities
        self.apps = APPS if apps is None else load_apps(capabilities.resolve(apps))
        self.ids = idstore.IdStore(state_dir)
        self.cookies = cookies.Registry(self.ids)
        self.events = eventlog.EventLog(state_dir)      # binds, activations, moves (controller/eventlog.py)
        self._went_down: dict[int, float | None] = {}   # dpid -> when it disconnected (events: reconnect)
        self._away: dict[int, float] = {}               # physical dpid -> when its session dropped
        self._returned: set[int] = set()                # physical switches back within AWAY_GRACE
        policy = policy if isinstance(policy, Policy) else Policy(policy)
        self.policy = policy.with_ids(idstore.bind(self.ids, policy))
        self.ids.save()
        self._watch_bindings = watch_bindings
        self._watchers: dict[int, object] = {}
        self._generation = 0                   # bumped after every converge pass (apply waits on it)
        self.last_diff: dict[int, object] = {}
        self._diffs: dict[int, dict[int, object]] = {}   # id(policy) -> {dpid: first diff under it}
        self._started = time.monotonic()
        self._whole_picture = False
        self.inv = Inventory()
        topology.use_fabric(self.policy.fabric, self.inv)
        self.rec = Reconciler()
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self.conns: dict[int, object] = {}
        self._loads: list[int] = []            # switches whose flows must be read first
        self._dirty: set[int] = set()
        self._retry: dict[int, tuple[float, float]] = {}   # failing switch -> (next try, backoff)
        self._settle_until: dict[int, float] = {}
        self._arrived: set[int] = set()                # the hypervisor a VM was last activated on
        self._shutting: set[int] = set()               # switches with a port to shut (floods): first
        # incremental compile: what each event made stale (written under the lock by events,
        # taken by the worker), and each switch's compiled parts (the worker's alone)
        self._stale: dict[int, object] = {}            # dpid -> ALL or {app names}
        self._stale_units: dict[int, set] = {}         # dpid -> {(app name, unit key)}
        self._compiled: dict[int, incremental.Compiled] = {}
        self._tree: set = set()
        self._rewritten: set[int] = set()              # switches last converged through rewrite()
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

    def desired(self, dpid: int, policy: Policy | None = None) -> set[Flow]:
        """Every app's flows for one switch plus the pipeline's miss flows, compiled from
        scratch (the full compile: dry runs, and the cross-check of the incremental one),
        each checked against its table declaration; a clash raises PipelineError."""
        with self.lock:
            out = incremental.full(self.apps, policy or self.policy, self.inv, dpid)
        for f in out:
            tables.check(f)
        no_clash(out)
        return out

    # ---- hook for subclasses that rewrite a switch's flows (controller/bonds.py) -------------

    def bonded(self, dpid: int) -> bool:
        """True when rewrite() changes this switch's flows: it is then converged from its
        whole rewritten set, not by the incremental delta."""
        return False

    def rewrite(self, dpid: int, flows) -> set[Flow]:
        """The compiled flows of one switch as they go to it (default: unchanged)."""
        return flows

    # ---- what an event makes stale --------------------------------------------------------

    def _invalidate(self, dpid: int, apps=ALL) -> None:
        """Recompile these apps (ALL: everything) on one switch, and converge it."""
        have = self._stale.get(dpid, set())
        self._stale[dpid] = ALL if ALL in (apps, have) else have | set(apps)
        self._mark(dpid)

    def _invalidate_units(self, units) -> None:
        """Recompile these (app, unit) parts on every switch."""
        units = set(units)
        if units:
            for d in self.inv.switches:
                self._stale_units.setdefault(d, set()).update(units)
                self._mark(d)

    def _nic_units(self, iface_ids) -> set:
        """The compile units that depend on where these nics are."""
        out = set()
        for i in iface_ids:
            bn = self.policy.nics.get(i)
            if bn is None:
                continue
            if bn.network.vni is None:
                out.add(('vlan_portgroups', i))
            else:
                out.add(('vxlan_overlay', (bn.tenant.name, bn.network.name)))
            out.add((port_security.APP, i))                    # which of its ports is active
            out.add((anycast_gateway.APP, bn.tenant.name))     # its host route and ARP answer
            out.add((microseg.APP, bn.tenant.name))            # its tenant's rules where it is
            if bn.network.gateway is not None:                 # where its tenant routes from
                out |= self._routing_units({bn.tenant.name})
        return out

    def _routing_units(self, tenants) -> set:
        """The compile units that depend on which hypervisors a tenant routes on: its gateway
        flows, and who may send into its overlay networks (apps/anycast_gateway.py)."""
        out = set()
        for t in tenants:
            tenant = self.policy.tenants.get(t)
            if tenant is None:
                continue
            out.add((anycast_gateway.APP, t))
            out.update(('vxlan_overlay', (t, n.name)) for n in tenant.networks.values()
                       if n.vni is not None and n.gateway is not None)
        return out

    def _bindings_invalidate(self, hv: int, vlans: frozenset, moved: set) -> None:
        """After a hypervisor's bindings changed: its VM ports' VLANs (its port admission and
        floods, and the context of its nics' entries); where its trunk gained or lost VLANs
        (the first VM of a VLAN came, or the last left), the entries of that VLAN's nics on
        it, and the same on the leaf port it hangs on; everywhere, the nics that moved."""
        pg = vlan_portgroups.APP
        vlan_nics = {(pg, i) for v in vlans for i in self.policy.network_nics.get(self.policy.vlan_networks[v], ())}
        leaves = [end.dpid for end, d in self.inv.hv_ports.items() if d == hv and end.dpid in self.inv.switches]
        for d in [hv] + (leaves if vlans else []):
            self._invalidate(d, {learning_switch.APP, pg + incremental.CONTEXT})
            self._stale_units.setdefault(d, set()).update(vlan_nics)
        self._invalidate_units(self._nic_units(moved))

    def _refuse(self, iface_id: str, dpid: int) -> str | None:
        """Why a nic bound on this hypervisor may never be located there, or None."""
        sw = self.fabric.switch_by_dpid(dpid)
        return vlan_portgroups.placement_refusal(self.policy, iface_id, sw.name) if sw is not None else None

    def _name(self, dpid: int) -> str:
        sw = self.inv.switches.get(dpid) or self.fabric.switch_by_dpid(dpid)
        return sw.name if sw is not None else '%016x' % dpid

    def _log_bindings(self, dpid: int, before: dict, after: dict, was: dict, moved: set, by: str) -> None:
        """The event log's view of one bindings change: ports bound and unbound here, nics
        that moved (an activation when the new place had waited), places left waiting."""
        hv = self._name(dpid)
        for no, b in sorted(before.items()):
            if after.get(no) != b:
                self.events.record('unbind', hypervisor=hv, iface_id=b.iface_id, port=no)
        for no, b in sorted(after.items()):
            if before.get(no) != b:
                self.events.record('bind', hypervisor=hv, iface_id=b.iface_id, port=no)
                where = self.inv.locations.get(b.iface_id)
                if (b.iface_id, dpid) in self.inv.refused_places:
                    self.events.record('refused', hypervisor=hv, iface_id=b.iface_id,
                                       reason=self.inv.refused_places[(b.iface_id, dpid)])
                elif where is not None and where != (dpid, no):
                    self.events.record('pending', hypervisor=hv, iface_id=b.iface_id, port=no,
                                       reason='waiting for a GARP/RARP from the VM (located on %s)'
                                              % self._name(where[0]))
        for i in sorted(moved):
            old, new = was.get(i), self.inv.locations.get(i)
            if new is not None and old is not None:
                self.events.record('activate', hypervisor=self._name(new[0]), iface_id=i, port=new[1], by=by)
            self.events.record('move', iface_id=i, **{'from': self._name(old[0]) if old else None,
                                                      'to': self._name(new[0]) if new else None})

    def activate(self, dpid: int, port: int, how: str) -> str | None:
        """A VM showed itself on a port waiting for activation (a GARP or RARP punted by
        port_security): that port becomes its nic's location, and every flow that depends on
        where the nic is follows in one converge per switch.  The iface-id, or None."""
        with self.lock:
            was = dict(self.inv.locations)
            iface_id = self.inv.activate(dpid, port)
            if iface_id is None:
                return None
            LOG.info('%s activated on %s port %d by a %s', iface_id, self._name(dpid), port, how)
            self._log_bindings(dpid, {}, {}, was, {iface_id}, how)
            self._arrived = {dpid}
            self._invalidate_units(self._nic_units({iface_id}))
            return iface_id

    def _located_at(self, dpid: int, port: int | None = None) -> list[str]:
        return [i for i, (d, p) in self.inv.locations.items() if d == dpid and port in (None, p)]

    def settling(self, dpid: int) -> bool:
        return time.monotonic() < self._settle_until.get(dpid, 0)

    def picture_complete(self) -> bool:
        """Do we know every switch's state that another switch's flows depend on?  After a
        (re)start, not until every fabric hypervisor has reported its bindings (or
        PICTURE_WAIT has passed): until then flows stay as installed, so a hypervisor whose own
        bindings came first never drops its flows toward a VM whose hypervisor has not
        reported yet."""
        if time.monotonic() - self._started >= PICTURE_WAIT:
            return True
        return all(h.dpid in self.inv.bindings for h in self.fabric.hypervisors.values())

    # ---- events (from the OpenFlow shim; thin, never block on a switch) ----------------

    def switch_up(self, conn, ports: list[tuple[int, str, bool]]) -> None:
        node = self.fabric.switch_by_dpid(conn.dpid)
        if node is None:
            LOG.warning('datapath %016x is not in %s: left alone', conn.dpid, self.fabric.source)
            return
        kind = 'hypervisor' if node.name in self.fabric.hypervisors else 'physical'
        with self.lock:
            sw = SwitchState(conn.dpid, node.name, kind)
            # a physical switch back within AWAY_GRACE keeps the roles of its ports that stayed up
            # (LLDP confirms them): its neighbours go on using its cables meanwhile
            old = self.inv.switches.get(conn.dpid) if self._away.pop(conn.dpid, None) is not None else None
            self._returned.discard(conn.dpid)
            if old is not None:
                self._returned.add(conn.dpid)
                # no LLDP crossed its cables while it was away: give them LINK_TIMEOUT from now
                # to be heard again, not from before it left
                now = time.monotonic()
                for rx, (tx, _) in list(self.inv.links.items()):
                    if conn.dpid in (rx.dpid, tx.dpid):
                        self.inv.links[rx] = (tx, now)
            for no, name, up in ports:
                was = old.ports.get(no) if old is not None else None
                kept = was is not None and was.name == name and was.up and up
                sw.ports[no] = was if kept else Port(no, name, up, self._initial_role(kind, name))
            self.inv.switches[conn.dpid] = sw
            self.conns[conn.dpid] = conn
            self.rec.forget(conn.dpid)
            self._invalidate(conn.dpid)
            self._invalidate_units(self._nic_units(self._located_at(conn.dpid)))
            # settle: keep what the switch holds until we know enough to compute it right --
            # its cables (physical) or which VM is on which port (hypervisor: OVSDB bindings)
            wait = SETTLE if kind == 'physical' else (BINDINGS_WAIT if self._watch_bindings else 0)
            self._settle_until[conn.dpid] = time.monotonic() + wait
            self._loads.append(conn.dpid)
            self._wake.notify_all()
            if kind == 'hypervisor':
                self._follow_bindings(node.name, conn)
                # before any flow that uses it (the same connection keeps the order)
                set_meter = getattr(conn, 'set_meter', None)
                if set_meter is not None:
                    set_meter(anycast_gateway.METER, anycast_gateway.METER_PPS, anycast_gateway.METER_BURST)
            _port_meters(conn, [no for no, _, _ in ports])        # floods: before the flows that use them
            eventlog.connected(self.events, self._went_down, conn, node.name, kind, len(ports))
        LOG.info('%s %s (%016x) connected with %d ports', kind, node.name, conn.dpid, len(ports))

    def switch_down(self, conn) -> None:
        with self.lock:
            if self.conns.get(conn.dpid) is not conn:
                return                          # an older connection of a switch that is back
            del self.conns[conn.dpid]
            self.rec.forget(conn.dpid)
            sw = self.inv.switches.get(conn.dpid)
            eventlog.disconnected(self.events, self._went_down, conn, sw)
            if sw is not None and sw.kind == 'physical':
                # Its flows go on forwarding (fail_mode secure) and its cables are still there:
                # it stays in the topology, so no neighbour reroutes around it, until a
                # neighbour sees a cable to it go down or it has been away AWAY_GRACE.
                self._away[conn.dpid] = time.monotonic()
                self.inv.macs.pop(conn.dpid, None)      # read back from its flows when it returns
                self.inv.refused.pop(conn.dpid, None)
                self.inv.shutdown.pop(conn.dpid, None)
                self._stale.pop(conn.dpid, None)
                self._stale_units.pop(conn.dpid, None)
                LOG.info('switch %016x disconnected: kept in the topology for %.0f s', conn.dpid, AWAY_GRACE)
                return
            self._forget_switch(conn.dpid)
        LOG.info('switch %016x disconnected', conn.dpid)

    def _forget_away(self, now: float) -> None:
        """Physical switches away for AWAY_GRACE leave the topology (neighbours reroute)."""
        with self.lock:
            for dpid in [d for d, since in self._away.items() if now - since >= AWAY_GRACE]:
                del self._away[dpid]
                LOG.info('switch %016x away for %.0f s: forgotten', dpid, AWAY_GRACE)
                self._forget_switch(dpid)

    def _forget_switch(self, dpid: int) -> None:
        """A switch that left: drop it (a hypervisor keeps its ports: see below)."""
        with self.lock:
            sw = self.inv.switches.get(dpid)
            # -- issue 7 part 6: a hypervisor whose session drops (its ovs-vswitchd restarts,
            # its management link is down) still has its VMs on their ports and its cable on
            # its leaf: keep its ports, so its nics stay located and no other switch deletes
            # its flows toward them.  It shows as not connected (not in conns); switch_up
            # replaces it; bindings or its leaf port going down still move or drop its nics.
            if sw is None or sw.kind != 'hypervisor':
                self.inv.switches.pop(dpid, None)
            # -- end issue 7 part 6
            for no in (sw.ports if sw else ()):
                topology.port_down(self.inv, dpid, no)
            self.inv.macs.pop(dpid, None)
            self.inv.refused.pop(dpid, None)
            self.inv.shutdown.pop(dpid, None)
            self._stale.pop(dpid, None)
            self._stale_units.pop(dpid, None)
            self._invalidate_units(self._nic_units(self._located_at(dpid)))
            self._topology_changed()

    def _follow_bindings(self, name: str, conn) -> None:
        old = self._watchers.pop(conn.dpid, None)
        if old is not None:
            old.stop()
        address = getattr(conn, 'address', None)
        if self._watch_bindings is None or not address:
            return
        dpid = conn.dpid
        self._watchers[dpid] = self._watch_bindings(
            name, address, lambda bindings, vtep_mac=None, claims=frozenset():
            self.bindings_changed(dpid, bindings, vtep_mac, claims))

    def bindings_changed(self, dpid: int, bindings: dict[int, Binding], vtep_mac: str | None = None,
                         claims=frozenset()) -> None:
        """A hypervisor's bound interfaces (or its VTEP's MAC) changed in its OVSDB: every
        switch's known-nic and underlay flows may.  claims: iface-ids of its rows without a
        port (a VM in flight: where such a nic is located, it stays until a new port is
        activated, see Inventory.relocate)."""
        claims = frozenset(claims)
        with self.lock:
            if (self.inv.bindings.get(dpid) == bindings and self.inv.vtep_macs.get(dpid) == vtep_mac
                    and self.inv.claims.get(dpid, frozenset()) == claims and not self._settle_until.get(dpid)):
                return
            complete = self.picture_complete()
            pg = vlan_portgroups
            local, routed = pg.local_vlans(self.policy, self.inv, dpid), pg.routed_vlans(self.policy, self.inv, dpid)
            routing = pg.routing_tenants(self.policy, self.inv, dpid)
            before, was = self.inv.bindings.get(dpid, {}), dict(self.inv.locations)
            moved = self.inv.bind(dpid, bindings, claims, self._refuse)
            self._log_bindings(dpid, before, bindings, was, moved, 'old-place-gone')
            # port security: the nics whose ports changed here (apps/port_security.py)
            self._invalidate(dpid, {port_security.APP + incremental.CONTEXT})
            rebound = port_security.changed(before, bindings)
            self._stale_units.setdefault(dpid, set()).update((port_security.APP, i) for i in rebound)
            # a nic located here whose port went (in flight): what its entries read changed too
            self._invalidate_units(self._nic_units({i for i in rebound if self.inv.locations.get(i, (None,))[0] == dpid}))
            if moved:
                LOG.info('nic locations changed: %s', sorted(moved))
            self._bindings_invalidate(dpid, (local ^ pg.local_vlans(self.policy, self.inv, dpid))
                                      | (routed ^ pg.routed_vlans(self.policy, self.inv, dpid)), moved)
            routing_now = pg.routing_tenants(self.policy, self.inv, dpid)
            if routing != routing_now:
                self._invalidate(dpid, {anycast_gateway.APP})
                self._invalidate_units(self._routing_units(routing ^ routing_now))
            if vtep_mac and self.inv.vtep_macs.get(dpid) != vtep_mac.lower():
                self.inv.vtep_macs[dpid] = vtep_mac.lower()
                for d, sw in self.inv.switches.items():
                    if sw.kind == 'physical':
                        self._invalidate(d, {'underlay_routing'})
            if self._settle_until.get(dpid):
                self._settle_until[dpid] = 0          # the first snapshot: it may be programmed now
            LOG.info('%016x bindings: %s', dpid, sorted(b.iface_id for b in bindings.values()))
            if not complete and self.picture_complete():
                LOG.info('every hypervisor has reported its bindings: programming from the whole picture')
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
                self.inv.shutdown.get(dpid, set()).discard(no)             # its number may be reused
                _port_meters(self.conns.get(dpid), [no], delete=True)      # floods
            elif old is None or old.up != up:
                if old is None:
                    _port_meters(self.conns.get(dpid), [no])                # floods
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
            else:                                # the entries of a nic on this port, everywhere
                self._invalidate_units(self._nic_units(self._located_at(dpid, no)))
            self._invalidate(dpid)

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
            if table_id == tables.table_id('port_sec') and sw.kind == 'hypervisor':
                how = port_security.announcement(self.policy, self.inv, dpid, in_port, data)
                if how is not None:
                    self.activate(dpid, in_port, how)
                return
            if table_id == tables.table_id('l3') and sw.kind == 'hypervisor':
                reply = anycast_gateway.time_exceeded(self.policy, data)     # TTL expired at the gateway
                conn = self.conns.get(dpid)
                if reply is not None and conn is not None:
                    conn.packet_out(in_port, reply)
                return
            if table_id not in (tables.table_id('learn'), tables.table_id('punt')) or len(data) < 14:
                return
            vlan = _vlan_of(data)
            src = ':'.join('%02x' % b for b in data[6:12])
            was_shut = learning_switch.is_shut(self.inv, dpid, in_port)
            if vlan is not None and learning_switch.learn(self.fabric, self.inv, dpid, in_port, vlan, src):
                self._invalidate(dpid, {learning_switch.APP})
                if not was_shut and learning_switch.is_shut(self.inv, dpid, in_port):
                    self._port_shut(sw, in_port, vlan, src)

    def _port_shut(self, sw, no: int, vlan: int, mac: str) -> None:
        self._shutting.add(sw.dpid)
        learning = self.fabric.learning
        port = sw.ports.get(no)
        LOG.warning('%s port %d (%s) shut for %d s: source %s on VLAN %d is one more than its %d MACs '
                    '(learning.violation: shutdown)', sw.name, no, port.name if port else '?',
                    learning.errdisable_recovery, mac, vlan, learning.max_macs_per_port)
        self.events.record('port_shutdown', switch=sw.name, port=no, name=port.name if port else None,
                           mac=mac, vlan=vlan, max_macs=learning.max_macs_per_port,
                           recovery_s=learning.errdisable_recovery)

    def flow_removed(self, dpid: int, flow: Flow) -> None:
        flow = Flow(flow.table, flow.priority, flow.match, cookie=self.cookies.decode(flow.cookie)) \
            if isinstance(flow.cookie, int) else flow
        with self.lock:
            self.rec.removed(dpid, flow.key)
            if learning_switch.forget(self.inv, dpid, flow):
                self._invalidate(dpid, {learning_switch.APP})
                if flow.table == 'port_sec':                   # a shut port's hold time ended
                    sw = self.inv.switches.get(dpid)
                    no = flow.match_dict().get('in_port')
                    LOG.info('%s port %s: errdisable recovery, open again', sw.name if sw else dpid, no)
                    self.events.record('port_recovery', switch=sw.name if sw else '%016x' % dpid, port=no)

    # ---- policy (from the API thread) ------------------------------------------------------

    def apply_policy(self, candidate: Policy, dry_run: bool = False, timeout: float = 60) -> dict:
        """Make `candidate` the running policy and wait until every connected switch has
        converged to it.  Returns {switch name: Diff} -- each switch's own diff for this
        policy, not a later learning event's; with dry_run nothing changes (the diff is
        computed against what each switch holds, with ids a scratch copy would give).
        Raises RuntimeError if a switch failed."""
        with self.lock:
            names = {d: sw.name for d, sw in self.inv.switches.items() if d in self.conns}
            if dry_run:
                scratch = candidate.with_ids(idstore.bind(self.ids.copy(), candidate))
                want = {d: self.desired(d, scratch) for d in names}
                return {names[d]: reconciler.diff(want[d], self.rec.installed(d) or set()) for d in names}
            candidate = candidate.with_ids(idstore.bind(self.ids, candidate))
            self.ids.save()
            old_fabric = self.policy.fabric
            self.policy = candidate
            self.inv.relocate(self._refuse)      # a network's VLAN may have changed: who may be where
            if candidate.fabric != old_fabric:   # named cables, and which switches open at once
                topology.use_fabric(candidate.fabric, self.inv)
                if topology.classify_ports(candidate.fabric, self.inv, time.monotonic()):
                    self._topology_changed()
            self._diffs = {id(candidate): {}}
            for d in self.inv.switches:
                self._invalidate(d)
            deadline = time.monotonic() + timeout
            mine = self._diffs[id(candidate)]
            while time.monotonic() < deadline:
                target = self._generation
                self._wake.notify_all()          # the worker bumps the generation when idle
                while self._generation <= target and time.monotonic() < deadline:
                    self._wake.wait(deadline - time.monotonic())
                # converges right after a (re)start keep what switches hold: wait for the one
                # that applies this policy (the picture is whole at PICTURE_WAIT at the latest)
                if all(d in mine or d not in self.conns for d in names) or time.monotonic() >= deadline:
                    break
                self._wake.wait(min(TICK, max(0.0, deadline - time.monotonic())))
            failed = sorted(names[d] for d in names if d in self._retry or d in self._dirty or d not in mine)
            if failed:
                raise RuntimeError('switches not converged (will keep retrying): %s' % ', '.join(failed))
            return {names[d]: mine[d] for d in names}

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
                self._invalidate(dpid)

    # ---- worker: the only thread that writes to switches --------------------------------

    def _work(self) -> None:
        while True:
            with self.lock:
                while not (self._stopped or self._loads or self._dirty):
                    self._generation += 1          # everything asked for so far is done
                    if not self._retry and self.picture_complete():
                        self.ids.settled()         # no flow carries a released id any more
                    self._wake.notify_all()
                    self._wake.wait()
                if self._stopped:
                    return
                load = self._loads.pop(0) if self._loads else None
                if load is None:
                    now = time.monotonic()
                    batch = sorted((d for d in self._dirty if self._retry.get(d, (0.0,))[0] <= now),
                                   key=self._converge_order)
                    if not batch:                  # only failing switches, still backing off
                        self._wake.wait(max(0.01, min(self._retry[d][0] for d in self._dirty) - now))
                        continue
                    self._dirty.difference_update(batch)
                    self._shutting.clear()
            if load is not None:
                if not self._load(load):
                    continue
                batch = [load]
                with self.lock:
                    self._dirty.discard(load)
            self._converge_batch(batch, send_lldp=load is not None)

    def _converge_order(self, dpid: int) -> tuple:
        """A switch with a port to shut first (each moment it waits, a flood of forged sources
        costs its datapath an upcall a frame); then hypervisors (where a moved VM's traffic is
        delivered and sent from), the one where a VM just arrived before them all; then
        physical switches."""
        sw = self.inv.switches.get(dpid)
        return (dpid not in self._shutting, dpid not in self._arrived, sw is None or sw.kind != 'hypervisor', dpid)

    def _load(self, dpid: int) -> bool:
        """Read a (re)connected switch's flows and adopt what it learned."""
        conn = self.conns.get(dpid)
        if conn is None:
            return False
        try:
            installed = self.rec.load(conn)
        except Exception as e:
            self._failed(dpid, e)
            return False
        with self.lock:
            learning_switch.adopt(self.inv, dpid, installed)
            if not installed and (dpid in self.inv.open_at_once or dpid in self._returned):
                # an empty switch (new, or its OVS restarted) whose every cable the fabric file
                # names, or that came back within AWAY_GRACE with its cables known: nothing to
                # keep, and no discovery to wait for -- program it now.  (One with unnamed
                # cables settles first: programmed while LLDP still rediscovers them, it would
                # install flows only to replace them a moment later.)
                self._settle_until[dpid] = 0
        return True

    def _converge_batch(self, batch, send_lldp=False) -> None:
        """Compile (incrementally, from one snapshot taken under the lock, compiled outside
        it) every switch of the batch, then converge them: make before break first (the new
        fabric flows on every switch), then each switch's whole change in one bundle."""
        with self.lock:
            snap, policy = self.inv.snapshot(), self.policy
            jobs = [(d, self.conns.get(d), self._stale.pop(d, set()), self._stale_units.pop(d, set()),
                     self.settling(d), self.picture_complete()) for d in batch]
        plans = []
        for dpid, conn, stale, units, settling, complete in jobs:
            if conn is None:
                continue
            try:
                plans.append(self._plan(conn, snap, policy, stale, units, settling, complete))
            except Exception as e:
                self._failed(dpid, e)
        if len(plans) > 1:
            for plan in list(plans):
                try:
                    self._make_before_break(plan)
                except Exception as e:
                    plans.remove(plan)
                    self._failed(plan.conn.dpid, e)
        for plan in plans:
            try:
                self._push(plan)
                with self.lock:
                    self._retry.pop(plan.conn.dpid, None)
            except Exception as e:
                self._failed(plan.conn.dpid, e)
            # Compiled flows are long-lived and acyclic: keep the cyclic collector from
            # walking hundreds of thousands of them (a 0.2-1 s pause per full collection at
            # 10,000 workloads).  Refcounting still frees them; freeze() moves them aside, O(1).
            gc.freeze()
        if send_lldp:
            self.send_lldp()

    def _failed(self, dpid: int, e: Exception) -> None:
        with self.lock:
            _, backoff = self._retry.get(dpid, (0.0, RETRY_FIRST / 2))
            backoff = min(RETRY_MAX, backoff * 2)
            self._retry[dpid] = (time.monotonic() + backoff, backoff)
            if not getattr(e, 'nothing_applied', False):
                self.rec.forget(dpid)      # we no longer know what it holds: read it again
            self._dirty.add(dpid)
        LOG.error('converging switch %016x failed; retrying in %.2fs', dpid, backoff, exc_info=e)

    def _converge(self, conn, snap=None, policy=None, stale=None, units=None, settling=None, complete=None) -> None:
        """Bring one switch to its desired flows.  Called by the worker with a snapshot and
        the stale marks it took; called bare (tests), it takes them itself."""
        if snap is None:
            with self.lock:
                snap, policy = self.inv.snapshot(), self.policy
                stale, units = self._stale.pop(conn.dpid, set()), self._stale_units.pop(conn.dpid, set())
                settling, complete = self.settling(conn.dpid), self.picture_complete()
        self._push(self._plan(conn, snap, policy, stale, units, settling, complete))

    def _plan(self, conn, snap, policy, stale, units, settling, complete) -> '_Plan':
        """Compile one switch: what entered and what left its desired set."""
        compiled = self._compiled.get(conn.dpid)
        if compiled is None:
            compiled, stale = incremental.Compiled(), ALL
        try:
            incremental.compile_switch(self.apps, policy, snap, conn.dpid, compiled, stale, units)
        except Exception:
            self._compiled.pop(conn.dpid, None)     # start from scratch next time
            raise
        self._compiled[conn.dpid] = compiled
        removed, added = compiled.take_changes()
        return _Plan(conn, policy, compiled, removed, added, settling or not complete)

    def _make_before_break(self, plan: '_Plan') -> None:
        """Add the fabric's new flows (MAKE_BEFORE_BREAK apps) to one switch ahead of the
        batch's replacements and deletes, on any switch.  A cable that comes back up is then
        admitted at both its ends, and the switch beyond it routes over it, before any switch
        hashes traffic onto it: programmed one switch after another, the leaf that starts
        using it first dropped what it sent until the far leaf admitted the cable."""
        dpid = plan.conn.dpid
        if plan.keeping:
            return
        rewritten = self.bonded(dpid) or dpid in self._rewritten
        source = plan.added if self.rec.in_sync(dpid) and not rewritten else plan.compiled.flows()
        new = {f for f in source if cookies.app_of(f.cookie) in MAKE_BEFORE_BREAK}
        if rewritten:
            new = self.rewrite(dpid, new)
        if new:
            plan.early = self.rec.add_new(plan.conn, new, before_apply=self._register)

    def _push(self, plan: '_Plan') -> None:
        """Send one switch its change in one bundle."""
        conn, compiled, dpid = plan.conn, plan.compiled, plan.conn.dpid
        if plan.keeping:
            # Just (re)started or connected: keep whatever the switch holds (it forwards while
            # we rediscover the topology and hear every hypervisor's bindings) and add only
            # what discovery needs; the rest goes in one bundle once the picture is whole.
            if self.rec.installed(dpid) is None:
                self.rec.load(conn)            # forgotten after a failure: what to keep is on the switch
            have = self.rec.installed(dpid) or set()
            keys = {f.key for f in have}
            desired = have | {f for f in self.rewrite(dpid, compiled.flows()) if f.key not in keys
                              and cookies.app_of(f.cookie) == topology.APP}
            d = self.rec.converge(conn, desired, before_apply=self._register, in_sync=False)
        elif self.bonded(dpid) or dpid in self._rewritten:
            # rewritten flows (or rewritten last time): no delta, the whole set
            if self.bonded(dpid):
                self._rewritten.add(dpid)
            else:
                self._rewritten.discard(dpid)
            d = self.rec.converge(conn, self.rewrite(dpid, compiled.flows()), before_apply=self._register)
        else:
            try:
                if not self.rec.in_sync(dpid):
                    raise reconciler.OutOfSync(dpid)
                d = self.rec.converge_delta(conn, plan.removed, plan.added, compiled.wanted,
                                            before_apply=self._register)
            except reconciler.OutOfSync:
                d = self.rec.converge(conn, compiled.flows(), before_apply=self._register)
        d = d.after(plan.early)                    # the switch's whole change, as one
        with self.lock:
            self.last_diff[dpid] = d
            if not plan.keeping:                   # an apply reports the converge that did it
                self._diffs.setdefault(id(plan.policy), {}).setdefault(dpid, d)

    def _register(self, diff) -> None:
        """Before flows go out: their cookies have ids, and those ids are on disk."""
        for f in diff.add:
            self.cookies.encode(f.cookie)
        self.ids.save()

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
                if not self._whole_picture and self.picture_complete():
                    self._whole_picture = True      # (by timeout, or the last bindings came)
                    for dpid in self.inv.switches:
                        self._mark(dpid)
                self._forget_away(now)
                # no LLDP crosses an away switch's cables (it is not ours to send or hear): keep them
                if topology.expire(self.fabric, self.inv, now, held=set(self._away)):
                    self._topology_changed()
                for dpid, until in list(self._settle_until.items()):
                    if until and now >= until:
                        self._settle_until[dpid] = 0
                        self._mark(dpid)
                for dpid, (when, _) in self._retry.items():
                    if now >= when:
                        self._mark(dpid)

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


def _port_meters(conn, ports, delete: bool = False) -> None:
    """Create (or delete) the per-port packet-in meters of controller/floods.py."""
    fn = getattr(conn, 'delete_meter' if delete else 'set_meter', None)
    for no in ports if fn is not None else ():
        for mid, pps, burst in floods.port_meters(no):
            fn(mid) if delete else fn(mid, pps, burst)
