"""Flow: a hashable, framework-free description of one OpenFlow flow entry.

Compilers return sets of these; the reconciler diffs them; controller/ofp.py is the only
place that turns them into (and back from) OpenFlow messages.

match   -- tuple of (field, value) pairs, sorted by field.  Field names are os-ken OXM names
           (in_port, eth_src, eth_dst, eth_type, vlan_vid, ...).  MACs are lower-case strings;
           vlan_vid carries the OFPVID_PRESENT bit (0x1000 | vid) as on the wire; a masked value
           is a (value, mask) tuple.
actions -- tuple of action tuples, applied in order:
             ('output', port)            port number, or 'controller' / 'in_port' / 'local'
             ('push_vlan', vid)          push an 802.1Q tag carrying vid
             ('pop_vlan',)
             ('set_field', field, value)
             ('group', group_id)
           and ct, conjunction, resubmit, learn, meter, write_metadata, masked loads, moves:
           build them with controller/pipeline/actions.py, which lists every normal form.
           An empty tuple means drop.
goto    -- name of the next table, or None.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from controller.pipeline import fields

OFPVID_PRESENT = 0x1000
CONTROLLER, IN_PORT, LOCAL = 'controller', 'in_port', 'local'


def vid(vlan: int) -> int:
    """The vlan_vid match/set value for a tagged frame on VLAN `vlan`."""
    return OFPVID_PRESENT | vlan


UNTAGGED = 0x0000  # vlan_vid value that matches frames without an 802.1Q tag


def _norm_value(field: str, value: Any) -> Any:
    # typed values (masks, CIDR, ct_state flags, lower-case MACs): see controller/pipeline/fields.py
    if type(value) is int:                    # most values: a port, a VLAN, a register
        return value
    return fields.norm_value(field, value)


def _norm_action(a) -> tuple:
    if a[0] == 'set_field':
        return ('set_field', a[1], _norm_value(a[1], a[2]))
    return a if type(a) is tuple else tuple(a)


_CACHE = dict(default=None, init=False, repr=False, compare=False, hash=False)


@dataclasses.dataclass(frozen=True, order=True, slots=True)
class Flow:
    table: str
    priority: int
    match: tuple = ()
    actions: tuple = ()
    goto: str | None = None
    cookie: object = 0             # a cookies.Cookie (compiled), or an int nobody registered
    idle_timeout: int = 0
    hard_timeout: int = 0
    notify_removal: bool = False   # OFPFF_SEND_FLOW_REM: tell the controller when it ages out
    # Computed once, kept in slots (no per-flow dict: a 100,000-flow push allocated a dict per
    # flow and the collector traversed them all mid-push, issue 11 part 4).  Not part of ==.
    _hash: int | None = dataclasses.field(**_CACHE)
    _key: tuple | None = dataclasses.field(**_CACHE)
    _wire: tuple | None = dataclasses.field(**_CACHE)     # controller/pipeline/wire.py

    @classmethod
    def make(cls, table: str, priority: int, match: dict | None = None,
             actions=(), goto: str | None = None, **kw) -> 'Flow':
        m = tuple(sorted([(k, _norm_value(k, v)) for k, v in match.items()])) if match else ()
        return cls(table, priority, m, tuple([_norm_action(a) for a in actions]), goto, **kw)

    def __hash__(self) -> int:
        # flows live in big sets and counters: hash each once (it is immutable)
        h = self._hash
        if h is None:
            h = hash((self.table, self.priority, self.match, self.actions, self.goto, self.cookie,
                      self.idle_timeout, self.hard_timeout, self.notify_removal))
            object.__setattr__(self, '_hash', h)
        return h

    @property
    def key(self) -> tuple:
        """What OpenFlow uses to identify an entry: table, priority and match."""
        k = self._key
        if k is None:
            k = (self.table, self.priority, self.match)
            object.__setattr__(self, '_key', k)
        return k

    def match_dict(self) -> dict:
        return dict(self.match)

    def __str__(self) -> str:
        m = ','.join('%s=%s' % (k, _fmt(v)) for k, v in self.match)
        a = ','.join(':'.join(str(x) for x in act) for act in self.actions)
        if self.goto:
            a += (',' if a else '') + 'goto:%s' % self.goto
        a = a or 'drop'
        extra = ''
        if self.idle_timeout:
            extra += ' idle_timeout=%d' % self.idle_timeout
        cookie = '%#x' % self.cookie if isinstance(self.cookie, int) else '(%s)' % self.cookie
        return 'table=%s priority=%d cookie=%s %s%s actions=%s' % (
            self.table, self.priority, cookie, m or '*', extra, a)


def _fmt(v):
    if isinstance(v, tuple):
        return '%s/%s' % (_fmt(v[0]), _fmt(v[1]))
    return hex(v) if isinstance(v, int) and v > 9 else str(v)


_FIELDS = tuple(f.name for f in dataclasses.fields(Flow) if f.init)
_CACHED = tuple(f.name for f in dataclasses.fields(Flow) if not f.init)


def _getstate(self) -> tuple:
    # the cached values are only good in the process that made them (str hashes are salted)
    return tuple([getattr(self, f) for f in _FIELDS])


def _setstate(self, state) -> None:
    for f, v in zip(_FIELDS, state):
        object.__setattr__(self, f, v)
    for f in _CACHED:
        object.__setattr__(self, f, None)


# set after the class is made: dataclass(slots=True) puts its own (which keep the caches) in
Flow.__getstate__, Flow.__setstate__ = _getstate, _setstate
