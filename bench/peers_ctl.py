"""The controllers bench/peers.py compares, how each is installed and launched.

Ported from the reference harness (shared/bench-peers/peers.py); everything lives in the repo:

    bench/.venv-ryu      ryu 4.34 + eventlet 0.33.3, made by scripts/setup_ryu.sh (RYU_VENV=...),
                         the same recipe as the project's own ryu runtime (setuptools<68 through
                         PIP_CONSTRAINT, the ALREADY_HANDLED shim loaded by a .pth)
    bench/.venv-faucet   faucet 1.10.12 (pulls os-ken 3.1.0), from PyPI, Debian's python3
    the project          this checkout's .venv/bin/opendvs-controller (scripts/setup.sh)

Each launcher writes its controller's configuration into the run's folder, generated from the
Mininet topology of the run (Ctx: switches with dpids and ports, switch-to-switch links):
Faucet's faucet.yaml (one VLAN on every port), opendvs's fabric.yaml (every switch, every
link, no hypervisors); Ryu's simple_switch_13 needs none.

`setup` (peers.py setup, `make bench-peers-setup`) is idempotent: a venv that already imports
the pinned versions is skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, 'results')
RUNS = os.path.join(RESULTS, 'peers-runs')              # raw output of every run (gitignored)
RYU_VENV = os.path.join(BENCH, '.venv-ryu')
FAUCET_VENV = os.path.join(BENCH, '.venv-faucet')
OPENDVS_BIN = os.path.join(ROOT, '.venv', 'bin', 'opendvs-controller')
BASE_PYTHON = '/usr/bin/python3'          # Debian's: what the project's venvs are made from
BASE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
FAUCET_PINS = ['faucet==1.10.12']


def log(msg):
    sys.stderr.write('[%s] %s\n' % (time.strftime('%H:%M:%S'), msg))
    sys.stderr.flush()


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def base_env(**extra):
    env = {'PATH': BASE_PATH, 'HOME': '/root', 'LANG': 'C.UTF-8'}
    env.update(extra)
    return env


@dataclass
class SwitchInfo:
    name: str
    dpid: int
    ports: List[int]


@dataclass
class Ctx:
    """What a controller launcher gets: where to write files, and the topology."""
    workdir: str
    switches: List[SwitchInfo]
    log_path: str = ''
    # switch-switch links: (name, name) or (name, name, port, port)
    links: List[Tuple] = field(default_factory=list)
    extra: Dict = field(default_factory=dict)   # launcher-private state (e.g. metrics port)


@dataclass
class Controller:
    name: str
    label: str
    launch: Optional[Callable[[int, Ctx], Tuple[List[str], Dict[str, str]]]]  # None: no controller
    fail_mode: str = 'secure'
    # cumulative number of packet-ins the controller has handled (None = unknown); called every
    # 0.25 s during the burst, so it must be cheap
    pktin_counter: Optional[Callable[[Ctx], Optional[int]]] = None
    pktin_source: str = ''
    check: Optional[Callable[[], Optional[str]]] = None     # None, or what to do first


def needs(*paths, what='make bench-peers-setup'):
    def check():
        missing = [p for p in paths if not os.path.exists(p)]
        return ('missing %s: run `%s` first' % (', '.join(missing), what)) if missing else None
    return check


def count_log_lines(ctx, needle=b'packet in '):
    """Incrementally count lines containing `needle` in the controller's stdout/stderr log."""
    st = ctx.extra.setdefault('_logcount', {'off': 0, 'n': 0, 'tail': b''})
    try:
        with open(ctx.log_path, 'rb') as f:
            f.seek(st['off'])
            data = f.read()
    except OSError:
        return None
    st['off'] += len(data)
    buf = st['tail'] + data
    cut = buf.rfind(b'\n') + 1
    st['n'] += buf[:cut].count(needle)
    st['tail'] = buf[cut:]
    return st['n']


def prometheus_sum(ctx, metric, filtered=True):
    """Sum one metric over all its label sets, from the controller's /metrics.  Faucet honours
    the `name[]` filter (a full scrape of Faucet is ~370 kB once it has learned 2,000 hosts);
    opendvs's exposition is small (per switch and table, never per host) and is read whole."""
    port = ctx.extra.get('prom_port')
    if not port:
        return None
    url = 'http://127.0.0.1:%d/metrics' % port
    if filtered:
        url += '?name[]=%s' % metric
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            text = r.read().decode()
    except Exception:
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(metric + '{') or line.startswith(metric + ' '):
            total += float(line.rsplit(None, 1)[1])
            seen = True
    return int(total) if seen else None


