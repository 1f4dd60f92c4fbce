"""Benchmark: one workload bound, unbound or moved on a fabric that already runs N bound
workloads: time from the OVSDB change to every switch holding the result, and the flow-mods
the controller sent for it.  Prints JSON; never asserts on time.

The world is bench/apply.py's: one tenant `bench` on the example fabric (2 spines x 2
leaves, 4 hypervisors), its workloads OVS internal ports on the hypervisors' br-int with
external_ids:iface-id=bench/<workload>/nic0, round-robin over hv1..hv4.  The policy holds
N + 20 workloads; the first N are bound before the apply, the last 20 are not.  Then, on
that running fabric, 20 times each (one event at a time, each on the previous one's result):

  bind     add-port of one of the 20 (on its hypervisor), then `ip link set up` in the hv's
           netns (the controller ignores down ports): done when every switch holds the nic's
           priority-150 flows (a destination entry everywhere, plus the source entry on its hv)
  move     add-port of the same nic on a hypervisor in the other rack, link up, then del-port
           on the first: done when the new hv holds its source + destination entries and the
           old hv a destination entry, all installed after the event, and the controller has
           stopped sending flow-mods; then every switch whose entries for the nic were
           installed after the event counts (the others are listed as unchanged)
  unbind   del-port of the nic: done when no switch holds a priority-150 flow for its MAC

Times run from the first `ovs-vsctl` returning (bind, move), or from the call of the
del-port (unbind: the controller often deletes entries before ovs-vsctl has returned).  bind and move read the install moment from
OVS's own flow `duration` (dump time minus age, ms resolution), like apply.py's
install_times, so the polling that waits for completion does not decide the figure; unbind
has no flow left to read, so its figure is the last deletion that `ovs-ofctl --timestamp
monitor watch:` (started before the event, one per switch and MAC field, idle until a
change) reported; the poll that first saw every switch clear is kept as polled_s (an upper
bound, each switch is polled in turn).  Flow-mods are the controller's
Prometheus counter opendvs_flow_mods_total{switch,command} scraped before the event and
again once it has stopped moving.
"""
from __future__ import annotations

import argparse
import calendar
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.apply import (FABRIC, HVS, KNOWN, P_KNOWN, bind, admitted, fabric_ready,   # noqa: E402
                         run_dvsctl, tenant_yaml, workload)
from mininet_topos import Lab                                                        # noqa: E402
from tests.support import ControllerProcess, free_port, wait_until                   # noqa: E402

REPEAT = 20
SIZES = (1000,)
POLL_TIMEOUT = 30.0
MONITOR = True                       # unbind: time deletions with ovs-ofctl monitor (else: polls)


# ---- observing the switches --------------------------------------------------------------------

def mac_flows(lab: Lab, sw: str, mac: str) -> tuple[float, list[float]]:
    """(dump time, ages in s of the priority-150 vlan_portgroups flows on sw matching mac as
    destination or source)."""
    ages = []
    t0 = time.time()
    for field in ('dl_dst', 'dl_src'):
        out = lab.ofctl(sw, 'dump-flows', '%s,%s=%s' % (KNOWN, field, mac))
        ages += [float(re.search(r'duration=([\d.]+)s', line).group(1))
                 for line in out.splitlines() if 'priority=%d' % P_KNOWN in line]
    return (t0 + time.time()) / 2, ages


def wait_switches(lab: Lab, want: dict, mac: str, t0: float) -> dict[str, float]:
    """Poll each switch of want ({switch: predicate(ages, fresh_ages)}) until its predicate
    holds; per switch the moment it held: the newest matching flow's install time when the
    flows are fresh (installed after t0), else the poll's time."""
    done: dict[str, float] = {}
    deadline = time.monotonic() + POLL_TIMEOUT
    while len(done) < len(want):
        for sw, ok in want.items():
            if sw in done:
                continue
            now, ages = mac_flows(lab, sw, mac)
            fresh = [a for a in ages if now - a >= t0 - 0.002]
            if ok(ages, fresh):
                done[sw] = (now - min(fresh)) if fresh else now
        if time.monotonic() > deadline:
            left = sorted(set(want) - set(done))
            raise TimeoutError('%s: switches not done: %s\n%s' % (mac, left, '\n'.join(
                '%s: %s' % (sw, mac_lines(lab, sw, mac)) for sw in left)))
    return done


