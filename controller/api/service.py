"""What the API does, without HTTP: validate a push against the whole policy, persist it
atomically, hand it to the controller core, report per-switch flow changes; and the views
behind `dvsctl show`."""
from __future__ import annotations

import threading

from controller.pipeline import cookies, tables
from controller.policy.errors import PolicyError
from controller.policy.model import Policy
from controller.policy.store import PolicyStore


def build_tenants(fabric, docs: dict[str, dict], parsed: dict | None = None):
    """Parse stored/pushed tenant documents (reusing `parsed`: name -> Tenant already built
    from the same text) and check them together against the fabric."""
    if not docs:
        return []
    from controller.policy.tenant import check_tenants, parse_tenant
    tenants, diags = [], []
    for name, doc in docs.items():
        if parsed and name in parsed:
            tenants.append(parsed[name])
            continue
        try:
            tenants.append(parse_tenant(doc['text'], doc['source']))
        except PolicyError as e:
            diags += e.diags
    if diags:
        raise PolicyError(diags)
    check_tenants(fabric, tenants)
    return tenants


class PolicyService:
    def __init__(self, core, store: PolicyStore):
        self.core, self.store = core, store
        self.docs = store.load()
        self._lock = threading.Lock()          # one push at a time

    def apply(self, pushed: list[dict], dry_run: bool = False) -> dict:
        """pushed: [{'source': file name, 'text': YAML}].  Raises PolicyError if invalid."""
        from controller.policy.tenant import parse_tenant
        with self._lock:
            merged, parsed, diags = dict(self.docs), {}, []
            for doc in pushed:
                try:
                    t = parse_tenant(doc['text'], doc['source'])
                except PolicyError as e:
                    diags += e.diags
                    continue
                merged[t.name] = {'source': doc['source'], 'text': doc['text']}
                parsed[t.name] = t
            if diags:
                raise PolicyError(diags)
            return self._switch_to(merged, dry_run, parsed)

    def delete(self, name: str, dry_run: bool = False) -> dict:
        with self._lock:
            if name not in self.docs:
                raise KeyError(name)
            merged = {k: v for k, v in self.docs.items() if k != name}
            return self._switch_to(merged, dry_run)

    def _switch_to(self, docs: dict, dry_run: bool, parsed: dict | None = None) -> dict:
        # tenants not pushed now are the running ones: reuse them instead of parsing again
        running = {**self.core.policy.tenants, **(parsed or {})}
        known = {n: running[n] for n in docs if n in running and (n in (parsed or {}) or docs[n] == self.docs.get(n))}
        candidate = self.core.policy.with_tenants(build_tenants(self.core.fabric, docs, known))
        if dry_run:
            diffs = self.core.apply_policy(candidate, dry_run=True)
        else:
            self.store.save(docs)            # on disk first: a crash now restarts with the new policy
            self.docs = docs
            diffs = self.core.apply_policy(candidate)
        return {'dry_run': dry_run, 'tenants': sorted(docs),
                'switches': {name: {'add': len(d.add), 'delete': len(d.delete)} for name, d in sorted(diffs.items())}}

    # ---- views ------------------------------------------------------------------------------

    def tenants(self) -> list[dict]:
        pol: Policy = self.core.policy
        return [{'name': t.name, 'source': t.source, 'networks': sorted(t.networks),
                 'workloads': sorted(t.workloads)} for t in pol.tenants.values()]

    def networks(self) -> list[dict]:
        pol: Policy = self.core.policy
        return [{'tenant': t.name, 'name': n.name, 'vlan': n.vlan, 'vni': n.vni, 'subnet': str(n.subnet),
                 'gateway': str(n.gateway) if n.gateway else None}
                for t in pol.tenants.values() for n in t.networks.values()]

    def workloads(self) -> list[dict]:
        core = self.core
        with core.lock:
            where = {b.iface_id: (core.inv.switches[d].name if d in core.inv.switches else '%016x' % d, no, b.name)
                     for d, ports in core.inv.bindings.items() for no, b in ports.items()}
            pol = core.policy
        out = []
        for iface_id, bn in sorted(pol.nics.items()):
            hv = where.get(iface_id)
            out.append({'tenant': bn.tenant.name, 'workload': bn.workload.name, 'nic': bn.nic.index,
                        'network': bn.network.name, 'mac': bn.nic.mac, 'ip': str(bn.nic.ip),
                        'iface_id': iface_id, 'hypervisor': hv[0] if hv else None,
                        'port': hv[1] if hv else None, 'interface': hv[2] if hv else None})
        return out

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

    def switches(self) -> list[dict]:
        core = self.core
        with core.lock:
            return [{'name': sw.name, 'dpid': '%016x' % sw.dpid, 'kind': sw.kind,
                     'connected': sw.dpid in core.conns, 'settling': core.settling(sw.dpid),
                     'flows': len(core.rec.installed(sw.dpid) or ()),
                     'ports': [{'no': p.no, 'name': p.name, 'up': p.up, 'role': p.role}
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
                out.append({'switch': name, 'table': f.table, 'priority': f.priority, 'cookie': '%#x' % f.cookie,
                            'owner': cookies.describe(f.cookie), 'flow': str(f)})
        return out
