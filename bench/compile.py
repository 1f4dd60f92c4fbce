"""Benchmark: compiling a data center, in-process (no OVS).  Prints JSON; never asserts.

A generated fabric (bench/fabricgen.py): 100 hypervisors in 10 racks under 2 spines, 1,000
networks (half VLAN, half VXLAN) in 100 tenants, W workloads with one nic each, every nic
bound.  Each size runs in its own process so peak memory is its own.

  full_s / flows / peak_rss_mb   every switch compiled from scratch and diffed against an empty
                                 switch by the controller's worker (a start, or a push that
                                 changes everything); peak RSS of the whole process
  events                         one workload bound, unbound, moved to another rack (VLAN and
                                 overlay), each on a controller whose 112 switches are fake
                                 connections in sync: flow-mods sent to all switches, and the
                                 time from the event to every switch converged (compile + diff +
                                 the fake switches' bookkeeping), median of 20
"""
from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = (1000, 3000, 10000)
REPEAT = 20


def _measure(workloads: int) -> dict:
    from bench.fabricgen import controller_on, world
    from controller.inventory.model import Binding

    policy, inv = world(workloads=workloads)
    ctl = controller_on(policy, inv)
    t = time.perf_counter()
    ctl._converge_batch(sorted(ctl._dirty))
    full_s = time.perf_counter() - t
    ctl._dirty.clear()
    flows = sum(len(c) for c in ctl._compiled.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def run(event) -> tuple[float, int]:
        t = time.perf_counter()
        ctl.last_diff = {}
        event()
        with ctl.lock:
            batch = sorted(ctl._dirty)
            ctl._dirty.clear()
        ctl._converge_batch(batch)
        mods = sum(len(d.add) + len(d.delete) for d in ctl.last_diff.values())
        return time.perf_counter() - t, mods

    hvs = sorted(h.dpid for h in policy.fabric.hypervisors.values())
    out = {}
    for kind in ('vlan', 'overlay'):
        nics = [i for i, b in sorted(policy.nics.items()) if (b.network.vni is None) == (kind == 'vlan')]
        samples: dict[str, list] = {'bind': [], 'unbind': [], 'move': []}
        for k in range(REPEAT):
            iface = nics[k * 7 % len(nics)]
            home, port = inv.locations[iface]
            away = hvs[(hvs.index(home) + len(hvs) // 2) % len(hvs)]      # another rack
            mac = policy.nics[iface].nic.mac
            b_home, b_away = dict(inv.bindings[home]), dict(inv.bindings[away])
            free = max(b_away) + 1 + k
            inv.switches[away].ports.setdefault(free, type(inv.switches[home].ports[port])(
                free, 'vnet%d' % free, True, 'vm', since=0.0))
            gone = {p: b for p, b in b_home.items() if p != port}
            samples['unbind'].append(run(lambda: ctl.bindings_changed(home, gone)))
            samples['bind'].append(run(lambda: ctl.bindings_changed(home, b_home)))
            arrived = {**b_away, free: Binding('vnet%d' % free, iface, mac)}
            samples['move'].append(run(lambda: (ctl.bindings_changed(away, arrived), ctl.bindings_changed(home, gone))))
            run(lambda: (ctl.bindings_changed(away, b_away), ctl.bindings_changed(home, b_home)))     # back
        out[kind] = {what: {'median_s': round(statistics.median(s for s, _ in v), 4),
                            'max_s': round(max(s for s, _ in v), 4),
                            'flow_mods_median': statistics.median(m for _, m in v),
                            'flow_mods_max': max(m for _, m in v)} for what, v in samples.items()}
    return {'workloads': workloads, 'switches': len(inv.switches), 'full_s': round(full_s, 2), 'flows': flows,
            'peak_rss_mb': round(peak), 'events': out}


def main() -> int:
    from bench.fabricgen import per_size
    results = per_size('compile', __file__, __doc__, SIZES, _measure)
    if results is None:
        return 0
    print('\n| workloads | flows | full compile (s) | peak RSS (MB) | bind: mods / ms | unbind | move across racks |')
    print('|---|---|---|---|---|---|---|')
    for r in results:
        for kind in ('vlan', 'overlay'):
            e = r['events'][kind]
            cell = lambda w: '%s / %.1f' % (e[w]['flow_mods_max'], 1000 * e[w]['median_s'])     # noqa: E731
            print('| %d (%s) | %d | %.2f | %d | %s | %s | %s |' % (r['workloads'], kind, r['flows'], r['full_s'],
                                                                  r['peak_rss_mb'], cell('bind'), cell('unbind'),
                                                                  cell('move')))
    return 0


if __name__ == '__main__':
    sys.exit(main())
