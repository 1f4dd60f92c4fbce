"""The lab under `mn --custom mininet_topos/topo.py`: per-run names, a record of what each
run builds, and clean-up of exactly that.

mn runs its *global* clean-up (killall of controllers, `pkill -f mininet:`, deleting every
`*.log` in /tmp, every OVS bridge...) whenever something raises or the user presses Ctrl-C.
topo.py therefore turns its own errors into SystemExit (which mn does not catch) and hands mn
`cleanup` below in place of Mininet's: it removes what this process's topo built, by the
names and pidfiles in its record, and nothing else.

A record, <RUN_DIR>/<prefix>.json, is written before anything is built and removed when the
run ends.  A record whose mn died (kill -9, a crash) marks leftovers: the next run sweeps
them (bridges, root-namespace veths, the hypervisors' OVS daemons by pidfile) first.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

from mininet_topos import osutil
from mininet_topos.teardown import sweep

RUN_DIR = Path(os.environ.get('OPENDVS_MN_DIR', '/run/opendvs-mn'))
_MINE: list[Path] = []            # records of the topos this process made


def fresh_prefix() -> str:
    """A per-run prefix (mn + 3 hex digits) that no lab or earlier run uses."""
    for _ in range(100):
        prefix = 'mn' + secrets.token_hex(2)[:3]
        if not osutil.link_exists(f'{prefix}mgmt') and not (RUN_DIR / f'{prefix}.json').exists():
            return prefix
    raise SystemExit('opendvs topo: no free lab prefix; pass prefix=')


def _started(pid) -> str | None:
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record(plan) -> Path:
    """Write what this run will build, before it builds it."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    path = RUN_DIR / f'{plan.prefix}.json'
    data = {'prefix': plan.prefix, 'owner': os.getpid(), 'owner_started': _started(os.getpid()),
            'workdir': plan.workdir, 'rundirs': [h.rundir for h in plan.hypervisors.values()],
            'bridges': list(plan.bridges()), 'root_links': list(plan.root_links())}
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps(data, indent=1))
    tmp.rename(path)
    _MINE.append(path)
    return path


def _owner_alive(data) -> bool:
    pid = data.get('owner')
    return bool(pid) and osutil.alive(pid) and _started(pid) == data.get('owner_started')


def remove(path: Path) -> list[str]:
    """Take away what a record lists (only that), then the record."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return []
    gone = sweep(data['rundirs'], data['bridges'], data['root_links'])
    shutil.rmtree(data['workdir'], ignore_errors=True)
    path.unlink(missing_ok=True)
    return gone


def sweep_dead_runs() -> dict[str, list[str]]:
    """Leftovers of earlier runs whose mn is gone: prefix -> what was removed."""
    out = {}
    for path in sorted(RUN_DIR.glob('*.json')) if RUN_DIR.is_dir() else ():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not _owner_alive(data):
            out[data.get('prefix', path.stem)] = remove(path)
    return out


def in_use(plan) -> list[str]:
    """Names of the plan that exist already (another lab's, or leftovers we have no record of)."""
    busy = [n for n in plan.root_links() if osutil.link_exists(n)]
    return busy + sorted(set(plan.bridges()) & osutil.root_bridges())


def cleanup() -> None:
    """What this process's topos built, and nothing else (idempotent)."""
    while _MINE:
        remove(_MINE.pop())
