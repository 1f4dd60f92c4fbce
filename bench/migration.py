"""Benchmark: the blackout of a live migration (issue 10).  Prints JSON (and writes
bench/results/migration.json); never asserts on time.

One lab (examples/fabric.yaml, 4 hypervisors in 2 racks), one tenant `mig` with a VLAN
network and an overlay network, default deny with a rule letting the probe VMs in.  Per
migration type, MOVES moves back and forth (Lab.move_vm: the new port plugged while the old
row still claims the nic, the VM's gratuitous ARP rounds, the old row deleted), each with a
prober in another VM pinging the moving one:

    overlay, across racks   o1: hv1 <-> hv3, probed from o2 on hv2
    VLAN, within a rack     v1: hv1 <-> hv2, probed from v2 on hv3 (other rack)
    VLAN, across racks      v1: hv1 <-> hv4, probed from v2 on hv3

and at two rates, 100 and 1,000 pings a second (ping -i 0.01 / -i 0.001, -D timestamps):
  lost       echo requests with no reply, in a window that covers the whole move
  max_rtt_ms the longest round trip in the window: a request sent while the switch happens
             may be held (upcalls wait for the bundle) rather than lost
  garp_ms    time from the VM's first gratuitous ARP (Lab.move_vm's announcement) to the
             first echo reply after it whose request left after the GARP (at 1,000 pps the
             resolution is 1 ms)
Medians (and min/max) over the moves.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / 'bench' / 'results'
FABRIC = ROOT / 'examples' / 'fabric.yaml'
MOVES = 10

TENANT = '''tenant: mig
networks:
  v: {vlan: 10, subnet: 10.81.0.0/24, gateway: 10.81.0.1}
  o: {vni: 5081, subnet: 10.82.0.0/24, gateway: 10.82.0.1}
workloads:
  v1: {hypervisor: hv1, labels: [moving], nics: [{network: v, mac: "02:00:51:00:00:01", ip: 10.81.0.11}]}
  v2: {hypervisor: hv3, labels: [probe], nics: [{network: v, mac: "02:00:51:00:00:02", ip: 10.81.0.12}]}
  o1: {hypervisor: hv1, labels: [moving], nics: [{network: o, mac: "02:00:52:00:00:01", ip: 10.82.0.21}]}
  o2: {hypervisor: hv2, labels: [probe], nics: [{network: o, mac: "02:00:52:00:00:02", ip: 10.82.0.22}]}
security:
  default: deny
  rules:
    - {name: probes, from: {label: probe}, to: {label: moving}, allow: [{proto: icmp}]}
'''
TYPES = {                         # name: (moving VM, prober, home, away)
    'overlay_across_racks': ('o1', 'o2', 'hv1', 'hv3'),
    'vlan_within_rack': ('v1', 'v2', 'hv1', 'hv2'),
    'vlan_across_racks': ('v1', 'v2', 'hv1', 'hv4'),
}
RATES = {100: '0.01', 1000: '0.001'}


def stats(vals, nd=1) -> dict:
    return {'min': round(min(vals), nd), 'median': round(statistics.median(vals), nd),
            'max': round(max(vals), nd)} if vals else {}


def one_move(lab, vm: str, prober: str, to: str, rate: int) -> dict:
    """Ping vm from prober at `rate` for a window around one move of vm to `to`."""
    ip = lab.vms[vm].ip
    count = rate * 3                            # 1 s before the move, ~2 s after
    # to a file, not a pipe: 3,000 lines fill a pipe nobody reads yet, and ping would stall on it
    with tempfile.TemporaryFile() as log:
        p = lab.popen(prober, ['ping', '-D', '-n', '-i', RATES[rate], '-c', str(count), '-W', '1', ip],
                      stdout=log, stderr=subprocess.STDOUT)
        time.sleep(1.0)                             # noqa: traffic must flow before the move
        done = lab.move_vm(vm, to)
        p.wait(timeout=60)
        log.seek(0)
        out = log.read().decode()
    sent, got = (int(x) for x in re.search(r'(\d+) packets transmitted, (\d+) received', out).groups())
    garp, first = done['garp'], None
    interval = 1.0 / rate
    for line in out.splitlines():
        m = re.match(r'\[(\d+\.\d+)\] .* icmp_seq=(\d+) .*time=([\d.]+) ms', line)
        if m:
            t_reply = float(m.group(1))
            t_sent = t_reply - float(m.group(3)) / 1000
            if garp is not None and t_sent >= garp - interval / 2 and first is None:
                first = t_reply
    rtt = re.search(r'rtt min/avg/max/mdev = [\d.]+/[\d.]+/([\d.]+)/', out)
    return {'lost': sent - got, 'garp_ms': round((first - garp) * 1000, 1) if first and garp else None,
            'max_rtt_ms': float(rtt.group(1)) if rtt else None}


def bench(work: Path, moves: int) -> dict:
    from bench.apply import run_dvsctl
    from bench.overlay import started
    from mininet_topos import Lab
    from tests.support import wait_until
    policy = work / 'mig.yaml'
    policy.write_text(TENANT)
    ctl, port = started(work)
    try:
        run_dvsctl(ctl, 'apply', str(policy))
        lab = Lab(str(FABRIC), ofp_port=port, tenants=[str(policy)])
        try:
            lab.up(timeout=60)
            out = {}
            for kind, (vm, prober, home, away) in TYPES.items():
                wait_until(lambda: lab.ping(prober, vm), 30, 0.2, '%s reaches %s' % (prober, vm))
                per_rate = {}
                for rate in RATES:
                    runs = []
                    for i in range(moves):
                        runs.append(one_move(lab, vm, prober, away if i % 2 == 0 else home, rate))
                    if lab.vms[vm].hypervisor != home:
                        lab.move_vm(vm, home)
                        wait_until(lambda: lab.ping(prober, vm), 10, 0.2, '%s back home' % vm)
                    per_rate[rate] = {'moves': runs, 'lost': stats([r['lost'] for r in runs], 0),
                                      'max_rtt_ms': stats([r['max_rtt_ms'] for r in runs if r['max_rtt_ms']]),
                                      'garp_ms': stats([r['garp_ms'] for r in runs if r['garp_ms'] is not None])}
                out[kind] = per_rate
            return out
        finally:
            lab.down()
    finally:
        ctl.stop()


def table(res: dict) -> str:
    lines = ['| migration | lost at 100 pps | lost at 1,000 pps | max RTT (ms), 1,000 pps | GARP → first reply (ms), 1,000 pps |',
             '|---|---|---|---|---|']
    for kind, per in res.items():
        def mmm(d):
            return '%s / %s / %s' % (d['min'], d['median'], d['max']) if d else '-'
        lines.append('| %s | %s | %s | %s | %s |' % (kind.replace('_', ' '), mmm(per[100]['lost']),
                                                      mmm(per[1000]['lost']), mmm(per[1000]['max_rtt_ms']),
                                                      mmm(per[1000]['garp_ms'])))
    return '\n'.join(lines) + '\n\n(min / median / max over the moves)'


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--moves', type=int, default=MOVES, help='moves per type and rate')
    args = ap.parse_args()
    out: dict = {'benchmark': 'migration', 'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                 'loadavg_start': os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix='opendvs-bench-migration-') as d:
        out['types'] = bench(Path(d), args.moves)
    out['loadavg_end'] = os.getloadavg()
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / 'migration.json').write_text(json.dumps(out, indent=1))
    print('\n' + table(out['types']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
