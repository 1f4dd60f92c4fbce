"""What the API does, without HTTP: validate a push against the whole policy, persist it
atomically, hand it to the controller core, report per-switch flow changes; and the views
behind `dvsctl show`."""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading

from controller import audit, metrics
from controller.pipeline import cookies, tables
from controller.policy import model
from controller.policy.errors import PolicyError
from controller.policy.model import Policy
from controller.policy.store import PolicyStore

LOG = logging.getLogger('opendvs.reload')


class NoSuchTenant(LookupError):
    """A tenant that is not running (the API's only 404 from a service call): args are its
    name and, when given, the names of the running tenants."""


def parse_doc(doc: dict):
    """One stored/pushed tenant document -> its Tenant, or the PolicyError parsing it raised."""
    from controller.policy.tenant import parse_tenant
    try:
        return parse_tenant(doc['text'], doc['source'])
    except PolicyError as e:
        return e


def build_tenants(fabric, docs: dict[str, dict], parsed: dict | None = None, pushed=()):
    """Parse stored/pushed tenant documents (reusing `parsed`: name -> Tenant already built
    from the same text) and check them together against the fabric; `pushed`: more attempts
    (Tenant or PolicyError, see tenant.check_together) checked after them."""
    from controller.policy.tenant import check_together
    attempts = [parsed[name] if parsed and name in parsed else parse_doc(doc) for name, doc in docs.items()]
    return check_together(fabric, attempts + list(pushed))


def _hypervisor(pol: Policy, location) -> str | None:
    """The name of the hypervisor at an inventory location (dpid, port); None: not bound."""
    if location is None:
        return None
    sw = pol.fabric.switch_by_dpid(location[0])
    return sw.name if sw is not None else '%016x' % location[0]


