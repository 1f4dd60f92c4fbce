"""Benchmark: the anycast gateway's distributed routing (apps/anycast_gateway.py).  Prints
JSON (and writes bench/results/routing.json); never asserts on time.

1. datapath   routed vs bridged in ONE lab run (examples/fabric.yaml), as a ratio.  One tenant
              `rt` with two VLAN networks (a: VLAN 10, b: VLAN 20) and one overlay network (ov:
              VNI 5030), each with a gateway.  All pairs run from hv1 (rack leaf1) to hv3
              (rack leaf2):
                bridged          a1 -> a3   same VLAN network
                routed           a1 -> b3   VLAN a -> VLAN b: routed on hv1, sent on VLAN 20
                bridged_overlay  o1 -> o3   same overlay network
                routed_overlay   a1 -> o3   VLAN a -> overlay: routed on hv1, sent over VXLAN
              so within each couple the only difference is the routing step.  Per round and
              pair, alternating (each round starts with another pair): iperf3 TCP, client ->
              server (-t 3, the first second omitted), then 50 pings at -i 0.05 (avg and
              median rtt, and the TTL of the replies).  The TTL is also checked the other way
              (server -> client).  Reports min/median/max over the rounds and the per-round
              ratios routed / bridged.
2. flows      in-process, no OVS: hypervisor br-int flows as routed subnets and workloads grow,
              on bench/fabricgen.py's data center (100 hypervisors in 10 racks; 1,000 networks,
              half VLAN and half VXLAN, every one with a gateway, in 1000/S tenants of S
              networks; W workloads, one nic each, round-robin over the hypervisors).  For 10
              hypervisors (one per rack): flows per app (cookie app anycast_gateway vs the
              rest), the tenants that route there and their located nics, and the time of a
              full compile of that switch.  The same world without gateways gives the rest's
              baseline.  Each (W, S) runs in its own process.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / 'bench' / 'results'
FABRIC = ROOT / 'examples' / 'fabric.yaml'
RUNS = 3
WORKLOADS = (1000, 3000, 10000)
SUBNETS = (2, 5, 10)                # networks per tenant
SAMPLE = 10                         # hypervisors compiled per world: one per rack
ROUTING_APP = 'anycast_gateway'


def stats(vals: list[float], nd: int = 3) -> dict:
    return {'min': round(min(vals), nd), 'median': round(statistics.median(vals), nd),
            'max': round(max(vals), nd)}


# ---- 1. datapath: routed vs bridged -------------------------------------------------------------

TENANT = '''tenant: rt
networks:
  a:  {vlan: 10, subnet: 10.61.0.0/24, gateway: 10.61.0.1}
  b:  {vlan: 20, subnet: 10.62.0.0/24, gateway: 10.62.0.1}
  ov: {vni: 5030, subnet: 10.63.0.0/24, gateway: 10.63.0.1}
workloads:
  a1: {hypervisor: hv1, nics: [{network: a,  mac: "02:00:3d:00:00:01", ip: 10.61.0.11}]}
  a3: {hypervisor: hv3, nics: [{network: a,  mac: "02:00:3d:00:00:03", ip: 10.61.0.13}]}
  b3: {hypervisor: hv3, nics: [{network: b,  mac: "02:00:3e:00:00:03", ip: 10.62.0.13}]}
  o1: {hypervisor: hv1, nics: [{network: ov, mac: "02:00:3f:00:00:01", ip: 10.63.0.11}]}
  o3: {hypervisor: hv3, nics: [{network: ov, mac: "02:00:3f:00:00:03", ip: 10.63.0.13}]}
security: {default: allow}
'''
PAIRS = {'bridged': ('a1', 'a3'), 'routed': ('a1', 'b3'),
         'bridged_overlay': ('o1', 'o3'), 'routed_overlay': ('a1', 'o3')}
RATIOS = {'routed_over_bridged': ('routed', 'bridged'),
          'routed_overlay_over_bridged_overlay': ('routed_overlay', 'bridged_overlay')}
EXPECTED_TTL = {'bridged': 64, 'routed': 63, 'bridged_overlay': 64, 'routed_overlay': 63}


def ping(lab, src: str, dst: str, count: int = 50, interval: float = 0.05) -> dict:
    """count pings; avg, median, max and min rtt, the replies' TTLs, lost."""
    rc, out = lab.exec(src, ['ping', '-n', '-c', str(count), '-i', str(interval), '-W', '1', lab.vms[dst].ip])
    rtts = [float(m) for m in re.findall(r'time=([\d.]+) ms', out)]
    ttls = sorted({int(m) for m in re.findall(r'ttl=(\d+)', out)})
    if not rtts:
        raise RuntimeError('%s -> %s: no reply: %s' % (src, dst, out[-500:]))
    return {'avg_ms': statistics.mean(rtts), 'median_ms': statistics.median(rtts), 'max_ms': max(rtts),
            'min_ms': min(rtts),
            'ttl': ttls, 'lost': count - len(rtts)}


