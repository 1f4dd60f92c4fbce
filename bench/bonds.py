"""Benchmark: failover of a dual-homed hypervisor's LACP bond (examples/fabric.yaml: hv1 has two
cables to leaf1).  Prints JSON; never asserts on time.

hv2vm1 pings hv1vm1 (same leaf, so the path is hv2 -> leaf1 -> hv1's bond) at 1,000 pps for
2 s while one of hv1's cables is cut (both veth ends down, as a pulled cable) and, in the next
run, while it is put back.  Lost pings x 1 ms is the outage.  The member alternates (phy0,
phy1); before every run both ends' bonds are back to both members enabled.  10 runs of each.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mininet_topos import Lab                                               # noqa: E402
from tests.support import ControllerProcess, free_port, ping_counts, wait_until   # noqa: E402

FABRIC = ROOT / 'examples' / 'fabric.yaml'
RESULTS = ROOT / 'bench' / 'results'
HV, PEER = 'hv1', 'hv2'
COUNT, INTERVAL = 2000, 0.001


def enabled(lab, node, bond) -> int:
    return lab.appctl(node, 'bond/show', bond).count('may_enable: true')


def both_up(lab) -> bool:
    return enabled(lab, HV, 'bond0') == 2 and enabled(lab, 'leaf1', lab.leaf_bond(HV)) == 2


def leaf_packets(lab) -> int:
    text = ''.join(lab.ofctl('leaf1', 'dump-ports', str(p)) for p in lab.leaf_ports(HV))
    return sum(int(n) for n in re.findall(r'[rt]x pkts=(\d+)', text))


def one_run(lab, member: int, up: bool) -> int:
    """Pings lost while `member` of hv1's bond goes down (up=False) or comes back (up=True)."""
    dst = lab.vms['%svm1' % HV].ip
    ping = lab.popen('%svm1' % PEER, ['ping', '-n', '-q', '-i', str(INTERVAL), '-c', str(COUNT), '-W', '1', dst],
                     stdout=subprocess.PIPE, text=True)
    try:
        base = leaf_packets(lab)
        wait_until(lambda: leaf_packets(lab) > base + 400, 10, what='pings flowing')
        lab.set_link(HV, 'leaf1', up=up, member=member)
        out, _ = ping.communicate(timeout=60)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.communicate()
    sent, received = ping_counts(out)
    return sent - received


def stats(vals):
    return {'min': min(vals), 'median': statistics.median(vals), 'max': max(vals), 'runs': vals}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix='opendvs-bench-bonds-'))
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(FABRIC), ofp_port=port, vms_per_hypervisor=1)
    cut, restore = [], []
    try:
        lab.up(timeout=60)
        wait_until(lambda: lab.ping('%svm1' % PEER, '%svm1' % HV), 40, what='VMs reach each other')
        for i in range(args.runs):
            member = i % 2
            wait_until(lambda: both_up(lab), 20, what='both members enabled on both ends')
            cut.append(one_run(lab, member, up=False))
            restore.append(one_run(lab, member, up=True))
        wait_until(lambda: both_up(lab), 20, what='both members enabled on both ends')
    finally:
        lab.down()
        ctl.stop()
    shutil.rmtree(work, ignore_errors=True)          # kept (with the controller log) on failure
    result = {'benchmark': 'bonds', 'fabric': str(FABRIC.relative_to(ROOT)), 'rate_pps': int(1 / INTERVAL),
              'pings_per_run': COUNT, 'lost_pings_member_cut': stats(cut),
              'lost_pings_member_restore': stats(restore),
              'outage_ms_median': {'cut': statistics.median(cut) * INTERVAL * 1000,
                                   'restore': statistics.median(restore) * INTERVAL * 1000}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / 'bonds.json').write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
