"""The cookie scheme: every flow says which app made it and for which owner.

    bits 63..56  app id      (one per apps/ module; see APPS)
    bits 55..48  kind        (the app's own sub-category, e.g. learned-src vs learned-dst)
    bits 47..0   owner id    (crc32 of an owner name: tenant/rule, switch, or MAC entry)

So `ovs-ofctl dump-flows BR cookie=0x0100000000000000/0xff00000000000000` selects one app's
flows, and `describe(cookie)` maps a dumped cookie back to "app kind owner".
"""
from __future__ import annotations

import zlib

APPS = {
    'learning_switch': 0x01,
    'topology': 0x02,
    'vlan_portgroups': 0x03,
    'vxlan_overlay': 0x04,
    'anycast_gateway': 0x05,
    'microseg': 0x06,
}
_APP_NAMES = {v: k for k, v in APPS.items()}
APP_MASK = 0xff << 56
OWNER_MASK = (1 << 48) - 1

_owners: dict[int, str] = {}   # owner id -> name, filled as cookies are made (for describe())


def owner_id(name: str) -> int:
    oid = zlib.crc32(name.encode())
    _owners.setdefault(oid, name)
    return oid


def make(app: str, kind: int = 0, owner: str | None = None) -> int:
    return APPS[app] << 56 | (kind & 0xff) << 48 | (owner_id(owner) if owner else 0)


def app_of(cookie: int) -> str | None:
    return _APP_NAMES.get(cookie >> 56)


def app_match(app: str) -> tuple[int, int]:
    """(cookie, mask) selecting every flow of one app."""
    return APPS[app] << 56, APP_MASK


def describe(cookie: int) -> str:
    app = app_of(cookie) or 'unknown-app-%d' % (cookie >> 56)
    kind = (cookie >> 48) & 0xff
    oid = cookie & OWNER_MASK
    owner = _owners.get(oid, '%#x' % oid if oid else '-')
    return '%s kind=%d owner=%s' % (app, kind, owner)
