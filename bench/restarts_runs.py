"""Measurement: tests/integration/test_restarts.py run N times (default 3); per restart case,
min / median / max of the pings lost at 100 pps and of the longest outage.  Prints JSON.

Run it alone, holding the lab lock for all runs (the root OVS restart needs it):

  flock /tmp/opendvs-lab.lock .venv/bin/python bench/restarts_runs.py [N]
"""
from __future__ import annotations

import statistics
import sys

from pytest_runs import runs as test_runs, save


def main(n: int = 3) -> None:
    runs = test_runs('tests/integration/test_restarts.py', 'OPENDVS_RESTARTS_JSON', n)
    summary = {}
    for case in sorted({c for run in runs for c in run}):
        rows = [run[case] for run in runs if case in run]
        summary[case] = {k: {'min': min(v), 'median': statistics.median(v), 'max': max(v)}
                         for k in ('lost', 'longest_outage_ms') for v in [[r[k] for r in rows]]}
        summary[case]['runs'] = len(rows)
        summary[case]['deleted'] = sorted({r['deleted'] for r in rows})
        summary[case]['flow_mods_added'] = sorted({r['added'] for r in rows})
    save('restarts', {'pps': 100, 'runs': runs, 'summary': summary})


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
