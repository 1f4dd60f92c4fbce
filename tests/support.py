"""Helpers shared by the ovs and integration suites: a controller process, waiting for
conditions (never fixed sleeps), and reading flow tables."""
from __future__ import annotations

import atexit
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def is_root() -> bool:
    return os.geteuid() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_until(fn, timeout: float = 30.0, interval: float = 0.1, what: str = 'condition'):
    """Poll fn() until it returns something truthy; return it, or fail after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError('timed out after %.0fs waiting for %s (last: %r)' % (timeout, what, last))


def sh(cmd: str, check: bool = True) -> str:
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and r.returncode:
        raise RuntimeError('%s failed (%d): %s' % (cmd, r.returncode, r.stderr.strip()))
    return r.stdout


_RUNNING: set = set()


@atexit.register
def _stop_leftovers() -> None:
    """A test that failed before its own clean-up must not leave a controller running."""
    for proc in list(_RUNNING):
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class ControllerProcess:
    """opendvs-controller run as a real process, logging to a file in workdir."""

    def __init__(self, fabric: str, workdir: Path, ofp: str | None = None, env: dict | None = None,
                 args=()):
        self.fabric, self.workdir, self.ofp = str(fabric), Path(workdir), ofp
        self.args = list(args)                   # more controller options
        self.api_port = free_port()              # never the default 8080: runs may overlap
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / ('controller-%d.log' % self.starts)

    def argv(self) -> list[str]:
        """The command line (tests/ryu runs the same controller under ryu-manager)."""
        args = [str(BIN / 'opendvs-controller'), '--fabric', self.fabric,
                '--state-dir', str(self.state_dir), '--api', '127.0.0.1:%d' % self.api_port]
        if self.ofp:
            args += ['--ofp', self.ofp]
        args += self.args
        return args

    def start(self) -> 'ControllerProcess':
        self.starts += 1
        self.log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(self.argv(), stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        _RUNNING.add(self.proc)
        wait_until(lambda: 'API on http' in self.text() or self.proc.poll() is not None,
                   15, what='controller start (API listening)')
        assert self.proc.poll() is None, self.text()
        return self

    @property
    def state_dir(self) -> Path:
        return self.workdir / 'state'

    def dvsctl(self, *args, check: bool = False) -> subprocess.CompletedProcess:
        """Run the real dvsctl against this controller."""
        return subprocess.run([str(BIN / 'dvsctl'), args[0], '--api', 'http://127.0.0.1:%d' % self.api_port,
                               '--state-dir', str(self.state_dir), *args[1:]],
                              capture_output=True, text=True, check=check, timeout=120)

    def text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ''

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError('controller ignored signal %s' % sig)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def wait_connected(self, switches: int, timeout: float = 30) -> None:
        """Wait until this run of the controller has seen `switches` switches connect."""
        wait_until(lambda: self.text().count('connected with') >= switches, timeout,
                   what='%d switches connected to the controller' % switches)


def scrape(ctl: ControllerProcess) -> dict:
    """{(name, frozenset(labels)): value} from an unauthenticated GET /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % ctl.api_port, timeout=10) as r:
        assert r.status == 200 and r.headers['Content-Type'].startswith('text/plain; version=0.0.4')
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def total(samples: dict, name: str, **labels) -> float:
    """Sum of a metric's samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def counted(count: int, interval: float) -> list[str]:
    """ping options for a loss count: COUNT probes every INTERVAL s, and a deadline (-w)
    rather than -W: with -W, ping waits only twice the longest RTT after its last probe,
    so a reply that is a few ms late (an upcall while flows change) counted as lost."""
    return ['-i', str(interval), '-c', str(count), '-w', str(int(count * interval * 1.5) + 10)]


def ping_counts(out: str) -> tuple[int, int]:
    """(sent, received) from a finished ping's summary line."""
    m = re.search(r'(\d+) packets transmitted, (\d+) received', out)
    return int(m.group(1)), int(m.group(2))


def answered(out: str) -> set[int]:
    """The icmp_seq numbers a ping got replies for."""
    return {int(n) for n in re.findall(r'icmp_seq=(\d+) ttl', out)}


FLOW_RE = re.compile(r'(\w+)=([^ ,]+)')


def dump_flows(target: str, *filters: str) -> list[dict]:
    """ovs-ofctl dump-flows as dicts: cookie, table, priority, n_packets, duration, match, actions."""
    out = sh('ovs-ofctl -O OpenFlow14 dump-flows %s %s' % (target, ' '.join(filters)))
    flows = []
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith('cookie='):
            continue
        head, _, actions = line.partition(' actions=')
        fields = dict(FLOW_RE.findall(head))
        # the match is the last space-separated token of the head
        match = head.split(' ')[-1]
        flows.append({
            'cookie': int(fields['cookie'], 16),
            'table': int(fields.get('table', 0)),
            'n_packets': int(fields.get('n_packets', 0)),
            'duration': float(fields.get('duration', '0s').rstrip('s')),
            'priority': int(re.search(r'priority=(\d+)', match).group(1)) if 'priority=' in match else 32768,
            'match': match,
            'actions': actions,
        })
    return flows


def flow_key(f: dict) -> tuple:
    return (f['table'], f['match'])


def fabric_without_vlan(hv: str = 'hv4', vlan: int = 10) -> str:
    """examples/fabric.yaml with `vlan` taken off `hv`'s trunk: a hypervisor a VM of that VLAN
    may never move to (live migration tests)."""
    text = (ROOT / 'examples' / 'fabric.yaml').read_text()
    line = re.search(r'^  %s: \{.*trunk_vlans: \[([\d, ]+)\].*$' % hv, text, re.M)
    assert line, 'no %s with trunk_vlans in examples/fabric.yaml' % hv
    kept = ', '.join(v for v in line.group(1).split(', ') if v != str(vlan))
    return text.replace(line.group(0), line.group(0).replace('[%s]' % line.group(1), '[%s]' % kept))
