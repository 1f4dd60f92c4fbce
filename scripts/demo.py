"""make demo: controller + tenant policies + lab from examples/, then a reachability matrix
(expected vs actual, per tenant).  Everything started here is stopped here, by PID; the lab
removes only what it built."""
from __future__ import annotations

import argparse
import glob
import itertools
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from controller.policy.fabric import load_fabric      # noqa: E402
from mininet_topos import Lab                         # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def port_or_free(port: int) -> int:
    with socket.socket() as s:
        return free_port() if s.connect_ex(('127.0.0.1', port)) == 0 else port


def wait_for(path: Path, what: str, proc, timeout=15) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() or 'API on' not in path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit('demo: the controller did not start (%s):\n%s' % (what, path.read_text()))
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--fabric', default=str(ROOT / 'examples' / 'fabric.yaml'))
    ap.add_argument('--tenants', nargs='*', default=sorted(glob.glob(str(ROOT / 'examples' / 'tenants' / '*.yaml'))))
    args = ap.parse_args()
    fabric = load_fabric(args.fabric)
    ofp = port_or_free(fabric.controller.ofp_port)
    api = port_or_free(int(fabric.controller.api.rsplit(':', 1)[1]))
    work = Path(tempfile.mkdtemp(prefix='opendvs-demo-'))
    log_path = work / 'controller.log'
    ctl = subprocess.Popen([str(BIN / 'opendvs-controller'), '--fabric', args.fabric, '--ofp', '0.0.0.0:%d' % ofp,
                            '--api', '127.0.0.1:%d' % api, '--state-dir', str(work / 'state')],
                           stdout=open(log_path, 'w'), stderr=subprocess.STDOUT, start_new_session=True)
    lab = None
    try:
        wait_for(log_path, 'API', ctl)
        print('demo: controller up (OpenFlow :%d, API :%d)' % (ofp, api))
        dvsctl = [str(BIN / 'dvsctl'), 'apply', '--api', 'http://127.0.0.1:%d' % api,
                  '--state-dir', str(work / 'state'), *args.tenants]
        print('demo: $ dvsctl apply %s' % ' '.join(Path(t).name for t in args.tenants))
        r = subprocess.run(dvsctl, capture_output=True, text=True)
        print(r.stdout + r.stderr, end='')
        if r.returncode:
            return 1
        lab = Lab(fabric, ofp_port=ofp, tenants=args.tenants)
        t0 = time.monotonic()
        print('demo: building the lab (%d switches, %d hypervisors, %d VMs)...' % (
            len(fabric.switches), len(fabric.hypervisors), len(lab.plan.vms)))
        lab.up(timeout=60)
        print('demo: every switch connected after %.1fs' % (time.monotonic() - t0))
        vms = sorted(lab.vms)
        expected = {(a, b): same_network(lab, a, b) for a, b in itertools.permutations(vms, 2)}
        # wait for convergence (every pair that should talk does), not for a fixed time
        pending, deadline = {k for k, v in expected.items() if v}, time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            pending = {k for k in pending if not reaches(lab, *k, timeout=1)}
        print('demo: converged after %.1fs\n' % (time.monotonic() - t0))
        actual = {k: reaches(lab, *k, timeout=1 if expected[k] else 0.3) for k in expected}
        print_matrix(lab, vms, expected, actual)
        ok = actual == expected
        print('\ndemo: %s (controller log: %s)' % ('all as expected' if ok else 'UNEXPECTED results', log_path))
        return 0 if ok else 1
    finally:
        if lab is not None:
            lab.down()
        ctl.send_signal(signal.SIGTERM)
        ctl.wait(10)


def reaches(lab, a, b, timeout) -> bool:
    """a reaches the VM b itself: tenants reuse addresses, so a reply from b's IP counts only
    if it came from b's MAC (and pinging one's own address is not reaching anybody)."""
    ip = lab.vms[b].ip
    if ip == lab.vms[a].ip or not lab.ping(a, b, timeout=timeout):
        return False
    out = lab.exec(a, 'ip neigh show %s' % ip)[1].split()
    return 'lladdr' in out and out[out.index('lladdr') + 1] == lab.vms[b].mac


def same_network(lab, a, b) -> bool:
    """Expected reachability: same tenant and same port-group (no gateway yet); VMs without a
    tenant share the fabric's native VLAN."""
    va, vb = lab.vms[a], lab.vms[b]
    return (va.tenant, va.nics[0].network) == (vb.tenant, vb.nics[0].network)


def print_matrix(lab, vms, expected, actual) -> None:
    tenants = {v: lab.vms[v].tenant for v in vms}
    print('\n'.join(matrix_lines(tenants, vms, expected, actual)))
    print("\n'+' reached (expected), '.' refused (expected), '!' differs from expectation")


def matrix_lines(tenants, vms, expected, actual) -> list[str]:
    """One line per source; '+' reached as expected, '.' refused as expected, '!' wrong.
    Columns are headed by the VMs' full names (unique in a lab), as wide as the longest."""
    label = {v: '%s/%s' % (tenants[v] or '-', v) for v in vms}
    width = max(len(x) for x in label.values())
    col = max(len(v) for v in vms)
    lines = [('%-*s  %s' % (width, 'from \\ to', ' '.join(v.ljust(col) for v in vms))).rstrip()]
    for a in vms:
        cells = []
        for b in vms:
            if a == b:
                cells.append('-')
            else:
                got = actual[(a, b)]
                cells.append(('+' if got else '.') if got == expected[(a, b)] else '!')
        lines.append(('%-*s  %s' % (width, label[a], ' '.join(c.ljust(col) for c in cells))).rstrip())
    return lines


if __name__ == '__main__':
    sys.exit(main())
