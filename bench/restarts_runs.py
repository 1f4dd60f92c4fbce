"""Measurement: tests/integration/test_restarts.py run N times (default 3); per restart case,
min / median / max of the pings lost at 100 pps and of the longest outage.  Prints JSON.

Run it alone, holding the lab lock for all runs (the root OVS restart needs it):

  flock /tmp/opendvs-lab.lock .venv/bin/python bench/restarts_runs.py [N]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(n: int = 3) -> None:
    out = Path(tempfile.mkdtemp(prefix='opendvs-restarts-runs-')) / 'runs.jsonl'
    for i in range(n):
        r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                            'tests/integration/test_restarts.py'], cwd=ROOT,
                           env=dict(os.environ, OPENDVS_RESTARTS_JSON=str(out)),
                           capture_output=True, text=True)
        print('run %d: %s' % (i + 1, (r.stdout.strip().splitlines() or ['?'])[-1]), file=sys.stderr, flush=True)
    runs = [json.loads(line) for line in out.read_text().splitlines()]
    summary = {}
    for case in sorted({c for run in runs for c in run}):
        rows = [run[case] for run in runs if case in run]
        summary[case] = {k: {'min': min(v), 'median': statistics.median(v), 'max': max(v)}
                         for k in ('lost', 'longest_outage_ms') for v in [[r[k] for r in rows]]}
        summary[case]['runs'] = len(rows)
        summary[case]['deleted'] = sorted({r['deleted'] for r in rows})
        summary[case]['flow_mods_added'] = sorted({r['added'] for r in rows})
    print(json.dumps({'pps': 100, 'runs': runs, 'summary': summary}, indent=1))


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