def measure_pair(lab, kind: str) -> dict:
    from bench.overlay import iperf       # -J; raises on the JSON "error" (iperf3 3.12 exits 0)
    client, server = PAIRS[kind]
    tcp = iperf(lab, client, server, seconds=2)      # -t 3 -O 1
    return dict(gbps=tcp['gbps'], retransmits=tcp['retransmits'], **ping(lab, client, server))


def datapath_rounds(lab, runs: int) -> list[dict]:
    from bench.labrun import alternating_rounds
    return alternating_rounds(PAIRS, runs, lambda kind: measure_pair(lab, kind))


def summarize_datapath(rounds: list[dict], ttl_back: dict) -> dict:
    out: dict = {}
    for kind in PAIRS:
        out[kind] = {k: stats([r[kind][k] for r in rounds]) for k in ('gbps', 'retransmits', 'avg_ms', 'median_ms')}
        out[kind]['ttl'] = sorted({t for r in rounds for t in r[kind]['ttl']})
        out[kind]['ttl_back'] = ttl_back[kind]
        out[kind]['ttl_as_expected'] = out[kind]['ttl'] == out[kind]['ttl_back'] == [EXPECTED_TTL[kind]]
        out[kind]['lost_pings'] = sum(r[kind]['lost'] for r in rounds)
    for name, (num, den) in RATIOS.items():
        out[name] = {what: stats([r[num][k] / r[den][k] for r in rounds])
                     for what, k in (('throughput', 'gbps'), ('rtt_avg', 'avg_ms'), ('rtt_median', 'median_ms'))}
    out['rounds'] = rounds
    return out


def routing_flows(lab, hv: str) -> dict:
    from controller.pipeline import cookies
    dump = lab.ofctl(hv, 'dump-flows', 'cookie=%#x/%#x' % cookies.app_match(ROUTING_APP))
    return {'anycast_gateway': sum('cookie=' in line for line in dump.splitlines()),
            'all': sum('cookie=' in line for line in lab.ofctl(hv, 'dump-flows').splitlines())}


def diagnose(lab, ctl, failed: list[str]) -> Path:
    """Save what a failed pair needs looking at: every bridge's flows, the VMs' neighbours and
    routes, ofproto/trace of the first failed pair's ARP and ICMP on its source hv, the
    controller's log and `dvsctl show routes rt`."""
    from bench.apply import run_dvsctl
    out = RESULTS / 'routing-diag'
    out.mkdir(parents=True, exist_ok=True)
    for node in ('hv1', 'hv2', 'hv3', 'hv4', 'leaf1', 'leaf2', 'spine1', 'spine2'):
        try:
            (out / ('%s.flows' % node)).write_text(lab.ofctl(node, '--names', 'dump-flows'))
        except Exception as e:            # a diagnosis must not hide the failure
            (out / ('%s.flows' % node)).write_text(repr(e))
    (out / 'vms.txt').write_text('\n'.join('== %s\n%s' % (vm, lab.exec(vm, 'ip -4 addr; ip route; ip neigh')[1])
                                           for vm in lab.vms))
    src, _, dst = failed[0].partition(' -> ')
    vm, peer = lab.vms[src], lab.vms[dst]
    port = lab.vm_ofport(src)
    same = ipaddress.ip_address(peer.ip) in ipaddress.ip_interface(vm.cidr).network
    # ARP for the peer (same subnet) or for the gateway; ICMP to the peer's MAC or the gateway MAC
    arp_for, to_mac = (peer.ip, peer.mac) if same else (vm.gateway, lab.fabric.gateway_mac)
    flows = {'arp': 'in_port=%d,arp,dl_src=%s,dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa=%s,arp_tpa=%s'
                    % (port, vm.mac, vm.ip, arp_for),
             'icmp': 'in_port=%d,icmp,dl_src=%s,dl_dst=%s,nw_src=%s,nw_dst=%s,nw_ttl=64,icmp_type=8'
                     % (port, vm.mac, to_mac, vm.ip, peer.ip)}
    for name, f in flows.items():
        try:
            text = lab.appctl(vm.hypervisor, 'ofproto/trace', 'br-int', f)
        except Exception as e:
            text = repr(e)
        (out / ('trace-%s-%s.txt' % (vm.hypervisor, name))).write_text(f + '\n\n' + text)
    (out / 'controller.log').write_text(ctl.log_path.read_text(errors='replace'))
    try:
        (out / 'show-routes.txt').write_text(run_dvsctl(ctl, 'show', 'routes', 'rt')[1])
    except Exception as e:
        (out / 'show-routes.txt').write_text(repr(e))
    (out / 'failed.txt').write_text('\n'.join(failed) + '\n')
    return out


