"""A generated data center for in-process benchmarks and scale tests: R racks of H
hypervisors under 2 spines, N networks (half VLAN, half VXLAN) in T tenants, W workloads
with one nic each, every nic bound.  No OVS: the inventory is filled as the events would."""
from __future__ import annotations

import ipaddress

from controller.inventory.model import (FABRIC, HYPERVISOR, TUNNEL, UPLINK, VM, Binding, Inventory,
                                        LinkEnd, Port, SwitchState)
from controller.policy.fabric import parse_fabric
from controller.policy.model import (Allow, Endpoint, Network, Nic, Policy, Rule, Security, Tenant, Workload,
                                     frozen_map)

VLAN_BASE = 100


def fabric_yaml(racks: int, per_rack: int, vlans: int) -> str:
    trunk = '[%s]' % ', '.join(str(VLAN_BASE + i) for i in range(vlans))
    lines = ['underlay: {mtu: 9000}', 'switches:', '  spine1: {dpid: 0x101}', '  spine2: {dpid: 0x102}']
    for r in range(racks):
        lines.append('  leaf%d: {dpid: %#x, rack_subnet: 172.%d.%d.0/24}' % (r + 1, 0x201 + r, 16 + r // 250, r % 250))
    lines.append('links: [%s]' % ', '.join('[spine%d, leaf%d]' % (s, r + 1) for s in (1, 2) for r in range(racks)))
    lines.append('hypervisors:')
    for r in range(racks):
        for h in range(per_rack):
            lines.append('  hv%d: {leaf: leaf%d, vtep: 172.%d.%d.%d, dpid: %#x, trunk_vlans: %s}' % (
                r * per_rack + h + 1, r + 1, 16 + r // 250, r % 250, 11 + h, 0xd500000000 + r * per_rack + h, trunk))
    return '\n'.join(lines) + '\n'


GROUPS = 10                             # rules=N: workloads in 10 groups g0..g9 by a second label


def rule_set(n: int) -> tuple[Rule, ...]:
    """N rules over the 10 groups: rule i from g(i % 10) to g(i // 10 % 10) (every ordered
    pair once per 100 rules), each its own service: tcp/(1000 + i), or for every 5th rule a
    10-port range tcp/(2000 + 10i)-(2009 + 10i) (two or more masked prefixes); every 10th
    allows icmp too."""
    out = []
    for i in range(n):
        allow = [Allow('tcp', (2000 + 10 * i, 2009 + 10 * i)) if i % 5 == 4 else Allow('tcp', (1000 + i, 1000 + i))]
        if i % 10 == 0:
            allow.append(Allow('icmp'))
        out.append(Rule('r%d' % i, Endpoint(label='g%d' % (i % GROUPS)), Endpoint(label='g%d' % (i // GROUPS % GROUPS)),
                        tuple(allow), line=3 + i))
    return tuple(out)


def tenants(networks: int, workloads: int, per_tenant: int = 10, gateways: bool = True,
            rules: bool | int = False) -> list[Tenant]:
    """networks/per_tenant tenants; network i is VLAN-backed when i is even, VXLAN otherwise;
    every network has a gateway (.1: routed in its tenant) unless gateways is False.
    rules=True: every tenant default deny with one rule (l0 -> l1, tcp/5432); rules=N (an int):
    default deny with rule_set(N) in every tenant, and each workload also labelled g<its index
    in the tenant % 10>; False: open inside."""
    many = rules is not True and isinstance(rules, int) and rules > 0
    out = []
    n_tenants = max(1, networks // per_tenant)
    per_net = max(1, workloads // networks)
    w = 0
    for t in range(n_tenants):
        first = w
        nets, wls = {}, {}
        for j in range(per_tenant):
            i = t * per_tenant + j
            subnet = ipaddress.IPv4Network('10.%d.%d.0/24' % (i // 256, i % 256))
            seg = {'vlan': VLAN_BASE + i // 2} if i % 2 == 0 else {'vni': 10000 + i}
            nets['n%d' % j] = Network('n%d' % j, subnet, gateway=subnet[1] if gateways else None, line=3 + j,
                                        **seg)
            for k in range(per_net):
                mac = '02:%02x:%02x:%02x:%02x:%02x' % (w >> 32 & 0xff, w >> 24 & 0xff, w >> 16 & 0xff, w >> 8 & 0xff,
                                                       w & 0xff)
                labels = ('l%d' % (k % 2),) + (('g%d' % ((w - first) % GROUPS),) if many else ())
                wls['w%d' % w] = Workload('w%d' % w, labels, (Nic(0, 'n%d' % j, mac, subnet[10 + k]),), line=20 + k)
                w += 1
        # rules: default deny and one rule (label l0 -> l1, tcp/5432: apps/microseg.py); else open inside
        if many:
            security = Security('deny', rule_set(rules))
        elif rules:
            security = Security('deny', (Rule('l0-to-l1', Endpoint(label='l0'), Endpoint(label='l1'),
                                              (Allow('tcp', (5432, 5432)),), line=2),))
        else:
            security = Security('allow')
        out.append(Tenant('t%d' % t, 't%d.yaml' % t, frozen_map(nets), frozen_map(wls), security))
    return out


def world(racks=10, per_rack=10, networks=1000, workloads=10000, per_tenant=10, gateways=True, rules=False):
    """(policy, inventory) of a fully connected, fully bound data center (rules: as tenants())."""
    fabric = parse_fabric(fabric_yaml(racks, per_rack, networks // 2), '<generated>')
    policy = Policy(fabric).with_tenants(tenants(networks, workloads, per_tenant, gateways, rules))
    inv = Inventory()
    spines = [fabric.switches['spine1'].dpid, fabric.switches['spine2'].dpid]
    for s in spines:
        sw = inv.switches[s] = SwitchState(s, 'spine%d' % (spines.index(s) + 1), 'physical')
        for r in range(racks):
            sw.ports[r + 1] = Port(r + 1, 'p%d' % (r + 1), True, FABRIC, since=0.0)
    hvs = sorted(fabric.hypervisors.values(), key=lambda h: h.dpid)
    for r in range(racks):
        leaf = fabric.switches['leaf%d' % (r + 1)].dpid
        sw = inv.switches[leaf] = SwitchState(leaf, 'leaf%d' % (r + 1), 'physical')
        for k, s in enumerate(spines):
            sw.ports[k + 1] = Port(k + 1, 'up%d' % k, True, FABRIC, since=0.0)
            inv.links[LinkEnd(leaf, k + 1)] = (LinkEnd(s, r + 1), 0.0)
            inv.links[LinkEnd(s, r + 1)] = (LinkEnd(leaf, k + 1), 0.0)
        for h in range(per_rack):
            port = 10 + h
            sw.ports[port] = Port(port, 'hv%d' % h, True, HYPERVISOR, since=0.0)
            inv.hv_ports[LinkEnd(leaf, port)] = hvs[r * per_rack + h].dpid
    for hv in hvs:
        sw = inv.switches[hv.dpid] = SwitchState(hv.dpid, hv.name, 'hypervisor')
        sw.ports[1] = Port(1, 'int-to-phy', True, UPLINK, since=0.0)
        sw.ports[2] = Port(2, 'vxlan0', True, TUNNEL, since=0.0)
        inv.vtep_macs[hv.dpid] = '02:dd:00:%02x:%02x:%02x' % (hv.dpid >> 16 & 0xff, hv.dpid >> 8 & 0xff, hv.dpid & 0xff)
    bindings: dict[int, dict[int, Binding]] = {hv.dpid: {} for hv in hvs}
    for i, (iface_id, bn) in enumerate(sorted(policy.nics.items())):
        hv = hvs[i % len(hvs)]
        port = 3 + len(bindings[hv.dpid])
        bindings[hv.dpid][port] = Binding('vnet%d' % port, iface_id, bn.nic.mac)
        inv.switches[hv.dpid].ports[port] = Port(port, 'vnet%d' % port, True, VM, since=0.0)
    for dpid, b in bindings.items():
        inv.bind(dpid, b)
    return policy, inv


class CountingSwitch:
    """A connection that holds nothing and sends nothing: the switch's side is not measured."""

    def __init__(self, dpid):
        self.dpid = dpid

    def read_flows(self):
        return set()

    def apply(self, delete, add):
        pass

    def packet_out(self, port, data):
        pass


def controller_on(policy, inv):
    """A controller whose every switch of `inv` is a CountingSwitch, each marked for its first
    converge (from scratch, sending it all: as at start-up or a push of everything)."""
    from controller import core
    core.PICTURE_WAIT = 0.0
    ctl = core.Controller(policy)
    ctl.inv = inv
    with ctl.lock:
        for d in inv.switches:
            ctl.conns[d] = CountingSwitch(d)
            ctl._invalidate(d)
    return ctl


def per_size(name: str, script: str, doc: str, sizes, measure) -> list[dict] | None:
    """The command line of a bench over fabricgen worlds of several sizes: each size measured
    by `script --one N` in a process of its own (a clean peak RSS), the results written to
    bench/results/NAME.json and printed.  None in the child (it printed its one result)."""
    import argparse
    import json
    import subprocess
    import sys
    import time
    from pathlib import Path
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument('--one', type=int, help=argparse.SUPPRESS)
    ap.add_argument('--sizes', type=int, nargs='*', default=list(sizes))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return None
    results = []
    for n in args.sizes:
        r = subprocess.run([sys.executable, script, '--one', str(n)], capture_output=True, text=True, check=True)
        results.append(json.loads(r.stdout.splitlines()[-1]))
    out = {'benchmark': name, 'date': time.strftime('%Y-%m-%d'), 'results': results}
    where = Path(__file__).resolve().parent / 'results'
    where.mkdir(exist_ok=True)
    (where / (name + '.json')).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return results
