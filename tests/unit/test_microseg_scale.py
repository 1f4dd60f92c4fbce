"""Microsegmentation is sized by conjunctive matches: flows grow with members + rules, never
sources x destinations x ports.

The bound, read off apps/microseg.py, for one hypervisor h and one tenant t with default deny
and L_t of its nics on h (a tenant with no nic on h, or open inside, costs nothing on h):

    flows(h, t) <= 4 L_t                       per local VM port: untracked -> ct; replies;
                                               related; established under the current policy
                 + 3 P                         per uplink/tunnel port (P of them): track,
                                               commit new, pass the rest
                 + 3                           unknown unicast, invalid, the tenant's default
                 + sum over the rules r with a destination on h of
                       S_r + D_r,h + V_r + 1   one conjunction: a flow per source address, per
                                               local destination port, per service match (a port
                                               range: its masked prefixes) and the one that
                                               counts the rule's hits
    flows(h) = sum over t of flows(h, t)

(<=: two rules from the same label share their source clause flows.)  Enumerating the pairs
instead would cost S_r x D_r,h x V_r per rule.

The world: bench/fabricgen.py, 2 racks of 2 hypervisors, one tenant t0 of two networks (one
VLAN, one VXLAN) and 200 workloads, one nic each, round-robin over the 4 hypervisors; the
workloads alternate between label l0 (100: "web") and l1 (100: "db"); default deny and one rule
l0 -> l1 tcp/5432."""
from __future__ import annotations

import dataclasses

from apps import microseg
from bench.fabricgen import world
from controller.policy.model import Allow, Security

P = 2                                             # fabricgen's hypervisors: an uplink and a tunnel port


def small(workloads: int, rules=True):
    return world(racks=2, per_rack=2, networks=2, workloads=workloads, per_tenant=2, rules=rules)


def local(policy, inv, dpid):
    return [policy.nics[b.iface_id] for b in inv.bindings[dpid].values() if b.iface_id in policy.nics]


def bound(policy, inv, dpid) -> int:
    """The formula above, for this hypervisor."""
    total = 0
    for t in policy.tenants.values():
        here = [bn for bn in local(policy, inv, dpid) if bn.tenant.name == t.name]
        if not here or t.security.default != 'deny':
            continue
        total += 4 * len(here) + 3 * P + 3
        for r in t.security.rules:
            d = sum(1 for bn in here if microseg._selects(t, r.dst, bn))
            if d:
                s = len(microseg._sources(t, r.src))
                v = len(microseg._services(r.allow))
                total += s + d + v + 1
    return total


def hvs(policy):
    return sorted(h.dpid for h in policy.fabric.hypervisors.values())


def test_200_workloads_in_two_labels_with_one_rule_stay_under_the_bound_on_every_hypervisor():
    policy, inv = small(200)
    (t,) = policy.tenants.values()
    labels = [w.labels[0] for w in t.workloads.values()]
    assert (labels.count('l0'), labels.count('l1')) == (100, 100)
    assert len(hvs(policy)) == 4
    for dpid in hvs(policy):
        flows = microseg.compile_flows(policy, inv, dpid)
        assert flows and all(f.table == 'acl_out' for f in flows)
        here = local(policy, inv, dpid)
        dbs = sum(1 for bn in here if 'l1' in bn.workload.labels)     # 22-28 (round-robin by iface id)
        assert len(here) == 50 and dbs > 10
        b = bound(policy, inv, dpid)
        assert b == 4 * 50 + 3 * P + 3 + (100 + dbs + 1 + 1)            # 331 + dbs
        assert len(flows) <= b
        # the pairwise expansion would be 100 sources x the local db ports x 1 service
        assert len(flows) < 100 * dbs / 5


