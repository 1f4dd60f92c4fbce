"""The routed underlay: each leaf is its rack's gateway and VTEP addresses are routed between
racks over the spines (ECMP), so a hypervisor needs nothing but a default route."""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from apps.underlay_routing import ROUTER_MAC
from mininet_topos import Lab
from controller.pipeline.tables import table_id
from tests.support import ROOT, ControllerProcess, answered, counted, dump_flows, free_port, wait_until

FABRIC = ROOT / 'examples' / 'fabric.yaml'


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp('underlay')
    port = free_port()
    ctl = ControllerProcess(FABRIC, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(FABRIC), ofp_port=port, vms_per_hypervisor=0)
    try:
        lab.up(timeout=60)
        wait_until(lambda: vtep_ping(lab, 'hv1', 'hv3'), 30, what='hv1 VTEP reaches hv3 VTEP')
        yield lab, ctl
    finally:
        lab.down()
        ctl.stop()


def vtep(lab, hv) -> str:
    return str(lab.fabric.hypervisors[hv].vtep)


def vtep_ping(lab, src, dst, count=1):
    rc, out = lab.exec(src, 'ping -c%d -W1 %s' % (count, dst if '.' in dst else vtep(lab, dst)))
    ttls = [int(t) for t in re.findall(r'ttl=(\d+)', out)]
    return ttls if rc == 0 else None


def test_vteps_in_other_racks_are_routed_through_leaf_spine_leaf(env):
    lab, _ = env
    for src, dst in (('hv1', 'hv3'), ('hv2', 'hv4'), ('hv4', 'hv1'), ('hv3', 'hv2')):
        ttls = vtep_ping(lab, src, dst, count=2)
        assert ttls and set(ttls) == {61}, (src, dst, ttls)    # 3 routers decremented the TTL
    # the default route is all a hypervisor has, and its gateway is the fabric's router MAC
    rc, out = lab.exec('hv1', 'ip route')
    assert [l for l in out.splitlines() if not l.startswith(('169.254.', '172.16.1.0/24'))] == \
        ['default via 172.16.1.1 dev br-phy ']
    assert ROUTER_MAC in lab.exec('hv1', 'ip neigh show 172.16.1.1')[1]


def test_vteps_in_the_same_rack_are_bridged_and_unknown_ones_unreachable(env):
    lab, _ = env
    assert set(vtep_ping(lab, 'hv1', 'hv2', count=2)) == {64}
    assert vtep_ping(lab, 'hv1', '172.16.2.99') is None
    assert vtep_ping(lab, 'hv1', '172.16.9.9') is None        # no rack has it: no route


def ecmp_routes(lab, leaf):
    """The equal-cost next hops a leaf holds (its ecmp table without the miss flow)."""
    return [f for f in dump_flows(lab.bridge(leaf), 'table=%d' % table_id('ecmp')) if f['priority']]


def test_each_leaf_spreads_other_racks_over_both_spines(env):
    lab, _ = env
    for leaf in ('leaf1', 'leaf2'):
        ecmp = ecmp_routes(lab, leaf)
        assert len(ecmp) == 2 and len({f['actions'] for f in ecmp}) == 2, ecmp


def test_a_spine_cable_cut_keeps_the_racks_connected(env):
    lab, _ = env
    pinger = lab.popen('hv1', ['ping', *counted(100, 0.1), vtep(lab, 'hv3')],
                       stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        lab.set_link('spine1', 'leaf1', up=False)
        out, _ = pinger.communicate(timeout=60)
        assert set(range(71, 101)) <= answered(out), out
        assert len(ecmp_routes(lab, 'leaf1')) == 0    # one way left: no hashing
    finally:
        if pinger.poll() is None:
            pinger.kill()
        lab.set_link('spine1', 'leaf1', up=True)
    wait_until(lambda: len(ecmp_routes(lab, 'leaf1')) == 2, 30, what='ECMP back over both spines')
    assert vtep_ping(lab, 'hv2', 'hv4')
