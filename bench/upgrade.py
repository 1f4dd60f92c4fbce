"""Experiment: upgrade a running fabric's controller (old commit -> this checkout) under
traffic, and count the packets lost.  Prints JSON; never asserts.

Per round, on the example fabric with the example tenants (examples/tenants/*.yaml):

  1. start the OLD controller (another checkout's .venv, e.g. a worktree at 473d0be) with
     --fabric, --state-dir S, --ofp 0.0.0.0:P, --api 127.0.0.1:A;
  2. build the lab from THIS checkout's mininet_topos (same bridges, ports and OVSDB layout
     as the old one), push the tenants with the old dvsctl, wait until both pairs answer;
  3. start 100 pps pings (ping -i 0.01) on a VLAN pair across leaves (acme web1 on hv1 ->
     web2 on hv3, VLAN 10) and an overlay pair across racks (initech ov1 on hv1 -> ov2 on
     hv3, VNI 5020); wait until each has 50 replies;
  4. kill -9 the old controller, start the NEW one (this checkout's .venv) with the same
     state dir, fabric and ports; wait for 'programming from the whole picture' in its log,
     then until its log has had no 'switch XXXX: +A -D flows' line for SETTLE seconds;
  5. stop the pings (SIGINT, by PID) and count lost packets: icmp_seq numbers between the
     first and the last reply that never got one (so the one in flight at SIGINT is not
     counted), with the time of each gap relative to the kill.

Also reported: each switch's '+A -D flows' lines from the new controller (the flows it
swapped; one line per bundle), and the time from the kill to the last of them.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mininet_topos import Lab                                  # noqa: E402
from tests.support import free_port, wait_until                # noqa: E402

FABRIC = ROOT / 'examples' / 'fabric.yaml'
TENANTS = sorted(str(p) for p in (ROOT / 'examples' / 'tenants').glob('*.yaml'))
PAIRS = {'vlan_across_leaves': ('web1', 'web2'), 'overlay_across_racks': ('ov1', 'ov2')}
SETTLE = 3.0
FLOWS = re.compile(r'switch ([0-9a-f]{16}): \+(\d+) -(\d+) flows')


class Ctl:
    def __init__(self, venv: Path, work: Path, name: str, ofp: int, api: int):
        self.venv, self.work, self.name = venv, work, name
        self.ofp, self.api = ofp, api
        self.log_path = work / ('%s.log' % name)

    def start(self) -> 'Ctl':
        self.log = open(self.log_path, 'w')
        self.t0 = time.time()
        self.proc = subprocess.Popen([str(self.venv / 'bin' / 'opendvs-controller'), '--fabric', str(FABRIC),
                                      '--state-dir', str(self.work / 'state'), '--ofp', '0.0.0.0:%d' % self.ofp,
                                      '--api', '127.0.0.1:%d' % self.api],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: 'API on http' in self.text() or self.proc.poll() is not None, 20,
                   what='%s controller start' % self.name)
        assert self.proc.poll() is None, self.text()
        return self

    def text(self) -> str:
        return self.log_path.read_text()

    def dvsctl(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.venv / 'bin' / 'dvsctl'), args[0], '--api', 'http://127.0.0.1:%d' % self.api,
                               '--state-dir', str(self.work / 'state'), *args[1:]],
                              capture_output=True, text=True, timeout=120)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def flow_lines(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(1), int(m.group(2)), int(m.group(3))) for m in FLOWS.finditer(text)]


def converged(ctl: Ctl) -> float:
    """Wait for the whole-picture line, then until no '+A -D flows' line for SETTLE s; the
    time (since the start) when the last such line was seen to appear."""
    wait_until(lambda: 'programming from the whole picture' in ctl.text(), 60, 0.05, 'whole picture')
    count, last = len(flow_lines(ctl.text())), time.time()
    while time.time() - last < SETTLE:
        time.sleep(0.1)
        n = len(flow_lines(ctl.text()))
        if n != count:
            count, last = n, time.time()
    return last


def losses(out: str, t_kill: float) -> dict:
    """From `ping -D -O` output: sent (highest seq answered), lost seqs below it, and when."""
    got = {int(m.group(2)): float(m.group(1))
           for m in re.finditer(r'^\[([\d.]+)\] \d+ bytes from .*icmp_seq=(\d+)', out, re.M)}
    if not got:
        return {'replies': 0, 'lost': None}
    first, last = min(got), max(got)
    lost = [s for s in range(first, last + 1) if s not in got]
    gaps = []                      # time of the reply before each lost run, relative to the kill
    for s in lost:
        if s - 1 not in lost and s - 1 in got:
            gaps.append(round(got[s - 1] - t_kill, 3))
    dup = len(re.findall(r'\(DUP!\)', out))
    return {'replies': len(got), 'seq_range': [first, last], 'lost': len(lost), 'lost_seqs': lost[:50],
            'loss_starts_after_kill_s': gaps[:10], 'duplicates': dup}


def one_round(work: Path, old_venv: Path, new_venv: Path) -> dict:
    ofp, api = free_port(), free_port()
    old = Ctl(old_venv, work, 'old', ofp, api).start()
    new = None
    lab = Lab(str(FABRIC), ofp_port=ofp, tenants=TENANTS)
    pings = {}
    try:
        lab.up(timeout=60)
        r = old.dvsctl('apply', *TENANTS)
        if r.returncode:
            raise RuntimeError('old dvsctl apply: %s%s' % (r.stdout, r.stderr))
        for a, b in PAIRS.values():
            wait_until(lambda: lab.ping(a, b), 60, what='%s reaches %s' % (a, b))
        for pair, (a, b) in PAIRS.items():
            f = open(work / ('%s.ping' % pair), 'w')
            p = lab.popen(a, ['ping', '-n', '-D', '-O', '-i', '0.01', lab.vms[b].ip], stdout=f,
                          stderr=subprocess.STDOUT)
            pings[pair] = (p, f)
        wait_until(lambda: all(len(re.findall('bytes from', (work / ('%s.ping' % pr)).read_text())) >= 50
                               for pr in PAIRS), 30, 0.05, 'pings under way')
        t_kill = time.time()
        old.stop(signal.SIGKILL)
        new = Ctl(new_venv, work, 'new', ofp, api).start()
        last = converged(new)
        for p, f in pings.values():
            p.send_signal(signal.SIGINT)
            p.wait(10)
            f.close()
        result = {pair: losses((work / ('%s.ping' % pair)).read_text(), t_kill) for pair in PAIRS}
        text = new.text()
        names = {'%016x' % s.dpid: n for n, s in {**lab.fabric.switches, **lab.fabric.hypervisors}.items()}
        swaps = {}
        for dpid, add, delete in flow_lines(text):
            swaps.setdefault(names.get(dpid, dpid), []).append('+%d -%d' % (add, delete))
        result.update(kill_to_new_spawned_s=round(new.t0 - t_kill, 3),
                      kill_to_last_flows_line_s=round(last - t_kill, 3),
                      swaps=swaps, bundles_per_switch={k: len(v) for k, v in swaps.items()},
                      errors=[line for line in text.splitlines() if 'ERROR' in line or 'Traceback' in line][:20])
        return result
    finally:
        for p, f in pings.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                p.wait(10)
            f.close()
        try:
            lab.down()
        finally:
            old.stop()
            if new is not None:
                new.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--old', type=Path, default=Path('/work/wt/old'), help='the old checkout (with its .venv)')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--keep', action='store_true', help='keep the work directory (logs, ping output)')
    args = ap.parse_args()
    old_commit = subprocess.run(['git', '-C', str(args.old), 'rev-parse', '--short', 'HEAD'],
                                capture_output=True, text=True).stdout.strip()
    new_commit = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', 'HEAD'],
                                capture_output=True, text=True).stdout.strip()
    d = tempfile.mkdtemp(prefix='opendvs-bench-upgrade-')
    rounds = []
    for i in range(args.rounds):
        w = Path(d) / str(i)
        w.mkdir()
        rounds.append(one_round(w, args.old / '.venv', ROOT / '.venv'))
        print(json.dumps(rounds[-1]), file=sys.stderr)
    out = {'experiment': 'upgrade', 'old': old_commit, 'new': new_commit,
           'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
           'loadavg': Path('/proc/loadavg').read_text().split()[:3], 'rounds': rounds}
    print(json.dumps(out, indent=1))
    res = ROOT / 'bench' / 'results'
    res.mkdir(exist_ok=True)
    (res / 'upgrade.json').write_text(json.dumps(out, indent=1))
    if args.keep:
        print('work directory kept: %s' % d, file=sys.stderr)
    else:
        subprocess.run(['rm', '-rf', d])


if __name__ == '__main__':
    main()
