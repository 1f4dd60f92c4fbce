"""make demo: controller + lab from the fabric, then a reachability matrix (expected vs actual).

Everything started here is stopped here, by PID; the lab removes only what it built."""
from __future__ import annotations

import argparse
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.policy.fabric import load_fabric      # noqa: E402
from mininet_topos import Lab                         # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--fabric', default=str(ROOT / 'examples' / 'fabric.yaml'))
    args = ap.parse_args()
    fabric = load_fabric(args.fabric)
    port = fabric.controller.ofp_port
    with socket.socket() as s:
        if s.connect_ex(('127.0.0.1', port)) == 0:
            port = free_port()
            print('demo: port %d is busy, using %d' % (fabric.controller.ofp_port, port))
    work = Path(tempfile.mkdtemp(prefix='opendvs-demo-'))
    log = open(work / 'controller.log', 'w')
    ctl = subprocess.Popen([str(Path(sys.executable).parent / 'opendvs-controller'), '--fabric', args.fabric,
                            '--ofp', '0.0.0.0:%d' % port, '--state-dir', str(work / 'state')],
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    lab = Lab(fabric, ofp_port=port)
    try:
        t0 = time.monotonic()
        print('demo: building the lab (%d switches, %d hypervisors)...' % (
            len(fabric.switches), len(fabric.hypervisors)))
        lab.up(timeout=60)
        print('demo: every switch connected after %.1fs' % (time.monotonic() - t0))
        vms = sorted(lab.vms)
        outsider = '10.0.99.99'
        deadline = time.monotonic() + 30
        while True:                                   # wait for convergence, not a fixed time
            actual = {(a, b): lab.ping(a, b, timeout=1) for a, b in itertools.permutations(vms, 2)}
            if all(actual.values()) or time.monotonic() > deadline:
                break
        actual.update({(a, outsider): lab.ping(a, outsider, timeout=0.3) for a in vms})
        print('demo: converged after %.1fs\n' % (time.monotonic() - t0))
        print_matrix(vms + [outsider], vms, actual)
        ok = all(actual[(a, b)] == (b != outsider) for (a, b) in actual)
        print('\ndemo: %s (controller log: %s)' % ('all as expected' if ok else 'UNEXPECTED results',
                                                  work / 'controller.log'))
        return 0 if ok else 1
    finally:
        lab.down()
        ctl.send_signal(signal.SIGTERM)
        ctl.wait(10)


def print_matrix(cols, rows, actual) -> None:
    """One line per source; '+' reached as expected, '.' refused as expected, '!' wrong."""
    width = max(len(c) for c in cols)
    print('%-*s  %s' % (width, 'from \\ to', ' '.join('%-*s' % (width, c) for c in cols)))
    for a in rows:
        cells = []
        for b in cols:
            if a == b:
                cells.append('%-*s' % (width, '-'))
                continue
            expected = b in rows               # every VM is in the native VLAN: all reach
            got = actual[(a, b)]
            mark = ('+' if got else '.') if got == expected else '!'
            cells.append('%-*s' % (width, mark))
        print('%-*s  %s' % (width, a, ' '.join(cells)))
    print("\n'+' reached (expected), '.' refused (expected), '!' differs from expectation")


if __name__ == '__main__':
    sys.exit(main())