# -- B: Ryu 4.34's own simple_switch_13 -------------------------------------------------
def launch_ryu_ss13(port, ctx):
    # the ALREADY_HANDLED shim is loaded by the venv's .pth (scripts/ryu/opendvs_ryu_shim.py)
    argv = [RYU_VENV + '/bin/ryu-manager', '--ofp-listen-host', '127.0.0.1',
            '--ofp-tcp-listen-port', str(port), 'ryu.app.simple_switch_13']
    return argv, base_env()


# -- C: Faucet 1.10.12 (os-ken 3.1.0) ---------------------------------------------------
# Faucet's own ryu.conf is copied to /etc/faucet only when pip builds it from source as root;
# the same two settings are written per run and always passed.
FAUCET_OSKEN_CONF = '''\
[DEFAULT]
echo_request_interval=3
maximum_unreplied_echo_requests=5
'''


def faucet_yaml(ctx, vlan_extra=None, port_extra=None):
    """faucet.yaml for the topology: one VLAN (vid 100) native on every port of every switch."""
    lines = ['vlans:', '  bench:', '    vid: 100']
    lines += ['    %s: %s' % kv for kv in sorted((vlan_extra or {}).items())]
    lines += ['dps:']
    popts = ''.join(', %s: %s' % kv for kv in sorted((port_extra or {}).items()))
    for sw in ctx.switches:
        lines += ['  %s:' % sw.name, '    dp_id: %d' % sw.dpid, '    hardware: "Open vSwitch"',
                  '    interfaces:']
        lines += ['      %d: {native_vlan: bench%s}' % (p, popts) for p in sw.ports]
    return '\n'.join(lines) + '\n'


def launch_faucet(port, ctx, vlan_extra=None, port_extra=None):
    cfg = os.path.join(ctx.workdir, 'faucet.yaml')
    with open(cfg, 'w') as f:
        f.write(faucet_yaml(ctx, vlan_extra, port_extra))
    osken_conf = os.path.join(ctx.workdir, 'faucet-osken.conf')
    with open(osken_conf, 'w') as f:
        f.write(FAUCET_OSKEN_CONF)
    prom = free_port()
    ctx.extra['prom_port'] = prom
    env = base_env(
        PATH=FAUCET_VENV + '/bin:' + BASE_PATH,      # faucet execs `osken-manager` from PATH
        FAUCET_CONFIG=cfg,
        FAUCET_LOG=os.path.join(ctx.workdir, 'faucet.log'),
        FAUCET_EXCEPTION_LOG=os.path.join(ctx.workdir, 'faucet_exception.log'),
        FAUCET_PROMETHEUS_PORT=str(prom),
        FAUCET_PROMETHEUS_ADDR='127.0.0.1')
    argv = [FAUCET_VENV + '/bin/faucet', '--ryu-config-file=%s' % osken_conf,
            '--ryu-ofp-tcp-listen-port=%d' % port, '--ryu-ofp-listen-host=127.0.0.1']
    return argv, env


# -- D: opendvs, this checkout ----------------------------------------------------------
def fabric_yaml(port, ctx):
    """The topology as an opendvs fabric: every switch with its dpid, every switch-switch
    link (with its ports when the topology knows them: named cables carry traffic without
    waiting for discovery, as Faucet takes every port at once), no hypervisors (the Mininet
    hosts are plain hosts on the switches' edge ports)."""
    lines = ['controller:', '  openflow: "tcp:127.0.0.1:%d"' % port, 'switches:']
    lines += ['  %s: {dpid: 0x%x}' % (sw.name, sw.dpid) for sw in ctx.switches]
    if ctx.links:
        lines += ['links:'] + ['  - [%s]' % ', '.join(_ends(link)) for link in ctx.links]
    else:
        lines += ['links: []']
    lines += ['hypervisors: {}']
    return '\n'.join(lines) + '\n'


def _ends(link) -> list[str]:
    """(a, b) -> ['a', 'b']; (a, b, port a, port b) -> ['a:port', 'b:port']."""
    if len(link) == 4:
        return ['%s:%d' % (link[0], link[2]), '%s:%d' % (link[1], link[3])]
    return list(link)


def launch_opendvs(port, ctx):
    api = free_port()                # its REST API serves /metrics (opendvs_packet_ins_total)
    ctx.extra['prom_port'] = api
    fabric = os.path.join(ctx.workdir, 'fabric.yaml')
    with open(fabric, 'w') as f:
        f.write(fabric_yaml(port, ctx))
    state = os.path.join(ctx.workdir, 'state')
    os.makedirs(state, exist_ok=True)
    argv = [OPENDVS_BIN, '--fabric', fabric, '--ofp', '127.0.0.1:%d' % port,
            '--api', '127.0.0.1:%d' % api, '--state-dir', state]
    return argv, base_env()


