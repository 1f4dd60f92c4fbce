"""The cookie scheme: every flow says which app made it, for which tenant and owner.

    bits 63..56  app id      (one per apps/ module; see APPS)
    bits 55..48  kind        (the app's own sub-category, e.g. learned-src vs learned-dst)
    bits 47..24  tenant id   (crc32 of the tenant name, 24 bits; 0 = fabric-level flow)
    bits 23..0   owner id    (crc32 of an owner name: rule, workload nic, port, MAC entry)

So `ovs-ofctl dump-flows BR cookie=0x0100000000000000/0xff00000000000000` selects one app's
flows, `cookie=<tenant_match(t)>` one tenant's, and `describe(cookie)` maps a dumped cookie
back to "app kind tenant owner".
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
    'underlay_routing': 0x07,
    'bonds': 0x08,                 # controller/bonds.py: a bond's members folded into one port
}
_APP_NAMES = {v: k for k, v in APPS.items()}
APP_MASK = 0xff << 56
TENANT_MASK = 0xffffff << 24
OWNER_MASK = 0xffffff

_names: dict[int, str] = {}   # 24-bit id -> name, filled as cookies are made (for describe())


def _id(name: str) -> int:
    i = zlib.crc32(name.encode()) & 0xffffff or 1
    _names.setdefault(i, name)
    return i


def owner_id(name: str) -> int:
    return _id(name)


def tenant_id(name: str) -> int:
    return _id(name)


def make(app: str, kind: int = 0, owner: str | None = None, tenant: str | None = None) -> int:
    return (APPS[app] << 56 | (kind & 0xff) << 48 | (tenant_id(tenant) << 24 if tenant else 0)
            | (owner_id(owner) if owner else 0))


def app_of(cookie: int) -> str | None:
    return _APP_NAMES.get(cookie >> 56)


def kind_of(cookie: int) -> int:
    return (cookie >> 48) & 0xff


def app_match(app: str) -> tuple[int, int]:
    """(cookie, mask) selecting every flow of one app."""
    return APPS[app] << 56, APP_MASK


def tenant_match(tenant: str) -> tuple[int, int]:
    """(cookie, mask) selecting every flow made for one tenant, whatever the app."""
    return tenant_id(tenant) << 24, TENANT_MASK


def describe(cookie: int) -> str:
    app = app_of(cookie) or 'unknown-app-%d' % (cookie >> 56)
    tid, oid = (cookie & TENANT_MASK) >> 24, cookie & OWNER_MASK
    owner = _names.get(oid, '%#x' % oid if oid else '-')
    text = '%s kind=%d' % (app, kind_of(cookie))
    if tid:
        text += ' tenant=%s' % _names.get(tid, '%#x' % tid)
    return text + ' owner=%s' % owner