def bench_datapath(work: Path, runs: int) -> dict:
    from bench.apply import run_dvsctl
    from bench.overlay import started
    from mininet_topos import Lab
    from tests.support import wait_until
    policy = work / 'rt.yaml'
    policy.write_text(TENANT)
    ctl, port = started(work)
    try:
        run_dvsctl(ctl, 'apply', str(policy))
        lab = Lab(str(FABRIC), ofp_port=port, tenants=[str(policy)])
        try:
            lab.up(timeout=60)
            failed = []
            for a, b in PAIRS.values():
                for x, y in ((a, b), (b, a)):
                    try:
                        wait_until(lambda: lab.ping(x, y), 30, 0.2, '%s reaches %s' % (x, y))
                    except AssertionError:
                        failed.append('%s -> %s' % (x, y))
            if failed:
                raise RuntimeError('no reply: %s; what the lab held is in %s' % (
                    ', '.join(failed), diagnose(lab, ctl, failed)))
            for a, b in PAIRS.values():
                ping(lab, a, b, count=20)          # warm-up: datapath flows, neighbour caches
            ttl_back = {kind: ping(lab, b, a, count=5, interval=0.1)['ttl'] for kind, (a, b) in PAIRS.items()}
            out = summarize_datapath(datapath_rounds(lab, runs), ttl_back)
            out['flows'] = {hv: routing_flows(lab, hv) for hv in ('hv1', 'hv2', 'hv3', 'hv4')}
            return out
        finally:
            lab.down()
    finally:
        ctl.stop()


# ---- 2. flows per hypervisor as routed subnets and workloads grow --------------------------------

