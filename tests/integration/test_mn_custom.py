"""`mn --custom mininet_topos/topo.py --topo opendvs,...` works like any Mininet topo: pingall
over the VMs (each with its IP in Mininet's model) reaches exactly the VMs of the same tenant
network; a run that was killed leaves nothing the next run does not sweep; a bad argument ends
with its message, never in mn's machine-wide clean-up; and the machine is left as it was."""
from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess

import pytest
import yaml

from tests.support import ROOT, ControllerProcess, free_port, wait_until

FABRIC = ROOT / 'examples' / 'fabric.yaml'
TOPO = ROOT / 'mininet_topos' / 'topo.py'
# umbrella reuses acme's users subnet (other addresses, its own VLAN): ARP crosses no tenant
UMBRELLA = '''tenant: umbrella
networks:
  lan: {vlan: 30, subnet: 10.10.0.0/24}
workloads:
  u1: {hypervisor: hv2, nics: [{network: lan, mac: "02:00:5a:0a:00:1f", ip: 10.10.0.31}]}
  u2: {hypervisor: hv4, nics: [{network: lan, mac: "02:00:5a:0a:00:20", ip: 10.10.0.32}]}
'''
GLOBAL_CLEANUP = 'Caught exception. Cleaning up'        # mn's machine-wide clean-up begins


def machine(pattern='mn'):
    """What an mn run of the lab could leave: links and bridges named mn*, net namespaces,
    processes of Mininet nodes and of lab run dirs."""
    links = re.findall(r'^\d+: ([^:@]+)', subprocess.run(['ip', '-o', 'link'], capture_output=True,
                                                         text=True).stdout, re.M)
    bridges = subprocess.run(['ovs-vsctl', 'list-br'], capture_output=True, text=True).stdout.split()
    procs = set()
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            cmd = open('/proc/%s/cmdline' % pid, 'rb').read().replace(b'\0', b' ').decode()
        except OSError:
            continue
        if 'mininet:' in cmd or '/tmp/opendvs-lab-mn' in cmd:
            procs.add(pid)
    ns = set(subprocess.run(['lsns', '-t', 'net', '-n', '-o', 'NS'], capture_output=True, text=True).stdout.split())
    return {'links': {n for n in links if n.startswith(pattern)},
            'bridges': {b for b in bridges if b.startswith(pattern)}, 'procs': procs, 'netns': ns}


def assert_left_as_it_was(before):
    after = machine()
    # (a concurrent run elsewhere may only have removed things; nothing of ours may remain)
    assert after['links'] <= before['links'] and after['bridges'] <= before['bridges'], (before, after)
    assert after['procs'] <= before['procs'] and after['netns'] <= before['netns'], (before, after)


def mn(*topo_args, test='pingall'):
    argv = ['mn', '--custom', str(TOPO), '--topo', ','.join(['opendvs', 'fabric=%s' % FABRIC, *topo_args])]
    if test:
        argv += ['--test', test]
    return argv


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp('mn')
    (work / 'umbrella.yaml').write_text(UMBRELLA)
    tenants = [str(ROOT / 'examples' / 'tenants' / 'acme.yaml'), str(ROOT / 'examples' / 'tenants' / 'initech.yaml'),
               str(work / 'umbrella.yaml')]
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    try:
        r = ctl.dvsctl('apply', *tenants)
        assert r.returncode == 0, r.stderr
        yield ctl, port, tenants, machine()
    finally:
        ctl.stop()


def expected_pairs(tenants) -> dict:
    """(vm, vm) -> must reach: same tenant, and the same network or two networks with a
    gateway (routed by the anycast gateway).  The examples' VMs are named after their
    workloads, each in one network."""
    where, routed = {}, set()
    for path in tenants:
        doc = yaml.safe_load(open(path))
        routed |= {(doc['tenant'], n) for n, spec in doc['networks'].items() if spec.get('gateway')}
        for name, w in doc['workloads'].items():
            where[name] = (doc['tenant'], w['nics'][0]['network'])
    return {(a, b): where[a] == where[b] or (where[a][0] == where[b][0] and {where[a], where[b]} <= routed)
            for a, b in itertools.permutations(where, 2)}


