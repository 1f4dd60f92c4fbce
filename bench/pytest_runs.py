"""Run one integration test module N times (a fresh lab and controller each) and collect the
figures each run appends, one JSON object a line, to the file named by `env_var`.  Used by
bench/restarts_runs.py and bench/floods_runs.py; run those alone, holding the lab lock."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def runs(test: str, env_var: str, n: int) -> list[dict]:
    out = Path(tempfile.mkdtemp(prefix='opendvs-test-runs-')) / 'runs.jsonl'
    for i in range(n):
        r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', test], cwd=ROOT,
                           env=dict(os.environ, **{env_var: str(out)}), capture_output=True, text=True)
        print('run %d: %s' % (i + 1, (r.stdout.strip().splitlines() or ['?'])[-1]), file=sys.stderr, flush=True)
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def save(name: str, result: dict) -> None:
    """bench/results/NAME.json (as the other benches leave theirs), and print it."""
    where = ROOT / 'bench' / 'results'
    where.mkdir(exist_ok=True)
    (where / (name + '.json')).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