def _flows_one(workloads: int, per_tenant: int) -> dict:
    import gc

    from bench.fabricgen import world
    from controller.core import APPS
    from controller.pipeline import cookies, incremental

    def compile_hvs(policy, inv, hvs):
        out = {}
        for hv in hvs:
            gc.collect()
            t = time.perf_counter()
            c = incremental.Compiled()
            incremental.compile_switch(APPS, policy, inv, hv.dpid, c, incremental.ALL, set())
            took = time.perf_counter() - t
            per_app: dict[str, int] = {}
            per_table: dict[str, int] = {}          # app:table
            for f in c.flows():
                app = cookies.app_of(f.cookie) or 'pipeline'
                per_app[app] = per_app.get(app, 0) + 1
                per_table['%s:%s' % (app, f.table)] = per_table.get('%s:%s' % (app, f.table), 0) + 1
            out[hv.name] = {'compile_s': took, 'per_app': per_app, 'per_table': per_table, 'all': len(c)}
            del c
        return out

    res = {'workloads': workloads, 'subnets_per_tenant': per_tenant}
    for routed in (True, False):
        policy, inv = world(workloads=workloads, per_tenant=per_tenant, gateways=routed)
        hvs = sorted(policy.fabric.hypervisors.values(), key=lambda h: h.dpid)
        # one per rack, each at another position in its rack (hv1, hv12, hv23, ...): the
        # round-robin placement gives neighbouring hypervisors different network kinds
        per_rack = len(hvs) // SAMPLE
        sample = [hvs[r * per_rack + r % per_rack] for r in range(SAMPLE)]
        per_hv = compile_hvs(policy, inv, sample)
        if routed:
            from apps.anycast_gateway import context as anycast_ctx
            from apps.vlan_portgroups import routing_tenants
            nics_of: dict[str, int] = {}
            for iface in inv.locations:
                t = policy.nics[iface].tenant.name
                nics_of[t] = nics_of.get(t, 0) + 1
            for hv in sample:
                ts = routing_tenants(policy, inv, hv.dpid)
                local = sum(1 for b in inv.bindings[hv.dpid].values() if b.iface_id in policy.nics)
                gw_nets = sum(1 for t in ts for n in policy.tenants[t].networks.values() if n.gateway is not None)
                here = {(bn.tenant.name, bn.network.name) for bn in
                        (policy.nics[b.iface_id] for b in inv.bindings[hv.dpid].values() if b.iface_id in policy.nics)}
                row = per_hv[hv.name]
                row.update(routing_tenants=len(ts), routed_nics=sum(nics_of.get(t, 0) for t in ts),
                           routed_subnets=gw_nets, local_nics=local, local_networks=len(here),
                           nics_of_local_networks=sum(len(policy.network_nics.get(k, ())) for k in here))
                # what apps/anycast_gateway.py compiles: per switch 1 + 2 per uplink/tunnel port;
                # per routing tenant 3 per gateway (ARP, echo, subnet drop) + 2 (TTL, VRF drop);
                # per located nic of those tenants its host route (every one is reachable here:
                # fabricgen's trunks carry every VLAN), and its ARP answer if its network has a
                # VM here; per local nic 1 (its own ARP passed on)
                ports = len(anycast_ctx(policy, inv, hv.dpid).fabric_ports)
                row['anycast_formula'] = (1 + 2 * ports + 3 * gw_nets + 2 * len(ts) + row['routed_nics']
                                          + row['nics_of_local_networks'] + local)
                row['anycast_formula_matches'] = row['anycast_formula'] == row['per_app'].get(ROUTING_APP, 0)
            res['tenants'] = len(policy.tenants)
            res['hypervisors'] = len(hvs)
        res['routed' if routed else 'no_gateways'] = per_hv
        del policy, inv
    rows = res['routed']
    base = res['no_gateways']
    res['summary'] = {
        'anycast_gateway': stats([r['per_app'].get(ROUTING_APP, 0) for r in rows.values()], 0),
        'anycast_arp_rsp': stats([r['per_table'].get(ROUTING_APP + ':arp_rsp', 0) for r in rows.values()], 0),
        'anycast_l3': stats([r['per_table'].get(ROUTING_APP + ':l3', 0) for r in rows.values()], 0),
        'rest_l2_lookup': stats([sum(v for k, v in r['per_table'].items() if k.endswith(':l2_lookup'))
                                 for r in rows.values()], 0),
        'rest_l2_lookup_without_gateways': stats([sum(v for k, v in r['per_table'].items()
                                                      if k.endswith(':l2_lookup')) for r in base.values()], 0),
        'rest': stats([r['all'] - r['per_app'].get(ROUTING_APP, 0) for r in rows.values()], 0),
        'rest_without_gateways': stats([r['all'] for r in base.values()], 0),
        'all': stats([r['all'] for r in rows.values()], 0),
        'routing_tenants': stats([r['routing_tenants'] for r in rows.values()], 0),
        'routed_nics': stats([r['routed_nics'] for r in rows.values()], 0),
        'compile_s': stats([r['compile_s'] for r in rows.values()], 4),
        'anycast_formula_matches': all(r['anycast_formula_matches'] for r in rows.values()),
        'compile_s_without_gateways': stats([r['compile_s'] for r in base.values()], 4),
    }
    return res


def bench_flows(workloads: list[int], subnets: list[int]) -> list[dict]:
    out = []
    for w in workloads:
        for s in subnets:
            r = subprocess.run([sys.executable, __file__, '--one', '%d,%d' % (w, s)], capture_output=True,
                               text=True, check=True)
            out.append(json.loads(r.stdout.splitlines()[-1]))
            print('flows: %d workloads, %d subnets/tenant done' % (w, s), file=sys.stderr)
    return out


