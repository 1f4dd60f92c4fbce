"""Which OpenFlow connections are taken for a fabric switch (issue 7, part 4).

Without TLS, a connection is only a dpid claim: any process that can reach the OpenFlow port
can say "I am leaf1".  So a connection is accepted only if

1. its dpid is a switch or hypervisor of the fabric;
2. it comes from where that kind of switch is expected (`Sources`: physical switches from
   loopback by default -- the lab's root OVS runs on the controller's host -- hypervisors from
   anywhere unless --hypervisors-from names the management LAN);
3. no live connection already holds that dpid.  A second connection claiming a connected dpid
   is either an impostor or the same switch reconnecting before we noticed its old session
   die (a management link that was down for a while: the old TCP session never closed).  The
   old session is asked for a barrier reply: if it answers, it is alive and the newcomer is
   refused; if not, it is closed and the newcomer takes over.

Refusals are logged (rate-limited per dpid and address; also as `refused` events) and the
refused datapath is closed; it never reaches the core, so it can neither feed it packet-ins
nor make applies wait on it.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
import time

LOG = logging.getLogger('opendvs.admission')

LOOPBACK = (ipaddress.ip_network('127.0.0.0/8'), ipaddress.ip_network('::1/128'))
LOG_EVERY = 30.0             # s between two log lines about the same refused (dpid, address)


@dataclasses.dataclass(frozen=True)
class Sources:
    """Where each kind of switch may connect from; None: anywhere."""
    physical: tuple | None = None
    hypervisor: tuple | None = None


SOURCES = Sources()          # set once by the launcher (controller_main) from its options


def configure(sources: Sources) -> None:
    global SOURCES
    SOURCES = sources


def parse_sources(text: str) -> tuple | None:
    """'any' -> None; 'loopback' -> LOOPBACK; else comma-separated CIDRs/addresses
    (ValueError if one is not)."""
    text = text.strip()
    if text == 'any':
        return None
    out = []
    for part in filter(None, (p.strip() for p in text.split(','))):
        out += LOOPBACK if part == 'loopback' else [ipaddress.ip_network(part, strict=False)]
    if not out:
        raise ValueError('expected any, loopback or CIDR[,CIDR...]')
    return tuple(out)


def refusal(fabric, dpid: int, address: str | None, sources: Sources) -> str | None:
    """Why a new connection claiming dpid from address is refused (None: checks 1 and 2 pass)."""
    node = fabric.switch_by_dpid(dpid)
    if node is None:
        return 'datapath %016x (from %s) is not in the fabric %s' % (dpid, address, fabric.source)
    hypervisor = node.name in fabric.hypervisors
    allowed = sources.hypervisor if hypervisor else sources.physical
    if allowed is not None and not _inside(address, allowed):
        kind = 'hypervisor' if hypervisor else 'physical switch'
        option = '--hypervisors-from' if hypervisor else '--physical-from'
        return '%s %s (%016x) connected from %s, which is not in %s (%s)' % (
            kind, node.name, dpid, address, ', '.join(map(str, allowed)), option)
    return None


def _inside(address: str | None, nets) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except (TypeError, ValueError):
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in n for n in nets)


def admit(core, conn, ports, close, accept, sources: Sources | None = None):
    """Decide about a new connection: accept(conn, ports) or close(conn), now or -- when its
    dpid is already connected -- once the old session has been probed (in a thread, returned
    so tests can join it; the event loop never waits)."""
    sources = SOURCES if sources is None else sources
    with core.lock:
        why = refusal(core.fabric, conn.dpid, getattr(conn, 'address', None), sources)
        old = core.conns.get(conn.dpid)
    if why:
        _refuse(core, conn, close, why)
        return None
    if old is None:
        accept(conn, ports)
        return None
    t = threading.Thread(target=_duplicate, args=(core, old, conn, ports, close, accept),
                         name='admission-%016x' % conn.dpid, daemon=True)
    t.start()
    return t


def _duplicate(core, old, conn, ports, close, accept) -> None:
    try:
        old.barrier()
        alive = True
    except Exception:                       # no reply in time, or the session is gone
        alive = False
    with core.lock:
        current = core.conns.get(conn.dpid)
    if alive and current is old:
        _refuse(core, conn, close, 'datapath %016x is already connected from %s and answering; a second '
                             'connection claiming it (from %s) is refused' % (
                                 conn.dpid, getattr(old, 'address', None), getattr(conn, 'address', None)))
        return
    LOG.warning('datapath %016x: the old session (from %s) does not answer; the new one from %s takes over',
                conn.dpid, getattr(old, 'address', None), getattr(conn, 'address', None))
    if current is old:
        close(old)
    accept(conn, ports)


_logged: dict[tuple, float] = {}


def _refuse(core, conn, close, why: str) -> None:
    key, now = (conn.dpid, getattr(conn, 'address', None)), time.monotonic()
    if now - _logged.get(key, -LOG_EVERY) >= LOG_EVERY:
        if len(_logged) > 4096:
            _logged.clear()
        _logged[key] = now
        LOG.warning('refused OpenFlow connection: %s', why)
        events = getattr(core, 'events', None)          # the event log, as rate-limited as the log
        if events is not None:
            events.record('refused', input='openflow', dpid='%016x' % conn.dpid, address=key[1], reason=why)
    close(conn)
