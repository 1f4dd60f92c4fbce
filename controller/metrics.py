"""Prometheus metrics: what operators (and benchmarks) watch from outside.

Served as text exposition at `/metrics` on the REST API's address (no token: it holds counts,
never policy); see controller/api/server.py.  The core calls the small functions below from
single-line hooks; the state that already lives in the core (flows installed per table,
connected switches, bindings, learned MACs) is read at scrape time by a collector instead of
being copied on every change.

    opendvs_packet_ins_total{switch,table,reason}      packet-ins received
    opendvs_flow_mods_total{switch,command}            flow-mods sent (add / delete)
    opendvs_bundles_total{switch,result}               OpenFlow 1.4 bundles sent / rejected
    opendvs_reconcile_seconds{switch}                  histogram: one converge pass of one switch
    opendvs_flows{switch,table}                        flows installed (as the reconciler knows them)
    opendvs_switches_connected{kind}                   physical / hypervisor
    opendvs_bindings{hypervisor}                       bound VM nics per hypervisor (OVSDB iface-ids)
    opendvs_learned_macs{switch}                       MACs learned per switch
    opendvs_port_shutdown{switch,port}                 1 per VM/edge port shut for a MAC-limit violation
    opendvs_policy_applies_total{result,dry_run}       pushes/deletes: applied / rejected / failed
    opendvs_api_requests_total{method,path,status}     REST API requests

Bonded hypervisor uplinks (controller/bonds.py), per hypervisor with `uplinks: 2+` and per end
(side=leaf: the leaf's bond, side=hypervisor: br-phy's), for each end whose bond is known:

    opendvs_bond_members{hypervisor,side}              members configured
    opendvs_bond_members_up{hypervisor,side}           members whose link is up
    opendvs_bond_members_enabled{hypervisor,side}      members that may carry traffic (up, LACP current)
    opendvs_bond_lacp_negotiated{hypervisor,side}      1: LACP runs and some member has a current partner
    opendvs_bond_degraded{hypervisor,side}             1: a member short, down or unheard, or LACP not as declared
    opendvs_bond_member_up{hypervisor,side,member}     1/0 per member
    opendvs_bond_member_lacp_negotiated{hypervisor,side,member}   1/0 per member (0 with LACP off)
    opendvs_uplink_status{hypervisor,status}           1 for the status `dvsctl show uplinks` gives, 0 others
"""
from __future__ import annotations

import functools
import time
import weakref

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.core import GaugeMetricFamily

PACKET_INS = Counter('opendvs_packet_ins', 'OpenFlow packet-ins received', ['switch', 'table', 'reason'])
FLOW_MODS = Counter('opendvs_flow_mods', 'OpenFlow flow-mods sent', ['switch', 'command'])
BUNDLES = Counter('opendvs_bundles', 'OpenFlow 1.4 bundles sent (result=sent) and rejected by the switch',
                  ['switch', 'result'])