def flows_table(results: list[dict]) -> str:
    lines = ['| workloads | subnets / tenant (tenants) | tenants routing on the hv | their located nics | '
             'anycast_gateway: all (arp_rsp / l3) | the rest: all (l2_lookup) | the rest without gateways: '
             'all (l2_lookup) | full compile of the hv (s): routed / without gateways |',
             '|---|---|---|---|---|---|---|---|']

    def rng(d, f='%d'):
        return f % d['median'] if d['min'] == d['max'] else (f + ' (' + f + '–' + f + ')') % (
            d['median'], d['min'], d['max'])
    for r in results:
        s = r['summary']
        lines.append('| %d | %d (%d) | %s | %s | %s (%s / %s) | %s (%s) | %s (%s) | %s / %s |' % (
            r['workloads'], r['subnets_per_tenant'], r['tenants'], rng(s['routing_tenants']),
            rng(s['routed_nics']), rng(s['anycast_gateway']), rng(s['anycast_arp_rsp']), rng(s['anycast_l3']),
            rng(s['rest']), rng(s['rest_l2_lookup']), rng(s['rest_without_gateways']),
            rng(s['rest_l2_lookup_without_gateways']), rng(s['compile_s'], '%.3f'),
            rng(s['compile_s_without_gateways'], '%.3f')))
    return '\n'.join(lines)


def datapath_table(d: dict) -> str:
    rng = lambda s, f: (f + ' (' + f + '–' + f + ')') % (s['median'], s['min'], s['max'])   # noqa: E731
    lines = ['| pair | TCP (Gbit/s) | retransmits | ping avg rtt (ms) | ping median rtt (ms) | TTL there / back |',
             '|---|---|---|---|---|---|']
    for kind, (a, b) in PAIRS.items():
        p = d[kind]
        lines.append('| %s: %s → %s | %s | %s | %s | %s | %s / %s |' % (
            kind, a, b, rng(p['gbps'], '%.3f'), rng(p['retransmits'], '%d'), rng(p['avg_ms'], '%.2f'),
            rng(p['median_ms'], '%.2f'), ','.join(map(str, p['ttl'])), ','.join(map(str, p['ttl_back']))))
    lines += ['', '| ratio, per round | throughput | rtt (avg) | rtt (median) |', '|---|---|---|---|']
    for name in RATIOS:
        r = d[name]
        lines.append('| %s | %s | %s | %s |' % (name, rng(r['throughput'], '%.2f'), rng(r['rtt_avg'], '%.2f'),
                                               rng(r['rtt_median'], '%.2f')))
    return '\n'.join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--one', help=argparse.SUPPRESS)
    ap.add_argument('--runs', type=int, default=RUNS, help='datapath rounds')
    ap.add_argument('--workloads', type=int, nargs='*', default=list(WORKLOADS))
    ap.add_argument('--subnets', type=int, nargs='*', default=list(SUBNETS), help='networks per tenant')
    ap.add_argument('--only', choices=('datapath', 'flows'))
    args = ap.parse_args()
    if args.one:
        w, s = map(int, args.one.split(','))
        print(json.dumps(_flows_one(w, s)))
        return 0
    out: dict = {'benchmark': 'routing', 'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                 'loadavg_start': os.getloadavg()}
    tables = []
    if args.only in (None, 'datapath'):
        with tempfile.TemporaryDirectory(prefix='opendvs-bench-routing-') as d:
            out['datapath'] = bench_datapath(Path(d), args.runs)
        tables.append(datapath_table(out['datapath']))
    if args.only in (None, 'flows'):
        out['flows'] = bench_flows(args.workloads, args.subnets)
        tables.append(flows_table(out['flows']))
    out['loadavg_end'] = os.getloadavg()
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(exist_ok=True)
    name = 'routing.json' if args.only is None else 'routing-%s.json' % args.only
    (RESULTS / name).write_text(json.dumps(out, indent=1))
    print('\n' + '\n\n'.join(tables))
    return 0


if __name__ == '__main__':
    sys.exit(main())
