"""make demo: controller + tenant policies + lab from examples/, then a reachability matrix
(expected vs actual, per tenant: bridged inside a network, routed through the anycast gateway
between networks of one tenant that have a gateway), then one routed pair shown hop by hop.
Everything started here is stopped here, by PID; the lab removes only what it built."""
from __future__ import annotations

import argparse
import glob
import itertools
import re
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
    plan = Lab(fabric, ofp_port=ofp, tenants=args.tenants)     # built below; its run dirs are known now
    ctl = subprocess.Popen([str(BIN / 'opendvs-controller'), '--fabric', args.fabric, '--ofp', '0.0.0.0:%d' % ofp,
                            '--api', '127.0.0.1:%d' % api, '--state-dir', str(work / 'state'),
                            # dvsctl trace: each hypervisor's own ovs-vswitchd, by its control socket
                            '--vswitchd-ctl', plan.plan.workdir + '/{hypervisor}/ovs-vswitchd.ctl'],
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
        lab = plan
        t0 = time.monotonic()
        print('demo: building the lab (%d switches, %d hypervisors, %d VMs)...' % (
            len(fabric.switches), len(fabric.hypervisors), len(lab.plan.vms)))
        lab.up(timeout=60)
        print('demo: every switch connected after %.1fs' % (time.monotonic() - t0))
        vms = sorted(lab.vms)
        gateways = routed_networks(lab.tenants)
        expected = {(a, b): expect_reach(lab.vms[a], lab.vms[b], gateways) for a, b in itertools.permutations(vms, 2)}
        routed = {(a, b) for (a, b), v in expected.items() if v and net_of(lab.vms[a]) != net_of(lab.vms[b])}
        # wait for convergence (every pair that should talk does), not for a fixed time
        pending, deadline = {k for k, v in expected.items() if v}, time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            pending = {k for k in pending if not reaches(lab, *k, timeout=1)}
        print('demo: converged after %.1fs\n' % (time.monotonic() - t0))
        actual = {k: reaches(lab, *k, timeout=1 if expected[k] else 0.3) for k in expected}
        print_matrix(lab, vms, expected, actual, routed)
        ok = actual == expected
        pair = routed_pair(lab.vms, routed, {h: hv.leaf for h, hv in fabric.hypervisors.items()})
        if pair:
            ok = show_routed_pair(lab, *pair) and ok
        acme = next((t for t in args.tenants if Path(t).name == 'acme.yaml'), None)
        if acme is not None and {'web1', 'db1'} <= set(lab.vms):
            ok = show_microseg(lab, dvsctl[:-len(args.tenants)], Path(acme), work) and ok
        print('\ndemo: %s (controller log: %s)' % ('all as expected' if ok else 'UNEXPECTED results', log_path))
        return 0 if ok else 1
    finally:
        if lab is not None:
            lab.down()
        ctl.send_signal(signal.SIGTERM)
        ctl.wait(10)


def reaches(lab, a, b, timeout) -> bool:
    """a reaches the VM b itself: tenants reuse addresses, so a reply from b's IP counts only
    if it came from b's MAC (and pinging one's own address is not reaching anybody).  Across
    subnets the neighbour is the gateway, so there b's own count of echo requests must grow."""
    va, vb = lab.vms[a], lab.vms[b]
    if vb.ip == va.ip:
        return False
    if net_of(va) != net_of(vb):
        before = echoes_in(lab, b)
        return lab.ping(a, b, timeout=timeout) and echoes_in(lab, b) > before
    if not lab.ping(a, b, timeout=timeout):
        return False
    out = lab.exec(a, 'ip neigh show %s' % vb.ip)[1].split()
    return 'lladdr' in out and out[out.index('lladdr') + 1] == vb.mac


def echoes_in(lab, vm) -> int:
    """ICMP echo requests vm has received (its own network namespace's counter)."""
    lines = [l.split() for l in lab.exec(vm, 'cat /proc/net/snmp')[1].splitlines() if l.startswith('Icmp:')]
    return int(lines[1][lines[0].index('InEchos')])


def net_of(vm) -> tuple:
    """(tenant, network) of a VM's first nic; VMs without a tenant share the native VLAN."""
    return vm.tenant, vm.nics[0].network if vm.nics else None


def routed_networks(tenants) -> set:
    """(tenant, network) of every network with a gateway: those route to each other inside
    their tenant (the anycast gateway); a network without one is an isolated segment."""
    return {(t.name, n.name) for t in tenants for n in t.networks.values() if n.gateway is not None}


def expect_reach(va, vb, routed) -> bool:
    """Expected reachability: the same network (bridged), or two networks of one tenant that
    both have a gateway (routed).  Never another tenant."""
    a, b = net_of(va), net_of(vb)
    return a == b or (va.tenant is not None and va.tenant == vb.tenant and a in routed and b in routed)


def routed_pair(vms, routed, leaf_of):
    """The routed pair to show: across racks if there is one, then by name."""
    pairs = sorted(routed, key=lambda p: (leaf_of[vms[p[0]].hypervisor] == leaf_of[vms[p[1]].hypervisor], p))
    return pairs[0] if pairs else None


def show_routed_pair(lab, a, b) -> bool:
    """Ping and traceroute from a to b: TTL 63 (one hop) and the gateway as hop 1."""
    va, vb = lab.vms[a], lab.vms[b]
    print('\ndemo: a routed pair, %s/%s (%s %s on %s) -> %s/%s (%s %s on %s), through the anycast gateway %s:'
          % (va.tenant, a, va.nics[0].network, va.ip, va.hypervisor,
             vb.tenant, b, vb.nics[0].network, vb.ip, vb.hypervisor, va.gateway))
    out = lab.exec(a, ['ping', '-n', '-c', '1', '-W', '1', vb.ip])[1]
    reply = re.search(r'^\d+ bytes from .*$', out, re.M)
    print('  $ ping -c 1 %s\n    %s' % (vb.ip, reply.group(0) if reply else 'no reply'))
    trace = lab.exec(a, ['traceroute', '-n', '-q', '1', '-w', '1', '-m', '4', vb.ip])[1].rstrip()
    print('  $ traceroute -n %s\n%s' % (vb.ip, '\n'.join('    ' + l for l in trace.splitlines())))
    hops = [l.split()[1] for l in trace.splitlines()[1:] if len(l.split()) > 1 and l.split()[0].isdigit()]
    ok = bool(reply) and 'ttl=63' in reply.group(0) and hops == [va.gateway, vb.ip]
    print('  %s' % ('routed: ttl 63 (one hop, on %s), hop 1 is the gateway %s' % (va.hypervisor, va.gateway)
                    if ok else 'UNEXPECTED: want ttl=63 and hops [%s, %s]' % (va.gateway, vb.ip)))
    return ok


def connects(lab, src, dst, port, tries=3) -> bool:
    """A real TCP handshake src -> dst:port, a listener running on dst for the attempt."""
    server = lab.popen(dst, ['nc', '-l', '-k', str(port)])
    try:
        deadline = time.monotonic() + 5
        while (':%d ' % port) not in lab.exec(dst, 'ss -ltn')[1] and time.monotonic() < deadline:
            time.sleep(0.05)
        return any(lab.exec(src, 'nc -z -w 1 %s %d' % (lab.vms[dst].ip, port))[0] == 0 for _ in range(tries))
    finally:
        server.kill()
        server.wait()


def show_microseg(lab, apply_cmd, acme: Path, work: Path) -> bool:
    """acme's own rules (examples/tenants/acme.yaml) with `default: deny`: web -> db tcp/5432
    connects, db -> web tcp/22 is blocked (both across the racks, routed)."""
    deny = work / 'acme.yaml'
    deny.write_text(acme.read_text().replace('default: allow', 'default: deny'))
    print('\ndemo: microsegmentation: acme with `default: deny` and its rules (web-to-db: tcp/5432)')
    print('  $ dvsctl apply acme.yaml   (default: deny)')
    r = subprocess.run(apply_cmd + [str(deny)], capture_output=True, text=True)
    if r.returncode:
        print(r.stdout + r.stderr)
        return False
    allowed, blocked = connects(lab, 'web1', 'db1', 5432), connects(lab, 'db1', 'web1', 22, tries=1)
    print('  web1 -> db1 tcp/5432: %s' % ('connected (rule web-to-db)' if allowed else 'UNEXPECTED: refused'))
    print('  db1 -> web1 tcp/22:   %s' % ('blocked (default deny)' if not blocked else 'UNEXPECTED: connected'))
    traced = [show_trace(apply_cmd, 'web1', 'db1', 'tcp/5432', 'delivered'),
              show_trace(apply_cmd, 'db1', 'web1', 'tcp/22', 'dropped')]
    return allowed and not blocked and all(traced)


def show_trace(apply_cmd, src, dst, service, expect) -> bool:
    """`dvsctl trace acme SRC DST SERVICE` through the real switches: its verdict line."""
    argv = [apply_cmd[0], 'trace'] + apply_cmd[2:] + ['acme', src, dst, service]
    print('  $ dvsctl trace acme %s %s %s' % (src, dst, service))
    r = subprocess.run(argv, capture_output=True, text=True)
    verdict = (r.stdout.strip().splitlines() or [r.stderr.strip()])[-1]
    print('    %s' % verdict)
    return r.returncode == 0 and verdict.startswith('verdict: ' + expect)


def print_matrix(lab, vms, expected, actual, routed=frozenset()) -> None:
    tenants = {v: lab.vms[v].tenant for v in vms}
    print('\n'.join(matrix_lines(tenants, vms, expected, actual, routed)))
    print("\n'+' reached (expected), 'r' reached through the gateway (routed, expected), "
          "'.' refused (expected), '!' differs from expectation")


def matrix_lines(tenants, vms, expected, actual, routed=frozenset()) -> list[str]:
    """One line per source; '+' reached as expected ('r' when routed), '.' refused as
    expected, '!' wrong.  Columns are headed by the VMs' full names (unique in a lab), as
    wide as the longest."""
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
                reached = 'r' if (a, b) in routed else '+'
                cells.append((reached if got else '.') if got == expected[(a, b)] else '!')
        lines.append(('%-*s  %s' % (width, label[a], ' '.join(c.ljust(col) for c in cells))).rstrip())
    return lines


if __name__ == '__main__':
    sys.exit(main())
