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
    def __init__(self, state_dir=None):
        self.path = Path(state_dir) / FILE if state_dir else None
        self._lock = threading.RLock()
        self._ids: dict[str, dict[str, int]] = {s: {} for s in SPACES}
        self._rev: dict[str, dict[int, str]] = {s: {} for s in SPACES}
        self._next: dict[str, int] = {s: SPACES[s][0] for s in SPACES}
        self._quarantine: dict[str, set[int]] = {s: set() for s in SPACES}
        self.notes: dict[int, str] = {}          # cookie value -> YAML file:line (the cookie registry's)
        self._dirty = False
        if self.path is not None and self.path.exists():
            self._load()

    # ---- allocation ---------------------------------------------------------------------

    def get(self, space: str, name: str, avoid: frozenset[int] = frozenset()) -> int:
        """The id of `name` in `space`, allocated on first use.  An existing id in `avoid`
        (an overlay VLAN a tenant now uses on a trunk) is moved: the only case an id changes."""
        with self._lock:
            ids = self._ids[space]
            have = ids.get(name)
            if have is not None and have not in avoid:
                return have
            if have is not None:
                LOG.warning('%s id %d of %s is now taken by the fabric; moving it', space, have, name)
                self.release(space, name)
            ids[name] = self._fresh(space, avoid)
            self._rev[space][ids[name]] = name
            self._dirty = True
            return ids[name]

    def peek(self, space: str, name: str) -> int | None:
        return self._ids[space].get(name)

    def name_of(self, space: str, value: int) -> str | None:
        return self._rev[space].get(value)

    def names(self, space: str) -> Mapping[str, int]:
        return MappingProxyType(dict(self._ids[space]))

    def release(self, space: str, name: str) -> None:
        with self._lock:
            value = self._ids[space].pop(name, None)
            if value is not None:
                self._quarantine[space].add(value)
                self._rev[space].pop(value, None)
                self._dirty = True

    def settled(self) -> None:
        """Every switch has converged: no flow carries a released id any more."""
        with self._lock:
            if any(self._quarantine.values()):
                self._quarantine = {s: set() for s in SPACES}
                self._dirty = True

    def _fresh(self, space: str, avoid) -> int:
        first, last, step = SPACES[space]
        used = set(self._ids[space].values()) | self._quarantine[space] | set(avoid)
        span = abs(last - first) + 1
        n = self._next[space]
        for _ in range(span):
            if n not in used:
                nxt = n + step
                self._next[space] = nxt if (step > 0 and nxt <= last) or (step < 0 and nxt >= last) else first
                return n
            n += step
            if (step > 0 and n > last) or (step < 0 and n < last):
                n = first
        raise IdSpaceFull('no free %s id left' % space)

    # ---- persistence --------------------------------------------------------------------

    def save(self) -> None:
        with self._lock:
            if self.path is None or not self._dirty:
                return
            data = {'ids': self._ids, 'next': self._next,
                    'quarantine': {s: sorted(q) for s, q in self._quarantine.items()},
                    'notes': {'%#x' % k: v for k, v in self.notes.items()}}
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
            self._dirty = False

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            for s in SPACES:
                self._ids[s] = {str(k): int(v) for k, v in data['ids'].get(s, {}).items()}
                self._rev[s] = {v: k for k, v in self._ids[s].items()}
                self._next[s] = int(data['next'].get(s, SPACES[s][0]))
                self._quarantine[s] = set(map(int, data.get('quarantine', {}).get(s, ())))
            self.notes = {int(k, 16): str(v) for k, v in data.get('notes', {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError('%s is corrupt (%s); move it away to start with fresh ids '
                             '(every flow is then re-added once)' % (self.path, e)) from e

    def copy(self) -> 'IdStore':
        """An in-memory copy to allocate from without changing this store (dry runs)."""
        with self._lock:
            other = IdStore()
            other._ids = {s: dict(v) for s, v in self._ids.items()}
            other._rev = {s: dict(v) for s, v in self._rev.items()}
            other._next = dict(self._next)
            other._quarantine = {s: set(v) for s, v in self._quarantine.items()}
            other.notes = dict(self.notes)
            return other

    def mark_dirty(self) -> None:
        self._dirty = True


# ---- the ids a policy's flows carry ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PolicyIds:
    """The numbers a compiled policy uses, read-only: what compilers see."""
    tenant: Mapping[str, int]
    zone: Mapping[str, int]
    network: Mapping[tuple[str, str], int]
    overlay_vlan: Mapping[tuple[str, str], int]


def bind(store: IdStore, policy) -> PolicyIds:
    """Allocate (or look up) every id the policy needs; release those of tenants and
    networks that are gone.  Deterministic for a fresh store: sorted by name."""
    fabric_vlans = frozenset(policy.vlans_in_use()) | frozenset(policy.fabric.all_vlans())
    tenants = sorted(policy.tenants)
    nets = sorted((t, n) for t in tenants for n in policy.tenants[t].networks)
    overlays = sorted(k for k in nets if policy.tenants[k[0]].networks[k[1]].vni is not None)
    with store._lock:
        ids = PolicyIds(
            tenant=MappingProxyType({t: store.get('tenant', t) for t in tenants}),
            zone=MappingProxyType({t: store.get('zone', t) for t in tenants}),
            network=MappingProxyType({k: store.get('network', '%s/%s' % k) for k in nets}),
            overlay_vlan=MappingProxyType({k: store.get('overlay_vlan', '%s/%s' % k, fabric_vlans)
                                           for k in overlays}))
        for space, live in (('zone', set(tenants)), ('network', {'%s/%s' % k for k in nets}),
                            ('overlay_vlan', {'%s/%s' % k for k in overlays})):
            for name in set(store.names(space)) - live:
                store.release(space, name)
        # tenant ids stay (cookies of a deleted tenant's flows must still decode until gone)
    return ids


def fresh(policy) -> PolicyIds:
    """The ids a brand-new store would give (tests, dry runs without a controller)."""
    return bind(IdStore(), policy)
