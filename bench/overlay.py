"""Benchmark: VXLAN overlay networks on the example fabric (2 spines x 2 leaves, 4 hypervisors).
Prints JSON; never asserts on time.

1. datapath   overlay vs same-rack VLAN, in one lab, as a ratio.  Two VMs on a VLAN network on
              hv1 and hv2 (same rack, leaf1) and two on an overlay network on hv1 and hv3
              (other rack: VXLAN over the routed underlay); a third pair, VLAN hv1 -> hv3, has
              the overlay's path length without encap.  Per pair and round: iperf3 TCP
              throughput (client -> server, 5 s after a 1 s omitted warm-up), the CPU the
              ovs-vswitchd processes on the path used meanwhile, and ping rtt (50 pings,
              -i 0.05); each round starts with another pair.  Reports min/median/max and the
              overlay / VLAN ratios.
2. scale      flows on hv1's br-int as the number of REMOTE workloads of one network grows:
              N workloads bound on hv2..hv4 (OVS internal ports, as bench/apply.py does) plus
              one on hv1, on an overlay network, then the same on a VLAN network; a fresh
              controller and lab per case.  Counts hv1's flows (all, per table, known-MAC
              entries), its flood flow's tunnel outputs, every physical switch's flows, and
              the `dvsctl apply` time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.apply import admitted, bind, changes, fabric_ready, run_dvsctl   # noqa: E402
from controller.pipeline import cookies                                     # noqa: E402
from controller.pipeline.tables import table_name                           # noqa: E402
from mininet_topos import Lab                                               # noqa: E402
from tests.support import ControllerProcess, dump_flows, free_port, wait_until   # noqa: E402

FABRIC = ROOT / 'examples' / 'fabric.yaml'
RESULTS = ROOT / 'bench' / 'results'
RUNS = 3
SIZES = (100, 1000)
VNI, VLAN = 5020, 10
SPINES = ('spine1', 'spine2')
PHYSICAL = ('spine1', 'spine2', 'leaf1', 'leaf2')
P_KNOWN = 150
IPERF_PORT = 5201                        # inside the server VM's own netns
ROOT_VSWITCHD_PID = Path('/var/run/openvswitch/ovs-vswitchd.pid')


def stats(vals: list[float], nd: int = 3) -> dict:
    return {'min': round(min(vals), nd), 'median': round(statistics.median(vals), nd),
            'max': round(max(vals), nd)}


def started(ctl_work: Path) -> tuple[ControllerProcess, int]:
    port = free_port()
    return ControllerProcess(FABRIC, ctl_work, ofp='0.0.0.0:%d' % port).start(), port


# ---- 1. datapath: overlay vs same-rack VLAN --------------------------------------------------

PAIR_TENANT = '''tenant: perf
networks:
  vl: {vlan: %d, subnet: 10.60.0.0/24}
  ov: {vni: %d, subnet: 10.50.0.0/24}
workloads:
  v1: {hypervisor: hv1, nics: [{network: vl, mac: "02:00:3c:00:00:01", ip: 10.60.0.11}]}
  v2: {hypervisor: hv2, nics: [{network: vl, mac: "02:00:3c:00:00:02", ip: 10.60.0.12}]}
  v3: {hypervisor: hv3, nics: [{network: vl, mac: "02:00:3c:00:00:03", ip: 10.60.0.13}]}
  o1: {hypervisor: hv1, nics: [{network: ov, mac: "02:00:32:00:00:01", ip: 10.50.0.11}]}
  o3: {hypervisor: hv3, nics: [{network: ov, mac: "02:00:32:00:00:03", ip: 10.50.0.13}]}
security: {default: allow}
''' % (VLAN, VNI)
# client, server.  vlan_cross_rack has the overlay's underlay path without encap: it tells
# what the VXLAN encap/decap costs apart from the two extra switch hops.
PAIRS = {'vlan': ('v1', 'v2'), 'overlay': ('o1', 'o3'), 'vlan_cross_rack': ('v1', 'v3')}


def ping_rtt(lab: Lab, src: str, dst: str, count: int = 50, interval: float = 0.05) -> dict:
    ip = lab.vms[dst].ip
    rc, out = lab.exec(src, ['ping', '-n', '-q', '-c', str(count), '-i', str(interval), '-W', '1', ip])
    m = re.search(r'= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms', out)
    recv = re.search(r'(\d+) received', out)
    if not m:
        raise RuntimeError('%s -> %s: no rtt in ping output: %s' % (src, dst, out))
    return {'avg_ms': float(m.group(2)), 'max_ms': float(m.group(3)),
            'lost': count - int(recv.group(1))}


def listening(lab: Lab, vm: str, port: int) -> bool:
    return bool(lab.exec(vm, ['ss', '-Hltn', 'sport = :%d' % port])[1].strip())


def iperf(lab: Lab, client: str, server: str, seconds: int = 5, args: tuple = ()) -> dict:
    """args: more iperf3 client options (bench/dataplane.py: a fixed rate, -b)."""
    srv = lab.popen(server, ['iperf3', '-s', '-1', '-p', str(IPERF_PORT)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: listening(lab, server, IPERF_PORT), 10, 0.05, 'iperf3 server on %s' % server)
        rc, out = lab.exec(client, ['iperf3', '-J', '-c', lab.vms[server].ip, '-p', str(IPERF_PORT),
                                    '-t', str(seconds + 1), '-O', '1', *args], timeout=seconds + 30)
        res = json.loads(out)
        if rc or 'error' in res:
            raise RuntimeError('iperf3 %s -> %s failed: %s' % (client, server, res.get('error', out[-500:])))
        end = res['end']
        return {'gbps': end['sum_received']['bits_per_second'] / 1e9,
                'retransmits': end['sum_sent'].get('retransmits', 0),
                # everything sent, the omitted warm-up second included: what the CPU figures cover
                'gbytes_sent': sum(i['sum']['bytes'] for i in res['intervals']) / 1e9}
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def spine_packets(lab: Lab) -> int:
    return sum(f['n_packets'] for s in SPINES for f in dump_flows(lab.bridge(s)))


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path('/proc/%d/stat' % pid).read_text().rpartition(')')[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def vswitchd_pids(lab: Lab, kind: str) -> dict[str, int]:
    """The ovs-vswitchd processes on a pair's path: both hypervisors' and the root one, which
    runs every physical switch (shared with whatever else uses the root OVS: noisy)."""
    client_hv, server_hv = (lab.vms[vm].hypervisor for vm in PAIRS[kind])
    pidfile = lambda hv: Path(lab.plan.hypervisors[hv].rundir) / 'ovs-vswitchd.pid'     # noqa: E731
    files = {'client_hv': pidfile(client_hv), 'server_hv': pidfile(server_hv), 'root': ROOT_VSWITCHD_PID}
    return {who: int(f.read_text()) for who, f in files.items()}


def measure_pair(lab: Lab, kind: str) -> dict:
    client, server = PAIRS[kind]
    pids = vswitchd_pids(lab, kind)
    spine0, cpu0 = spine_packets(lab), {who: cpu_s(pid) for who, pid in pids.items()}
    tcp = iperf(lab, client, server)
    crossed = spine_packets(lab) - spine0
    cpu = {'cpu_%s_s' % who: cpu_s(pid) - cpu0[who] for who, pid in pids.items()}
    total = sum(cpu.values())
    return dict(tcp, **ping_rtt(lab, client, server), **cpu, spine_packets_during_iperf=crossed,
                vswitchd_cpu_s=total, vswitchd_cpu_s_per_gb=total / tcp['gbytes_sent'])


def datapath_rounds(lab: Lab, runs: int) -> list[dict]:
    rounds = []
    kinds = list(PAIRS)
    for i in range(runs):
        order = kinds[i % len(kinds):] + kinds[:i % len(kinds)]          # each pair goes first once
        rounds.append({kind: measure_pair(lab, kind) for kind in order})
    return rounds


DATAPATH_KEYS = ('gbps', 'retransmits', 'avg_ms', 'vswitchd_cpu_s', 'vswitchd_cpu_s_per_gb',
                 'cpu_client_hv_s', 'cpu_server_hv_s', 'cpu_root_s', 'spine_packets_during_iperf')


def summarize_datapath(rounds: list[dict]) -> dict:
    out = {}
    for kind in PAIRS:
        out[kind] = {k: stats([r[kind][k] for r in rounds]) for k in DATAPATH_KEYS}
        out[kind]['lost_pings'] = sum(r[kind]['lost'] for r in rounds)
    for base in ('vlan', 'vlan_cross_rack'):
        out['overlay_over_' + base] = {what: stats([r['overlay'][k] / r[base][k] for r in rounds])
                                       for what, k in (('throughput', 'gbps'), ('rtt', 'avg_ms'),
                                                       ('vswitchd_cpu_per_gb', 'vswitchd_cpu_s_per_gb'))}
    out['rounds'] = rounds
    return out


def bystander_flows(lab: Lab, hv: str) -> dict:
    """Known-MAC flows on a hypervisor that hosts no VM of this tenant: VLAN entries reach every
    hv whose trunk carries the VLAN; overlay entries only hvs hosting a member."""
    def count(app: str) -> int:
        dump = lab.ofctl(hv, 'dump-flows', 'cookie=%#x/%#x' % cookies.app_match(app))
        return sum('priority=%d' % P_KNOWN in line for line in dump.splitlines())
    return {'vlan_known_flows': count('vlan_portgroups'), 'overlay_known_flows': count('vxlan_overlay')}


def bench_datapath(work: Path, runs: int) -> dict:
    policy = work / 'perf.yaml'
    policy.write_text(PAIR_TENANT)
    ctl, port = started(work)
    try:
        run_dvsctl(ctl, 'apply', str(policy))
        lab = Lab(str(FABRIC), ofp_port=port, tenants=[str(policy)])
        try:
            lab.up(timeout=60)
            for a, b in PAIRS.values():
                wait_until(lambda: lab.ping(a, b), 30, 0.2, '%s reaches %s' % (a, b))
                wait_until(lambda: lab.ping(b, a), 30, 0.2, '%s reaches %s' % (b, a))
                ping_rtt(lab, a, b, count=20)          # warm-up: datapath flows, neighbour caches
            return dict(summarize_datapath(datapath_rounds(lab, runs)), bystander_hv4=bystander_flows(lab, 'hv4'))
        finally:
            lab.down()
    finally:
        ctl.stop()


# ---- 2. flows on a hypervisor vs remote workloads --------------------------------------------

def scale_workloads(n: int) -> list[dict]:
    """n remote workloads round-robin on hv2..hv4, and one local ('loc') on hv1."""
    remote = [{'name': 'w%d' % i, 'hv': 'hv%d' % (2 + i % 3), 'mac': '02:00:0b:00:%02x:%02x' % divmod(i, 256),
               'ip': '10.%d.%d.%d' % (50, i // 200, i % 200 + 10)} for i in range(n)]
    return remote + [{'name': 'loc', 'hv': 'hv1', 'mac': '02:00:0b:ff:00:01', 'ip': '10.50.255.1'}]


def scale_tenant(kind: str, workloads: list[dict]) -> str:
    net = '{vni: %d, subnet: 10.50.0.0/16}' % VNI if kind == 'overlay' else '{vlan: %d, subnet: 10.50.0.0/16}' % VLAN
    lines = ['tenant: bench', 'networks:', '  net: ' + net, 'workloads:']
    lines += ['  %s: {hypervisor: %s, nics: [{network: net, mac: "%s", ip: %s}]}'
              % (w['name'], w['hv'], w['mac'], w['ip']) for w in workloads]
    return '\n'.join(lines + ['security: {default: allow}', ''])


def hv_flows(lab: Lab, hv: str) -> dict:
    """hv's br-int flows: total, per table, known-MAC (priority 150) l2 and learn entries, and
    the outputs of its tenant flood flow (priority 100 in flood: VM ports, uplink, tunnel)."""
    tun = lab.vsctl(hv, 'get', 'interface', 'vxlan0', 'ofport').strip()
    uplink = lab.vsctl(hv, 'get', 'interface', 'int-to-phy', 'ofport').strip()
    lines = [l for l in lab.ofctl(hv, 'dump-flows').splitlines() if 'cookie=' in l]
    per_table: dict[str, int] = {}
    known = {'l2': 0, 'learn': 0}
    flood = []
    for line in lines:
        table = table_name(int(re.search(r'table=(\d+)', line).group(1)))
        prio = int(re.search(r'priority=(\d+)', line).group(1))
        per_table[table] = per_table.get(table, 0) + 1
        if prio == P_KNOWN and table in known:
            known[table] += 1
        vlan = re.search(r'dl_vlan=(\d+)', line)
        if table == 'flood' and prio == 100 and vlan and int(vlan.group(1)) != lab.fabric.native_vlan:
            flood.append(line.partition('actions=')[2])
    outs = [re.findall(r'output:(\w+)', a) for a in flood]
    return {'all': len(lines), 'per_table': per_table, 'known_l2': known['l2'], 'known_learn': known['learn'],
            'flood_flows': len(flood),
            'flood_tunnel_outputs': max((o.count(tun) for o in outs), default=0),
            'flood_uplink_outputs': max((o.count(uplink) for o in outs), default=0)}


def physical_flows(lab: Lab) -> dict:
    out = {}
    for sw in PHYSICAL:
        flows = dump_flows(lab.bridge(sw))
        out[sw] = {'all': len(flows), 'known': sum(f['priority'] == P_KNOWN for f in flows)}
    return out


def scale_case(work: Path, kind: str, n: int) -> dict:
    workloads = scale_workloads(n)
    policy = work / 'bench.yaml'
    policy.write_text(scale_tenant(kind, workloads))
    ctl, port = started(work)
    try:
        lab = Lab(str(FABRIC), ofp_port=port, vms_per_hypervisor=0)
        try:
            lab.up(timeout=60)
            wait_until(lambda: fabric_ready(ctl), 30, 0.25, 'fabric discovered')
            bind(lab, workloads)
            wait_until(lambda: admitted(lab, workloads), 60, 0.1, 'bindings admitted')
            took, out = run_dvsctl(ctl, 'apply', str(policy))
            return {'apply_s': round(took, 3), 'apply_changes': changes(out),
                    'hv1': hv_flows(lab, 'hv1'), 'hv2': hv_flows(lab, 'hv2'), 'physical': physical_flows(lab)}
        finally:
            lab.down()
    finally:
        ctl.stop()


def bench_scale(work: Path, sizes: list[int], runs: int) -> dict:
    """Every (N, kind) case `runs` times, interleaved; flow counts are the last run's (they are
    the same in every run: checked)."""
    done: dict[tuple, list] = {}
    for i in range(runs):
        for n in sizes:
            for kind in ('overlay', 'vlan'):
                d = work / ('%s-%d-%d' % (kind, n, i))
                d.mkdir()
                done.setdefault((n, kind), []).append(scale_case(d, kind, n))
    out: dict = {}
    for (n, kind), cases in done.items():
        flows = [{k: v for k, v in c.items() if k != 'apply_s'} for c in cases]
        out.setdefault(str(n), {})[kind] = dict(flows[-1], apply_s=stats([c['apply_s'] for c in cases]),
                                                same_flows_every_run=all(f == flows[0] for f in flows))
    return out


# ---- main --------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=RUNS, help='datapath rounds (each: every pair), scale runs')
    ap.add_argument('--sizes', type=int, nargs='*', default=list(SIZES), help='remote workloads')
    ap.add_argument('--only', choices=('datapath', 'scale'))
    args = ap.parse_args()
    out = {'benchmark': 'vxlan_overlay', 'fabric': 'examples/fabric.yaml', 'loadavg_start': os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix='opendvs-bench-overlay-') as d:
        if args.only in (None, 'datapath'):
            (Path(d) / 'datapath').mkdir()
            out['datapath'] = bench_datapath(Path(d) / 'datapath', args.runs)
        if args.only in (None, 'scale'):
            (Path(d) / 'scale').mkdir()
            out['scale'] = bench_scale(Path(d) / 'scale', args.sizes, args.runs)
    out['loadavg_end'] = os.getloadavg()
    print(json.dumps(out, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / 'overlay.json').write_text(json.dumps(out, indent=2))


if __name__ == '__main__':
    main()
