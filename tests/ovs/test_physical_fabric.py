"""The learning switch on a real OVS spine/leaf mesh (no Mininet): loop-free flooding,
per-VLAN learning judged by ofproto/trace, MAC limit, ageing, link cut, restart."""
from __future__ import annotations

import re
import sys

import pytest

from tests.ovs.scratch import ScratchFabric
from controller.pipeline.tables import table_id
from tests.support import ROOT, ControllerProcess, dump_flows, free_port, wait_until

TOOLS = ROOT / 'tests' / 'tools'

H1_MAC, H2_MAC = '02:00:00:99:00:01', '02:00:00:99:00:02'


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp('physical')
    port = free_port()
    with ScratchFabric(work, port, mac_age=10, max_macs=4, violation='restrict') as fab:
        ctl = ControllerProcess(fab.fabric, work).start()
        try:
            wait_until(lambda: fab.ping('h1', '10.99.0.2'), 30, what='h1 -> h2 ping')
            yield fab, ctl
        finally:
            ctl.stop()


def datapath_actions(trace: str) -> str:
    return re.search(r'Datapath actions: (.*)', trace).group(1)


def outputs(trace: str) -> list[str]:
    """The datapath ports a traced packet leaves by (top-level numeric actions)."""
    acts = re.sub(r'\([^()]*\)', '', datapath_actions(trace))
    return [a for a in acts.split(',') if a.strip().isdigit()]


def test_hosts_on_different_leaves_reach_each_other_and_nobody_else(lab):
    fab, _ = lab
    assert fab.ping('h1', '10.99.0.2', count=3)
    assert fab.ping('h2', '10.99.0.1', count=3)
    assert not fab.ping('h1', '10.99.0.77', wait=0.5)


def test_flooding_is_loop_free(lab):
    fab, _ = lab
    before = sum(f['n_packets'] for sw in ('spine1', 'spine2', 'leaf1', 'leaf2')
                 for f in dump_flows(fab.br(sw), 'table=%d' % table_id('flood')))
    fab.exec('h1', 'arping -c 3 -w 2 -I eth0 10.99.0.2')
    fab.exec('h1', 'ping -c 3 -i 0.2 -b 10.99.0.255')
    after = sum(f['n_packets'] for sw in ('spine1', 'spine2', 'leaf1', 'leaf2')
                for f in dump_flows(fab.br(sw), 'table=%d' % table_id('flood')))
    # 6 broadcasts cross at most 4 switches each (plus replies' floods); a loop would be thousands
    assert after - before < 100, 'broadcast storm: %d flooded packets' % (after - before)


def test_one_fabric_link_is_blocked_for_flooding(lab):
    fab, _ = lab
    # 4 links between 4 switches: the tree uses 3; exactly one link admits nothing
    admitted = set()
    for sw in ('spine1', 'spine2', 'leaf1', 'leaf2'):
        for f in dump_flows(fab.br(sw), 'table=0,cookie=0x0100000000000000/0xff00000000000000'):
            m = re.search(r'in_port=(\d+)', f['match'])
            if m:
                admitted.add((sw, int(m.group(1))))
    fabric_ends = {(a, fab.ofport(fab.link_name(a, b))) for a, b in
                   [(x, y) for x, y in (('spine1', 'leaf1'), ('spine1', 'leaf2'), ('spine2', 'leaf1'),
                                        ('spine2', 'leaf2'))]}
    fabric_ends |= {(b, fab.ofport(fab.link_name(b, a))) for a, b in
                    (('spine1', 'leaf1'), ('spine1', 'leaf2'), ('spine2', 'leaf1'), ('spine2', 'leaf2'))}
    assert len(fabric_ends - admitted) == 2        # both ends of the one blocked link


def test_vlans_are_learned_and_flooded_separately(lab, tmp_path):
    fab, ctl = lab
    fab.ping('h1', '10.99.0.2')
    h1_port = fab.ofport(fab.p + 'h1')
    spine_port = fab.ofport(fab.link_name('leaf1', 'spine1'))
    # untagged (native VLAN 1) to h2's MAC: learned, one way out
    native = outputs(fab.trace('leaf1', 'in_port=%d,dl_src=%s,dl_dst=%s' % (h1_port, H1_MAC, H2_MAC)))
    assert len(native) == 1, native
    # an edge port (a host, not a hypervisor trunk) takes untagged frames only
    assert datapath_actions(fab.trace('leaf1', 'in_port=%d,dl_vlan=20,dl_src=%s,dl_dst=%s' % (
        h1_port, H1_MAC, H2_MAC))) == 'drop'
    # put VLAN 20 in use: the fabric cables now carry it, tagged
    tenant = tmp_path / 'acme.yaml'
    tenant.write_text('tenant: acme\nnetworks:\n  servers: {vlan: 20, subnet: 10.20.0.0/24}\n')
    r = ctl.dvsctl('apply', str(tenant))
    assert r.returncode == 0, r.stderr
    # h1's MAC arriving on VLAN 20 from the spine is unknown on VLAN 20: flooded on VLAN 20
    # only, so never to h1's native-only port although h1's MAC is learned there on VLAN 1
    v20 = fab.trace('leaf1', 'in_port=%d,dl_vlan=20,dl_src=%s,dl_dst=%s' % (spine_port, H2_MAC, H1_MAC))
    assert 'output:%d' % h1_port not in v20, v20
    v1 = fab.trace('leaf1', 'in_port=%d,dl_vlan=1,dl_src=%s,dl_dst=%s' % (spine_port, H2_MAC, H1_MAC))
    assert 'output:%d' % h1_port in v1 and len(outputs(v1)) == 1, v1
    # a VLAN nobody uses is dropped at the door, even on a fabric cable
    assert datapath_actions(fab.trace('leaf1', 'in_port=%d,dl_vlan=99,dl_src=%s,dl_dst=%s' % (
        spine_port, H2_MAC, H1_MAC))) == 'drop'
    assert ctl.dvsctl('delete', 'acme').returncode == 0


def _send_frames(fab, host: str, srcs: list[str]) -> None:
    fab.exec(host, '%s %s eth0 %s' % (sys.executable, TOOLS / 'send_frames.py', ' '.join(srcs)), check=True)


def test_per_port_mac_limit_refuses_new_sources(lab):
    fab, _ = lab
    h1_port = fab.ofport(fab.p + 'h1')
    srcs = ['02:00:00:aa:00:%02x' % i for i in range(10)]
    _send_frames(fab, 'h1', srcs)

    def learned():
        flows = dump_flows(fab.br('leaf1'), 'table=%d,in_port=%d' % (table_id('learn'), h1_port))
        return [f for f in flows if 'goto_table' in f['actions']], [f for f in flows if f['actions'] == 'drop']
    ok, refused = wait_until(lambda: (lambda l, r: (l, r) if len(l) + len(r) >= 10 else None)(*learned()),
                             10, what='10 sources handled')
    assert len(ok) == 4, 'max_macs_per_port is 4: %s' % ok
    assert len(refused) >= 6


def test_learned_macs_age_out(lab):
    fab, _ = lab
    mac = '02:00:00:bb:00:01'
    _send_frames(fab, 'h2', [mac])
    wait_until(lambda: [f for f in dump_flows(fab.br('leaf2'), 'table=%d' % table_id('l2_lookup')) if mac in f['match']], 10,
               what='destination entry for %s' % mac)
    # mac_age is 10 s: the source entry idles out, the switch tells us, the destination goes too
    wait_until(lambda: not [f for f in dump_flows(fab.br('leaf2')) if mac in f['match']], 40,
               interval=1, what='%s aged out of every table' % mac)
