"""Measurement: packets lost by a 100 pps ping while one part of the fabric restarts (issue 7,
part 6, the cases that need no code).  Prints JSON; never asserts.

The example fabric and tenants (acme, globex) in a lab with the controller; web1 (hv1, leaf1)
pings web2 (hv3, leaf2) at 100 pps across the spines.  Each case, on hv1, 2 s into the ping:

  vswitchd_restart   hv1's ovs-vswitchd killed (SIGTERM) and started again: br-int comes back
                     empty (fail_mode secure) until the controller reprograms it
  ovsdb_restart      hv1's ovsdb-server killed and started again (vswitchd keeps forwarding)
  ovsdb_cut          the controller's OVSDB session to hv1 cut for 5 s (the ptcp remote removed
                     and added back inside hv1: established sessions close with it)
  mgmt_down_10s      hv1's management link down for 10 s (its OpenFlow and OVSDB sessions)
  policy_pushes_100  100 applies of acme, the tenant carrying the ping, enforced (default deny:
                     rule ping-web admits the ping, through conntrack), each changing that rule
                     (icmp, then icmp + tcp/80, and back); the first turns enforcement on, a
                     101st turns it off again (acme as the example has it)
  controller_kill9   the controller killed (SIGKILL) and started again on its state dir

(vswitchd_restart, policy_pushes_100 and controller_kill9 are issue 11 part 6's "hitless,
with counts".)

Per case: sent, received, lost, the longest run of lost pings in ms, and the flow changes the
controller logged after the event (adds/deletes it had to make to resync).  The root OVS
(every physical switch) is restarted only by tests/integration/test_restarts.py, through
mininet_topos/rootovs.py, which checks it is safe first; bench/restarts_runs.py runs that
module several times and summarises its losses.

  flock /tmp/opendvs-lab.lock .venv/bin/python bench/restarts.py
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mininet_topos import Lab                                                   # noqa: E402
from tests.support import ControllerProcess, counted, free_port, wait_until    # noqa: E402

FABRIC = ROOT / 'examples' / 'fabric.yaml'
TENANTS = [str(ROOT / 'examples' / 'tenants' / t) for t in ('acme.yaml', 'globex.yaml')]
HV, SRC, DST = 'hv1', 'web1', 'web2'
PPS, SECONDS = 100, 30


def restart(lab, which: str) -> None:
    lab.restart_daemon(HV, which)        # SIGTERM by pid, then the lab's own start command
    if which == 'ovsdb-server':
        t0 = time.monotonic()
        wait_until(lambda: ovsdb_sessions(lab) > 0, 60, what='the controller back on hv1 OVSDB')
        EXTRA.update(ovsdb_reconnected_after_s=round(time.monotonic() - t0, 1))


EXTRA: dict = {}       # what a case observed itself, merged into its result


def ovsdb_sessions(lab) -> int:
    """Established TCP sessions to hv1's OVSDB port (the controller's binding watcher)."""
    out = lab.exec(HV, ['ss', '-tnH', 'state', 'established', '( sport = :6640 )'])[1]
    return len([l for l in out.splitlines() if l.strip()])


def ovsdb_cut(lab) -> None:
    info = lab.describe()['hypervisors'][HV]
    ctl, remote = f"{info['rundir']}/ovsdb-server.ctl", f"ptcp:6640:{info['mgmt_ip']}"
    before = ovsdb_sessions(lab)
    lab.exec(HV, ['ovs-appctl', '-t', ctl, 'ovsdb-server/remove-remote', remote])
    time.sleep(5)
    during = ovsdb_sessions(lab)
    lab.exec(HV, ['ovs-appctl', '-t', ctl, 'ovsdb-server/add-remote', remote])
    t0 = time.monotonic()
    wait_until(lambda: ovsdb_sessions(lab) > 0, 60, what='the controller back on hv1 OVSDB')
    EXTRA.update(ovsdb_sessions={'before': before, 'during_cut': during,
                                 'reconnected_after_s': round(time.monotonic() - t0, 1)})


def mgmt_down(lab) -> None:
    ip = lab.mgmt_ip(HV)
    out = lab.exec(HV, ['ip', '-o', '-4', 'addr', 'show'])[1]
    dev = next(l.split()[1] for l in out.splitlines() if f' {ip}/' in l)
    lab.exec(HV, ['ip', 'link', 'set', dev, 'down'])
    time.sleep(10)
    lab.exec(HV, ['ip', 'link', 'set', dev, 'up'])


ACME = ROOT / 'examples' / 'tenants' / 'acme.yaml'
PUSHES = 100


def policy_pushes(lab, ctl) -> None:
    """acme enforced (default deny: the ping is admitted by rule ping-web, through conntrack),
    its rule changed back and forth; then acme as it was (default allow)."""
    original = ACME.read_text()
    a = original.replace('default: allow', 'default: deny')
    b = a.replace('allow: [{proto: icmp}]}', 'allow: [{proto: icmp}, {proto: tcp, port: 80}]}')
    assert original != a != b
    path = ctl.workdir / 'acme.yaml'
    t0, slowest = time.monotonic(), 0.0
    for text in [b if i % 2 == 0 else a for i in range(PUSHES)] + [original]:
        path.write_text(text)
        t1 = time.monotonic()
        r = ctl.dvsctl('apply', str(path))
        slowest = max(slowest, time.monotonic() - t1)
        assert r.returncode == 0, r.stderr
    EXTRA.update(pushes=PUSHES + 1, pushes_s=round(time.monotonic() - t0, 1), slowest_push_s=round(slowest, 2))


def controller_kill9(lab, ctl) -> None:
    ctl.kill9()
    t0 = time.monotonic()
    ctl.start()
    ctl.wait_connected(len(lab.describe()['switches']) + len(lab.describe()['hypervisors']))
    wait_until(lambda: 'programming from the whole picture' in ctl.text(), 30, what='every binding read again')
    EXTRA.update(back_after_s=round(time.monotonic() - t0, 1))


CASES = {
    'vswitchd_restart': lambda lab, ctl: restart(lab, 'ovs-vswitchd'),
    'ovsdb_restart': lambda lab, ctl: restart(lab, 'ovsdb-server'),
    'ovsdb_cut': lambda lab, ctl: ovsdb_cut(lab),
    'mgmt_down_10s': lambda lab, ctl: mgmt_down(lab),
    'policy_pushes_100': policy_pushes,
    'controller_kill9': controller_kill9,
}
LONGER = {'policy_pushes_100': 120}        # s of ping: the pushes must end inside it


def measure(lab, ctl, name, event) -> dict:
    ip = lab.vms[DST].ip
    seconds = LONGER.get(name, SECONDS)
    ping = lab.popen(SRC, ['ping', '-n', *counted(PPS * seconds, 1 / PPS), ip],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log_before, starts = len(ctl.text()), ctl.starts
    time.sleep(2)
    t0 = time.monotonic()
    event(lab, ctl)
    event_s = time.monotonic() - t0
    if ping.poll() is not None:
        EXTRA.update(warning='the ping ended before the event did: the count covers part of it')
    out, _ = ping.communicate(timeout=seconds * 2 + 60)
    sent, received = map(int, re.search(r'(\d+) packets transmitted, (\d+) received', out).groups())
    got = sorted({int(n) for n in re.findall(r'icmp_seq=(\d+) ttl', out)})
    gaps = [b - a - 1 for a, b in zip([0] + got, got + [sent + 1])]
    extra = dict(EXTRA)
    EXTRA.clear()
    hv_back = wait_until(lambda: _connected(ctl).get(HV), 60, what='%s connected again' % HV)
    log = ctl.text()[log_before:] if ctl.starts == starts else ctl.text()     # a restart: its own log
    changes = re.findall(r'switch ([0-9a-f]{16}): \+(\d+) -(\d+) flows', log)
    return {'case': name, 'sent': sent, 'received': received, 'lost': sent - received,
            'longest_outage_ms': max(gaps) * 1000 // PPS, 'event_s': round(event_s, 1),
            'hv_connected_after': bool(hv_back),
            'sessions': {k: log.count(v) for k, v in (('connected', '%s (' % HV), ('disconnected', 'disconnected'),
                                                       ('taken_over', 'takes over'), ('refused', 'refused OpenFlow'),
                                                       ('converge_failed', 'converging switch'))},
            'flows_added': sum(int(a) for _, a, _ in changes), 'flows_deleted': sum(int(d) for *_, d in changes),
            'flow_changes_after': ['%s +%s -%s' % c for c in changes], **extra}


def _connected(ctl) -> dict:
    r = ctl.dvsctl('show', 'switches', '--json')
    return {s['name']: s['connected'] for s in json.loads(r.stdout)} if r.returncode == 0 else {}


def main(cases=None) -> None:
    work = Path(tempfile.mkdtemp(prefix='opendvs-restarts-'))
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(FABRIC), ofp_port=port, tenants=TENANTS)
    results = []
    try:
        r = ctl.dvsctl('apply', *TENANTS)
        assert r.returncode == 0, r.stderr
        lab.up(timeout=60)
        wait_until(lambda: lab.ping(SRC, DST), 60, what='web1 reaches web2')
        for name in cases or CASES:
            results.append(measure(lab, ctl, name, CASES[name]))
            wait_until(lambda: lab.ping(SRC, DST), 60, what='recovery after %s' % name)
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    finally:
        lab.down()
        ctl.stop()
    print(json.dumps({'pps': PPS, 'seconds': SECONDS, 'path': f'{SRC}@{HV} -> {DST}', 'results': results},
                     indent=1))


if __name__ == '__main__':
    main(sys.argv[1:] or None)
