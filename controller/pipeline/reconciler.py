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
from typing import Iterable, Protocol

from controller import metrics
from controller.pipeline.flow import Flow

LOG = logging.getLogger(__name__)


class SwitchConn(Protocol):
    """What the reconciler needs from a connected switch (controller/ofp.py implements it)."""
    dpid: int

    def read_flows(self) -> set[Flow]: ...

    def apply(self, delete: list[Flow], add: list[Flow]) -> None:
        """Apply all changes atomically (one bundle) or raise."""


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
    def __init__(self):
        self._installed: dict[int, set[Flow]] = {}

    def installed(self, dpid: int) -> set[Flow] | None:
        return self._installed.get(dpid)

    def load(self, conn: SwitchConn) -> set[Flow]:
        """Read what the switch holds now (on connect/reconnect)."""
        flows = conn.read_flows()
        self._installed[conn.dpid] = set(flows)
        LOG.debug('switch %016x holds %d flows:\n%s', conn.dpid, len(flows), '\n'.join(map(str, sorted(flows))))
        return flows

    @metrics.timed_converge
    def converge(self, conn: SwitchConn, desired: set[Flow], dry_run: bool = False) -> Diff:
        if conn.dpid not in self._installed:
            self.load(conn)
        before = self._installed[conn.dpid]
        d = diff(desired, before)
        if d and not dry_run:
            conn.apply(list(d.delete), list(d.add))
            self._installed[conn.dpid] = set(desired)
            LOG.info('switch %016x: %s flows', conn.dpid, d.summary())
            if LOG.isEnabledFor(logging.DEBUG):
                for f in d.delete:
                    LOG.debug('switch %016x: - %s', conn.dpid, f)
                was = {f.key: f for f in before}
                for f in d.add:
                    LOG.debug('switch %016x: + %s%s', conn.dpid, f,
                              '\n    (replacing %s)' % was[f.key] if f.key in was else '')
        return d

    def removed(self, dpid: int, key: tuple) -> None:
        """The switch removed an entry itself (idle/hard timeout)."""
        have = self._installed.get(dpid)
        if have:
            have.difference_update({f for f in have if f.key == key})

    def forget(self, dpid: int) -> None:
        self._installed.pop(dpid, None)
