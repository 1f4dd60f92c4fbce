"""The records `mn --custom mininet_topos/topo.py` keeps per run: written before the build, left
alone while their mn lives, swept (exactly the names they list) once it is gone."""
import json
import subprocess
import sys

import pytest

from mininet_topos import mnrun
from mininet_topos.plan import build_plan
from tests.unit.builders import example_fabric


@pytest.fixture
def runs(tmp_path, monkeypatch):
    swept = []
    monkeypatch.setattr(mnrun, 'RUN_DIR', tmp_path)
    monkeypatch.setattr(mnrun, 'sweep', lambda rundirs, bridges, links: swept.append(
        (list(rundirs), list(bridges), list(links))) or ['bridge x'])
    monkeypatch.setattr(mnrun, '_MINE', [])
    return tmp_path, swept


def _plan(prefix, tmp_path):
    return build_plan(example_fabric(), prefix, 7, workdir=str(tmp_path / ('w' + prefix)))


def test_a_live_runs_record_is_left_alone_and_its_own_cleanup_removes_it(runs):
    run_dir, swept = runs
    plan = _plan('mnabc', run_dir)
    path = mnrun.record(plan)
    data = json.loads(path.read_text())
    assert data['bridges'] == list(plan.bridges()) and data['root_links'] == list(plan.root_links())
    assert all(b.startswith('mnabc') for b in data['bridges'] + data['root_links'])
    assert mnrun.sweep_dead_runs() == {} and path.exists() and swept == []
    mnrun.cleanup()
    assert not path.exists() and swept == [(data['rundirs'], data['bridges'], data['root_links'])]
    mnrun.cleanup()                                   # idempotent
    assert len(swept) == 1


def test_a_dead_runs_leftovers_are_swept_by_its_record_only(runs):
    run_dir, swept = runs
    plan = _plan('mndef', run_dir)
    path = mnrun.record(plan)
    mnrun._MINE.clear()                               # as if another process had written it ...
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    data = json.loads(path.read_text())
    data['owner'] = dead.pid                          # ... and that process is gone
    path.write_text(json.dumps(data))
    assert mnrun.sweep_dead_runs() == {'mndef': ['bridge x']}
    assert swept == [(data['rundirs'], data['bridges'], data['root_links'])] and not path.exists()


def test_fresh_prefixes_are_valid_lab_prefixes_and_differ(runs):
    prefixes = {mnrun.fresh_prefix() for _ in range(20)}
    assert len(prefixes) > 1 and all(p.startswith('mn') and len(p) == 5 for p in prefixes)
    from mininet_topos.plan import check_prefix
    for p in prefixes:
        check_prefix(p)