def test_flows_grow_linearly_with_the_workloads():
    counts = {}
    for n in (100, 200, 400):
        policy, inv = small(n)
        per_hv = [len(microseg.compile_flows(policy, inv, d)) for d in hvs(policy)]
        assert all(c <= bound(policy, inv, d) for c, d in zip(per_hv, hvs(policy)))
        counts[n] = sum(per_hv)
    for a, b in ((100, 200), (200, 400)):
        assert 1.8 <= counts[b] / counts[a] <= 2.1, counts          # doubles, never quadruples


def test_an_open_tenant_costs_no_microseg_flow():
    policy, inv = small(200, rules=False)
    assert all(not microseg.compile_flows(policy, inv, d) for d in hvs(policy))


def test_a_port_range_compiles_to_its_few_masked_prefixes():
    masks = microseg.port_masks(1000, 1999)
    assert len(masks) == 7                     # 1000/13 1008/12 1024/7 1536/8 1792/9 1920/10 1984/12
    covered = {p for v, m in masks for p in range(65536) if p & m == v}
    assert covered == set(range(1000, 2000))
    assert microseg.port_masks(5432, 5432) == [(5432, 0xffff)]
    assert microseg.port_masks(0, 65535) == [(0, 0)]
    # a rule allowing tcp 1000-1999 instead of 5432: 7 service flows, the rest unchanged
    policy, inv = small(200)
    (t,) = policy.tenants.values()
    (rule,) = t.security.rules
    wide = dataclasses.replace(t, security=Security('deny', (dataclasses.replace(
        rule, allow=(Allow('tcp', (1000, 1999)),)),)))
    wide_policy = policy.with_tenants([wide])
    dpid = hvs(policy)[0]
    before = microseg.compile_flows(policy, inv, dpid)
    after = microseg.compile_flows(wide_policy, inv, dpid)
    svc = [f for f in after if dict(f.match).get('ip_proto') == 6 and 'tcp_dst' in dict(f.match)]
    assert sorted(dict(f.match)['tcp_dst'] for f in svc) == sorted(
        v if m == 0xffff else (v, m) for v, m in masks)
    assert len(after) == len(before) - 1 + 7
    assert len(after) <= bound(wide_policy, inv, dpid)


def test_the_rule_flow_carries_the_rules_cookie_and_yaml_line():
    policy, inv = small(200)
    (t,) = policy.tenants.values()
    (rule,) = t.security.rules
    dpid = hvs(policy)[0]
    flows = microseg.compile_flows(policy, inv, dpid)
    dbs = sum(1 for bn in local(policy, inv, dpid) if 'l1' in bn.workload.labels)
    hits = [f for f in flows if 'conj_id' in dict(f.match)]
    assert len(hits) == 1
    c = hits[0].cookie
    assert (c.app, c.kind, c.tenant, c.owner) == ('microseg', microseg.K_RULE, 't0', 'rule:l0-to-l1')
    assert c.where == 't0.yaml:%d' % rule.line == 't0.yaml:2'
    # the clause flows (shared between rules from one label) name the tenant's rules
    clauses = [f for f in flows if any(a[0] == 'conjunction' for a in f.actions)]
    assert len(clauses) == 100 + dbs + 1
    assert {(f.cookie.owner, f.cookie.tenant) for f in clauses} == {('rules', 't0')}


def test_fabricgen_rules_n_covers_every_pair_of_groups_and_stays_under_the_bound():
    from bench.fabricgen import GROUPS, rule_set
    rules = rule_set(100)
    assert len({(r.src.label, r.dst.label) for r in rules}) == GROUPS * GROUPS
    assert sum(any(a.proto == 'icmp' for a in r.allow) for r in rules) == 10
    policy, inv = world(racks=2, per_rack=2, networks=4, workloads=400, per_tenant=2, rules=100)
    assert len(policy.tenants) == 2 and all(len(t.security.rules) == 100 for t in policy.tenants.values())
    for dpid in hvs(policy):
        n = len(microseg.compile_flows(policy, inv, dpid))
        assert 0 < n <= bound(policy, inv, dpid)