class PolicyService:
    def __init__(self, core, store: PolicyStore):
        self.core, self.store = core, store
        self.docs = store.load()
        self._lock = threading.Lock()          # one push at a time

    @metrics.counted_apply
    def apply(self, pushed: list[dict], dry_run: bool = False, by: str | None = None) -> dict:
        """pushed: [{'source': file name, 'text': YAML}].  Raises PolicyError if invalid.
        by: who pushed it (the API client's address), for the event log."""
        # Parsed before taking the lock: a big push must not hold up a small one behind it.
        attempts = [parse_doc(doc) for doc in pushed]
        with self._lock:
            names = [a.name if isinstance(a, model.Tenant) else getattr(a.partial, 'name', None) for a in attempts]
            if not all(isinstance(a, model.Tenant) for a in attempts) or len(set(names)) < len(names):
                # checked with the others too, so every problem is reported at once; this raises
                kept = {n: d for n, d in self.docs.items() if n not in names}
                build_tenants(self.core.fabric, kept, self._running(), attempts)
            merged, parsed = dict(self.docs), {}
            for doc, t in zip(pushed, attempts):
                merged[t.name] = {'source': doc['source'], 'text': doc['text']}
                parsed[t.name] = t
            return self._switch_to(merged, dry_run, parsed, by)

    def reload_fabric(self) -> dict | None:
        """Re-read the running fabric's file (SIGHUP) and apply what changed, as a diff; if it
        cannot be applied live (controller/policy/reload.py), change nothing and log why.
        -> {switch: {'add', 'delete'}} when applied, None when refused."""
        from controller.policy import reload
        from controller.policy.fabric import load_fabric
        path = self.core.fabric.source
        try:
            new = load_fabric(path)                  # parsed outside the lock, like a push
        except PolicyError as e:
            LOG.error('fabric reload refused, the running fabric is kept: %s does not validate:\n%s', path, e)
            audit.refused(self.core, 'fabric reload', 'sighup', '%s does not validate' % path,
                          diags=[str(d) for d in e.diags])
            return None
        with self._lock:
            if new == self.core.fabric:
                LOG.info('fabric reload: %s is unchanged', path)
                return {}
            with self.core.lock:
                connected = {d: (sw.name, sw.kind) for d, sw in self.core.inv.switches.items()}
            candidate, reasons = reload.plan(self.core.policy, new, connected)
            if candidate is None:
                LOG.error('fabric reload refused, the running fabric is kept:\n  %s', '\n  '.join(reasons))
                audit.refused(self.core, 'fabric reload', 'sighup', '; '.join(reasons))
                return None
            diffs = audit.apply(self.core, candidate, 'sighup')       # apply_policy + an `apply` event
            LOG.info('fabric reloaded from %s: %s', path, ', '.join(
                '%s +%d -%d' % (n, len(d.add), len(d.delete)) for n, d in sorted(diffs.items())) or 'no switch connected')
            return {n: {'add': len(d.add), 'delete': len(d.delete)} for n, d in sorted(diffs.items())}

    def _running(self) -> dict:
        """name -> running Tenant (parsed from the stored document of that name)."""
        return {n: t for n, t in self.core.policy.tenants.items() if n in self.docs}

    @metrics.counted_apply
    def delete(self, name: str, dry_run: bool = False, by: str | None = None) -> dict:
        with self._lock:
            if name not in self.docs:
                raise NoSuchTenant(name, sorted(self.docs))
            merged = {k: v for k, v in self.docs.items() if k != name}
            return self._switch_to(merged, dry_run, by=by)

    def _switch_to(self, docs: dict, dry_run: bool, parsed: dict | None = None, by: str | None = None) -> dict:
        # tenants not pushed now are the running ones: reuse them instead of parsing again
        running = {**self.core.policy.tenants, **(parsed or {})}
        known = {n: running[n] for n in docs if n in running and (n in (parsed or {}) or docs[n] == self.docs.get(n))}
        candidate = self.core.policy.with_tenants(build_tenants(self.core.fabric, docs, known))
        if dry_run:
            diffs = self.core.apply_policy(candidate, dry_run=True)
        else:
            self.store.save(docs)            # on disk first: a crash now restarts with the new policy
            self.docs = docs
            diffs = audit.apply(self.core, candidate, by)        # apply_policy + an `apply` event
        return {'dry_run': dry_run, 'tenants': sorted(docs),
                'switches': {name: {'add': len(d.add), 'delete': len(d.delete)} for name, d in sorted(diffs.items())}}

    # ---- views ------------------------------------------------------------------------------

    def tenants(self) -> list[dict]:
        pol: Policy = self.core.policy
        out = []
        for t in pol.tenants.values():
            value, mask = self.core.cookies.tenant_match(t.name)
            out.append({'name': t.name, 'source': t.source, 'networks': sorted(t.networks),
                        'workloads': sorted(t.workloads), 'id': pol.ids.tenant[t.name], 'zone': pol.ids.zone[t.name],
                        'cookie': '%#x/%#x' % (value, mask)})
        return out

    def networks(self) -> list[dict]:
        pol: Policy = self.core.policy
        return [{'tenant': t.name, 'name': n.name, 'vlan': n.vlan, 'vni': n.vni, 'subnet': str(n.subnet),
                 'gateway': str(n.gateway) if n.gateway else None, 'id': pol.ids.network[(t.name, n.name)],
                 'local_vlan': pol.ids.overlay_vlan.get((t.name, n.name))}
                for t in pol.tenants.values() for n in t.networks.values()]

    def workloads(self) -> list[dict]:
        """Every nic of every tenant: where it is located (hypervisor, port, interface), and
        its other bindings with why they are not its location ('status'): a port waiting for
        the VM's GARP/RARP during a live migration, or one refused (its trunk lacks the VLAN)."""
        core = self.core
        with core.lock:
            names = {d: sw.name for d, sw in core.inv.switches.items()}
            name = lambda d: names.get(d, '%016x' % d)      # noqa: E731
            where = {iface_id: (name(d), no, core.inv.bindings.get(d, {}).get(no).name
                                if no in core.inv.bindings.get(d, {}) else None)
                     for iface_id, (d, no) in core.inv.locations.items()}
            places = {i: core.inv.places(i) for i in core.policy.nics}
            refused = dict(core.inv.refused_places)
            pol = core.policy
        out = []
        for iface_id, bn in sorted(pol.nics.items()):
            hv = where.get(iface_id)
            others = []
            for d, no, state in places[iface_id]:
                if state == 'pending':
                    others.append('pending on %s port %d: waiting for a GARP/RARP from the VM' % (name(d), no))
                elif state == 'refused':
                    others.append('refused on %s port %d: %s' % (name(d), no, refused[(iface_id, d)]))
            status = 'active' if hv else 'not bound'
            out.append({'tenant': bn.tenant.name, 'workload': bn.workload.name, 'nic': bn.nic.index,
                        'network': bn.network.name, 'mac': bn.nic.mac, 'ip': str(bn.nic.ip),
                        'iface_id': iface_id, 'hypervisor': hv[0] if hv else None,
                        'port': hv[1] if hv else None, 'interface': hv[2] if hv else None,
                        'status': '; '.join([status] + others)})
        return out

    def placement(self, tenant: str, workload: str, hypervisor: str) -> dict:
        """May this workload run on this hypervisor?  {'ok': bool, 'reasons': [...]}: what a
        live migration asks before it moves a VM (opendvs-lab move)."""
        from apps import vlan_portgroups
        pol = self.core.policy
        if tenant not in pol.tenants:
            raise NoSuchTenant(tenant, sorted(pol.tenants))
        t = pol.tenants[tenant]
        if workload not in t.workloads:
            return {'ok': False, 'reasons': ['tenant %s has no workload %s' % (tenant, workload)]}
        if hypervisor not in pol.fabric.hypervisors:
            return {'ok': False, 'reasons': ['no hypervisor %s in %s (hypervisors: %s)' % (
                hypervisor, pol.fabric.source, ', '.join(sorted(pol.fabric.hypervisors)))]}
        reasons = [r for nic in t.workloads[workload].nics
                   if (r := vlan_portgroups.placement_refusal(pol, t.iface_id(workload, nic.index), hypervisor))]
        return {'ok': not reasons, 'reasons': reasons}

    def tunnels(self) -> list[dict]:
        """Per hypervisor: its VTEP, the VNIs present on it, and the remote MACs it tunnels to."""
        from apps import vxlan_overlay
        core = self.core
        with core.lock:
            pol, members = core.policy, vxlan_overlay.members(core.policy, core.inv)
            hvs = {d: sw.name for d, sw in core.inv.switches.items() if sw.kind == 'hypervisor'}
        out = []
        for dpid, name in sorted(hvs.items(), key=lambda kv: kv[1]):
            vnis, remote = [], []
            for (tenant, net), by_hv in sorted(members.items()):
                if dpid not in by_hv:
                    continue
                vni = pol.tenants[tenant].networks[net].vni
                vnis.append('%d(%s/%s)' % (vni, tenant, net))
                for hv, nics in sorted(by_hv.items()):
                    if hv != dpid:
                        vtep = pol.fabric.switch_by_dpid(hv).vtep
                        remote += ['%s@%s/vni%d' % (bn.nic.mac, vtep, vni) for _, bn in nics]
            out.append({'hypervisor': name, 'vtep': str(pol.fabric.hypervisors[name].vtep), 'vnis': vnis,
                        'remote_macs': remote})
        return out

    def routes(self, tenant: str) -> dict:
        """One tenant's VRF: each network (by name) with its subnet, gateway and transport, and
        where each of its nics is bound; a network without a gateway is an isolated segment."""
        core = self.core
        with core.lock:
            pol, where = core.policy, dict(core.inv.locations)
        if tenant not in pol.tenants:
            raise NoSuchTenant(tenant, sorted(pol.tenants))
        t, nics = pol.tenants[tenant], {}
        for w in t.workloads.values():
            for nic in w.nics:
                nics.setdefault(nic.network, []).append(
                    {'workload': w.name, 'nic': nic.index, 'ip': str(nic.ip), 'mac': nic.mac,
                     'hypervisor': _hypervisor(pol, where.get(t.iface_id(w.name, nic.index)))})
        nets = [{'network': n.name, 'subnet': str(n.subnet), 'gateway': str(n.gateway) if n.gateway else None,
                 'transport': 'vlan %d' % n.vlan if n.vlan is not None else 'vni %d' % n.vni,
                 'routed': n.gateway is not None,
                 'workloads': sorted(nics.get(n.name, []), key=lambda w: ipaddress.IPv4Address(w['ip']))}
                for n in sorted(t.networks.values(), key=lambda n: n.name)]
        return {'tenant': tenant, 'gateway_mac': pol.fabric.gateway_mac, 'networks': nets}

    def rules(self, tenant: str) -> dict:
        """One tenant's microsegmentation rules with their hits and the tenant's drops, read
        from the hypervisors' flow counters (controller/api/rule_hits.py)."""
        from controller.api import rule_hits
        return rule_hits.view(self.core, tenant)

    def switches(self) -> list[dict]:
        core = self.core
        with core.lock:
            return [{'name': sw.name, 'dpid': '%016x' % sw.dpid, 'kind': sw.kind,
                     'connected': sw.dpid in core.conns, 'settling': core.settling(sw.dpid),
                     'flows': len(core.rec.installed(sw.dpid) or ()),
                     'ports': [{'no': p.no, 'name': p.name, 'up': p.up, 'role': p.role,
                                'shut': p.no in core.inv.shutdown.get(sw.dpid, ())}     # floods: errdisabled
                               for p in sorted(sw.ports.values(), key=lambda p: p.no)]}
                    for sw in sorted(core.inv.switches.values(), key=lambda s: s.name)]

    def uplinks(self) -> list[dict]:
        """Per hypervisor: its uplinks, bonded or not, with both ends' member and LACP state
        (controller/bonds.py); a core without bond support reports nothing."""
        view = getattr(self.core, 'uplinks', None)
        return view() if view is not None else []

    def flows(self, switch: str | None = None) -> list[dict]:
        core = self.core
        with core.lock:
            pick = [(sw.name, d) for d, sw in core.inv.switches.items() if switch in (None, sw.name)]
        out = []
        for name, dpid in sorted(pick):
            for f in sorted(core.rec.installed(dpid) or (), key=lambda f: (tables.table_id(f.table)
                                                                            if f.table in tables.BY_NAME else 999,
                                                                            -f.priority, repr(f.match))):
                c = f.cookie
                value = core.cookies.encode(c)
                out.append({'switch': name, 'table': f.table, 'priority': f.priority,
                            'cookie': '%#x' % value, 'owner': cookies.describe(c),
                            'app': cookies.app_of(c), 'tenant': getattr(c, 'tenant', None),
                            'where': getattr(c, 'where', None), 'flow': str(dataclasses.replace(f, cookie=value))})
        return out
