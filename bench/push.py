"""Benchmark: push 100,000 flows to one bridge through the reconciler and OpenFlow path
(controller.pipeline.reconciler + controller.ofp.OFSwitch, one bundle) against
`ovs-ofctl -O OpenFlow14 --bundle add-flows` of the same flows (issue 11 part 4: <= 1.5x).
Prints JSON (and writes bench/results/push.json); never asserts on time.

The flows are a mix shaped like the apps' (known MACs, port security, routes, ACL 5-tuples
with conntrack, ARP responders, conjunctions); ovs-ofctl gets them as
controller/pipeline/ofctl_text.py writes them.  One scratch bridge (per-run prefix, removed at
the end) and one os-ken process (tests/ovs/osken_harness.py) that runs the production
OFSwitch and Reconciler and times Reconciler.converge itself.  Per run, on an empty bridge:

  ofctl_add_s      ovs-ofctl --bundle add-flows of all N flows (wall time of the command)
  ofctl_modify_s   ovs-ofctl --bundle add-flows of the 10 % whose actions changed
  ofctl_delete_s   ovs-ofctl --bundle --strict del-flows - of another 10 % (match lines)
  ofctl_replace_*  the same two changes as ovs-ofctl --bundle replace-flows of the whole new set
                   (ovs-ofctl reads the bridge, diffs and sends the difference)
  push_add_s       Reconciler.converge to the N flows (fresh Flow objects: nothing cached)
  push_modify_s    Reconciler.converge_delta of the 10 % changed (what the core sends to an
                   in-sync switch; the other 90 % are the same objects)
  push_delete_s    converge_delta of the other 10 % removed
  push_full_*      the same two changes as a whole-set Reconciler.converge (diff of all N)
  repush_s         the N flows again onto an emptied bridge, same Flow objects (a reconnect
                   after ovs-vswitchd lost its flows: the wire encoding is cached)
Ratios: push_X / ofctl_X, and push_full_X / ofctl_replace_X.  The controller process collects
garbage after storing the flows (making them is the compile's cost, not the push's).
and, with --osken, osken_add_s: the N flows through os-ken message objects (the path before
controller/pipeline/wire.py).  Both paths must leave the same flows: the final dumps compare.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.pipeline import actions as A                  # noqa: E402
from controller.pipeline import ofctl_text, tables           # noqa: E402
from controller.pipeline.flow import Flow                     # noqa: E402

RESULTS = ROOT / 'bench' / 'results'
N = 100_000
RUNS = 3


# ---- the flows -------------------------------------------------------------------------

def _mac(i: int) -> str:
    return ':'.join('%02x' % b for b in (0x020000000000 + i).to_bytes(6, 'big'))


def _ip(i: int, net: int = 10) -> str:
    return '%d.%d.%d.%d' % (net, (i >> 16) & 255, (i >> 8) & 255, i & 255)


def make_flows(n: int, salt: int = 0) -> list[Flow]:
    """n distinct flows, ten kinds in turn; salt changes the actions, not the keys."""
    ct = A.ct(commit=True, zone='reg13', exec=[A.set_field('ct_mark', 1)])
    out = []
    for i in range(n):
        kind, j = i % 10, i // 10
        port = 1 + (j + salt) % 48
        cookie = (0x0300000000000000 + (kind << 48)) | (j & 0xffffff)
        if kind in (0, 1, 2):        # vlan_portgroups / learning: a known MAC on a VLAN
            f = Flow.make('l2_lookup', 150, {'vlan_vid': 0x1000 | (10 + kind), 'eth_dst': _mac(j)},
                          [A.load('reg15', port)], goto='acl_out', cookie=cookie)
        elif kind == 3:              # port security: a VM sends only as itself
            f = Flow.make('port_sec', 125, {'in_port': 1 + j % 48, 'eth_src': _mac(j), 'eth_type': 0x0800,
                                            'ipv4_src': _ip(j)}, [A.load('reg13', 1 + (j + salt) % 900)],
                          goto='classify', cookie=cookie)
        elif kind == 4:              # anycast gateway: a host route
            f = Flow.make('l3', 300, {'eth_type': 0x0800, 'reg13': 1 + j % 900, 'ipv4_dst': _ip(j, 11)},
                          [A.set_field('eth_src', '02:00:00:00:ff:01'), A.set_field('eth_dst', _mac(j)),
                           A.dec_ttl(), A.load('reg15', port)], goto='l2_lookup', cookie=cookie)
        elif kind == 5:              # a route to a /24
            f = Flow.make('l3', 200, {'eth_type': 0x0800, 'reg13': 1 + j % 900,
                                      'ipv4_dst': '%s/24' % _ip(j << 8, 12)},
                          [A.set_field('eth_dst', _mac(j + salt)), A.dec_ttl(), A.load('reg15', port)],
                          goto='l2_lookup', cookie=cookie)
        elif kind in (6, 7):         # microseg: a 5-tuple allowed, committed to conntrack
            f = Flow.make('acl_out', 1000, {'eth_type': 0x0800, 'ip_proto': 6, 'ipv4_src': _ip(j, 13),
                                            'ipv4_dst': _ip(j + kind, 14), 'tcp_dst': 1 + (j % 60000),
                                            'ct_state': '+trk+new'},
                          [ct, A.resubmit('output')] if not salt else [ct, A.output(port)], cookie=cookie)
        elif kind == 8:              # ARP responder
            f = Flow.make('arp_rsp', 100, {'eth_type': 0x0806, 'arp_op': 1, 'arp_tpa': _ip(j, 15),
                                           'reg13': 1 + j % 900},
                          [A.move('eth_src', 'eth_dst'), A.set_field('eth_src', _mac(j + salt)),
                           A.set_field('arp_op', 2), A.move('arp_sha', 'arp_tha'),
                           A.set_field('arp_sha', _mac(j + salt)), A.move('arp_spa', 'arp_tpa'),
                           A.set_field('arp_spa', _ip(j, 15)), A.output('in_port')], cookie=cookie)
        else:                        # microseg: one clause of a conjunction
            f = Flow.make('acl_in', 900, {'eth_type': 0x0800, 'ipv4_src': _ip(j, 16)},
                          [A.conjunction(1 + (j + salt) % 5000, 1, 2)], cookie=cookie)
        out.append(f)
    return out


def sets(n: int) -> dict[str, list[Flow]]:
    """keep (80 %), old/new (10 %: the same keys, other actions), gone (10 %)."""
    base, changed = make_flows(n), make_flows(n, salt=1)
    pick = {name: [] for name in ('keep', 'old', 'new', 'gone')}
    for i, (f, g) in enumerate(zip(base, changed)):
        if i // 10 % 10 == 3:
            pick['old'].append(f)
            pick['new'].append(g)
        elif i // 10 % 10 == 7:
            pick['gone'].append(f)
        else:
            pick['keep'].append(f)
    return pick


# ---- ovs-ofctl ----------------------------------------------------------------------------

def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def timed(cmd: str) -> float:
    t0 = time.perf_counter()
    sh(cmd)
    return time.perf_counter() - t0


def count(br: str) -> int:
    out = sh('ovs-ofctl -O OpenFlow14 dump-aggregate %s' % br)
    return int(re.search(r'flow_count=(\d+)', out).group(1))


def dump(br: str) -> list[str]:
    """The flows as ovs-ofctl prints them, without counters and ages."""
    lines = sh('ovs-ofctl -O OpenFlow14 --no-stats dump-flows %s' % br).splitlines()
    return sorted(line.strip() for line in lines if 'actions=' in line)


def del_line(f: Flow) -> str:
    m = ofctl_text.match(f)
    return 'table=%d,priority=%d%s' % (tables.table_id(f.table), f.priority, ',' + m if m else '')


def expect(br: str, n: int, what: str) -> None:
    got = count(br)
    if got != n:
        raise SystemExit('%s: the bridge holds %d flows, not %d' % (what, got, n))


# ---- one run ------------------------------------------------------------------------------

def one_run(br: str, osk, pick: dict, files: dict, osken: bool) -> dict:
    n_all = sum(len(pick[k]) for k in ('keep', 'old', 'gone'))
    n_final = n_all - len(pick['gone'])
    ofctl = 'ovs-ofctl -O OpenFlow14 --bundle '
    r = {}
    # ovs-ofctl: told exactly what changed (add-flows, del-flows), then the whole set (replace-flows)
    sh('ovs-ofctl -O OpenFlow14 del-flows %s' % br)
    r['ofctl_add_s'] = timed(ofctl + 'add-flows %s %s' % (br, files['all']))
    expect(br, n_all, 'ovs-ofctl add')
    r['ofctl_modify_s'] = timed(ofctl + 'add-flows %s %s' % (br, files['new']))
    r['ofctl_delete_s'] = timed(ofctl + '--strict del-flows %s - < %s' % (br, files['gone']))
    expect(br, n_final, 'ovs-ofctl delete')
    final = dump(br)
    sh('ovs-ofctl -O OpenFlow14 del-flows %s' % br)
    sh(ofctl + 'add-flows %s %s' % (br, files['all']))
    r['ofctl_replace_modify_s'] = timed(ofctl + 'replace-flows %s %s' % (br, files['modified']))
    r['ofctl_replace_delete_s'] = timed(ofctl + 'replace-flows %s %s' % (br, files['final']))
    if dump(br) != final:
        raise SystemExit('ovs-ofctl replace-flows left other flows than add-flows/del-flows')

    # the reconciler: fresh Flow objects (nothing cached on them), then the core's two ways
    # to send a change: converge_delta (an in-sync switch) and a whole-set converge
    sh('ovs-ofctl -O OpenFlow14 del-flows %s' % br)
    for name, flows in pick.items():
        osk.store(name, flows)
    osk.reset()
    adds, _, r['push_add_s'] = osk.push('keep', 'old', 'gone')
    assert adds == n_all, adds
    expect(br, n_all, 'push')
    adds, deletes, r['push_modify_s'] = osk.push_delta(['old'], ['new'], ['keep', 'new', 'gone'])
    assert (adds, deletes) == (len(pick['new']), 0), (adds, deletes)
    adds, deletes, r['push_delete_s'] = osk.push_delta(['gone'], [], ['keep', 'new'])
    assert (adds, deletes) == (0, len(pick['gone'])), (adds, deletes)
    expect(br, n_final, 'push delete')
    if dump(br) != final:
        raise SystemExit('the reconciler and ovs-ofctl left different flows')
    sh('ovs-ofctl -O OpenFlow14 del-flows %s' % br)
    osk.reset()
    osk.push('keep', 'old', 'gone')
    _, _, r['push_full_modify_s'] = osk.push('keep', 'new', 'gone')
    _, _, r['push_full_delete_s'] = osk.push('keep', 'new')
    if dump(br) != final:
        raise SystemExit('the whole-set converges left other flows')

    sh('ovs-ofctl -O OpenFlow14 del-flows %s' % br)
    osk.reset()
    adds, _, r['repush_s'] = osk.push('keep', 'old', 'gone')      # the same objects: cached
    expect(br, n_all, 'repush')
    if osken:
        sh('ovs-ofctl -O OpenFlow14 del-flows %s' % br)
        for name in ('keep', 'old', 'gone'):
            osk.store(name, pick[name])
        osk.reset()
        osk.osken(True)
        try:
            _, _, r['osken_add_s'] = osk.push('keep', 'old', 'gone')
        finally:
            osk.osken(False)
        expect(br, n_all, 'os-ken push')
    for k in ('add', 'modify', 'delete'):
        r['ratio_%s' % k] = r['push_%s_s' % k] / r['ofctl_%s_s' % k]
    for k in ('modify', 'delete'):
        r['ratio_full_%s' % k] = r['push_full_%s_s' % k] / r['ofctl_replace_%s_s' % k]
    return r


def summarise(runs: list[dict]) -> dict:
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs]
        out[k] = {'min': round(min(vals), 3), 'median': round(statistics.median(vals), 3),
                  'max': round(max(vals), 3)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--flows', type=int, default=N)
    ap.add_argument('--runs', type=int, default=RUNS)
    ap.add_argument('--osken', action='store_true', help='also time the os-ken message path (slow)')
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit('bench/push.py needs root (a scratch OVS bridge)')
    from tests.ovs.osken_harness import OsKen
    from tests.ovs.scratch import _prefix
    from tests.support import free_port

    pick = sets(args.flows)
    br = _prefix() + 'push'
    load = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {k: Path(tmp) / ('%s.txt' % k) for k in ('all', 'new', 'gone', 'modified', 'final')}
        for name, parts in (('all', ('keep', 'old', 'gone')), ('new', ('new',)),
                            ('modified', ('keep', 'new', 'gone')), ('final', ('keep', 'new'))):
            files[name].write_text(''.join(ofctl_text.flow(f) + '\n' for p in parts for f in pick[p]))
        files['gone'].write_text(''.join(del_line(f) + '\n' for f in pick['gone']))
        port = free_port()
        sh('ovs-vsctl add-br {b} -- set bridge {b} datapath_type=netdev fail_mode=secure '
           'protocols=OpenFlow13,OpenFlow14'.format(b=br))
        osk = None
        try:
            osk = OsKen(port, Path(tmp) / 'osken.log').start()
            sh('ovs-vsctl set-controller %s tcp:127.0.0.1:%d' % (br, port))
            osk.wait_ready()
            for _ in range(args.runs):
                runs.append(one_run(br, osk, pick, files, args.osken))
                print(json.dumps({k: round(v, 3) for k, v in runs[-1].items()}), file=sys.stderr)
        finally:
            if osk is not None:
                osk.stop()
            subprocess.run(['ovs-vsctl', '--if-exists', 'del-br', br], check=False)
    out = {'benchmark': 'push', 'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
           'machine': '%s, %d CPUs, Python %s' % (platform.node(), os.cpu_count(), platform.python_version()),
           'ovs': sh('ovs-vsctl --version').split('\n')[0], 'loadavg_before': round(load, 2),
           'flows': args.flows, 'runs': args.runs, 'results': summarise(runs), 'each_run': runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / 'push.json').write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
