"""Measurement: tests/integration/test_floods.py run N times (default 3); per probe, the max
RTT during the storms against the max of a baseline as long, at the same rate (the issue's
bound: at most 2x), per phase too, and what the controller spent.  Prints JSON.

Run it alone, holding the lab lock:

  flock /tmp/opendvs-lab.lock .venv/bin/python bench/floods_runs.py [N]
"""
from __future__ import annotations

import statistics
import sys

from pytest_runs import runs as test_runs, save

PROBES = ('data1 -> data2', 'app1 -> app2')
PHASES = ('flood_first_s', 'flood_rest', 'arp')


def spread(values) -> dict:
    values = [v for v in values if v is not None]
    return {'min': min(values), 'median': statistics.median(values), 'max': max(values)} if values else {}


def main(n: int = 3) -> None:
    runs = test_runs('tests/integration/test_floods.py', 'OPENDVS_FLOODS_JSON', n)
    summary = {}
    for i, name in enumerate(PROBES):
        base = [r['baseline'][i] for r in runs]
        storm = [r['storm'][i] for r in runs]
        summary[name] = {
            'lost': sum(s['sent'] - s['received'] for s in storm),
            'baseline_max_ms': spread(b['max'] for b in base),
            'storm_max_ms': spread(s['max'] for s in storm),
            'ratio': spread(r['ratios'][i] for r in runs),
            'runs_within_2x': sum(r['ratios'][i] <= 2 for r in runs),
            **{'max_%s_ms' % p: spread(s.get('max_' + p) for s in storm) for p in PHASES}}
    summary['controller'] = {'cpu_pct': spread(r['controller_cpu_pct'] for r in runs),
                             'rss_growth_mb': spread(round(r['controller_rss_mb'][1] - r['controller_rss_mb'][0], 1)
                                                     for r in runs)}
    save('floods', {'runs': runs, 'summary': summary})


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
