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

from controller import metrics
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

    def after(self, early: 'Diff') -> 'Diff':
        """This change with `early`, sent ahead of it, folded in: the switch's whole change."""
        return Diff(_sorted(early.delete + self.delete), _sorted(early.add + self.add)) if early else self


def diff(desired: Iterable[Flow], installed: Iterable[Flow]) -> Diff:
    return _diff(_by_key(desired), _by_key(installed))


def _by_key(flows: Iterable[Flow]) -> dict[tuple, Flow]:
    return {f.key: f for f in flows}


def _diff(want: dict[tuple, Flow], have: dict[tuple, Flow]) -> Diff:
    """Deletes of keys no longer wanted, adds of new or changed flows (the same object is
    unchanged without comparing it: compiled flows are reused from one converge to the next)."""
    if not have:
        return Diff((), _sorted(want.values()))
    get = have.get
    delete = _sorted([f for k, f in have.items() if k not in want])
    add = _sorted([f for k, f in want.items() if (g := get(k)) is not f and g != f])
    return Diff(delete, add)


FULL_ORDER_MAX = 4096


def _sorted(flows) -> tuple:
    """Table by table, by priority, then by match -- for up to FULL_ORDER_MAX flows.  A bigger
    diff keeps (table, priority) order only: the full order cost a third of a 100,000-flow push
    (issue 11 part 4), and keys are unique in a diff, so no two changes touch one entry and
    their order cannot matter to the switch."""
    flows = list(flows)
    return tuple(sorted(flows, key=_order if len(flows) <= FULL_ORDER_MAX else _coarse))


def _order(f: Flow) -> tuple:
    # repr() because a field's values may mix exact and masked (value, mask) forms, which do
    # not compare with '<'.
    return (f.table, f.priority, repr(f.match))


def _coarse(f: Flow) -> tuple:
    return (f.table, f.priority)


class OutOfSync(RuntimeError):
    """converge_delta on a switch that is not in sync any more (the caller diffs it all)."""


