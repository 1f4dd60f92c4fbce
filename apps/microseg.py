"""Microsegmentation: a tenant's `security:` rules, stateful, enforced on the hypervisor of
the destination VM, sized by conjunctive matches.

A tenant with `default: deny` gets flows in acl_out on every hypervisor where it has a VM
(a tenant without `security:`, or with `default: allow`, is open inside and costs nothing
here).  acl_out sees every frame once its destination is known (bridged or routed), so one
conntrack pass per hypervisor, in the tenant's zone (reg13: identical addresses in two
tenants never share an entry):

  to a local VM port   -trk -> ct(zone, recirculate to acl_out); replies, related and
                       established packets of the current policy pass; a new connection (or
                       an established one the policy has changed under) passes only through
                       a rule's conjunction, which commits it with the policy's generation in
                       ct_mark; anything else is dropped and counted by the tenant's default
                       flow (invalid packets by their own)
  to the uplink/tunnel the connection is tracked and committed, so the replies pass on the
                       way back in (rules are checked where the destination is)
  unknown-unicast IP   dropped (a known VM always has a destination entry)

Rules: `from` is a set of source addresses (a label's or workload's nic IPs, a network's
subnet, a CIDR), `to` the local VM ports it selects, `allow` the services.  Each rule is one
conjunction: |sources| + |local destinations| + |services| flows plus one that counts the
rule's hits (its cookie names the rule and its YAML line), never their product.

Policy change: the generation (ct_mark) is a hash of the tenant's rules, so a connection
committed under other rules is re-checked on its next packet: still allowed -> re-committed
with the new mark, 0 loss; forbidden -> dropped from that packet on (its replies still
pass, so nothing half-open lingers on the other side's state).
"""
from __future__ import annotations

import ipaddress
import sys
import zlib

from controller.inventory.model import TUNNEL, UPLINK, Inventory
from controller.pipeline import actions as A, cookies, incremental, registers as R
from controller.pipeline.flow import Flow

APP = 'microseg'
K_TRACK, K_PASS, K_RULE, K_DEFAULT, K_INVALID, K_EGRESS, K_FLOOD = 1, 2, 3, 4, 5, 6, 7
P_TRACK, P_PASS, P_INVALID, P_RULE, P_DEFAULT = 300, 290, 280, 200, 100
ETH_IP = 0x0800
ZONE = R.ZONE                                  # ct(zone=reg13[0..15]): the tenant's zone
UNICAST = ('00:00:00:00:00:00', '01:00:00:00:00:00')
PROTO = {'tcp': 6, 'udp': 17, 'icmp': 1}


_PER_TENANT: dict = {}         # (id(tenant), what) -> (tenant, value): computed once per policy


def _once(tenant, what, fn):
    """fn() once per tenant object (a policy's tenants are frozen): every hypervisor's
    compile shares the rules' hash and source sets instead of redoing them."""
    hit = _PER_TENANT.get((id(tenant), what))
    if hit is not None and hit[0] is tenant:
        return hit[1]
    if len(_PER_TENANT) > 65536:
        _PER_TENANT.clear()
    value = fn()
    _PER_TENANT[(id(tenant), what)] = (tenant, value)
    return value


def generation(tenant) -> int:
    """The ct_mark of connections committed under the tenant's current rules."""
    return _once(tenant, 'generation', lambda: zlib.crc32(
        repr((tenant.security.default, tenant.security.rules)).encode()) or 1)


def enforced(tenant) -> bool:
    return tenant.security.default == 'deny'


def context(policy, inv: Inventory, dpid: int):
    """The hypervisor's ports toward the fabric (uplink, tunnel), or None on a physical switch."""
    sw = inv.switches[dpid]
    if sw.kind != 'hypervisor':
        return None
    return tuple(p.no for p in sw.ports_with(UPLINK) + sw.ports_with(TUNNEL))


def units(policy, inv: Inventory, dpid: int):
    if inv.switches[dpid].kind != 'hypervisor':
        return []
    return sorted({bn.tenant.name for i, (d, _) in inv.locations.items() if d == dpid
                   and (bn := policy.nics.get(i)) is not None and enforced(bn.tenant)})


def compile_switch(policy, inv: Inventory, dpid: int, ctx) -> set[Flow]:
    return set()


def compile_unit(policy, inv: Inventory, dpid: int, tenant: str, ctx) -> set[Flow]:
    t = policy.tenants.get(tenant)
    if ctx is None or t is None or not enforced(t):
        return set()
    local = _local_nics(policy, inv, dpid, tenant)
    if not local:
        return set()
    ids = policy.ids
    vrf, gen = ids.tenant[tenant], generation(t)
    c = lambda kind, owner, line=0: cookies.make(APP, kind, owner, tenant, t.where(line))   # noqa: E731
    commit = A.ct(commit=True, zone=ZONE, exec=[('set_field', 'ct_mark', gen)])
    track = A.ct(zone=ZONE, table='acl_out')
    flows = set()
    for port, bn in local:
        owner = '%s/nic%d' % (bn.workload.name, bn.nic.index)
        cp = c(K_TRACK, owner, bn.workload.line)
        m = {R.OUT_PORT: port, 'eth_type': ETH_IP}
        flows.add(Flow.make('acl_out', P_TRACK, {**m, 'ct_state': '-trk'}, [track], cookie=cp))
        for state in ('+trk+rpl-inv', '+trk+rel-inv'):          # replies and related ICMP: always
            flows.add(Flow.make('acl_out', P_PASS, {**m, 'ct_state': state}, goto='output', cookie=cp))
        flows.add(Flow.make('acl_out', P_PASS, {**m, 'ct_state': '+trk+est-rpl-inv', 'ct_mark': gen},
                            goto='output', cookie=cp))
    base = {R.TENANT: vrf, 'eth_type': ETH_IP}
    for port in ctx:            # leaving for another hypervisor: tracked, so its replies pass here
        ce = c(K_EGRESS, 'egress')
        flows.add(Flow.make('acl_out', P_TRACK, {**base, R.OUT_PORT: port, 'ct_state': '-trk'}, [track], cookie=ce))
        flows.add(Flow.make('acl_out', P_PASS, {**base, R.OUT_PORT: port, 'ct_state': '+trk+new'}, [commit],
                            goto='output', cookie=ce))
        flows.add(Flow.make('acl_out', P_PASS, {**base, R.OUT_PORT: port, 'ct_state': '+trk-new'},
                            goto='output', cookie=ce))
    flows.add(Flow.make('acl_out', P_PASS, {**base, R.OUT_PORT: R.FLOOD, 'eth_dst': UNICAST},
                        cookie=c(K_FLOOD, 'unknown-unicast')))
    flows.add(Flow.make('acl_out', P_INVALID, {**base, 'ct_state': '+trk+inv'}, cookie=c(K_INVALID, 'invalid')))
    flows.add(Flow.make('acl_out', P_DEFAULT, {**base, 'ct_state': '+trk'}, cookie=c(K_DEFAULT, 'default')))
    flows |= _rules(policy, t, local, commit)
    return flows