def pingall_results(out) -> dict:
    """(src, dst) -> reached, from mn's `*** Ping: testing ping reachability` table: one line
    per host, its peers in host order, each the peer's name if it answered, else X."""
    table = out.split('*** Ping: testing ping reachability', 1)[1].split('*** Results', 1)[0]
    rows = [line.split('->') for line in table.strip().splitlines() if '->' in line]
    names = [src.strip() for src, _ in rows]
    got = {}
    for src, cells in rows:
        src, peers = src.strip(), [n for n in names if n != src.strip()]
        cells = cells.split()
        assert len(cells) == len(peers), (src, cells)
        for dst, cell in zip(peers, cells):
            got[(src, dst)] = cell == dst
    return got


def test_a_bad_argument_ends_with_its_message_not_in_mns_clean_up(env, tmp_path):
    ctl, port, _, before = env
    r = subprocess.run(mn('tenants=%s' % (tmp_path / 'missing.yaml'), 'ofp_port=%d' % port),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and 'missing.yaml' in r.stderr + r.stdout, r.stdout + r.stderr
    assert GLOBAL_CLEANUP not in r.stdout + r.stderr
    assert_left_as_it_was(before)


def test_a_killed_run_leaves_leftovers_that_the_next_run_sweeps_and_pingall(env):
    ctl, port, tenants, before = env
    # 1. a run killed while its CLI waits: its bridges, veths and hypervisors' OVS stay behind
    killed = subprocess.Popen(mn('tenants=%s' % ':'.join(tenants), 'ofp_port=%d' % port, test=None),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        seen = []
        for line in killed.stdout:                   # wait_until would block on the pipe here
            seen.append(line)
            if 'Starting CLI' in line:
                break
        text = ''.join(seen)
        prefix = re.search(r'opendvs: lab (mn[0-9a-f]{3}),', text).group(1)
        assert prefix and ('%smgmt' % prefix) in machine()['links'], text
    finally:
        killed.kill()
        killed.wait()
    left = machine()
    assert {'%smgmt' % prefix, '%sspine1' % prefix} <= left['links'] | left['bridges']

    # 2. the next run sweeps them first, builds under fresh names, and pingall is as the policy says
    r = subprocess.run(mn('tenants=%s' % ':'.join(tenants), 'ofp_port=%d' % port),
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and GLOBAL_CLEANUP not in out, out
    assert 'removed what an earlier run (%s) left' % prefix in out, out
    assert re.search(r'opendvs: lab (mn[0-9a-f]{3}),', out).group(1) != prefix
    got, want = pingall_results(out), expected_pairs(tenants)
    assert set(got) == set(want)
    wrong = sorted(k for k in want if got[k] != want[k])
    assert not wrong, 'pingall differs from the policy for %s:\n%s' % (wrong, out)
    assert sum(want.values()) == 16 and not all(want.values())    # both kinds were tested
    assert_left_as_it_was(before)


def test_ctrl_c_while_mn_waits_for_the_switches_removes_only_what_this_run_built(env):
    ctl, port, tenants, before = env
    p = subprocess.Popen(mn('tenants=%s' % ':'.join(tenants), 'ofp_port=%d' % port),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        seen = []
        for line in p.stdout:
            seen.append(line)
            if 'Waiting for switches to connect' in line:        # built: hypervisors' OVS running
                p.send_signal(signal.SIGINT)
                break
        out = ''.join(seen) + p.communicate(timeout=120)[0]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert 'Keyboard Interrupt' in out, out
    assert 'opendvs: removing what this run built' in out, out
    # none of Mininet's global clean-up ran (it starts with killing controllers by name)
    assert 'Removing excess controllers' not in out and 'Cleanup complete' not in out, out
    prefix = re.search(r'opendvs: lab (mn[0-9a-f]{3}),', out).group(1)
    assert not os.path.exists("/run/opendvs-mn/%s.json" % prefix)
    wait_until(lambda: machine()['netns'] <= before['netns'], 10, what='its namespaces gone')
    assert_left_as_it_was(before)
    assert ctl.proc.poll() is None                # the controller it ran against is untouched