CONTROLLERS: Dict[str, Controller] = {
    'standalone': Controller('standalone', 'OVS NORMAL', launch=None, fail_mode='standalone'),
    'ryu': Controller('ryu', 'Ryu 4.34 simple_switch_13', launch=launch_ryu_ss13,
                      pktin_counter=count_log_lines,
                      pktin_source='"packet in" INFO lines in its log',
                      check=needs(RYU_VENV + '/bin/ryu-manager')),
    'faucet': Controller('faucet', 'Faucet 1.10.12', launch=launch_faucet,
                         pktin_counter=lambda ctx: prometheus_sum(ctx, 'of_packet_ins_total'),
                         pktin_source='Prometheus of_packet_ins_total',
                         check=needs(FAUCET_VENV + '/bin/faucet', FAUCET_VENV + '/bin/osken-manager')),
    # variant, not in the default set: Faucet's learning caps (max_hosts 256 a VLAN, 255 a port) lifted
    'faucet-maxhosts': Controller('faucet-maxhosts', 'Faucet 1.10.12 max_hosts=4096',
                                  launch=partial(launch_faucet, vlan_extra={'max_hosts': 4096},
                                                 port_extra={'max_hosts': 4096}),
                                  pktin_counter=lambda ctx: prometheus_sum(ctx, 'of_packet_ins_total'),
                                  pktin_source='Prometheus of_packet_ins_total',
                                  check=needs(FAUCET_VENV + '/bin/faucet')),
    'opendvs': Controller('opendvs', 'opendvs', launch=launch_opendvs,
                          pktin_counter=lambda ctx: prometheus_sum(ctx, 'opendvs_packet_ins_total',
                                                                   filtered=False),
                          pktin_source='Prometheus opendvs_packet_ins_total',
                          check=needs(OPENDVS_BIN, what='make setup')),
}


def check_ready(names):
    """Exit with what to run first if a chosen controller is not ready (before measuring)."""
    problems = []
    for n in names:
        c = CONTROLLERS[n]
        msg = c.check() if c.check else None
        if msg and msg not in problems:
            problems.append(msg)
    if problems:
        sys.exit('\n'.join(problems))


# --------------------------------------------------------------------------- setup

FAUCET_PROBE = '''\
import faucet.faucet
import importlib.metadata as m
print('faucet==%s os-ken==%s' % (m.version('faucet'), m.version('os-ken')))
'''
RYU_PROBE = '''\
import ryu.cmd.manager, ryu.app.simple_switch_13
import importlib.metadata as m
print('ryu==%s eventlet==%s' % (m.version('ryu'), m.version('eventlet')))
'''


def venv_probe(venv, probe):
    """The probe's output if `venv` imports what the bench launches, else None."""
    py = os.path.join(venv, 'bin', 'python')
    if not os.path.exists(py):
        return None
    r = subprocess.run([py, '-W', 'ignore', '-c', probe], capture_output=True, text=True, timeout=120)
    return r.stdout.strip() if r.returncode == 0 else None


def versions():
    return {'ryu': venv_probe(RYU_VENV, RYU_PROBE), 'faucet': venv_probe(FAUCET_VENV, FAUCET_PROBE)}


def cmd_setup(a=None):
    # Ryu: the project's own recipe (scripts/setup_ryu.sh), into bench/.venv-ryu; quick when done
    subprocess.run(['bash', os.path.join(ROOT, 'scripts', 'setup_ryu.sh')], check=True,
                   env=dict(os.environ, RYU_VENV=RYU_VENV), cwd=ROOT, timeout=1800)
    got = venv_probe(RYU_VENV, RYU_PROBE)
    if not got or 'ryu==4.34' not in got.split():
        sys.exit('setup: %s does not import ryu 4.34 (%r)' % (RYU_VENV, got))
    log('.venv-ryu: %s' % got)
    # Faucet: its own venv from PyPI (no system site-packages: it pins its own os-ken, eventlet)
    got = venv_probe(FAUCET_VENV, FAUCET_PROBE)
    if not got or not all(p in got.split() for p in FAUCET_PINS):
        if not os.path.exists(os.path.join(FAUCET_VENV, 'bin', 'python')):
            subprocess.run([BASE_PYTHON, '-m', 'venv', FAUCET_VENV], check=True, timeout=300)
        subprocess.run([FAUCET_VENV + '/bin/pip', 'install', '-q', '--disable-pip-version-check']
                       + FAUCET_PINS, check=True, timeout=1800)
        got = venv_probe(FAUCET_VENV, FAUCET_PROBE)
        if not got or not all(p in got.split() for p in FAUCET_PINS):
            sys.exit('setup: %s does not import %s (%r)' % (FAUCET_VENV, FAUCET_PINS, got))
    log('.venv-faucet: %s' % got)
    return 0


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('cmd', choices=['setup', 'versions'])
    a = ap.parse_args()
    sys.exit(cmd_setup(a) if a.cmd == 'setup' else print(json.dumps(versions())))
