"""Benchmark: `dvsctl apply` of one tenant with N workloads (1, 100, 1000) on the example fabric
(2 spines x 2 leaves, 4 hypervisors).  Prints JSON; never asserts on time.

Workloads are not Mininet VMs (1000 would be too heavy): each is an OVS internal port on a
hypervisor's br-int carrying external_ids:iface-id=bench/<workload>/nic0, round-robin over
hv1..hv4 and created *before* the apply, so the apply is what makes every known-MAC flow
(vlan_portgroups, priority 150, cookie app 0x03) appear on every switch.

Per run, on a fresh controller and lab:
  bind_s              ovs-vsctl add-port of the N ports (one transaction per hv) + links up
  bind_to_flows_s     ... until every port is admitted by the controller (OVSDB -> flows)
  client_s            a `dvsctl show tenants` round trip (Python start-up + HTTP): the floor
  dry_run_s           `dvsctl apply --dry-run`: parse + validate + compile + diff, no switch I/O
  apply_s             (a) `dvsctl apply` wall time; it returns once every switch has committed
  installed_s         (b) apply start -> the last bridge holds all its priority-150 flows
                      (from OVS's own flow `duration`, so nothing polls during the apply)
  known_flows/flows   (c) priority-150 flows and all flows per bridge afterwards
  rss_mb              (d) controller RSS before and after the apply
  incremental_s       (e) a second apply changing one workload's MAC, with dvsctl's +/-
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.policy.fabric import load_fabric                        # noqa: E402
from mininet_topos import Lab                                           # noqa: E402
from tests.support import ControllerProcess, free_port, wait_until      # noqa: E402

FABRIC = ROOT / 'examples' / 'fabric.yaml'
VLANS = (10, 20, 30)                     # allowed on every trunk of examples/fabric.yaml
KNOWN = 'cookie=0x0300000000000000/0xff00000000000000'    # vlan_portgroups' flows
P_KNOWN = 150
SIZES = (1, 100, 1000)                   # workloads in the policy
RUNS = 3
HVS = list(load_fabric(FABRIC).hypervisors)


# ---- the tenant ----------------------------------------------------------------------------

def workload(i: int, hvs: list[str], mac_base: int = 0x020000000000) -> dict:
    net = i % len(VLANS)
    return {'name': 'w%d' % i, 'hv': hvs[i % len(hvs)], 'network': 'net%d' % VLANS[net],
            'mac': ':'.join('%02x' % b for b in (mac_base + i + 1).to_bytes(6, 'big')),
            'ip': '10.%d.%d.%d' % (VLANS[net], (i // 200) % 256, i % 200 + 10)}


def tenant_yaml(workloads: list[dict]) -> str:
    lines = ['tenant: bench', 'networks:']
    lines += ['  net%d: {vlan: %d, subnet: 10.%d.0.0/16, gateway: 10.%d.255.254}' % (v, v, v, v) for v in VLANS]
    lines.append('workloads:')
    lines += ['  %s: {hypervisor: %s, nics: [{network: %s, mac: "%s", ip: %s}]}'
              % (w['name'], w['hv'], w['network'], w['mac'], w['ip']) for w in workloads]
    lines += ['security: {default: allow}', '']
    return '\n'.join(lines)


# ---- bindings on the hypervisors -------------------------------------------------------------

def bind(lab: Lab, workloads: list[dict]) -> None:
    """One internal port per workload on its hv's br-int, one ovs-vsctl transaction per hv."""
    for hv in lab.fabric.hypervisors:
        mine = [w for w in workloads if w['hv'] == hv]
        if not mine:
            continue
        args = []
        for w in mine:
            port = 'b' + w['name']
            args += ['--', 'add-port', 'br-int', port, '--', 'set', 'Interface', port, 'type=internal',
                     'external_ids:iface-id=bench/%s/nic0' % w['name'], 'external_ids:attached-mac=' + w['mac']]
        lab.vsctl(hv, *args)
        # an internal port is created admin-down: the controller only uses ports that are up
        script = ''.join('link set b%s up\n' % w['name'] for w in mine)
        rc, out = lab.exec(hv, 'ip -batch - <<EOF\n%sEOF' % script)
        if rc:
            raise RuntimeError('%s: ip -batch failed: %s' % (hv, out))


