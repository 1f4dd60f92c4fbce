"""The reconciler: the only writer of flows.  Desired minus installed, in one bundle.

It keeps what it believes each switch holds (read from the switch on connect, then updated
after every committed bundle and every flow-removed notice) and sends only the difference:
deletes of entries no longer wanted, adds for new or changed ones (an ADD with the same
table/priority/match replaces an entry in place).  Unchanged flows are never touched, so
their counters survive policy changes and controller restarts.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Callable, Iterable, Protocol

from controller.pipeline.flow import Flow

LOG = logging.getLogger(__name__)


class SwitchConn(Protocol):
    """What the reconciler needs from a connected switch (controller/ofp.py implements it)."""
    dpid: int

    def read_flows(self) -> set[Flow]: ...

    def apply(self, delete: list[Flow], add: list[Flow]) -> None:
        """Apply all changes atomically (one bundle) or raise; an exception whose
        `nothing_applied` is true says the switch is as it was."""


@dataclasses.dataclass(frozen=True)
class Diff:
    delete: tuple[Flow, ...] = ()
    add: tuple[Flow, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.delete or self.add)

    def summary(self) -> str:
        return '+%d -%d' % (len(self.add), len(self.delete))


def diff(desired: Iterable[Flow], installed: Iterable[Flow]) -> Diff:
    want = {f.key: f for f in desired}
    have = {f.key: f for f in installed}
    delete = tuple(sorted((f for k, f in have.items() if k not in want), key=_order))
    add = tuple(sorted((f for k, f in want.items() if have.get(k) != f), key=_order))
    return Diff(delete, add)


def _order(f: Flow) -> tuple:
    # Flows are unique by key here; repr() because a field's values may mix exact and masked
    # (value, mask) forms, which do not compare with '<'.
    return (f.table, f.priority, repr(f.match))


class Reconciler:
    """What each switch holds, as far as we know.  converge() runs on the converge thread;
    removed() comes from the event loop: a lock and the keys removed *during* a converge keep
    one from undoing the other (an entry that aged out while its bundle was in flight)."""

    def __init__(self):
        self._installed: dict[int, set[Flow]] = {}
        self._removed_during: dict[int, set[tuple]] = {}
        self._lock = threading.Lock()

    def installed(self, dpid: int) -> set[Flow] | None:
        with self._lock:
            have = self._installed.get(dpid)
            return set(have) if have is not None else None

    def load(self, conn: SwitchConn) -> set[Flow]:
        """Read what the switch holds now (on connect/reconnect)."""
        flows = conn.read_flows()
        with self._lock:
            self._installed[conn.dpid] = set(flows)
        LOG.debug('switch %016x holds %d flows:\n%s', conn.dpid, len(flows), '\n'.join(map(str, sorted(flows, key=_order))))
        return flows

    def converge(self, conn: SwitchConn, desired: set[Flow], dry_run: bool = False,
                 before_apply: Callable[[Diff], None] | None = None) -> Diff:
        if self.installed(conn.dpid) is None:
            self.load(conn)
        with self._lock:
            before = set(self._installed[conn.dpid])
            self._removed_during[conn.dpid] = set()
        d = diff(desired, before)
        if d and not dry_run:
            if before_apply is not None:
                before_apply(d)
            conn.apply(list(d.delete), list(d.add))
            with self._lock:
                gone = self._removed_during.pop(conn.dpid, set())
                self._installed[conn.dpid] = {f for f in desired if f.key not in gone} if gone else set(desired)
            LOG.info('switch %016x: %s flows', conn.dpid, d.summary())
            if LOG.isEnabledFor(logging.DEBUG):
                for f in d.delete:
                    LOG.debug('switch %016x: - %s', conn.dpid, f)
                was = {f.key: f for f in before}
                for f in d.add:
                    LOG.debug('switch %016x: + %s%s', conn.dpid, f,
                              '\n    (replacing %s)' % was[f.key] if f.key in was else '')
        else:
            with self._lock:
                self._removed_during.pop(conn.dpid, None)
        return d

    def removed(self, dpid: int, key: tuple) -> None:
        """The switch removed an entry itself (idle/hard timeout)."""
        with self._lock:
            have = self._installed.get(dpid)
            if have:
                have.difference_update({f for f in have if f.key == key})
            if dpid in self._removed_during:
                self._removed_during[dpid].add(key)

    def forget(self, dpid: int) -> None:
        with self._lock:
            self._installed.pop(dpid, None)
