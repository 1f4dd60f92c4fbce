"""Restarts of every part under a 100 pps ping (issue 7, part 6).

The example fabric and tenants (acme, globex) with the controller; web1 (hv1, leaf1) pings
web2 (hv3, leaf2) at 100 pps across the spines, through every part restarted here: hv1's
ovs-vswitchd, hv1's ovsdb-server, the root OVS (every physical switch) and its ovsdb-server, the controller's OVSDB
sessions to every hypervisor, hv1's management link.  Per case: packets lost (icmp_seq gaps
between the first and the last reply; the ping runs until 1 s of replies after recovery),
the flows the controller changed afterwards ("switch X: +A -D flows" in its log), and that
nothing right was deleted.  The loss bounds are in LOSS_BOUND (documented in bench/README.md,
"Restarts of every part"); each case's figures go to RESULTS (printed at the end, and written
to restarts.json in the module's work dir when OPENDVS_RESTARTS_JSON names a file).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from mininet_topos import Lab, osutil, rootovs
from tests.support import ROOT, ControllerProcess, answered, free_port, wait_until

FABRIC = ROOT / 'examples' / 'fabric.yaml'
TENANTS = [str(ROOT / 'examples' / 'tenants' / t) for t in ('acme.yaml', 'globex.yaml')]
HV, SRC, DST = 'hv1', 'web1', 'web2'
PHYSICAL = ('spine1', 'spine2', 'leaf1', 'leaf2')
HYPERVISORS = ('hv1', 'hv2', 'hv3', 'hv4')
PPS = 100
# Pings lost at 100 pps, the bounds asserted.  Measured (bench/README.md, "Restarts of every
# part", 3 runs): hv vswitchd 12-13, root OVS 24-28, every other case 0.  The two non-zero
# bounds leave room for a loaded 2-core machine (about 8x and 5x the worst run).
LOSS_BOUND = {
    'vswitchd_restart': 100,      # br-int comes back empty until the controller reprograms it
    'ovsdb_restart': 0,
    'root_ovs_restart': 150,      # every physical switch comes back empty: reprogrammed at once
    'root_ovs_sessions': 0,       # (only if the full restart is refused: sessions cut instead)
    'root_ovsdb_restart': 0,      # the physical switches' config is re-read, their flows untouched
    'lone_physical_session': 0,   # one physical switch's session cut: nobody reroutes around it
    'ovsdb_cut': 0,
    'mgmt_down_10s': 0,
}
RESULTS: dict[str, dict] = {}
FLOWMOD = re.compile(r'switch ([0-9a-f]{16}): \+(\d+) -(\d+) flows')


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp('restarts')
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(FABRIC), ofp_port=port, tenants=TENANTS)
    try:
        r = ctl.dvsctl('apply', *TENANTS)
        assert r.returncode == 0, r.stderr
        lab.up(timeout=60)
        wait_until(lambda: lab.ping(SRC, DST), 60, what='%s reaches %s' % (SRC, DST))
        wait_until(lambda: 'programming from the whole picture' in ctl.text(), 30, what='the whole picture')
        yield lab, ctl, work
    finally:
        lab.down()
        ctl.stop()
        if RESULTS:
            print('\nrestarts: ' + json.dumps(RESULTS, indent=1))
            out = os.environ.get('OPENDVS_RESTARTS_JSON')
            if out:
                with open(out, 'a') as f:
                    f.write(json.dumps(RESULTS) + '\n')


class Ping:
    """ping -i 0.01 from SRC to DST, its replies read as they come (line-buffered to a file)."""

    def __init__(self, lab, work, name):
        self.path = work / ('ping-%s.txt' % name)
        self.out = open(self.path, 'w')
        self.proc = lab.popen(SRC, ['stdbuf', '-oL', 'ping', '-n', '-i', str(1 / PPS), '-W', '1',
                                    lab.vms[DST].ip], stdout=self.out, stderr=subprocess.STDOUT)

    def replies(self) -> set[int]:
        return answered(self.path.read_text())

    def last(self) -> int:
        return max(self.replies(), default=0)

    def wait_fresh(self, n=PPS, timeout=60, what='replies'):
        """Wait for n more replies past the highest icmp_seq answered now (1 s at 100 pps)."""
        start = self.last()
        wait_until(lambda: self.last() >= start + n, timeout, 0.05, what='%d fresh %s' % (n, what))

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        self.out.close()
        got = self.replies()
        first, last = min(got), max(got)
        lost = sorted(set(range(first, last + 1)) - got)
        runs, run, prev = [], 0, None
        for s in lost:
            run = run + 1 if prev == s - 1 else 1
            prev = s
            runs.append(run)
        return {'replies': len(got), 'lost': len(lost), 'longest_outage_ms': max(runs, default=0) * 1000 // PPS}


def physical_flows(lab) -> dict[tuple, float]:
    """(switch, flow without its counters) -> age in s, for every programmed (non-learned)
    flow of every physical switch: a flow that was deleted and re-added is younger."""
    out = {}
    for sw in PHYSICAL:
        for line in lab.ofctl(sw, 'dump-flows').splitlines():
            m = re.search(r'duration=([\d.]+)s', line)
            if not m or 'idle_timeout' in line:
                continue
            key = re.sub(r'\s*(duration|n_packets|n_bytes|idle_age|hard_age)=[^ ,]*,?', '', line).strip()
            out[(sw, key)] = float(m.group(1))
    return out


def names(lab) -> dict[str, str]:
    d = lab.describe()
    out = {v['dpid']: k for k, v in d['switches'].items()}
    out.update({v['dpid']: k for k, v in d['hypervisors'].items()})
    return {'%016x' % int(k, 16): v for k, v in out.items()}


def flow_mods(lab, log) -> list[tuple[str, int, int]]:
    """(switch, added, deleted) of every "+A -D flows" line of a stretch of the controller log."""
    n = names(lab)
    return [(n.get(d, d), int(a), int(x)) for d, a, x in FLOWMOD.findall(log)]


def ovsdb_reads(ctl, hv) -> int:
    return len(re.findall(r'\b%s: OVSDB \S+ read: \d+ bound' % hv, ctl.text()))


def hv_sessions(lab, ctl, hv) -> int:
    return ctl.text().count('hypervisor %s (' % hv)


def shown(ctl, name) -> dict:
    r = ctl.dvsctl('show', 'switches', '--json')
    rows = {s['name']: s for s in json.loads(r.stdout)} if r.returncode == 0 else {}
    return rows.get(name, {})


def converged(ctl, name) -> bool:
    s = shown(ctl, name)
    return bool(s.get('connected')) and not s.get('settling')


def run_case(env, name, event, recovered):
    """Ping, then event(), then wait for recovered() and 1 s of fresh replies; returns the
    result (also in RESULTS) with the flow changes the controller logged after the event."""
    lab, ctl, work = env
    wait_until(lambda: lab.ping(SRC, DST), 60, what='%s reaches %s before %s' % (SRC, DST, name))
    flows_before = physical_flows(lab)
    ping = Ping(lab, work, name)
    try:
        ping.wait_fresh(PPS // 2, what='replies before %s' % name)
        mark = len(ctl.text())
        extra = event() or {}
        recovered()
        ping.wait_fresh(PPS, what='replies after %s' % name)
    finally:
        res = ping.stop() if ping.proc.poll() is None else {}
    log = ctl.text()[mark:]
    mods = flow_mods(lab, log)
    flows_after = physical_flows(lab)
    res.update(extra, case=name, flow_mods=['%s +%d -%d' % m for m in mods],
               deleted=sum(x for *_, x in mods), added=sum(a for _, a, _ in mods),
               physical_flows_replaced=sum(1 for k, age in flows_before.items()
                                           if k not in flows_after or flows_after[k] < age),
               physical_flows=len(flows_before))
    RESULTS[name] = res
    print(name, json.dumps(res))
    assert lab.ping(SRC, DST)
    return res, log


def no_flush(res):
    """Nothing that was right was deleted: no flow delete in any "+A -D" line."""
    assert res['deleted'] == 0, res['flow_mods']


# ---- 1. one hypervisor's ovs-vswitchd -------------------------------------------------------

def test_hypervisor_vswitchd_restart(env):
    lab, ctl, _ = env
    port_before, ctl_target = lab.vm_ofport(SRC), lab.vsctl(HV, 'get-controller', 'br-int').strip()
    sessions, reads = hv_sessions(lab, ctl, HV), ovsdb_reads(ctl, HV)
    pids = {}

    def event():
        pids['new'] = lab.restart_daemon(HV, 'ovs-vswitchd')

    def recovered():
        wait_until(lambda: hv_sessions(lab, ctl, HV) > sessions, 30, what='%s back on the controller' % HV)
        wait_until(lambda: converged(ctl, HV), 30, what='%s reprogrammed' % HV)

    res, log = run_case(env, 'vswitchd_restart', event, recovered)
    # it came back with its OVSDB config: same controller, same VM port, its flows back
    assert lab.vsctl(HV, 'get-controller', 'br-int').strip() == ctl_target
    assert lab.vm_ofport(SRC) == port_before
    assert 'in_port=%d' % port_before in lab.ofctl(HV, 'dump-flows', 'table=0')
    assert ovsdb_reads(ctl, HV) > reads                          # bindings read again
    # the physical switches kept every flow toward hv1's VMs (none deleted, none replaced)
    assert res['physical_flows_replaced'] == 0, res
    assert not [m for m in res['flow_mods'] if not m.startswith(HV + ' ')], res['flow_mods']
    no_flush(res)                                                 # hv1 came back empty: only adds
    assert res['lost'] <= LOSS_BOUND['vswitchd_restart'], res


# ---- 2. its ovsdb-server -------------------------------------------------------------------------

def test_hypervisor_ovsdb_server_restart(env):
    lab, ctl, _ = env
    reads = ovsdb_reads(ctl, HV)

    def event():
        lab.restart_daemon(HV, 'ovsdb-server')

    def recovered():
        wait_until(lambda: ovsdb_reads(ctl, HV) > reads, 30, what='the controller reads %s OVSDB again' % HV)

    res, _ = run_case(env, 'ovsdb_restart', event, recovered)
    assert res['flow_mods'] == [] and res['physical_flows_replaced'] == 0, res
    assert res['lost'] <= LOSS_BOUND['ovsdb_restart'], res


# ---- 3. the root OVS: every physical switch ------------------------------------------------------

def test_root_ovs_restart(env):
    """The root ovs-vswitchd restarted as scripts/setup.sh starts it -- only when that is safe
    (mininet_topos/rootovs.py: under the lab lock, started exactly that way, no bridge but
    ours).  Otherwise each physical switch's controller session is cut and restored instead,
    and the result says why."""
    lab, ctl, _ = env
    mine = set(lab.plan.bridges()) & rootovs.bridges()
    try:
        if os.environ.get('OPENDVS_NO_ROOT_RESTART'):      # to exercise the fallback on purpose
            raise rootovs.RootRestartRefused('OPENDVS_NO_ROOT_RESTART is set')
        rootovs.check(mine)
        refused = None
    except rootovs.RootRestartRefused as e:
        refused = str(e)
    name = 'root_ovs_restart' if refused is None else 'root_ovs_sessions'
    sessions = ctl.text().count('physical ')

    def restart():
        pid = rootovs.restart_vswitchd(mine)
        return {'root_vswitchd_pid': pid}

    def cut_sessions():
        # the root OVS's own sockets to this lab's controller port, aborted (RST), as a crash
        # would close them; del-controller would not do: OVS flushes a bridge's flows then
        before = lab._physical_sessions()
        subprocess.run(['ss', '-K', '-tn', 'state', 'established', '( dport = :%d )' % lab.ofp_port],
                       check=True, capture_output=True)
        return {'full_restart_refused': refused, 'sessions_cut': before}

    def recovered():
        wait_until(lambda: ctl.text().count('physical ') >= sessions + len(PHYSICAL), 60,
                   what='every physical switch back on the controller')
        wait_until(lambda: all(converged(ctl, sw) for sw in PHYSICAL), 60, what='physical switches reprogrammed')

    res, _ = run_case(env, name, restart if refused is None else cut_sessions, recovered)
    if refused is None:
        assert rootovs.bridges() >= mine and lab.vsctl('spine1', 'show')       # ovs-vsctl answers, all back
    else:
        assert res['sessions_cut'] == len(PHYSICAL), res
    # full restart: every switch came back empty, so only adds; sessions cut: nothing to change
    no_flush(res)
    assert res['lost'] <= LOSS_BOUND[name], res


def test_root_ovsdb_server_restart(env):
    """The root ovsdb-server (the physical switches' configuration) restarted as
    scripts/setup.sh starts it, under the same conditions as the root vswitchd restart."""
    lab, ctl, _ = env
    mine = set(lab.plan.bridges()) & rootovs.bridges()
    try:
        rootovs.check_ovsdb(mine)
    except rootovs.RootRestartRefused as e:
        pytest.skip('the root ovsdb-server may not be restarted here: %s' % e)
    pids = {}

    def event():
        pids['old'] = osutil.read_pidfile(rootovs.OVSDB_PIDFILE)
        pids['new'] = rootovs.restart_ovsdb(mine)
        return {'root_ovsdb_pid': pids['new']}

    res, _ = run_case(env, 'root_ovsdb_restart', event, lambda: None)
    assert pids['new'] != pids['old'] and osutil.alive(pids['new'])
    assert rootovs.bridges() >= mine
    assert res['flow_mods'] == [] and res['physical_flows_replaced'] == 0, res
    assert res['lost'] <= LOSS_BOUND['root_ovsdb_restart'], res


def test_one_physical_switch_session_cut_reroutes_nobody(env):
    """One physical switch's OpenFlow session aborted (RST, as a crash or a management network
    hiccup would end it): it goes on forwarding with its flows, so the controller keeps it and
    its cables in the topology and no neighbour changes a flow; it comes back and is kept."""
    lab, ctl, _ = env
    conns = subprocess.run(['ss', '-Htn', 'state', 'established', '( dport = :%d )' % lab.ofp_port],
                           capture_output=True, text=True, check=True).stdout.split()
    local = [a for a in conns if a.count(':') == 1 and not a.endswith(':%d' % lab.ofp_port)]
    assert len(local) == len(PHYSICAL), conns                   # the root namespace: physical switches only
    sport = local[0].rsplit(':', 1)[1]
    cut = {}

    def event():
        mark = len(ctl.text())
        subprocess.run(['ss', '-K', '-tn', 'state', 'established',
                        '( dport = :%d and sport = :%s )' % (lab.ofp_port, sport)], check=True, capture_output=True)
        wait_until(lambda: 'disconnected: kept' in ctl.text()[mark:], 10, what='the controller sees the cut')
        dpid = re.search(r'switch ([0-9a-f]{16}) disconnected: kept', ctl.text()[mark:]).group(1)
        cut['name'] = names(lab)[dpid]
        return {'switch': cut['name']}

    def recovered():
        wait_until(lambda: converged(ctl, cut['name']), 30, what='%s back and settled' % cut.get('name'))

    res, log = run_case(env, 'lone_physical_session', event, recovered)
    assert res['flow_mods'] == [] and res['physical_flows_replaced'] == 0, res
    assert 'forgotten' not in log and 'flood tree' not in log, log
    assert res['lost'] <= LOSS_BOUND['lone_physical_session'], res


# ---- 4. the controller's OVSDB sessions ----------------------------------------------------------

def ovsdb_sessions(lab, hv) -> int:
    out = lab.exec(hv, ['ss', '-tnH', 'state', 'established', '( sport = :6640 )'])[1]
    return len([line for line in out.splitlines() if line.strip()])


def test_controller_ovsdb_sessions_cut_for_10s(env):
    """Every hypervisor's OVSDB listener (the controller's only way in) removed for 10 s,
    which closes the established sessions, then added back."""
    lab, ctl, _ = env
    reads = {hv: ovsdb_reads(ctl, hv) for hv in HYPERVISORS}
    remote = {hv: 'ptcp:6640:%s' % lab.mgmt_ip(hv) for hv in HYPERVISORS}
    seen = {}

    def appctl(hv, cmd):
        lab.exec(hv, ['ovs-appctl', '-t', '%s/ovsdb-server.ctl' % lab.describe()['hypervisors'][hv]['rundir'],
                      'ovsdb-server/%s' % cmd, remote[hv]])

    def event():
        seen['before'] = sum(ovsdb_sessions(lab, hv) for hv in HYPERVISORS)
        try:
            for hv in HYPERVISORS:
                appctl(hv, 'remove-remote')
            wait_until(lambda: sum(ovsdb_sessions(lab, hv) for hv in HYPERVISORS) == 0, 10, what='sessions cut')
            seen['during'] = 0
            time.sleep(10)                                # the cut itself lasts 10 s
        finally:
            for hv in HYPERVISORS:
                appctl(hv, 'add-remote')
        return {'ovsdb_sessions': dict(seen)}

    def recovered():
        wait_until(lambda: all(ovsdb_reads(ctl, hv) > reads[hv] for hv in HYPERVISORS), 30,
                   what='the controller reads every OVSDB again')

    res, _ = run_case(env, 'ovsdb_cut', event, recovered)
    assert seen['before'] >= len(HYPERVISORS)
    assert res['flow_mods'] == [] and res['physical_flows_replaced'] == 0, res
    assert res['lost'] <= LOSS_BOUND['ovsdb_cut'], res


# ---- 5. the management link ----------------------------------------------------------------------

def hv_flows(lab) -> set[str]:
    return {line.strip() for line in lab.ofctl(HV, 'dump-flows', '--no-stats').splitlines()
            if 'idle_timeout' not in line}


def test_management_link_down_10s(env):
    lab, ctl, _ = env
    sessions, reads = hv_sessions(lab, ctl, HV), ovsdb_reads(ctl, HV)
    flows_hv = hv_flows(lab)

    def event():
        lab.exec(HV, ['ip', 'link', 'set', 'mgmt0', 'down'])
        try:
            time.sleep(10)                                # the outage itself lasts 10 s
        finally:
            lab.exec(HV, ['ip', 'link', 'set', 'mgmt0', 'up'])

    def recovered():
        wait_until(lambda: hv_sessions(lab, ctl, HV) > sessions, 60, what='%s reconnects' % HV)
        wait_until(lambda: converged(ctl, HV), 30, what='%s resynced' % HV)
        wait_until(lambda: ovsdb_reads(ctl, HV) > reads, 30, what='%s OVSDB read again' % HV)

    res, _ = run_case(env, 'mgmt_down_10s', event, recovered)
    assert res['flow_mods'] == [], res                   # the controller found nothing to change
    assert res['physical_flows_replaced'] == 0, res
    assert hv_flows(lab) == flows_hv                     # hv1 kept its flows throughout
    assert res['lost'] <= LOSS_BOUND['mgmt_down_10s'], res
