"""Incremental compile (OVN's incremental processing, on our scale): each switch's desired
flows are kept as *parts*, one per (app, unit), and an event recompiles only the parts it
touched.  The change to the whole set falls out of the parts that changed, so one VM
binding costs a few flows on the switches that care, not a recompile of the data center.

An app with units (a VLAN nic, an overlay network...) provides

    context(policy, inv, dpid) -> ctx                 per-switch data, built once per compile
    units(policy, inv, dpid) -> iterable of keys      the units present on this switch
    compile_unit(policy, inv, dpid, key, ctx) -> set[Flow]
    compile_switch(policy, inv, dpid, ctx) -> set[Flow]   everything that is not a unit

and compile_flows() is their union (the full compile, kept as the cross-check).  Other apps
are one part per switch: compile_flows().  The pipeline's miss flows are one more part.

Every flow entering the set is checked against its table, and two flows with one key (table,
priority, match) are a clash: PipelineError, never silently resolved.
"""
from __future__ import annotations

from controller.pipeline import tables
from controller.pipeline.flow import Flow

ALL = 'all'                 # a stale mark meaning "every part of every app"
CONTEXT = ':context'        # "<app>:context" in a stale set: refresh that app's context only
SWITCH = None               # the unit key of an app's per-switch part
EMPTY: frozenset = frozenset()


def has_units(app) -> bool:
    return hasattr(app, 'compile_unit')


class Compiled:
    """One switch's desired flows as parts, with the changes since they were last taken."""

    def __init__(self):
        self.parts: dict[tuple, frozenset[Flow]] = {}
        self._count: dict[Flow, int] = {}
        self._bykey: dict[tuple, Flow] = {}
        self.added: set[Flow] = set()
        self.removed: set[Flow] = set()
        self.contexts: dict[str, object] = {}     # app -> its context, until the app is recompiled whole

    def flows(self) -> set[Flow]:
        return set(self._count)

    def __len__(self) -> int:
        return len(self._count)

    def put(self, pkey: tuple, flows) -> bool:
        """Replace one part.  True if it changed."""
        flows = flows if isinstance(flows, frozenset) else frozenset(flows)
        old = self.parts.get(pkey, EMPTY)
        if flows == old:
            return False
        if old:
            for f in old - flows:
                self._dec(f)
        check = tables.check
        for f in (flows - old if old else flows):
            check(f, deep=False)            # the full compile (tests, dry runs) checks deep
            self._inc(f)
        if flows:
            self.parts[pkey] = flows
        else:
            self.parts.pop(pkey, None)
        return True

    def drop_app(self, app: str, keep: set) -> None:
        """Remove the parts of `app` whose unit is not in `keep`."""
        for pkey in [k for k in self.parts if k[0] == app and k[1] not in keep]:
            self.put(pkey, EMPTY)

    def wanted(self, key: tuple) -> Flow | None:
        """The desired flow with this (table, priority, match), if any."""
        return self._bykey.get(key)

    def take_changes(self) -> tuple[set[Flow], set[Flow]]:
        """(removed, added) since the last call: what left the set and what entered it."""
        changes = (self.removed, self.added)
        self.removed, self.added = set(), set()
        return changes

    def _inc(self, f: Flow) -> None:
        n = self._count.get(f)
        if n:
            self._count[f] = n + 1
            return
        other = self._bykey.get(f.key)
        if other is not None:
            raise tables.PipelineError('clash in table %s at priority %d, same match:\n  %s\n  %s'
                                       % (f.table, f.priority, other, f))
        self._bykey[f.key] = f
        self._count[f] = 1
        if self.removed and f in self.removed:
            self.removed.discard(f)
        else:
            self.added.add(f)

    def _dec(self, f: Flow) -> None:
        n = self._count[f] - 1
        if n:
            self._count[f] = n
            return
        del self._count[f]
        del self._bykey[f.key]
        if self.added and f in self.added:
            self.added.discard(f)
        else:
            self.removed.add(f)


def compile_switch(apps, policy, inv, dpid: int, compiled: Compiled, stale, stale_units) -> None:
    """Bring `compiled` up to date for one switch.  stale: ALL or a set of app names to
    recompile whole; stale_units: {(app name, unit key)} to recompile one by one."""
    if dpid not in inv.switches:
        for pkey in list(compiled.parts):
            compiled.put(pkey, EMPTY)
        return
    if stale == ALL:
        compiled.put(('pipeline', SWITCH), tables.miss_flows())
    for app in apps:
        name = app.APP
        whole = stale == ALL or name in stale
        refresh = not whole and name + CONTEXT in stale
        keys = [k for a, k in stale_units if a == name] if not whole else []
        if not whole and not keys and not refresh:
            continue
        if not has_units(app):
            compiled.put((name, SWITCH), app.compile_flows(policy, inv, dpid))
            continue
        if whole or refresh or name not in compiled.contexts:
            compiled.contexts[name] = app.context(policy, inv, dpid)
        ctx = compiled.contexts[name]
        if whole:
            present = set(app.units(policy, inv, dpid))
            compiled.put((name, SWITCH), app.compile_switch(policy, inv, dpid, ctx))
            compiled.drop_app(name, present | {SWITCH})
            keys = present
        new = {key: frozenset(app.compile_unit(policy, inv, dpid, key, ctx)) for key in keys}
        for key, flows in new.items():     # what leaves first: a port one nic left may be another's now
            old = compiled.parts.get((name, key), EMPTY)
            if old - flows:
                compiled.put((name, key), old & flows)
        for key, flows in new.items():
            compiled.put((name, key), flows)


def from_units(app, policy, inv, dpid: int) -> set[Flow]:
    """An app's whole set on one switch, from its switch part and every unit present (an
    app's compile_flows: the full compile the incremental one is checked against)."""
    if dpid not in inv.switches:
        return set()
    ctx = app.context(policy, inv, dpid)
    flows = set(app.compile_switch(policy, inv, dpid, ctx))
    for key in app.units(policy, inv, dpid):
        flows |= app.compile_unit(policy, inv, dpid, key, ctx)
    return flows


def full(apps, policy, inv, dpid: int) -> set[Flow]:
    """The whole set for one switch, compiled from scratch (the cross-check)."""
    if dpid not in inv.switches:
        return set()
    out = set(tables.miss_flows())
    for app in apps:
        out |= app.compile_flows(policy, inv, dpid)
    return out
