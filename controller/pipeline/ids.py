"""Stable ids: one allocator for every number a flow carries on behalf of a named owner.

Spaces: tenant (reg12 and cookie bits), network (reg11), zone (conntrack, reg13),
overlay_vlan (the local VLAN of a VXLAN network inside br-int), conj (conjunction ids) and
owner (cookie bits).  An id never changes while its owner exists, survives restarts (the
store is <state-dir>/ids.json, replaced atomically) and is not reused while flows carrying
it may still exist: a released id sits in quarantine until the core says every switch has
converged since (settled()), and allocation prefers never-used numbers anyway.

Adding or removing tenant B therefore never changes a number in a flow of tenant A -- the
reason this exists (overlay VLANs used to be assigned by sorting VNIs).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

LOG = logging.getLogger('opendvs.ids')
FILE = 'ids.json'

# space -> (first, last, step): overlay VLANs count down from 4094 like Neutron's local VLANs
SPACES = {
    'tenant': (1, 0xffffff, 1),
    'network': (1, 0xffffff, 1),
    'zone': (1, 0xffff, 1),
    'overlay_vlan': (4094, 2, -1),
    'conj': (1, 0xffffffff, 1),
    'owner': (1, 0xffffff, 1),
}


class IdSpaceFull(RuntimeError):
    pass


class IdStore:
    """The allocator.  Persistence is a snapshot (ids.json) plus a journal (ids.log) of what
    changed since, appended and fsynced by save(): O(new ids), so a start-up that allocates
    100,000 cookie owners does not rewrite a growing file for every switch.  The journal is
    folded into a new snapshot (written atomically, then the journal truncated) once it is
    larger than the snapshot; replaying a line twice changes nothing."""

    def __init__(self, state_dir=None):
        self.path = Path(state_dir) / FILE if state_dir else None
        self.journal = self.path.with_suffix('.log') if self.path else None
        self._lock = threading.RLock()
        self._ids: dict[str, dict[str, int]] = {s: {} for s in SPACES}
        self._rev: dict[str, dict[int, str]] = {s: {} for s in SPACES}
        self._used: dict[str, set[int]] = {s: set() for s in SPACES}     # ids + quarantine
        self._next: dict[str, int] = {s: SPACES[s][0] for s in SPACES}
        self._quarantine: dict[str, set[int]] = {s: set() for s in SPACES}
        self.notes: dict[int, str] = {}          # cookie value -> YAML file:line (the cookie registry's)
        self._pending: list[list] = []           # journal lines not yet on disk
        self._logged = 0                         # lines in the journal file
        if self.path is not None and (self.path.exists() or self.journal.exists()):
            self._load()

    # ---- allocation ---------------------------------------------------------------------

    def get(self, space: str, name: str, avoid: frozenset[int] = frozenset()) -> int:
        """The id of `name` in `space`, allocated on first use.  An existing id in `avoid`
        (an overlay VLAN a tenant now uses on a trunk) is moved: the only case an id changes."""
        have = self._ids[space].get(name)
        if have is not None and have not in avoid:
            return have
        with self._lock:
            have = self._ids[space].get(name)
            if have is not None and have not in avoid:
                return have
            if have is not None:
                LOG.warning('%s id %d of %s is now taken by the fabric; moving it', space, have, name)
                self.release(space, name)
            value = self._fresh(space, avoid)
            self._set(space, name, value)
            self._pending.append(['id', space, name, value, self._next[space]])
            return value

    def peek(self, space: str, name: str) -> int | None:
        return self._ids[space].get(name)

    def name_of(self, space: str, value: int) -> str | None:
        return self._rev[space].get(value)

    def names(self, space: str) -> Mapping[str, int]:
        return MappingProxyType(dict(self._ids[space]))

    def release(self, space: str, name: str) -> None:
        with self._lock:
            if self._release(space, name):
                self._pending.append(['release', space, name])

    def note(self, value: int, where: str) -> None:
        """Remember where (YAML file:line) the flows with this cookie value come from."""
        if self.notes.get(value) != where:
            with self._lock:
                self.notes[value] = where
                self._pending.append(['note', '%#x' % value, where])

    def settled(self) -> None:
        """Every switch has converged: no flow carries a released id any more."""
        with self._lock:
            if any(self._quarantine.values()):
                self._settle()
                self._pending.append(['settled'])

    def _set(self, space, name, value) -> None:
        self._ids[space][name] = value
        self._rev[space][value] = name
        self._used[space].add(value)

    def _release(self, space, name) -> bool:
        value = self._ids[space].pop(name, None)
        if value is None:
            return False
        self._quarantine[space].add(value)
        self._rev[space].pop(value, None)
        return True

    def _settle(self) -> None:
        for space, q in self._quarantine.items():
            self._used[space] -= q
        self._quarantine = {s: set() for s in SPACES}

    def _fresh(self, space: str, avoid) -> int:
        first, last, step = SPACES[space]
        used = self._used[space]
        span = abs(last - first) + 1
        n = self._next[space]
        for _ in range(span):
            if n not in used and n not in avoid:
                nxt = n + step
                self._next[space] = nxt if (step > 0 and nxt <= last) or (step < 0 and nxt >= last) else first
                return n
            n += step
            if (step > 0 and n > last) or (step < 0 and n < last):
                n = first
        raise IdSpaceFull('no free %s id left' % space)

    # ---- persistence --------------------------------------------------------------------

    def save(self) -> None:
        """Make every allocation so far durable (before flows carrying it go out)."""
        with self._lock:
            if self.path is None or not self._pending:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lines = ''.join(json.dumps(x) + '\n' for x in self._pending)
            with open(self.journal, 'a') as f:
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())
            self._logged += len(self._pending)
            self._pending = []
            if self._logged > max(1000, sum(map(len, self._ids.values())) + len(self.notes)):
                self._compact()

    def _compact(self) -> None:
        data = {'ids': self._ids, 'next': self._next,
                'quarantine': {s: sorted(q) for s, q in self._quarantine.items()},
                'notes': {'%#x' % k: v for k, v in self.notes.items()}}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix='.ids-', suffix='.json')
        try:
            with os.fdopen(fd, 'w') as f:
                json.dump(data, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        os.truncate(self.journal, 0)            # the snapshot holds it all now
        self._logged = 0

    def _load(self) -> None:
        where = self.path
        try:
            if self.path.exists():
                data = json.loads(self.path.read_text())
                for s in SPACES:
                    for k, v in data['ids'].get(s, {}).items():
                        self._set(s, str(k), int(v))
                    self._next[s] = int(data['next'].get(s, SPACES[s][0]))
                    self._quarantine[s] = set(map(int, data.get('quarantine', {}).get(s, ())))
                    self._used[s] |= self._quarantine[s]
                self.notes = {int(k, 16): str(v) for k, v in data.get('notes', {}).items()}
            where = self.journal
            if self.journal.exists():
                text = self.journal.read_text()
                lines = text.splitlines()
                if lines and not text.endswith('\n'):
                    # a write torn by a crash: save() returns only after the fsync, and flows
                    # carrying those ids go out only after save() returned -- nothing used them
                    LOG.warning('%s: ignoring a torn last line', self.journal)
                    lines.pop()
                for n, line in enumerate(lines, 1):
                    where = '%s:%d' % (self.journal, n)
                    self._replay(json.loads(line))
                    self._logged += 1
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            raise ValueError('%s is corrupt (%s); move %s and %s away to start with fresh ids '
                             '(every flow is then re-added once)' % (where, e, self.path, self.journal)) from e

    def _replay(self, x: list) -> None:
        if x[0] == 'id':
            _, space, name, value, nxt = x
            if self._ids[space].get(name) not in (None, value):
                self._release(space, name)
            self._set(space, name, int(value))
            self._next[space] = int(nxt)
        elif x[0] == 'release':
            self._release(x[1], x[2])
        elif x[0] == 'note':
            self.notes[int(x[1], 16)] = x[2]
        elif x[0] == 'settled':
            self._settle()
        else:
            raise ValueError('unknown journal entry %r' % x[0])

    def copy(self) -> 'IdStore':
        """An in-memory copy to allocate from without changing this store (dry runs)."""
        with self._lock:
            other = IdStore()
            other._ids = {s: dict(v) for s, v in self._ids.items()}
            other._rev = {s: dict(v) for s, v in self._rev.items()}
            other._used = {s: set(v) for s, v in self._used.items()}
            other._next = dict(self._next)
            other._quarantine = {s: set(v) for s, v in self._quarantine.items()}
            other.notes = dict(self.notes)
            return other


# ---- the ids a policy's flows carry ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PolicyIds:
    """The numbers a compiled policy uses, read-only: what compilers see."""
    tenant: Mapping[str, int]
    zone: Mapping[str, int]
    network: Mapping[tuple[str, str], int]
    overlay_vlan: Mapping[tuple[str, str], int]
    conj: Mapping[tuple[str, str], int] = dataclasses.field(default_factory=lambda: MappingProxyType({}))  # (tenant, rule) -> id


def bind(store: IdStore, policy) -> PolicyIds:
    """Allocate (or look up) every id the policy needs; release those of tenants and
    networks that are gone.  Deterministic for a fresh store: sorted by name."""
    fabric_vlans = frozenset(policy.vlans_in_use()) | frozenset(policy.fabric.all_vlans())
    tenants = sorted(policy.tenants)
    nets = sorted((t, n) for t in tenants for n in policy.tenants[t].networks)
    overlays = sorted(k for k in nets if policy.tenants[k[0]].networks[k[1]].vni is not None)
    rules = sorted((t, r.name) for t in tenants for r in policy.tenants[t].security.rules)
    with store._lock:
        ids = PolicyIds(
            tenant=MappingProxyType({t: store.get('tenant', t) for t in tenants}),
            zone=MappingProxyType({t: store.get('zone', t) for t in tenants}),
            network=MappingProxyType({k: store.get('network', '%s/%s' % k) for k in nets}),
            overlay_vlan=MappingProxyType({k: store.get('overlay_vlan', '%s/%s' % k, fabric_vlans)
                                           for k in overlays}),
            conj=MappingProxyType({k: store.get('conj', '%s/%s' % k) for k in rules}))
        for space, live in (('zone', set(tenants)), ('network', {'%s/%s' % k for k in nets}),
                            ('overlay_vlan', {'%s/%s' % k for k in overlays}), ('conj', {'%s/%s' % k for k in rules})):
            for name in set(store.names(space)) - live:
                store.release(space, name)
        # tenant ids stay (cookies of a deleted tenant's flows must still decode until gone)
    return ids


def fresh(policy) -> PolicyIds:
    """The ids a brand-new store would give (tests, dry runs without a controller)."""
    return bind(IdStore(), policy)
