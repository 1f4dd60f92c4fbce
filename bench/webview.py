"""Benchmark: what one poll of the web view costs the controller (GET /v1/view, made by every
open page once a second), in-process, no OVS.  Prints JSON; never asserts.

The world is bench/compile.py's (bench/fabricgen.py: 100 hypervisors in 10 racks under 2
spines, 1,000 networks in 100 tenants, W workloads, every nic bound), every switch compiled
and converged onto a fake connection first, so the reconciler holds each switch's flows.

  picture_ms     controller.api.view.picture(): the whole picture, median and max of 20 (the
                 physical switches' MAC counts are at most MACS_EVERY s old: most polls reuse them)
  counting_ms    one with the MACs counted again (every flow of every leaf and spine read)
  locked_ms      of that, the part under the core's lock (the inventory snapshot and the
                 sessions: converges wait for it), median of 20
  json_kb        the reply's size (json.dumps(indent=1), as the API sends it)
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = (1000, 10000)
REPEAT = 20


def _measure(workloads: int) -> dict:
    from bench.fabricgen import controller_on, world
    from controller.api import view

    policy, inv = world(workloads=workloads)
    ctl = controller_on(policy, inv)
    ctl._converge_batch(sorted(ctl._dirty))
    ctl._dirty.clear()

    total, locked, counting = [], [], []
    for _ in range(5):
        view._macs.clear()
        t = time.perf_counter()
        view.picture(ctl)
        counting.append(time.perf_counter() - t)
    for _ in range(REPEAT):
        t = time.perf_counter()
        pic = view.picture(ctl)
        total.append(time.perf_counter() - t)
        t = time.perf_counter()
        with ctl.lock:                  # what picture() does under the lock
            ctl.inv.snapshot()
            {d: {'connected': d in ctl.conns, 'settling': ctl.settling(d)} for d in ctl.inv.switches}
        locked.append(time.perf_counter() - t)
    size = len(json.dumps(pic, indent=1).encode())
    return {'workloads': workloads, 'switches': len(inv.switches),
            'flows': sum(s['flows'] for s in pic['switches'] + pic['hypervisors']),
            'picture_ms': {'median': round(1000 * statistics.median(total), 1), 'max': round(1000 * max(total), 1)},
            'counting_ms': {'median': round(1000 * statistics.median(counting), 1)},
            'locked_ms': {'median': round(1000 * statistics.median(locked), 2)},
            'json_kb': round(size / 1024)}


def main() -> int:
    from bench.fabricgen import per_size
    per_size('webview', __file__, __doc__, SIZES, _measure)
    return 0


if __name__ == '__main__':
    sys.exit(main())
