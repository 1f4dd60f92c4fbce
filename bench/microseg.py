"""Benchmark: microsegmentation (apps/microseg.py).  Prints JSON (and writes
bench/results/microseg.json); never asserts on time.

1. flows      in-process, no OVS: bench/fabricgen.py's data center (100 hypervisors in 10
              racks, 112 switches; 1,000 networks in 100 tenants of 10, half VLAN and half
              VXLAN, every one with a gateway; W workloads with one nic each, round-robin over
              the hypervisors).  "W workloads x 100 rules" = every tenant default deny with
              the same 100 rules (fabricgen.rule_set: the tenant's workloads in 10 label
              groups, rule i from group i % 10 to group i // 10, each its own tcp port or
              port range, every 10th icmp too), so 10,000 rules in the data center; compared
              with the same world with every tenant open (default allow: no microseg flow).
              Per hypervisor (all 100): microseg flows and all flows; the formula's bound
              (tests/unit/test_microseg_scale.py) and what enumerating source x destination x
              service would cost instead; the time to compile all 112 switches from scratch
              (every app, no diff, no I/O).  `--big` adds one tenant holding all W workloads
              (gateways off: the anycast host routes would dominate).  Each world runs in its
              own process.
2. datapath   ACL + conntrack vs open, in ONE lab run (examples/fabric.yaml).  Tenant `acl`:
              default deny and one rule (cli -> srv: tcp/5201 for iperf3, icmp); tenant `open`:
              no security (default allow).  The same pair shape in both: client on hv1 (rack
              leaf1), server on hv3 (rack leaf2), a VLAN network each.  Per round and pair,
              alternating (each round starts with the other one): iperf3 TCP -t 3 -J (the first
              second omitted; the JSON "error" read: iperf3 3.12 exits 0 when it cannot
              connect), then 50 pings at -i 0.05.  Reports min/median/max over the rounds and
              the per-round ratios acl / open.  The denied direction (srv -> cli, tcp/5201) is
              checked to fail once before the rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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
WORKLOADS = (1000, 10000)
RULES = 100
APP = 'microseg'


def stats(vals: list[float], nd: int = 3) -> dict:
    return {'min': round(min(vals), nd), 'median': round(statistics.median(vals), nd),
            'max': round(max(vals), nd)}


# ---- 1. flows and compile time ------------------------------------------------------------------

def _flows_one(workloads: int, rules: int, big: bool) -> dict:
    import gc

    from apps import microseg
    from bench.fabricgen import world
    from controller.core import APPS
    from controller.pipeline import cookies, incremental

    per_tenant = 1000 if big else 10
    policy, inv = world(workloads=workloads, per_tenant=per_tenant, gateways=not big, rules=rules or False)
    hvs = {h.dpid for h in policy.fabric.hypervisors.values()}
    gc.collect()
    per_hv, total, took = {}, 0, 0.0
    for dpid in sorted(inv.switches):
        t = time.perf_counter()
        c = incremental.Compiled()
        incremental.compile_switch(APPS, policy, inv, dpid, c, incremental.ALL, set())
        took += time.perf_counter() - t
        total += len(c)
        if dpid in hvs:
            per_hv[dpid] = {'all': len(c), APP: sum(1 for f in c.flows() if cookies.app_of(f.cookie) == APP)}
        del c
    # the formula's bound and the pairwise expansion, per hypervisor (as the unit test)
    for dpid, row in per_hv.items():
        local = [policy.nics[b.iface_id] for b in inv.bindings[dpid].values() if b.iface_id in policy.nics]
        bound = pairs = 0
        for name in {bn.tenant.name for bn in local}:
            t = policy.tenants[name]
            here = [bn for bn in local if bn.tenant.name == name]
            if t.security.default != 'deny':
                continue
            bound += 4 * len(here) + 3 * 2 + 3
            for r in t.security.rules:
                d = sum(1 for bn in here if microseg._selects(t, r.dst, bn))
                if d:
                    s, v = len(microseg._sources(t, r.src)), len(microseg._services(r.allow))
                    bound += s + d + v + 1
                    pairs += s * d * v
        row.update(bound=bound, pairwise=pairs, local_nics=len(local))
    rows = list(per_hv.values())
    return {'workloads': workloads, 'rules_per_tenant': rules, 'tenants': len(policy.tenants),
            'shape': 'one tenant, no gateways' if big else '100 tenants of 10 networks',
            'switches': len(inv.switches), 'flows_all_switches': total, 'compile_all_s': round(took, 2),
            'microseg_per_hv': stats([r[APP] for r in rows], 0), 'all_per_hv': stats([r['all'] for r in rows], 0),
            'bound_per_hv': stats([r['bound'] for r in rows], 0),
            'pairwise_per_hv': stats([r['pairwise'] for r in rows], 0),
            'under_bound_everywhere': all(r[APP] <= r['bound'] for r in rows),
            'microseg_all_hvs': sum(r[APP] for r in rows),
            'local_nics_per_hv': stats([r['local_nics'] for r in rows], 0),
            'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def bench_flows(workloads: list[int], big: bool) -> list[dict]:
    out = []
    cases = [(w, r, False) for w in workloads for r in (RULES, 0)]
    if big:
        cases += [(max(workloads), r, True) for r in (RULES, 0)]
    for w, r, b in cases:
        p = subprocess.run([sys.executable, __file__, '--one', '%d,%d,%d' % (w, r, b)], capture_output=True,
                           text=True, check=True)
        out.append(json.loads(p.stdout.splitlines()[-1]))
        print('flows: %d workloads, %d rules%s done' % (w, r, ' (one tenant)' if b else ''), file=sys.stderr)
    return out


def flows_table(results: list[dict]) -> str:
    def rng(d, f='%d'):
        return f % d['median'] if d['min'] == d['max'] else (f + ' (' + f + '–' + f + ')') % (
            d['median'], d['min'], d['max'])
    lines = ['| workloads | shape | rules / tenant | microseg flows / hv | bound / hv | pairwise / hv | '
             'all flows / hv | all flows, 112 switches | compile of 112 switches (s) |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in results:
        lines.append('| %d | %s | %s | %s | %s | %s | %s | %d | %.2f |' % (
            r['workloads'], r['shape'], r['rules_per_tenant'] or 'none (open)', rng(r['microseg_per_hv']),
            rng(r['bound_per_hv']), rng(r['pairwise_per_hv']), rng(r['all_per_hv']), r['flows_all_switches'],
            r['compile_all_s']))
    return '\n'.join(lines)


# ---- 2. datapath: ACL + conntrack vs open --------------------------------------------------------

TENANTS = {'acl': '''tenant: acl
networks:
  a: {vlan: 20, subnet: 10.72.0.0/24}
workloads:
  c1: {hypervisor: hv1, labels: [cli], nics: [{network: a, mac: "02:00:48:00:00:01", ip: 10.72.0.11}]}
  s3: {hypervisor: hv3, labels: [srv], nics: [{network: a, mac: "02:00:48:00:00:03", ip: 10.72.0.13}]}
security:
  default: deny
  rules:
    - {name: cli-to-srv, from: {label: cli}, to: {label: srv}, allow: [{proto: tcp, port: 5201}, {proto: icmp}]}
''', 'open': '''tenant: open
networks:
  a: {vlan: 10, subnet: 10.71.0.0/24}
workloads:
  oc1: {hypervisor: hv1, nics: [{network: a, mac: "02:00:47:00:00:01", ip: 10.71.0.11}]}
  os3: {hypervisor: hv3, nics: [{network: a, mac: "02:00:47:00:00:03", ip: 10.71.0.13}]}
'''}
PAIRS = {'acl': ('c1', 's3'), 'open': ('oc1', 'os3')}


def measure_pair(lab, kind: str) -> dict:
    from bench.overlay import iperf       # -J; raises on the JSON "error" (iperf3 3.12 exits 0)
    from bench.routing import ping
    client, server = PAIRS[kind]
    tcp = iperf(lab, client, server, seconds=2)      # -t 3 -O 1
    p = ping(lab, client, server)
    return dict(gbps=tcp['gbps'], retransmits=tcp['retransmits'], avg_ms=p['avg_ms'], median_ms=p['median_ms'],
                lost=p['lost'])


def acl_flows(lab, hv: str) -> dict:
    from controller.pipeline import cookies
    dump = lab.ofctl(hv, 'dump-flows', 'cookie=%#x/%#x' % cookies.app_match(APP))
    return {'microseg': sum('cookie=' in line for line in dump.splitlines()),
            'all': sum('cookie=' in line for line in lab.ofctl(hv, 'dump-flows').splitlines())}


def diagnose(lab, failed: list[str]) -> Path:
    """table=70 (acl_out) of both hypervisors and ofproto/trace --ct-next of the failed pair."""
    out = RESULTS / 'microseg-diag'
    out.mkdir(parents=True, exist_ok=True)
    for hv in ('hv1', 'hv3'):
        for what, args in (('table70', ('dump-flows', 'table=70')), ('all', ('dump-flows',))):
            try:
                text = lab.ofctl(hv, '--names', *args)
            except Exception as e:            # a diagnosis must not hide the failure
                text = repr(e)
            (out / ('%s.%s.flows' % (hv, what))).write_text(text)
    c, s = (lab.vms[v] for v in PAIRS['acl'])
    port = lab.vm_ofport('c1')
    head = 'in_port=%d,%%s,dl_src=%s,dl_dst=%s,nw_src=%s,nw_dst=%s,nw_ttl=64' % (port, c.mac, s.mac, c.ip, s.ip)
    for hv, flow in (('hv1-tcp', head % 'tcp' + ',tp_src=40000,tp_dst=5201,tcp_flags=0x002'),
                     ('hv1-icmp', head % 'icmp' + ',icmp_type=8,icmp_code=0')):
        try:
            text = lab.appctl('hv1', 'ofproto/trace', '--ct-next', 'trk,new', 'br-int', flow)
        except Exception as e:
            text = repr(e)
        (out / ('trace-%s.txt' % hv)).write_text(flow + '\n\n' + text)
    (out / 'failed.txt').write_text('\n'.join(failed) + '\n')
    return out


def bench_datapath(work: Path, runs: int) -> dict:
    from bench.apply import run_dvsctl
    from bench.overlay import IPERF_PORT, started
    from mininet_topos import Lab
    from tests.support import wait_until
    assert IPERF_PORT == 5201
    paths = []
    for name, text in TENANTS.items():
        (work / (name + '.yaml')).write_text(text)
        paths.append(str(work / (name + '.yaml')))
    ctl, port = started(work)
    try:
        run_dvsctl(ctl, 'apply', *paths)          # raises on failure
        lab = Lab(str(FABRIC), ofp_port=port, tenants=paths)
        try:
            lab.up(timeout=60)
            failed = []
            for a, b in PAIRS.values():
                try:
                    wait_until(lambda: lab.ping(a, b), 30, 0.2, '%s reaches %s' % (a, b))
                except AssertionError:
                    failed.append('%s -> %s' % (a, b))
            if failed:
                raise RuntimeError('no reply: %s; acl_out and a trace are in %s' % (', '.join(failed),
                                                                                     diagnose(lab, failed)))
            # what must be refused: the server opening the client's port (no rule that way)
            srv = lab.popen('c1', ['iperf3', '-s', '-1', '-p', '5201'], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
            try:
                from bench.overlay import listening
                wait_until(lambda: listening(lab, 'c1', 5201), 10, 0.05, 'iperf3 server on c1')
                rc, out = lab.exec('s3', ['iperf3', '-J', '-c', lab.vms['c1'].ip, '-p', '5201', '-t', '1',
                                          '--connect-timeout', '1000'], timeout=20)
                try:
                    refused = 'error' in json.loads(out)
                except ValueError:
                    refused = rc != 0
            finally:
                srv.kill()
                srv.wait()
            for a, b in PAIRS.values():
                lab.ping(a, b)
            rounds, kinds = [], list(PAIRS)
            try:
                for i in range(runs):
                    order = kinds[i % 2:] + kinds[:i % 2]
                    rounds.append({kind: measure_pair(lab, kind) for kind in order})
            except RuntimeError as e:           # iperf3's JSON "error", or a ping with no reply
                raise RuntimeError('%s; acl_out and traces are in %s' % (e, diagnose(lab, [str(e)])))
            out = {}
            for kind in PAIRS:
                out[kind] = {k: stats([r[kind][k] for r in rounds]) for k in ('gbps', 'retransmits', 'avg_ms',
                                                                              'median_ms')}
                out[kind]['lost_pings'] = sum(r[kind]['lost'] for r in rounds)
            out['acl_over_open'] = {what: stats([r['acl'][k] / r['open'][k] for r in rounds])
                                    for what, k in (('throughput', 'gbps'), ('rtt_avg', 'avg_ms'),
                                                    ('rtt_median', 'median_ms'))}
            out['reverse_refused'] = refused
            out['flows'] = {hv: acl_flows(lab, hv) for hv in ('hv1', 'hv3')}
            out['rounds'] = rounds
            return out
        finally:
            lab.down()
    finally:
        ctl.stop()


def datapath_table(d: dict) -> str:
    rng = lambda s, f: (f + ' (' + f + '–' + f + ')') % (s['median'], s['min'], s['max'])   # noqa: E731
    lines = ['| pair (hv1 → hv3) | TCP (Gbit/s) | retransmits | ping avg rtt (ms) | ping median rtt (ms) |',
             '|---|---|---|---|---|']
    for kind, (a, b) in PAIRS.items():
        p = d[kind]
        lines.append('| %s: %s → %s | %s | %s | %s | %s |' % (
            kind, a, b, rng(p['gbps'], '%.3f'), rng(p['retransmits'], '%d'), rng(p['avg_ms'], '%.3f'),
            rng(p['median_ms'], '%.3f')))
    r = d['acl_over_open']
    lines += ['', '| ratio acl / open, per round | throughput | rtt (avg) | rtt (median) |', '|---|---|---|---|',
              '| ACL + conntrack / open | %s | %s | %s |' % (rng(r['throughput'], '%.2f'), rng(r['rtt_avg'], '%.2f'),
                                                         rng(r['rtt_median'], '%.2f'))]
    return '\n'.join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--one', help=argparse.SUPPRESS)
    ap.add_argument('--runs', type=int, default=RUNS, help='datapath rounds')
    ap.add_argument('--workloads', type=int, nargs='*', default=list(WORKLOADS))
    ap.add_argument('--big', action='store_true', help='also one tenant of all the workloads')
    ap.add_argument('--only', choices=('datapath', 'flows'))
    args = ap.parse_args()
    if args.one:
        w, r, b = map(int, args.one.split(','))
        print(json.dumps(_flows_one(w, r, bool(b))))
        return 0
    out: dict = {'benchmark': 'microseg', 'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                 'loadavg_start': os.getloadavg()}
    tables = []
    if args.only in (None, 'flows'):
        out['flows'] = bench_flows(args.workloads, args.big)
        tables.append(flows_table(out['flows']))
    if args.only in (None, 'datapath'):
        with tempfile.TemporaryDirectory(prefix='opendvs-bench-microseg-') as d:
            out['datapath'] = bench_datapath(Path(d), args.runs)
        tables.append(datapath_table(out['datapath']))
    out['loadavg_end'] = os.getloadavg()
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(exist_ok=True)
    name = 'microseg.json' if args.only is None else 'microseg-%s.json' % args.only
    (RESULTS / name).write_text(json.dumps(out, indent=1))
    print('\n' + '\n\n'.join(tables))
    return 0


if __name__ == '__main__':
    sys.exit(main())
