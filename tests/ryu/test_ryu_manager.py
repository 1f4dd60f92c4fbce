"""opendvs under ryu-manager (ryu 4.34), as a Ryu user runs it:

    OPENDVS_FABRIC=fabric.yaml OPENDVS_STATE_DIR=DIR OPENDVS_API=127.0.0.1:8080 \\
        ryu-manager --ofp-tcp-listen-port 6653 controller.ofp

The lab comes up against it, dvsctl pushes the example tenants through its API, a port-group
and an overlay network carry traffic while other tenants' and networks' never arrive, and a
kill -9 and restart of ryu-manager loses no ping."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mininet_topos import Lab
from tests.support import ROOT, ControllerProcess, counted, free_port, ping_counts, wait_until

FABRIC = ROOT / 'examples' / 'fabric.yaml'
TENANTS = sorted(str(p) for p in (ROOT / 'examples' / 'tenants').glob('*.yaml'))   # acme, globex, initech
SWITCHES = 8                                           # 4 physical + 4 hypervisors' br-int
PORT_GROUP = ('web1', 'web2')                          # acme/users, VLAN 10, hv1 (leaf1) - hv3 (leaf2)
OVERLAY = ('ov1', 'ov2')                               # initech/apps, VNI 5020, hv1 - hv3


class RyuManager(ControllerProcess):
    """The same controller, loaded by ryu-manager and configured through the environment."""

    def argv(self) -> list[str]:
        host, port = self.ofp.rsplit(':', 1)
        self.env.update(OPENDVS_FABRIC=self.fabric, OPENDVS_STATE_DIR=str(self.state_dir),
                        OPENDVS_API='127.0.0.1:%d' % self.api_port)
        return [str(Path(sys.executable).parent / 'ryu-manager'), '--ofp-listen-host', host,
                '--ofp-tcp-listen-port', port, 'controller.ofp']


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp('ryu')
    port = free_port()
    ctl = RyuManager(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(FABRIC), ofp_port=port, tenants=TENANTS)
    try:
        assert 'instantiating app controller.ofp of OpenDVSApp' in ctl.text()
        r = ctl.dvsctl('apply', *TENANTS)
        assert r.returncode == 0, r.stdout + r.stderr + ctl.text()
        lab.up(timeout=60)
        ctl.wait_connected(SWITCHES)
        for a, b in (PORT_GROUP, OVERLAY):
            wait_until(lambda: reaches(lab, a, b), 30, what='%s reaches %s' % (a, b))
        yield lab, ctl
    finally:
        lab.down()
        ctl.stop()


def reaches(lab, a, b) -> bool:
    """a gets an answer from the VM b itself: tenants reuse addresses, so a reply to b's IP
    counts only if it came from b's MAC."""
    ip = lab.vms[b].ip
    if not lab.ping(a, ip, timeout=1):
        return False
    out = lab.exec(a, 'ip neigh show %s' % ip)[1].split()
    return 'lladdr' in out and out[out.index('lladdr') + 1] == lab.vms[b].mac


def test_ryu_runs_the_apps_and_serves_the_api(env):
    lab, ctl = env
    assert 'ryu' in ctl.argv()[0] and 'controller.ofp' in ctl.argv()
    rows = json.loads(ctl.dvsctl('show', 'tenants', '--json').stdout)
    assert sorted(t['name'] for t in rows) == ['acme', 'globex', 'initech']
    switches = json.loads(ctl.dvsctl('show', 'switches', '--json').stdout)
    assert len(switches) == SWITCHES and all(s['connected'] and s['flows'] for s in switches)
    assert 'Traceback' not in ctl.text()
    # /metrics too, without a token
    text = urllib.request.urlopen('http://127.0.0.1:%d/metrics' % ctl.api_port, timeout=10).read().decode()
    assert 'opendvs_switches_connected{kind="hypervisor"} 4.0' in text
    assert 'opendvs_switches_connected{kind="physical"} 4.0' in text


def test_reachability_matrix_port_group_and_overlay(env):
    lab, _ = env
    must = [PORT_GROUP, PORT_GROUP[::-1], OVERLAY, OVERLAY[::-1], ('app1', 'app2'), ('db1', 'db2')]
    # globex's app2 and data2 have the very addresses of acme's web2 and db2: answers come from
    # the own tenant's VM only; other networks of a tenant are not reached either
    must_not = [('web1', 'app2'), ('app1', 'web2'), ('db1', 'data2'), ('web1', 'db2'), ('ov2', 'db1')]
    for a, b in must:
        assert reaches(lab, a, b), '%s must reach %s' % (a, b)
    for a, b in must_not:
        assert not reaches(lab, a, b), '%s must NOT reach %s' % (a, b)


@pytest.mark.parametrize('src,dst,subnet', [('ov1', 'web1', '10.10.0.99/24'), ('web1', 'ov2', '10.50.0.99/24')])
def test_overlay_and_port_groups_never_meet(env, src, dst, subnet):
    """Even with an address in the other network's subnet, a VM gets nothing across."""
    lab, _ = env
    dev = 'eth0'
    assert lab.exec(src, 'ip addr add %s dev %s' % (subnet, dev))[0] == 0
    try:
        assert not lab.ping(src, lab.vms[dst].ip, count=3, timeout=1)
        for other in ('app1', 'app2') if dst == 'web1' else ('ov1',):
            assert not lab.ping(src, lab.vms[other].ip, timeout=0.5)
    finally:
        lab.exec(src, 'ip addr del %s dev %s' % (subnet, dev))


def test_kill9_and_restart_of_ryu_manager_loses_no_ping(env):
    lab, ctl = env
    pingers = [lab.popen(a, ['ping', *counted(100, 0.1), lab.vms[b].ip],
                         stdout=subprocess.PIPE, text=True) for a, b in (PORT_GROUP, OVERLAY)]
    try:
        time.sleep(1)                  # the pings are flowing when the controller dies
        ctl.kill9()
        ctl.start()
        ctl.wait_connected(SWITCHES)
        outs = [p.communicate(timeout=60)[0] for p in pingers]
    finally:
        for p in pingers:
            if p.poll() is None:
                p.kill()
    for (a, b), out in zip((PORT_GROUP, OVERLAY), outs):
        sent, got = ping_counts(out)
        assert sent == got == 100, '%s -> %s lost %d pings across the restart:\n%s' % (a, b, sent - got, out)
    # and the restarted ryu-manager serves the same policy
    rows = json.loads(ctl.dvsctl('show', 'tenants', '--json').stdout)
    assert sorted(t['name'] for t in rows) == ['acme', 'globex', 'initech']
    assert all(reaches(lab, a, b) for a, b in itertools.permutations(PORT_GROUP))
