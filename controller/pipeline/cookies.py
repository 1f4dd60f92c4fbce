"""Cookies: every flow says which app made it, for which tenant and owner, and from which
YAML line.

Compilers stay pure: they put a Cookie *value* in each Flow (app, kind, tenant name, owner
name, and `where`, the YAML file:line it came from).  The Registry turns it into the 64-bit
OpenFlow cookie when a flow is sent, and back when flows are read from a switch:

    bits 63..56  app id      (APPS: one per app, fixed, so one app's flows are one mask)
    bits 55..48  kind        (the app's own sub-category, e.g. learned-src vs learned-dst)
    bits 47..24  tenant id   (allocated, stable: controller.pipeline.ids; 0 = fabric-level)
    bits 23..0   owner id    (allocated, stable: rule, workload nic, port, VLAN...)

Ids are allocated, not hashed (no collisions), and kept in <state-dir>/ids.json with the
file:line of each cookie, so after a restart `dvsctl show flows` (and a trace) still maps
a dumped cookie back to the YAML that made it.  `where` is not part of a Cookie's identity:
moving a rule to another line does not replace its flows.
"""
from __future__ import annotations

import dataclasses
import functools

from controller.pipeline.ids import IdStore

# The one registry of apps: name -> cookie app id.  The core runs those that have a module
# in apps/ (apps.<name>.compile_flows); table declarations name their owners from here.
APPS = {
    'learning_switch': 0x01,
    'topology': 0x02,
    'vlan_portgroups': 0x03,
    'vxlan_overlay': 0x04,
    'anycast_gateway': 0x05,
    'microseg': 0x06,
    'underlay_routing': 0x07,
    'bonds': 0x08,                 # controller/bonds.py: a bond's members folded into one port
    'port_security': 0x09,         # apps/port_security.py: a VM sends only as itself
    'pipeline': 0x0f,            # generated miss flows (tables.miss_flows)
}
_APP_NAMES = {v: k for k, v in APPS.items()}
APP_MASK = 0xff << 56
TENANT_MASK = 0xffffff << 24
OWNER_MASK = 0xffffff


@dataclasses.dataclass(frozen=True)
class Cookie:
    app: str
    kind: int = 0
    tenant: str | None = None
    owner: str | None = None
    where: str | None = dataclasses.field(default=None, compare=False)   # YAML file:line

    def __str__(self) -> str:
        return describe(self)


@functools.lru_cache(maxsize=1 << 17)       # compilers make the same few cookies over and over
def make(app: str, kind: int = 0, owner: str | None = None, tenant: str | None = None,
         where: str | None = None) -> Cookie:
    if app not in APPS:
        raise ValueError('unknown app %r' % app)
    return Cookie(app, kind & 0xff, tenant, owner, where)


def app_of(cookie) -> str | None:
    if isinstance(cookie, Cookie):
        return cookie.app
    return _APP_NAMES.get(cookie >> 56) if isinstance(cookie, int) else None


def kind_of(cookie) -> int:
    return cookie.kind if isinstance(cookie, Cookie) else (cookie >> 48) & 0xff


def app_match(app: str) -> tuple[int, int]:
    """(cookie, mask) selecting every flow of one app: ovs-ofctl dump-flows cookie=C/M."""
    return APPS[app] << 56, APP_MASK


def describe(cookie) -> str:
    if not isinstance(cookie, Cookie):
        app = _APP_NAMES.get(cookie >> 56, 'unknown-app-%d' % (cookie >> 56))
        return '%s kind=%d cookie=%#x (not in the registry)' % (app, kind_of(cookie), cookie)
    text = '%s kind=%d' % (cookie.app, cookie.kind)
    if cookie.tenant:
        text += ' tenant=%s' % cookie.tenant
    text += ' owner=%s' % (cookie.owner or '-')
    return text + (' at %s' % cookie.where if cookie.where else '')


class Registry:
    """Cookie <-> 64-bit value, through the stable ids of an IdStore (persisted with it)."""

    def __init__(self, ids: IdStore | None = None):
        self.ids = ids or IdStore()
        self._decoded: dict[int, Cookie] = {}

    def encode(self, cookie) -> int:
        if isinstance(cookie, int):
            return cookie
        value = (APPS[cookie.app] << 56 | cookie.kind << 48
                 | (self.ids.get('tenant', cookie.tenant) << 24 if cookie.tenant else 0)
                 | (self.ids.get('owner', cookie.owner) if cookie.owner else 0))
        if cookie.where:
            self.ids.note(value, cookie.where)
        self._decoded[value] = cookie
        return value

    def decode(self, value: int):
        """The Cookie a switch's 64-bit cookie stands for, or the bare int if it was not made
        by this registry (a stale or foreign flow: the reconciler replaces it)."""
        have = self._decoded.get(value)
        if have is not None:
            return have
        app = _APP_NAMES.get(value >> 56)
        tid, oid = (value & TENANT_MASK) >> 24, value & OWNER_MASK
        tenant = self.ids.name_of('tenant', tid) if tid else None
        owner = self.ids.name_of('owner', oid) if oid else None
        if app is None or (tid and tenant is None) or (oid and owner is None):
            return value
        cookie = Cookie(app, (value >> 48) & 0xff, tenant, owner, self.ids.notes.get(value))
        self._decoded[value] = cookie
        return cookie

    def tenant_match(self, tenant: str) -> tuple[int, int]:
        """(cookie, mask) selecting every flow made for one tenant, whatever the app."""
        return self.ids.get('tenant', tenant) << 24, TENANT_MASK

    def save(self) -> None:
        self.ids.save()