def admitted(lab: Lab, workloads: list[dict]) -> bool:
    """Every workload port has a classify (table 0) flow on its hv: the controller saw it bound."""
    for hv in lab.fabric.hypervisors:
        dump = lab.ofctl(hv, '--names', 'dump-flows', 'table=0')
        ports = set(re.findall(r'in_port="?([\w-]+)', dump))
        if any('b' + w['name'] not in ports for w in workloads if w['hv'] == hv):
            return False
    return True


# ---- the fabric and its flows ----------------------------------------------------------------

def fabric_ready(ctl: ControllerProcess) -> bool:
    """Every switch connected and settled, and each hypervisor's leaf port found by LLDP."""
    r = ctl.dvsctl('show', 'switches', '--json')
    if r.returncode:
        return False
    sws = json.loads(r.stdout)
    hv_ports = sum(p['role'] == 'hypervisor' for s in sws for p in s['ports'])
    return all(s['connected'] and not s['settling'] for s in sws) and hv_ports == len(HVS)


def dump(lab: Lab, sw: str, *filters: str) -> list[str]:
    return [line for line in lab.ofctl(sw, 'dump-flows', *filters).splitlines() if 'cookie=' in line]


def expected_known(sw: str, workloads: list[dict]) -> int:
    """A destination entry per workload on every physical switch and on every hypervisor with
    a workload on its VLAN (the others' trunks do not carry it), plus a source entry on its own hv."""
    if sw in HVS:
        here = {w['network'] for w in workloads if w['hv'] == sw}
        return sum(w['network'] in here for w in workloads) + sum(w['hv'] == sw for w in workloads)
    return len(workloads)


def install_times(lab: Lab) -> dict[str, float]:
    """Per bridge, the wall-clock time its newest priority-150 flow was installed: the dump's
    time (midpoint) minus the flow's age as OVS reports it (ms resolution)."""
    out = {}
    for sw in list(lab.fabric.switches) + list(lab.fabric.hypervisors):
        before = time.time()
        lines = dump(lab, sw, KNOWN)
        now = (before + time.time()) / 2
        ages = [float(re.search(r'duration=([\d.]+)s', line).group(1))
                for line in lines if 'priority=%d' % P_KNOWN in line]
        out[sw] = now - min(ages) if ages else float('nan')
    return out


def flow_counts(lab: Lab, workloads: list[dict]) -> dict[str, dict]:
    out = {}
    for sw in list(lab.fabric.switches) + list(lab.fabric.hypervisors):
        known = sum('priority=%d' % P_KNOWN in line for line in dump(lab, sw, KNOWN))
        out[sw] = {'known': known, 'expected_known': expected_known(sw, workloads),
                   'all': len(dump(lab, sw))}
    return out


def rss_mb(pid: int) -> float:
    for line in Path('/proc/%d/status' % pid).read_text().splitlines():
        if line.startswith('VmRSS:'):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# ---- dvsctl ------------------------------------------------------------------------------------

def run_dvsctl(ctl: ControllerProcess, *args) -> tuple[float, str]:
    t0 = time.monotonic()
    r = ctl.dvsctl(*args)
    took = time.monotonic() - t0
    if r.returncode:
        raise RuntimeError('dvsctl %s failed: %s%s' % (' '.join(args), r.stdout, r.stderr))
    return took, r.stdout


def changes(out: str) -> dict[str, str]:
    """dvsctl apply's per-switch lines ('leaf1   +3 -1 flows') as {switch: '+3 -1'}."""
    return {m.group(1): m.group(2) for m in re.finditer(r'^(\S+)\s+(\+\d+ -\d+) flows$', out, re.M)}


def validate_once(path: Path) -> float:
    t0 = time.monotonic()
    subprocess.run([str(Path(sys.executable).parent / 'dvsctl'), 'validate', str(path), '--fabric', str(FABRIC)],
                   check=True, capture_output=True, text=True)
    return time.monotonic() - t0


# ---- one run -----------------------------------------------------------------------------------

def measure_apply(ctl, lab, policy: Path, workloads) -> dict:
    client, _ = run_dvsctl(ctl, 'show', 'tenants')
    dry, _ = run_dvsctl(ctl, 'apply', str(policy), '--dry-run')
    rss_before = rss_mb(ctl.proc.pid)
    start = time.time()
    took, out = run_dvsctl(ctl, 'apply', str(policy))
    counts = flow_counts(lab, workloads)          # right after the apply returned
    installed = {sw: round(t - start, 3) for sw, t in install_times(lab).items()}
    return {'client_s': client, 'dry_run_s': dry, 'apply_s': took, 'installed_s': max(installed.values()),
            'installed_per_switch_s': installed, 'changes': changes(out), 'flows': counts,
            'complete_when_apply_returned': all(c['known'] == c['expected_known'] for c in counts.values()),
            'rss_before_mb': rss_before, 'rss_after_mb': rss_mb(ctl.proc.pid)}


