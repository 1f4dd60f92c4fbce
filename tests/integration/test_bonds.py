"""A dual-homed hypervisor: two cables to its leaf, one LACP bond on both ends.

Both members carry traffic; either one can be cut under a 100 pps ping and a TCP stream with
at most 3 pings lost and the stream alive; a member cut never touches the flood tree or the
learned MACs; LACP state and a partner that does not speak LACP show in `dvsctl show uplinks`
and in /metrics (the bond degraded while a member is cut, healthy again once it is back).
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from controller.pipeline import tables
from mininet_topos import Lab
from mininet_topos import osutil
from tests.support import ControllerProcess, counted, dump_flows, free_port, ping_counts, scrape, total, wait_until

FABRIC = '''\
controller: {{openflow: "tcp:127.0.0.1:{port}"}}
switches:
  spine1: {{dpid: 0x101}}
  leaf1:  {{dpid: 0x201, rack_subnet: 172.16.1.0/24}}
  leaf2:  {{dpid: 0x202, rack_subnet: 172.16.2.0/24}}
links: [[spine1, leaf1], [spine1, leaf2]]
hypervisors:
  hv1: {{leaf: leaf1, vtep: 172.16.1.11, trunk_vlans: [10], uplinks: 2}}
  hv2: {{leaf: leaf2, vtep: 172.16.2.11, trunk_vlans: [10]}}
  hv3: {{leaf: leaf1, vtep: 172.16.1.13, trunk_vlans: [10], uplinks: 2, bond: lacp}}
  hv4: {{leaf: leaf2, vtep: 172.16.2.14, trunk_vlans: [10], uplinks: 2, bond: active-backup}}
'''
LEARNED_SRC = 0x0101                      # cookie bits 63..48: learning_switch, learned source


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp('bonds')
    port = free_port()
    fabric = work / 'fabric.yaml'
    fabric.write_text(FABRIC.format(port=port))
    ctl = ControllerProcess(fabric, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(fabric), ofp_port=port, vms_per_hypervisor=1)
    try:
        lab.up(timeout=60)
        wait_until(lambda: all(lab.ping('hv2vm1', vm) for vm in ('hv1vm1', 'hv3vm1', 'hv4vm1')), 40,
                   what='VMs reach each other across the racks')
        wait_until(lambda: uplink(ctl, 'hv1')['status'] == 'ok', 20, what='hv1 bond ok')
        lab.popen('hv1vm1', ['iperf3', '-s', '-p', '5201'], stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
        yield lab, ctl
    finally:
        lab.down()
        ctl.stop()


def uplinks(ctl) -> dict:
    r = ctl.dvsctl('show', 'uplinks', '--json')
    assert r.returncode == 0, r.stderr
    return {row['hypervisor']: row for row in json.loads(r.stdout)}


def uplink(ctl, hv) -> dict:
    return uplinks(ctl)[hv]


BOND_GAUGES = ('members', 'members_up', 'members_enabled', 'lacp_negotiated', 'degraded')
HEALTHY = (2, 2, 2, 1, 0)


def bond_metrics(ctl, hv, want: dict, status: str, members=()):
    """Wait until a scrape of /metrics shows hv's bond ends as `want` {side: (members, up,
    enabled, LACP negotiated, degraded)} and the uplink `status`; members: (side, member, link
    up) to check too.  The scrape."""
    def got():
        m = scrape(ctl)
        ends = {side: tuple(total(m, 'opendvs_bond_' + g, hypervisor=hv, side=side) for g in BOND_GAUGES)
                for side in want}
        ok = ends == want and total(m, 'opendvs_uplink_status', hypervisor=hv, status=status) == 1 and all(
            total(m, 'opendvs_bond_member_up', hypervisor=hv, side=side, member=name) == up
            for side, name, up in members)
        return m if ok else None
    return wait_until(got, 10, what='/metrics: %s bond %r, %s' % (hv, want, status))


def member_counters(lab, hv) -> dict[int, tuple[int, int]]:
    """leaf port -> (rx, tx) packets of each of hv's uplink members, from the leaf's bridge."""
    out = {}
    for no in lab.leaf_ports(hv):
        text = lab.ofctl(lab.plan.hypervisors[hv].leaf, 'dump-ports', str(no))
        rx = int(re.search(r'rx pkts=(\d+)', text).group(1))
        tx = int(re.search(r'tx pkts=(\d+)', text).group(1))
        out[no] = (rx, tx)
    return out


def iperf(lab, streams, seconds, interval=None, rate=None):
    args = ['iperf3', '-c', lab.vms['hv1vm1'].ip, '-p', '5201', '-P', str(streams), '-t', str(seconds), '-J']
    if interval:
        args += ['-i', str(interval)]
    if rate:
        # a stream that does not fill the userspace datapath: at full speed the veths' af_packet
        # buffers overflow and ping loses packets to congestion, whatever the bond does
        args += ['-b', rate]
    return args


def spread_check(lab, rounds=1):
    """Several TCP streams both ways: every member's rx and tx counters move a lot.  After a
    member came back, the hypervisor's bond moves hash buckets onto it at its next rebalance
    (every second here), so that takes up to `rounds` runs."""
    moved = {}
    for _ in range(rounds):
        before = member_counters(lab, 'hv1')
        misses = learn_misses(lab)
        rc, out = lab.exec('hv2vm1', iperf(lab, 16, 3), timeout=30)
        assert rc == 0, out
        rc, out = lab.exec('hv2vm1', iperf(lab, 16, 3) + ['-R'], timeout=30)
        assert rc == 0, out
        after = member_counters(lab, 'hv1')
        moved = {no: (after[no][0] - before[no][0], after[no][1] - before[no][1]) for no in after}
        # frames from either member are one port's to the pipeline: known sources, no packet-in
        assert learn_misses(lab) - misses < 200, (learn_misses(lab) - misses, moved)
        if all(rx > 1000 and tx > 1000 for rx, tx in moved.values()):
            return moved
    raise AssertionError('traffic does not use every member: {leaf port: (rx, tx)} %r' % moved)


def learn_misses(lab) -> int:
    """Frames leaf1 copied to the controller as unknown sources (its learn table's miss flow)."""
    return sum(f['n_packets'] for f in dump_flows(lab.bridge('leaf1'), 'table=%d' % tables.table_id('learn'))
               if f['priority'] == 0)


def fabric_state(lab, ctl):
    """What a member flap must not change: the spine's flows (flood tree, MACs toward each
    leaf), the MACs leaf1 learned, and how often the controller computed a flood tree."""
    spine = {(f['table'], f['match'], f['actions']) for f in dump_flows(lab.bridge('spine1'))}
    learned = {re.search(r'dl_src=([0-9a-f:]+)', f['match']).group(1)
               for f in dump_flows(lab.bridge('leaf1')) if f['cookie'] >> 48 == LEARNED_SRC}
    return spine, learned, ctl.text().count('flood tree:')


def test_lldp_finds_the_bond_and_lacp_is_up_on_both_ends(env):
    lab, ctl = env
    row = uplink(ctl, 'hv1')
    assert (row['status'], row['uplinks'], row['bond'], row['problems']) == ('ok', 2, 'lacp', [])
    assert row['leaf_port'] == lab.leaf_port('hv1') and row['leaf_port_role'] == 'hypervisor'
    assert row['leaf_bond']['name'] == lab.leaf_bond('hv1') and row['leaf_bond']['lacp'] == 'active'
    assert {m['ofport'] for m in row['leaf_bond']['members']} == set(lab.leaf_ports('hv1'))
    assert [(m['name'], m['link'], m['lacp']) for m in row['hv_bond']['members']] == [
        ('phy0', 'up', 'current'), ('phy1', 'up', 'current')]
    assert row['hv_bond']['mode'] == 'balance-tcp'
    assert uplink(ctl, 'hv2')['status'] == 'single'
    # the core sees the bond as one hypervisor port; its second member is no port of its own
    sw = next(s for s in json.loads(ctl.dvsctl('show', 'switches', '--json').stdout) if s['name'] == 'leaf1')
    ports = {p['no']: p['role'] for p in sw['ports']}
    first, second = lab.leaf_ports('hv1')
    assert ports[first] == 'hypervisor' and second not in ports
    table = ctl.dvsctl('show', 'uplinks').stdout
    assert re.search(r'^hv1\s+leaf1\s+2\s+lacp\s+ok\s', table, re.M), table
    assert 'phy1:up/current' in table
    # OVS agrees: LACP negotiated on both ends
    assert 'lacp_status: negotiated' in lab.appctl('hv1', 'bond/show', 'bond0')
    assert 'lacp_status: negotiated' in lab.appctl('leaf1', 'bond/show', lab.leaf_bond('hv1'))


def test_several_tcp_streams_spread_over_both_members(env):
    lab, _ = env
    spread_check(lab)


@pytest.mark.parametrize('member', [0, 1])
def test_a_member_cut_loses_at_most_3_pings_and_no_tcp_stream(env, member):
    lab, ctl = env
    state = fabric_state(lab, ctl)
    pinger = lab.popen('hv2vm1', ['ping', '-n', *counted(600, 0.01), lab.vms['hv1vm1'].ip],
                       stdout=subprocess.PIPE, text=True)
    stream = lab.popen('hv2vm1', iperf(lab, 1, 6, interval=0.5, rate='50M'), stdout=subprocess.PIPE, text=True)
    try:
        base = sum(map(sum, member_counters(lab, 'hv1').values()))
        wait_until(lambda: sum(map(sum, member_counters(lab, 'hv1').values())) > base + 2000, 10,
                   what='ping and TCP flowing over the bond')
        lab.set_link('hv1', 'leaf1', up=False, member=member)
        ping_out, _ = pinger.communicate(timeout=30)
        iperf_out, _ = stream.communicate(timeout=30)
        sent, received = ping_counts(ping_out)
        assert received == 600 and sent - received <= 3, ping_out[-300:]
        assert stream.returncode == 0, iperf_out[-500:]
        intervals = [i['sum']['bits_per_second'] for i in json.loads(iperf_out)['intervals']]
        assert all(bps > 0 for bps in intervals[-6:]), intervals      # still flowing after the cut
        row = uplink(ctl, 'hv1')
        assert row['status'] == 'degraded', row
        assert any(p.startswith('link down: ') and 'phy%d' % member in p for p in row['problems']), row
        cut = list(zip(('leaf', 'hypervisor'), lab.uplink_members('hv1')[member]))
        bond_metrics(ctl, 'hv1', {'leaf': (2, 1, 1, 1, 1), 'hypervisor': (2, 1, 1, 1, 1)}, 'degraded',
                     [(side, name, 0) for side, name in cut])
        assert fabric_state(lab, ctl) == state                # no tree change, no MAC flushed
    finally:
        for p in (pinger, stream):
            if p.poll() is None:
                p.kill()
                p.communicate()
        lab.set_link('hv1', 'leaf1', up=True, member=member)
    wait_until(lambda: uplink(ctl, 'hv1')['status'] == 'ok', 20, what='both members back in the bond')
    bond_metrics(ctl, 'hv1', {'leaf': HEALTHY, 'hypervisor': HEALTHY}, 'ok', [(side, name, 1) for side, name in cut])
    assert fabric_state(lab, ctl) == state
    spread_check(lab, rounds=3)                               # restored: traffic spreads again


@pytest.mark.parametrize('end', ['leaf', 'hypervisor'])
def test_a_partner_without_lacp_is_reported_and_not_used(env, end):
    lab, ctl = env
    if end == 'leaf':
        def set_lacp(mode):
            osutil.run(['ovs-vsctl', 'set', 'port', lab.leaf_bond('hv3'), 'lacp=%s' % mode])
        silent = 'phy0, phy1'                     # the hypervisor's members hear no LACP
    else:
        def set_lacp(mode):
            lab.vsctl('hv3', 'set', 'port', 'bond0', 'lacp=%s' % mode)
        silent = ', '.join(m for m, _ in lab.uplink_members('hv3'))   # the leaf's members hear none
    assert uplink(ctl, 'hv3')['status'] == 'ok'
    set_lacp('off')                                # one end misconfigured: a static bond
    try:
        row = wait_until(lambda: (lambda r: r if r['status'] == 'no-lacp-partner' else None)(uplink(ctl, 'hv3')),
                         20, what='hv3 reported without an LACP partner')
        assert 'no LACP from the partner on %s' % silent in row['problems'], row
        assert any('lacp=off' in p for p in row['problems']), row
        m = scrape(ctl)                        # both ends degraded, neither negotiated
        for side in ('leaf', 'hypervisor'):
            assert total(m, 'opendvs_bond_degraded', hypervisor='hv3', side=side) == 1
            assert total(m, 'opendvs_bond_lacp_negotiated', hypervisor='hv3', side=side) == 0
        assert total(m, 'opendvs_uplink_status', hypervisor='hv3', status='no-lacp-partner') == 1
        assert not lab.ping('hv2vm1', 'hv3vm1', count=2)        # not silently used as two ports
        assert uplink(ctl, 'hv1')['status'] == 'ok'             # the other bond is not affected
        assert lab.ping('hv2vm1', 'hv1vm1')
    finally:
        set_lacp('active')
    wait_until(lambda: uplink(ctl, 'hv3')['status'] == 'ok', 20, what='hv3 bond renegotiated')
    wait_until(lambda: lab.ping('hv2vm1', 'hv3vm1'), 20, what='hv3 reachable again')


def test_an_active_backup_bond_without_lacp_fails_over_too(env):
    lab, ctl = env
    row = uplink(ctl, 'hv4')
    assert (row['status'], row['bond'], row['leaf_bond']['lacp'], row['hv_bond']['mode']) == (
        'ok', 'active-backup', 'off', 'active-backup')
    for member in (0, 1):
        pinger = lab.popen('hv1vm1', ['ping', '-n', *counted(300, 0.01), lab.vms['hv4vm1'].ip],
                           stdout=subprocess.PIPE, text=True)
        try:
            base = sum(map(sum, member_counters(lab, 'hv4').values()))
            wait_until(lambda: sum(map(sum, member_counters(lab, 'hv4').values())) > base + 100, 10,
                       what='pings flowing over the bond')
            lab.set_link('hv4', 'leaf2', up=False, member=member)
            out, _ = pinger.communicate(timeout=30)
            sent, received = ping_counts(out)
            assert received == 300 and sent - received <= 3, out[-300:]
            assert uplink(ctl, 'hv4')['status'] == 'degraded'
        finally:
            if pinger.poll() is None:
                pinger.kill()
                pinger.communicate()
            lab.set_link('hv4', 'leaf2', up=True, member=member)
        wait_until(lambda: uplink(ctl, 'hv4')['status'] == 'ok', 20, what='hv4 bond whole again')
        wait_until(lambda: lab.ping('hv1vm1', 'hv4vm1'), 10, what='hv4 reachable after the restore')
