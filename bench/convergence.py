"""Benchmark: learning-switch convergence on the example fabric (2 spines x 2 leaves,
4 hypervisors x 2 VMs).  Prints JSON; never asserts on time.

  lab_connected_s     lab build start -> every bridge has an OpenFlow session
  pingall_s           lab build start -> every VM pair answered (56 pairs)
  flows_per_switch    flow entries per bridge after pingall
  controller_rss_mb   the controller's resident memory after pingall
  restart_pingall_s   controller kill -9 + restart -> every VM pair answers again
"""
from __future__ import annotations

import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mininet_topos import Lab                                           # noqa: E402
from tests.support import ControllerProcess, dump_flows, free_port       # noqa: E402

FABRIC = ROOT / 'examples' / 'fabric.yaml'


def pingall_done(lab, deadline_s=60) -> float:
    t0 = time.monotonic()
    pending = set(itertools.permutations(sorted(lab.vms), 2))
    while pending and time.monotonic() - t0 < deadline_s:
        pending = {(a, b) for a, b in pending if not lab.ping(a, b, timeout=0.5)}
    if pending:
        raise RuntimeError('pingall did not converge: %s' % sorted(pending)[:5])
    return time.monotonic()


def rss_mb(pid: int) -> float:
    for line in Path('/proc/%d/status' % pid).read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return 0.0


def one_run(work: Path) -> dict:
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(FABRIC), ofp_port=port)
    try:
        t0 = time.monotonic()
        lab.up(timeout=60)
        connected = time.monotonic() - t0
        pingall = pingall_done(lab) - t0
        flows = {sw: len(dump_flows(lab.bridge(sw))) for sw in lab.fabric.switches}
        flows.update({hv: len([l for l in lab.ofctl(hv, 'dump-flows').splitlines() if 'cookie=' in l])
                      for hv in lab.fabric.hypervisors})
        rss = rss_mb(ctl.proc.pid)
        ctl.kill9()
        t1 = time.monotonic()
        ctl.start()
        restart = pingall_done(lab) - t1
        return {'lab_connected_s': connected, 'pingall_s': pingall, 'flows_per_switch': flows,
                'controller_rss_mb': rss, 'restart_pingall_s': restart}
    finally:
        lab.down()
        ctl.stop()


def main(runs: int = 3) -> None:
    results = []
    with tempfile.TemporaryDirectory(prefix='opendvs-bench-') as d:
        for i in range(runs):
            w = Path(d) / str(i)
            w.mkdir()
            results.append(one_run(w))
    summary = {}
    for key in ('lab_connected_s', 'pingall_s', 'controller_rss_mb', 'restart_pingall_s'):
        vals = [r[key] for r in results]
        summary[key] = {'min': round(min(vals), 3), 'median': round(statistics.median(vals), 3),
                        'max': round(max(vals), 3)}
    summary['flows_per_switch'] = results[-1]['flows_per_switch']
    out = {'benchmark': 'learning_switch_convergence', 'fabric': 'examples/fabric.yaml',
           'runs': runs, 'results': summary}
    print(json.dumps(out, indent=2))
    res = ROOT / 'bench' / 'results'
    res.mkdir(exist_ok=True)
    (res / 'convergence.json').write_text(json.dumps(out, indent=2))


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