def measure_incremental(ctl, policy: Path, workloads) -> dict:
    moved = dict(workloads[-1], mac='02:ff:00:00:00:01')
    policy.write_text(tenant_yaml(workloads[:-1] + [moved]))
    took, out = run_dvsctl(ctl, 'apply', str(policy))
    return {'incremental_s': took, 'incremental_changes': changes(out)}


def one_run(work: Path, n: int) -> dict:
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    try:
        lab = Lab(str(FABRIC), ofp_port=port, vms_per_hypervisor=0)
        try:
            lab.up(timeout=60)
            return measure_run(ctl, lab, work, n)
        finally:
            lab.down()                 # removes the bench ports too: they live in the hvs' OVS
    finally:
        ctl.stop()


def measure_run(ctl, lab, work: Path, n: int) -> dict:
    workloads = [workload(i, HVS) for i in range(n)]
    policy = work / 'bench.yaml'
    policy.write_text(tenant_yaml(workloads))
    wait_until(lambda: fabric_ready(ctl), 30, 0.25, 'fabric discovered')
    t0 = time.monotonic()
    bind(lab, workloads)
    result = {'bind_s': time.monotonic() - t0}
    wait_until(lambda: admitted(lab, workloads), 60, 0.1, 'bindings admitted')
    result['bind_to_flows_s'] = time.monotonic() - t0
    result.update(measure_apply(ctl, lab, policy, workloads))
    result.update(measure_incremental(ctl, policy, workloads))
    return result


# ---- summary -----------------------------------------------------------------------------------

TIMES = ('bind_s', 'bind_to_flows_s', 'client_s', 'dry_run_s', 'apply_s', 'installed_s', 'incremental_s',
         'rss_before_mb', 'rss_after_mb')


def summarize(runs: list[dict]) -> dict:
    out = {k: {'min': round(min(r[k] for r in runs), 3), 'median': round(statistics.median(r[k] for r in runs), 3),
               'max': round(max(r[k] for r in runs), 3)} for k in TIMES}
    last = runs[-1]
    out['known_flows_per_switch'] = {sw: c['known'] for sw, c in last['flows'].items()}
    out['flows_per_switch'] = {sw: c['all'] for sw, c in last['flows'].items()}
    out['apply_changes'] = last['changes']
    out['incremental_changes'] = last['incremental_changes']
    out['installed_per_switch_s'] = last['installed_per_switch_s']
    out['complete_when_apply_returned'] = all(r['complete_when_apply_returned'] for r in runs)
    return out


def parse_s(text: str) -> float:
    """In-process parse of the tenant YAML.  An apply parses it three times: in dvsctl (local
    check), in PolicyService.apply (to get the tenant's name) and in build_tenants."""
    from controller.policy.tenant import parse_tenant
    took = []
    for _ in range(3):
        t0 = time.perf_counter()
        parse_tenant(text, 'bench.yaml')
        took.append(time.perf_counter() - t0)
    return min(took)


def bench_size(d: Path, n: int, runs: int) -> dict:
    text = tenant_yaml([workload(i, HVS) for i in range(n)])
    sample = d / ('validate-%d.yaml' % n)
    sample.write_text(text)
    validate = validate_once(sample)           # the generated policy is valid for the fabric
    done = []
    for i in range(runs):
        w = d / ('%d-%d' % (n, i))
        w.mkdir()
        done.append(one_run(w, n))
    return dict(summarize(done), runs=runs, validate_s=round(validate, 3), parse_s=round(parse_s(text), 3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('sizes', nargs='*', type=int, default=list(SIZES), help='workloads per policy')
    ap.add_argument('--runs', type=int, default=RUNS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix='opendvs-bench-apply-') as d:
        results = {str(n): bench_size(Path(d), n, args.runs) for n in args.sizes}
    out = {'benchmark': 'tenant_apply', 'fabric': 'examples/fabric.yaml', 'results': results}
    print(json.dumps(out, indent=2))
    res = ROOT / 'bench' / 'results'
    res.mkdir(exist_ok=True)
    (res / 'apply.json').write_text(json.dumps(out, indent=2))


if __name__ == '__main__':
    main()