def mac_lines(lab: Lab, sw: str, mac: str) -> list[str]:
    """The priority-150 flows of mac on sw, without their counters."""
    out = []
    for field in ('dl_dst', 'dl_src'):
        for line in lab.ofctl(sw, 'dump-flows', '%s,%s=%s' % (KNOWN, field, mac)).splitlines():
            if 'priority=%d' % P_KNOWN in line:
                out.append(re.sub(r'\s*(duration|n_packets|n_bytes|idle_age|hard_age)=[^,\s]+,?', '', line).strip())
    return out


def fresh_installs(lab: Lab, switches: list[str], mac: str, t0: float) -> dict[str, float]:
    """One dump per switch: the install time of its newest flow of mac, for the switches
    whose mac flows include one installed after t0."""
    out = {}
    for sw in switches:
        now, ages = mac_flows(lab, sw, mac)
        fresh = [a for a in ages if now - a >= t0 - 0.002]
        if fresh:
            out[sw] = now - min(fresh)
    return out


class Monitors:
    """`ovs-ofctl --timestamp monitor` on each switch, watching one MAC's flows (dl_dst on
    every switch, dl_src too on the hypervisors): OVS reports each flow change as it happens,
    with a ms timestamp, and nothing polls.  Ready once each has printed its initial flows."""

    def __init__(self, lab: Lab, switches: list[str], mac: str, everything: tuple = ()):
        """everything: switches whose every flow change is also recorded (see changes())."""
        self.procs, self.lines = {}, {}
        env = dict(os.environ, TZ='UTC')
        watches = [(sw, field, 'watch:%s=%s' % (field, mac)) for sw in switches
                   for field in (('dl_dst', 'dl_src') if sw in lab.fabric.hypervisors else ('dl_dst',))]
        watches += [(sw, 'all', 'watch:!initial') for sw in everything]
        for sw, field, watch in watches:
            target = (lab.bridge(sw) if sw in lab.fabric.switches
                      else 'unix:%s/br-int.mgmt' % lab._hv(sw).rundir)
            if True:
                key = (sw, field)
                p = subprocess.Popen(['ovs-ofctl', '-O', 'OpenFlow14', '--timestamp', 'monitor', target,
                                      watch], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
                self.procs[key], self.lines[key] = p, []
                threading.Thread(target=self._read, args=(p, self.lines[key]), daemon=True).start()

    @staticmethod
    def _read(p, into: list) -> None:
        for line in p.stdout:
            into.append(line)

    def wait(self, pred, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            if any(p.poll() is not None for p in self.procs.values()):
                return False
            time.sleep(0.005)
        return False

    def ready(self) -> bool:
        # the reply to the monitor request (its initial flows, maybe none) comes first
        return self.wait(lambda: all(self.lines.values()))

    def deleted(self) -> dict[str, float]:
        """Per switch, the time of its last reported deletion of a flow matching the MAC (each
        message's lines follow a 'YYYY-MM-DD HH:MM:SS.mmm: ' header)."""
        out: dict[str, float] = {}
        stamp = None
        for (sw, field), lines in self.lines.items():
            if field == 'all':
                continue
            for line in list(lines):
                m = re.match(r'(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3}): ', line)
                if m:
                    stamp = calendar.timegm(time.strptime(m.group(1), '%Y-%m-%d %H:%M:%S')) + int(m.group(2)) / 1000
                elif 'event=DELETED' in line and stamp is not None:      # (updates print no priority)
                    out[sw] = max(out.get(sw, 0.0), stamp)
        return out

    def changes(self) -> dict[str, list[str]]:
        """The flow changes the `everything` watches saw, without counters."""
        return {sw: [re.sub(r'\s*(duration|n_packets|n_bytes|idle_age|hard_age|idle_timeout|hard_timeout)=[^,\s]+,?',
                            '', x).strip() for x in lines if 'event=' in x]
                for (sw, field), lines in self.lines.items() if field == 'all'}

    def stop(self) -> list[str]:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
            p.wait(5)
        return [x for v in self.lines.values() for x in v]


# ---- the controller's counters -----------------------------------------------------------------

def flow_mods(api_port: int) -> dict[tuple[str, str], float]:
    text = urllib.request.urlopen('http://127.0.0.1:%d/metrics' % api_port, timeout=10).read().decode()
    out = {}
    for m in re.finditer(r'^opendvs_flow_mods_total\{([^}]*)\}\s+(\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        out[(labels.get('switch', '?'), labels.get('command', '?'))] = float(m.group(2))
    return out


def settled_mods(api_port: int, before: dict) -> dict[tuple[str, str], int]:
    """The flow-mods sent since `before`, once two scrapes 0.25 s apart agree."""
    prev = flow_mods(api_port)
    while True:
        time.sleep(0.25)
        cur = flow_mods(api_port)
        if cur == prev:
            return {k: int(v - before.get(k, 0)) for k, v in cur.items() if v - before.get(k, 0)}
        prev = cur


# ---- one event ---------------------------------------------------------------------------------

def add_port(lab: Lab, hv: str, port: str, w: dict) -> float:
    lab.vsctl(hv, '--', 'add-port', 'br-int', port, '--', 'set', 'Interface', port, 'type=internal',
              'external_ids:iface-id=bench/%s/nic0' % w['name'], 'external_ids:attached-mac=' + w['mac'])
    return time.time()


def link_up(lab: Lab, hv: str, port: str) -> float:
    # no IPv6 on the port: its router solicitations would be packet-ins (noise in flow-mods)
    rc, out = lab.exec(hv, 'sysctl -qw net.ipv6.conf.%s.disable_ipv6=1; ip link set %s up' % (port, port))
    if rc:
        raise RuntimeError('%s: link up %s: %s' % (hv, port, out))
    return time.time()


def other_rack(lab: Lab, hv: str) -> str:
    leaf = lab.fabric.hypervisors[hv].leaf
    return next(h for h in HVS if lab.fabric.hypervisors[h].leaf != leaf)


def event(lab: Lab, ctl: ControllerProcess, kind: str, w: dict, where: dict) -> dict:
    """Run one event on workload w (where: {workload name: hv} of its current port)."""
    physical = list(lab.fabric.switches)
    mac, name = w['mac'], w['name']
    before = flow_mods(ctl.api_port)
    marks = {}
    if kind == 'bind':
        hv = w['hv']
        t0 = add_port(lab, hv, 'b' + name, w)
        marks['link_up_s'] = link_up(lab, hv, 'b' + name) - t0
        # every hv's trunk carries the nic's VLAN (each hosts workloads on all three)
        want = {sw: (lambda a, f, n=(2 if sw == hv else 1): len(a) == n and len(f) == n)
                for sw in physical + HVS}
        where[name] = hv
    elif kind == 'move':
        old = where[name]
        new = other_rack(lab, old)
        port = 'm' + name
        t0 = add_port(lab, new, port, w)
        marks['link_up_s'] = link_up(lab, new, port) - t0
        old_port = 'b' + name if old == w['hv'] else 'm' + name
        lab.vsctl(old, '--', 'del-port', 'br-int', old_port)
        marks['del_port_s'] = time.time() - t0
        # the hypervisors' ends are certain; which physical switches rewrite their entry is
        # the controller's business: once it has stopped sending, one dump says which did
        want = {old: lambda a, f: len(a) == 1 and len(f) == 1, new: lambda a, f: len(a) == 2 and len(f) == 2}
        where[name] = new
    else:                                          # unbind
        hv = where.pop(name)
        port = 'b' + name if hv == w['hv'] else 'm' + name
        mon = Monitors(lab, physical + HVS, mac, everything=(hv,)) if MONITOR else None
        if mon is not None and not mon.ready():
            raise RuntimeError('ovs-ofctl monitor did not start: %s' % mon.stop()[-5:])
        # ovs-vsctl returns once ovs-vswitchd has removed the port, and by then the controller
        # has often already deleted the physical switches' entries (its port-status came
        # first): time an unbind from the call
        t0 = time.time()
        lab.vsctl(hv, '--', 'del-port', 'br-int', port)
        marks['del_port_s'] = time.time() - t0
        want = {sw: (lambda a, f: not a) for sw in physical + HVS}
    done = wait_switches(lab, want, mac, t0)
    if kind == 'unbind' and mon is not None:
        mon.wait(lambda: set(mon.deleted()) >= set(done), 2)
        seen = mon.deleted()
        time.sleep(0.05)                           # the monitors' last lines (the wait above settled)
        marks['hv_changes'] = mon.changes()
        mon.stop()
        marks['polled_s'] = round(max(done.values()) - t0, 4)
        if set(seen) >= set(done):
            done = seen
            marks['method'] = 'ovs-ofctl monitor'
        else:
            marks['method'] = 'poll (monitor missed %s)' % sorted(set(done) - set(seen))
    mods = settled_mods(ctl.api_port, before)
    if kind == 'move':
        done.update(fresh_installs(lab, [sw for sw in physical + HVS if sw not in done], mac, t0))
        marks['unchanged'] = sorted(set(physical + HVS) - set(done))
        marks['lines'] = {sw: mac_lines(lab, sw, mac) for sw in physical + [old, new]}
    return dict(marks, kind=kind, workload=name, t0=t0, s=round(max(done.values()) - t0, 4),
                per_switch_s={sw: round(t - t0, 4) for sw, t in sorted(done.items())},
                flow_mods=sum(mods.values()),
                flow_mods_by={'%s/%s' % k: v for k, v in sorted(mods.items())})


_LOG = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \S+ \S+ (.*)$', re.M)


def controller_marks(text: str, events: list[dict]) -> None:
    """From the controller's log (ms timestamps, this machine's clock): per event, when the
    controller logged the nic's port going up or away, the hypervisor's new bindings, and
    its first and last 'switch X: +A -D flows' line, in ms after the event's t0."""
    lines = [(calendar.timegm(time.strptime(m.group(1), '%Y-%m-%d %H:%M:%S')) + int(m.group(2)) / 1000, m.group(3))
             for m in _LOG.finditer(text)]
    if time.localtime().tm_gmtoff:
        lines = [(t - time.localtime().tm_gmtoff, s) for t, s in lines]
    ends = [e['t0'] for e in events[1:]] + [float('inf')]
    for e, end in zip(events, ends):
        mine = [(t, s) for t, s in lines if e['t0'] - 0.5 <= t < end]
        port = re.compile(r'port \d+ \([bm]%s\) ' % e['workload'])
        first = lambda pred: next((round(1000 * (t - e['t0']), 1) for t, s in mine if pred(s)), None)  # noqa: E731
        flows = [round(1000 * (t - e['t0']), 1) for t, s in mine if re.search(r'switch \w+: \+\d+ -\d+ flows', s)]
        e['controller_ms'] = {'port': first(port.search), 'bindings': first(lambda s: ' bindings: ' in s),
                              'first_flows': flows[0] if flows else None, 'last_flows': flows[-1] if flows else None}


# ---- one size -----------------------------------------------------------------------------------

def settle(lab: Lab, ctl: ControllerProcess) -> None:
    """Wait until the controller stops sending flow-mods (the apply's tail, a bind's echo)."""
    settled_mods(ctl.api_port, {})


def one_size(work: Path, n: int, repeat: int) -> dict:
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    try:
        lab = Lab(str(FABRIC), ofp_port=port, vms_per_hypervisor=0)
        try:
            lab.up(timeout=60)
            return measure(ctl, lab, work, n, repeat)
        finally:
            lab.down()                 # removes the bench ports too: they live in the hvs' OVS
    finally:
        ctl.stop()


def measure(ctl, lab, work: Path, n: int, repeat: int) -> dict:
    workloads = [workload(i, HVS) for i in range(n + repeat)]
    bound, spare = workloads[:n], workloads[n:]
    policy = work / 'bench.yaml'
    policy.write_text(tenant_yaml(workloads))
    wait_until(lambda: fabric_ready(ctl), 30, 0.25, 'fabric discovered')
    bind(lab, bound)
    wait_until(lambda: admitted(lab, bound), 120, 0.25, 'bindings admitted')
    apply_s, _ = run_dvsctl(ctl, 'apply', str(policy))
    settle(lab, ctl)
    where = {w['name']: w['hv'] for w in bound}
    events = []
    for kind in ('bind', 'move', 'unbind'):
        for w in spare:
            events.append(event(lab, ctl, kind, w, where))
            print('%5d %-6s %-6s %6.1f ms %3d flow-mods' % (n, kind, w['name'], 1000 * events[-1]['s'],
                                                              events[-1]['flow_mods']), file=sys.stderr)
    try:
        controller_marks(ctl.text(), events)
    except Exception as e:                          # an aid to reading the figures, not one of them
        print('controller log marks: %r' % e, file=sys.stderr)
    out = {'apply_s': round(apply_s, 3)}
    for kind in ('bind', 'move', 'unbind'):
        mine = [e for e in events if e['kind'] == kind]
        out[kind] = {'median_ms': round(1000 * statistics.median(e['s'] for e in mine), 1),
                     'max_ms': round(1000 * max(e['s'] for e in mine), 1),
                     'flow_mods_median': statistics.median(e['flow_mods'] for e in mine),
                     'flow_mods_max': max(e['flow_mods'] for e in mine),
                     'events': mine}
        for mark in ('link_up_s', 'del_port_s'):
            if mark in mine[0]:
                out[kind][mark.replace('_s', '_median_ms')] = round(
                    1000 * statistics.median(e[mark] for e in mine), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('sizes', nargs='*', type=int, default=list(SIZES), help='bound workloads before the events')
    ap.add_argument('--repeat', type=int, default=REPEAT)
    args = ap.parse_args()
    load = Path('/proc/loadavg').read_text().split()[:3]
    with tempfile.TemporaryDirectory(prefix='opendvs-bench-binding-') as d:
        results = {}
        for n in args.sizes:
            w = Path(d) / str(n)
            w.mkdir()
            results[str(n)] = one_size(w, n, args.repeat)
    out = {'benchmark': 'binding', 'fabric': 'examples/fabric.yaml', 'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
           'machine': platform.node(), 'loadavg_before': load,
           'loadavg_after': Path('/proc/loadavg').read_text().split()[:3],
           'commit': subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', 'HEAD'],
                                    capture_output=True, text=True).stdout.strip(),
           'results': results}
    print(json.dumps(out, indent=1))
    res = ROOT / 'bench' / 'results'
    res.mkdir(exist_ok=True)
    (res / 'binding.json').write_text(json.dumps(out, indent=1))
    print('\n| N bound | event | median (ms) | max (ms) | flow-mods median / max |', file=sys.stderr)
    print('|---|---|---|---|---|', file=sys.stderr)
    for n, r in results.items():
        for kind in ('bind', 'move', 'unbind'):
            k = r[kind]
            print('| %s | %s | %.1f | %.1f | %s / %s |' % (n, kind, k['median_ms'], k['max_ms'],
                                                          k['flow_mods_median'], k['flow_mods_max']), file=sys.stderr)


if __name__ == '__main__':
    main()