class Reconciler:
    """What each switch holds, as far as we know.  converge() runs on the converge thread;
    removed() comes from the event loop: a lock and the keys removed *during* a converge keep
    one from undoing the other (an entry that aged out while its bundle was in flight).

    A switch is *in sync* after a converge that left it holding exactly the desired set; then
    the next change can be sent from what changed in the desired set (converge_delta) instead
    of diffing everything.  Anything unexpected (a read, a failure, an entry the switch removed
    itself, a converge that kept extra flows) drops it out of sync: the next converge diffs all."""

    def __init__(self):
        self._installed: dict[int, dict[tuple, Flow]] = {}
        self._removed_during: dict[int, set[tuple]] = {}
        self._sync: set[int] = set()
        self._lock = threading.Lock()

    def installed(self, dpid: int) -> set[Flow] | None:
        with self._lock:
            have = self._installed.get(dpid)
            return set(have.values()) if have is not None else None

    def count(self, dpid: int) -> int:
        with self._lock:
            return len(self._installed.get(dpid, ()))

    def in_sync(self, dpid: int) -> bool:
        return dpid in self._sync

    def load(self, conn: SwitchConn) -> set[Flow]:
        """Read what the switch holds now (on connect/reconnect)."""
        flows = conn.read_flows()
        with self._lock:
            self._installed[conn.dpid] = {f.key: f for f in flows}
            self._sync.discard(conn.dpid)
        if LOG.isEnabledFor(logging.DEBUG):       # (the text of 100,000 flows takes seconds)
            LOG.debug('switch %016x holds %d flows:\n%s', conn.dpid, len(flows),
                      '\n'.join(sorted(map(str, flows))))
        return flows

    @metrics.timed_converge
    def converge(self, conn: SwitchConn, desired: set[Flow], dry_run: bool = False,
                 before_apply: Callable[[Diff], None] | None = None, in_sync: bool = True) -> Diff:
        """Make the switch hold `desired`: diff against everything it holds."""
        with self._lock:
            have = self._installed.get(conn.dpid)
        if have is None:
            self.load(conn)
        with self._lock:
            have = dict(self._installed[conn.dpid])
        want = _by_key(desired)
        d = _diff(want, have)
        if dry_run:
            return d
        self._send(conn, d, before_apply)
        with self._lock:
            if conn.dpid in self._installed:
                self._installed[conn.dpid] = self._settle(conn.dpid, want)
                if in_sync:
                    self._sync.add(conn.dpid)
        _log_flows(conn.dpid, d, have)
        return d

    @metrics.timed_converge
    def converge_delta(self, conn: SwitchConn, removed: set[Flow], added: set[Flow],
                       wanted: Callable[[tuple], Flow | None],
                       before_apply: Callable[[Diff], None] | None = None) -> Diff:
        """The switch is in sync with the desired set as it was; send what changed in it:
        `removed` left the set, `added` entered it, wanted(key) is the new set's flow for a key."""
        with self._lock:
            have = self._installed.get(conn.dpid)
        if have is None or conn.dpid not in self._sync:     # forgotten meanwhile: diff everything
            raise OutOfSync(conn.dpid)
        with self._lock:
            add = _sorted([f for f in added if (g := have.get(f.key)) is not f and g != f])
            delete = _sorted([f for f in removed if f.key in have and wanted(f.key) is None])
        d = Diff(delete, add)
        self._send(conn, d, before_apply)
        _log_flows(conn.dpid, d, have)
        self._record(conn.dpid, d, in_sync=True)
        return d

    def add_new(self, conn: SwitchConn, flows: Iterable[Flow],
                before_apply: Callable[[Diff], None] | None = None) -> Diff:
        """Make before break: add those of `flows` whose key the switch does not hold, and
        nothing else (no entry is replaced or deleted).  They come from the new desired set,
        so a switch in sync stays so: the converge that follows sends the rest of the change
        and skips these (the same objects)."""
        with self._lock:
            have = self._installed.get(conn.dpid)
            if have is None:
                return Diff()
            add = _sorted([f for f in flows if f.key not in have])
            was_in_sync = conn.dpid in self._sync
        d = Diff((), add)
        if not d:
            return d
        self._send(conn, d, before_apply)
        _log_flows(conn.dpid, d, {})
        self._record(conn.dpid, d, in_sync=was_in_sync)
        return d

    def _record(self, dpid: int, d: Diff, in_sync: bool) -> None:
        """A sent delta is on the switch: update what it holds (less what it removed itself
        meanwhile); it is in sync again if it was and nothing went behind our back."""
        with self._lock:
            have = self._installed.get(dpid)
            if have is not None:
                for f in d.delete:
                    have.pop(f.key, None)
                for f in d.add:
                    have[f.key] = f
                gone = self._removed_during.pop(dpid, set())
                for key in gone:
                    have.pop(key, None)
                if in_sync and not gone:
                    self._sync.add(dpid)

    def _send(self, conn, d: Diff, before_apply) -> None:
        with self._lock:
            self._sync.discard(conn.dpid)          # until it is done: a failure leaves it unknown
            self._removed_during[conn.dpid] = set()
        if d:
            if before_apply is not None:
                before_apply(d)
            conn.apply(list(d.delete), list(d.add))
            LOG.info('switch %016x: %s flows', conn.dpid, d.summary())

    def _settle(self, dpid: int, want: dict) -> dict:
        gone = self._removed_during.pop(dpid, set())
        if gone:
            self._sync.discard(dpid)
            return {k: f for k, f in want.items() if k not in gone}
        return want

    def removed(self, dpid: int, key: tuple) -> None:
        """The switch removed an entry itself (idle/hard timeout)."""
        with self._lock:
            have = self._installed.get(dpid)
            if have is not None and have.pop(key, None) is not None:
                self._sync.discard(dpid)
            if dpid in self._removed_during:
                self._removed_during[dpid].add(key)

    def forget(self, dpid: int) -> None:
        with self._lock:
            self._installed.pop(dpid, None)
            self._sync.discard(dpid)


def _log_flows(dpid: int, d: Diff, had: dict) -> None:
    """At DEBUG, every flow a converge sent (what replaced what, too)."""
    if not d or not LOG.isEnabledFor(logging.DEBUG):
        return
    for f in d.delete:
        LOG.debug('switch %016x: - %s', dpid, f)
    for f in d.add:
        LOG.debug('switch %016x: + %s%s', dpid, f,
                  '\n    (replacing %s)' % had[f.key] if f.key in had else '')