RECONCILE = Histogram('opendvs_reconcile_seconds', 'One reconcile (diff and apply) of one switch',
                      ['switch'], buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
APPLIES = Counter('opendvs_policy_applies', 'Tenant policy pushes and deletes, by result',
                  ['result', 'dry_run'])
API_REQUESTS = Counter('opendvs_api_requests', 'REST API requests', ['method', 'path', 'status'])

# OpenFlow packet-in reasons (1.3 names; 1.4's TABLE_MISS/APPLY_ACTION are the same numbers)
_REASONS = {0: 'no_match', 1: 'action', 2: 'invalid_ttl', 3: 'action_set', 4: 'group', 5: 'packet_out'}
_core = None                        # weakref to the running controller.core.Controller


def watch(core) -> None:
    """The controller whose state the collector reports (one per process)."""
    global _core
    _core = weakref.ref(core)


def _switch(dpid: int) -> str:
    core = _core() if _core else None
    sw = core.inv.switches.get(dpid) if core is not None else None
    return sw.name if sw is not None else '%016x' % dpid


def _table(table_id: int) -> str:
    from controller.pipeline import tables
    try:
        return tables.table_name(table_id)
    except (KeyError, ValueError):
        return str(table_id)


# ---- hooks (one line each at the call site) --------------------------------------------------

def packet_in(dpid: int, reason: int, table_id: int) -> None:
    PACKET_INS.labels(_switch(dpid), _table(table_id), _REASONS.get(reason, str(reason))).inc()


def flow_mods(dpid: int, deletes: int, adds: int, bundle: bool) -> None:
    name = _switch(dpid)
    FLOW_MODS.labels(name, 'delete').inc(deletes)
    FLOW_MODS.labels(name, 'add').inc(adds)
    if bundle:
        BUNDLES.labels(name, 'sent').inc()


def bundle_rejected(dpid: int) -> None:
    BUNDLES.labels(_switch(dpid), 'rejected').inc()


def timed_converge(fn):
    """Decorates Reconciler.converge(self, conn, desired, ...): its duration per switch."""
    @functools.wraps(fn)
    def wrapper(self, conn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(self, conn, *args, **kwargs)
        finally:
            RECONCILE.labels(_switch(conn.dpid)).observe(time.perf_counter() - t0)
    return wrapper


def counted_apply(fn):
    """Decorates PolicyService.apply/delete(self, ..., dry_run=False): applied, rejected (the
    policy is invalid: PolicyError, or no such tenant) or failed (a switch did not converge)."""
    from controller.policy.errors import PolicyError

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        dry = str(bool(kwargs.get('dry_run', args[1] if len(args) > 1 else False))).lower()
        try:
            out = fn(self, *args, **kwargs)
        except (PolicyError, KeyError):
            APPLIES.labels('rejected', dry).inc()
            raise
        except Exception:
            APPLIES.labels('failed', dry).inc()
            raise
        APPLIES.labels('applied', dry).inc()
        return out
    return wrapper


def api_request(method: str, path: str, status: int) -> None:
    parts = [p for p in path.split('?')[0].split('/') if p][:2]     # /v1/tenants/acme -> /v1/tenants
    API_REQUESTS.labels(method, '/' + '/'.join(parts), str(status)).inc()


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """(body, content type) in the format the scraper asks for (Accept header): text format
    0.0.4 by default, OpenMetrics when asked."""
    encode, content_type = choose_encoder(accept or '')
    return encode(REGISTRY), content_type


# ---- state read at scrape time ---------------------------------------------------------------

class _CoreCollector:
    def collect(self):
        flows = GaugeMetricFamily('opendvs_flows', 'Flows installed, as the reconciler knows them',
                                  labels=['switch', 'table'])
        connected = GaugeMetricFamily('opendvs_switches_connected', 'Switches with an OpenFlow session',
                                      labels=['kind'])
        bindings = GaugeMetricFamily('opendvs_bindings', 'Bound VM nics (OVSDB iface-ids) per hypervisor',
                                     labels=['hypervisor'])
        macs = GaugeMetricFamily('opendvs_learned_macs', 'MACs learned per switch', labels=['switch'])
        shut = GaugeMetricFamily('opendvs_port_shutdown', 'VM/edge ports shut for a MAC-limit violation '
                                 '(learning.violation: shutdown) until errdisable recovery', labels=['switch', 'port'])
        core = _core() if _core else None
        if core is not None:
            with core.lock:
                switches = {d: (sw.name, sw.kind) for d, sw in core.inv.switches.items()}
                kinds = {'physical': 0, 'hypervisor': 0}
                for d in core.conns:
                    if d in switches:
                        kinds[switches[d][1]] = kinds.get(switches[d][1], 0) + 1
                per_table = {}
                for d, (name, _) in switches.items():
                    for f in core.rec.installed(d) or ():
                        per_table[(name, f.table)] = per_table.get((name, f.table), 0) + 1
                bound = {switches[d][0]: len(b) for d, b in core.inv.bindings.items() if d in switches}
                learned = {switches[d][0]: len(m) for d, m in core.inv.macs.items() if d in switches}
                ports_shut = sorted((switches[d][0], str(no)) for d, s in core.inv.shutdown.items()
                                    if d in switches for no in s)
            for kind, n in sorted(kinds.items()):
                connected.add_metric([kind], n)
            for (name, table), n in sorted(per_table.items()):
                flows.add_metric([name, table], n)
            for name, n in sorted(bound.items()):
                bindings.add_metric([name], n)
            for name, n in sorted(learned.items()):
                macs.add_metric([name], n)
            for labels in ports_shut:
                shut.add_metric(list(labels), 1)
        return [flows, connected, bindings, macs, shut]


REGISTRY.register(_CoreCollector())


# ---- bonded uplinks, read at scrape time from what the bond watchers last reported -------------

class _BondCollector:
    def collect(self):
        from controller.inventory.bonds import BONDED_STATUSES, end_degraded
        g = {name: GaugeMetricFamily('opendvs_bond_' + name, doc, labels=['hypervisor', 'side'])
             for name, doc in (('members', 'Members configured in this end of the uplink bond'),
                               ('members_up', 'Members of the bond whose link is up'),
                               ('members_enabled', 'Members that may carry traffic: link up and, with LACP, '
                                                   'a current partner'),
                               ('lacp_negotiated', '1 when the bond runs LACP and a member has a current partner'),
                               ('degraded', '1 when a member is missing, down or hears no LACP partner, or '
                                            'the bond runs LACP where the fabric says otherwise'))}
        member_up = GaugeMetricFamily('opendvs_bond_member_up', 'Link state of a bond member (1 up)',
                                      labels=['hypervisor', 'side', 'member'])
        member_lacp = GaugeMetricFamily('opendvs_bond_member_lacp_negotiated',
                                        '1 when the member has a current LACP partner (0 with LACP off)',
                                        labels=['hypervisor', 'side', 'member'])
        status = GaugeMetricFamily('opendvs_uplink_status', 'Status of a bonded hypervisor\'s uplinks, as '
                                   '`dvsctl show uplinks` gives it (1 for the current one)',
                                   labels=['hypervisor', 'status'])
        core = _core() if _core else None
        view = getattr(core, 'uplink_bonds', None)
        for hv, _, leaf, hv_bond, now, _ in (view() if view else ()):
            if hv.uplinks < 2:
                continue
            for word in BONDED_STATUSES:
                status.add_metric([hv.name, word], int(word == now))
            for side, b in (('leaf', leaf), ('hypervisor', hv_bond)):
                if b is None:                  # not read (yet): `dvsctl show uplinks` says why
                    continue
                labels = [hv.name, side]
                g['members'].add_metric(labels, len(b.members))
                g['members_up'].add_metric(labels, sum(m.link_up for m in b.members))
                g['members_enabled'].add_metric(labels, sum(map(b.usable, b.members)))
                g['lacp_negotiated'].add_metric(labels, int(b.negotiated))
                g['degraded'].add_metric(labels, int(end_degraded(hv.uplinks, hv.bond, b)))
                for m in b.members:
                    member_up.add_metric(labels + [m.name], int(m.link_up))
                    member_lacp.add_metric(labels + [m.name], int(bool(m.lacp_current)))
        return [*g.values(), member_up, member_lacp, status]


REGISTRY.register(_BondCollector())