def _local_nics(policy, inv, dpid, tenant) -> list:
    """(port, BoundNic) of the tenant's nics located on this hypervisor, on ports that are up."""
    sw = inv.switches[dpid]
    out = []
    for n in policy.tenants[tenant].networks:
        for i in policy.network_nics.get((tenant, n), ()):
            where = inv.locations.get(i)
            if where and where[0] == dpid and where[1] in sw.ports and sw.ports[where[1]].up:
                out.append((where[1], policy.nics[i]))
    return sorted(out, key=lambda x: x[0])


def _rules(policy, t, local, commit) -> set[Flow]:
    """Each rule as one conjunction: sources, local destinations, services (the services
    clause left out when the rule allows any protocol).  Clause flows with the same match
    (two rules from the same label) carry both rules' conjunction actions."""
    ids, vrf = policy.ids, policy.ids.tenant[t.name]
    clauses: dict[tuple, list] = {}
    flows = set()
    for rule in t.security.rules:
        dsts = sorted({port for port, bn in local if _selects(t, rule.dst, bn)})
        if not dsts:
            continue                      # no destination of this rule here
        srcs = _once(t, ('sources', rule.src), lambda: _sources(t, rule.src))
        services = None if any(a.proto == 'any' for a in rule.allow) else _services(rule.allow)
        n = 3 if services else 2
        cid = ids.conj[(t.name, rule.name)]
        for src in srcs:
            key = (('ct_state', '+trk-rpl-inv'), (R.TENANT, vrf), ('eth_type', ETH_IP), ('ipv4_src', src))
            clauses.setdefault(key, []).append(('conjunction', cid, 1, n))
        for port in dsts:
            clauses.setdefault(((R.OUT_PORT, port), ('eth_type', ETH_IP)), []).append(('conjunction', cid, 2, n))
        for svc in services or ():
            clauses.setdefault(((R.TENANT, vrf), ('eth_type', ETH_IP)) + svc, []).append(('conjunction', cid, 3, n))
        flows.add(Flow.make('acl_out', P_RULE, {'conj_id': cid, 'eth_type': ETH_IP}, [commit], goto='output',
                            cookie=cookies.make(APP, K_RULE, 'rule:%s' % rule.name, t.name, t.where(rule.line))))
    c = cookies.make(APP, K_RULE, 'rules', t.name, t.source)
    for key, acts in clauses.items():
        flows.add(Flow.make('acl_out', P_RULE, dict(key), sorted(acts), cookie=c))
    return flows


def _selects(t, ep, bn) -> bool:
    """Does a `to` endpoint select this nic?"""
    if ep.label is not None:
        return ep.label in bn.workload.labels
    if ep.workload is not None:
        return ep.workload == bn.workload.name
    if ep.network is not None:
        return ep.network == bn.network.name
    return bn.nic.ip in ep.cidr


def _sources(t, ep) -> list:
    """A `from` endpoint's source addresses (host addresses or prefixes)."""
    if ep.cidr is not None:
        return [str(ep.cidr)]
    if ep.network is not None:
        return [str(t.networks[ep.network].subnet)]
    wls = [w for w in t.workloads.values() if (ep.label in w.labels if ep.label else w.name == ep.workload)]
    return sorted({str(n.ip) for w in wls for n in w.nics}, key=ipaddress.IPv4Address)


def _services(allows) -> list[tuple]:
    """Match pairs of each allowed service; a port range as its few masked prefixes."""
    out = []
    for a in allows:
        proto = (('ip_proto', PROTO[a.proto]),)
        if a.icmp_type is not None:
            out.append(proto + (('icmpv4_type', a.icmp_type),))
            continue
        if a.ports is None:
            out.append(proto)
            continue
        field = '%s_dst' % a.proto
        for value, mask in port_masks(*a.ports):
            out.append(proto + ((field, value if mask == 0xffff else (value, mask)),))
    return sorted(set(out), key=repr)


def port_masks(lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi] as the fewest (value, mask) prefixes (what OVS matches on a port)."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 0xffff & ~(size - 1)))
        lo += size
    return out


def compile_flows(policy, inv: Inventory, dpid: int) -> set[Flow]:
    """Everything at once (the full compile the incremental one is checked against)."""
    return incremental.from_units(sys.modules[__name__], policy, inv, dpid)
