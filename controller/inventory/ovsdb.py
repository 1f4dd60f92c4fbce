"""Hypervisor bindings from OVSDB: which VM nic (external_ids:iface-id) is on which br-int port.

One thread per hypervisor keeps a python-ovs IDL replica of the Bridge/Port/Interface tables
of that hypervisor's ovsdb-server (reached over the management LAN) and reports br-int's
bound interfaces whenever they change.  The IDL reconnects by itself.  OvsdbWatcher is that
thread, shared with controller/inventory/bonds.py's BondWatcher (bonds and their members).
"""
from __future__ import annotations

import logging
import threading

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.stream

from controller.inventory.model import Binding

LOG = logging.getLogger('opendvs.ovsdb')
OVSDB_PORT = 6640
BRIDGE = 'br-int'
VTEP_BRIDGE = 'br-phy'


def _fetch_schema(remote: str):
    err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote), 5000)
    if err:
        raise OSError(err, 'cannot reach OVSDB at %s' % remote)
    rpc = ovs.jsonrpc.Connection(stream)
    try:
        err, reply = rpc.transact_block(ovs.jsonrpc.Message.create_request('get_schema', ['Open_vSwitch']))
        if err or reply.error:
            raise OSError(err or 0, 'get_schema from %s failed: %s' % (remote, reply and reply.error))
        return reply.result
    finally:
        rpc.close()


def _one(value):
    """python-ovs gives optional columns as lists."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def read_vtep_mac(idl) -> str | None:
    """The MAC of br-phy's internal port, where the hypervisor's VTEP address lives."""
    for iface in idl.tables['Interface'].rows.values():
        if iface.name == VTEP_BRIDGE:
            return _one(iface.mac_in_use)
    return None


def _bound_interfaces(idl):
    """(ofport or None, iface-id, Interface row) of br-int's interfaces that carry an iface-id."""
    for br in idl.tables['Bridge'].rows.values():
        if br.name != BRIDGE:
            continue
        for port in br.ports:
            for iface in port.interfaces:
                ofport, ids = _one(iface.ofport), dict(iface.external_ids)
                if 'iface-id' in ids:
                    yield (ofport if ofport and ofport > 0 else None), ids, iface


def read_bindings(idl) -> dict[int, Binding]:
    return {ofport: Binding(iface.name, ids['iface-id'], ids.get('attached-mac', '').lower())
            for ofport, ids, iface in _bound_interfaces(idl) if ofport is not None}


def read_claims(idl) -> frozenset[str]:
    """The iface-ids of br-int Interface rows with no port (ofport -1 or not yet assigned): a
    VM whose device is gone (in flight during a live migration) or not there yet."""
    return frozenset(ids['iface-id'] for ofport, ids, _ in _bound_interfaces(idl) if ofport is None)


class OvsdbWatcher:
    """One thread following one ovsdb-server through a python-ovs IDL replica of COLUMNS:
    after every change it reads the replica (read()) and reports a reading that differs from
    the last one reported (report()).  The IDL reconnects by itself; an error (the server is
    unreachable for its schema) is logged and retried after RETRY s.  The last reading
    outlives a reconnect, so a database that comes back as it was reports nothing."""

    COLUMNS: dict[str, list[str]] = {}
    THREAD = 'ovsdb'
    RETRY = 1.0

    def __init__(self, name: str, remote: str, on_change):
        self.name, self.remote, self.on_change = name, remote, on_change
        self._stop = threading.Event()
        self._last = None               # the last reading reported
        self._thread = threading.Thread(target=self._run, name='%s-%s' % (self.THREAD, name), daemon=True)

    def read(self, idl):
        raise NotImplementedError

    def report(self, reading) -> None:
        self.on_change(reading)

    def connected(self, idl) -> None:
        """The replica was just (re)read in full from the server."""

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch()
            except Exception as e:
                LOG.warning('%s: OVSDB %s: %s; retrying', self.name, self.remote, e)
                self._stop.wait(self.RETRY)

    def _watch(self) -> None:
        helper = ovs.db.idl.SchemaHelper(schema_json=_fetch_schema(self.remote))
        for table, columns in self.COLUMNS.items():
            helper.register_columns(table, columns)
        idl = ovs.db.idl.Idl(self.remote, helper)
        seen, monitoring = None, False
        try:
            while not self._stop.is_set():
                idl.run()
                # every (re)connection ends with the server's full dump replacing the replica
                now_monitoring = idl.state == idl.IDL_S_MONITORING
                if now_monitoring and not monitoring:
                    self.connected(idl)
                monitoring = now_monitoring
                # before the first monitor reply the replica is empty, not "nothing there": an
                # empty report would unbind every VM on that hypervisor for a moment
                if idl.has_ever_connected() and idl.change_seqno != seen:
                    seen = idl.change_seqno
                    now = self.read(idl)
                    if now != self._last:
                        self._last = now
                        self.report(now)
                poller = ovs.poller.Poller()
                idl.wait(poller)
                poller.timer_wait(500)          # wake up to notice stop()
                poller.block()
        finally:
            idl.close()


class BindingWatcher(OvsdbWatcher):
    """Watch one hypervisor's OVSDB; call on_change(bindings, vtep_mac, claims) after every change."""

    COLUMNS = {'Bridge': ['name', 'ports'], 'Port': ['name', 'interfaces'],
               'Interface': ['name', 'ofport', 'external_ids', 'mac_in_use']}

    def read(self, idl):
        return read_bindings(idl), read_vtep_mac(idl), read_claims(idl)

    def report(self, reading) -> None:
        self.on_change(*reading)

    def connected(self, idl) -> None:
        # said at every (re)connection, so a restart or cut shows the bindings were read again
        LOG.info('%s: OVSDB %s read: %d bound interfaces', self.name, self.remote, len(read_bindings(idl)))
