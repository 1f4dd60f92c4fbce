"""The systemd unit in packaging/ (issue 7, part 7): restarts always, keeps its state and API
token in a state dir of its own, reloads the fabric on `systemctl reload`, gives an apply in
flight time to finish on stop, and starts the controller with options it really has."""
from __future__ import annotations

import configparser
import pathlib
import shlex
import shutil
import subprocess

import sys

BIN = pathlib.Path(sys.executable).parent

UNIT = pathlib.Path(__file__).resolve().parents[2] / 'packaging' / 'systemd' / 'opendvs-controller.service'


def _unit():
    p = configparser.ConfigParser(interpolation=None, strict=True)
    p.optionxform = str
    p.read(UNIT)
    return p


def test_the_unit_restarts_always_and_keeps_its_state_private():
    s = _unit()['Service']
    assert s['Restart'] == 'always' and s['StateDirectory'] == 'opendvs' and s['StateDirectoryMode'] == '0700'
    assert s['UMask'] == '0077'                               # the API token is created 0600
    assert s['ExecReload'] == '/bin/kill -HUP $MAINPID'
    assert s['KillSignal'] == 'SIGTERM' and int(s['TimeoutStopSec']) > 60    # an apply may wait 60 s


def test_the_unit_starts_the_controller_with_options_it_has(tmp_path):
    argv = shlex.split(_unit()['Service']['ExecStart'])
    assert argv[0].endswith('/opendvs-controller')
    args = [a.replace('${STATE_DIRECTORY}', str(tmp_path)).replace('/etc/opendvs/', str(tmp_path) + '/')
            for a in argv[1:]]
    assert '--fabric' in args and '--state-dir' in args
    # the options parse: what fails is the (missing) fabric file, as a clear FILE:LINE:COL error
    r = subprocess.run([str(BIN / 'opendvs-controller'), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and '%s/fabric.yaml:1:1: cannot read' % tmp_path in r.stderr, r.stderr


def test_systemd_accepts_the_unit():
    analyze = shutil.which('systemd-analyze')
    if analyze is None:                                       # the checks above still ran
        return
    r = subprocess.run([analyze, 'verify', '--man=no', str(UNIT)], capture_output=True, text=True, timeout=60)
    problems = [l for l in r.stderr.splitlines() if 'is not executable' not in l and l.strip()]
    assert not problems, r.stderr
