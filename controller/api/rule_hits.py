"""`dvsctl show rules TENANT`: each microsegmentation rule of a tenant with its hits, and the
tenant's drops, from the switches' own flow counters.

Only the tenant's microseg flows are read (cookie app|tenant under a mask: one flow-stats
request per connected hypervisor, all at once), and the core lock is held only to copy the
policy and the connections, never while a switch is asked.  A hypervisor that does not answer
within TIMEOUT is listed, not fatal: the sums are then of the ones that did.

What the counters mean (apps/microseg.py): a rule's conjunction flow counts the packets that
open a connection through it (or re-check one after a policy change), so its "hits" are
connections, not packets (its bytes are those packets' bytes); the default flow counts every
packet of the tenant's that no rule admitted, the invalid flow those conntrack found invalid.
"""
from __future__ import annotations

import concurrent.futures
import logging

from apps import microseg
from controller.api.service import NoSuchTenant
from controller.pipeline import cookies

LOG = logging.getLogger('opendvs.api')
TIMEOUT = 2.0            # s each hypervisor has to answer
MAX_ASKED = 256          # hypervisors asked at once (more wait their turn, and may be reported late)
HITS = ('a rule counts connections (the packet that opens one, or re-checks it after a policy '
        'change), not every packet')
OPEN = 'open inside: no rules enforced'
DROPS = {microseg.K_DEFAULT: 'default_drops', microseg.K_INVALID: 'invalid_drops',
         microseg.K_FLOOD: 'unknown_unicast_drops'}


def endpoint(ep) -> dict:
    """A rule's `from`/`to` as written: {'label': 'web'}, {'cidr': '0.0.0.0/0'}..."""
    for key in ('label', 'workload', 'network', 'cidr'):
        value = getattr(ep, key)
        if value is not None:
            return {key: str(value)}
    return {}


def allow(a) -> dict:
    """One `allow` entry as written: {'proto': 'tcp', 'port': 5432} or 'ports': '5433-5434'."""
    if a.ports is None:
        return {'proto': a.proto}
    lo, hi = a.ports
    return {'proto': a.proto, 'port': lo} if lo == hi else {'proto': a.proto, 'ports': '%d-%d' % (lo, hi)}


def view(core, tenant: str, timeout: float = TIMEOUT) -> dict:
    """The rules of `tenant` in file order with packets and bytes summed over every connected
    hypervisor, its drops, and which hypervisors answered; NoSuchTenant if it is not running.
    A tenant with `default: allow` has no flows: its rules are listed without counts."""
    with core.lock:
        pol = core.policy
        hvs = {name: core.conns.get(hv.dpid) for name, hv in pol.fabric.hypervisors.items()}
    if tenant not in pol.tenants:
        raise NoSuchTenant(tenant, sorted(pol.tenants))
    t = pol.tenants[tenant]
    enforced = microseg.enforced(t)
    count = 0 if enforced else None
    rules = [{'name': r.name, 'from': endpoint(r.src), 'to': endpoint(r.dst), 'allow': [allow(a) for a in r.allow],
              'where': t.where(r.line), 'packets': count, 'bytes': count} for r in t.security.rules]
    out = {'tenant': tenant, 'source': t.source, 'default': t.security.default, 'enforced': enforced,
           'note': HITS if enforced else OPEN, 'rules': rules,
           **{key: {'packets': count, 'bytes': count} if enforced else None for key in DROPS.values()},
           'answered': [], 'no_answer': {}, 'not_connected': []}
    if not enforced:
        return out                      # nothing to read
    out['not_connected'] = sorted(n for n, c in hvs.items() if c is None)
    by_name = {r['name']: r for r in rules}
    failed: dict[str, str] = {}
    for name, counted in _ask({n: c for n, c in hvs.items() if c is not None}, _match(core.cookies, tenant),
                              timeout, failed):
        out['answered'].append(name)
        for value, packets, nbytes in counted:
            into = _counter(core.cookies.decode(value), tenant, by_name, out)
            if into is not None:
                into['packets'] += packets
                into['bytes'] += nbytes
    out['answered'].sort()
    out['no_answer'] = dict(sorted(failed.items()))
    return out


def _counter(c, tenant: str, rules: dict, out: dict) -> dict | None:
    """Where a flow's counts go: its rule's row, or one of the tenant's drop counters."""
    if not isinstance(c, cookies.Cookie) or c.app != microseg.APP or c.tenant != tenant:
        return None                     # not made by this registry (a stale flow being replaced)
    if c.kind == microseg.K_RULE:       # the rule's conj_id flow; its clause flows never count
        return rules.get(c.owner[5:]) if (c.owner or '').startswith('rule:') else None
    return out.get(DROPS.get(c.kind, ''))


def _match(registry, tenant: str) -> tuple[int, int]:
    """(cookie, mask) of the tenant's microseg flows and nothing else."""
    app, app_mask = cookies.app_match(microseg.APP)
    value, mask = registry.tenant_match(tenant)
    return app | value, app_mask | mask


def _ask(conns: dict, match: tuple[int, int], timeout: float, failed: dict):
    """Yield (hypervisor, [(cookie, packets, bytes)]) of those that answer within `timeout`, all
    asked at once; put the others in `failed` (name -> why)."""
    if not conns:
        return
    # a thread per hypervisor (each only sends and waits), so all are asked at once
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(MAX_ASKED, len(conns)), thread_name_prefix='rule-hits')
    try:
        jobs = {pool.submit(c.flow_counters, *match, timeout=timeout): n for n, c in conns.items()}
        done, late = concurrent.futures.wait(jobs, timeout + 0.5)
        for job in late:
            failed[jobs[job]] = 'no reply within %ss' % timeout
        for job in done:
            try:
                yield jobs[job], job.result()
            except Exception as e:           # SwitchError: timed out, session closed, refused
                LOG.info('show rules: %s did not answer: %s', jobs[job], e)
                failed[jobs[job]] = str(e)
    finally:
        pool.shutdown(wait=False)
