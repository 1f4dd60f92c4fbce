"""The flood guard on a real OVS (userspace datapath), no controller: a leaf's compiled flows
in a scratch bridge whose edge ports are veths into namespaces.  The punt meter must drop
only the copy to the controller, never the frame (controller/floods.py)."""
from __future__ import annotations

import re
import subprocess

import pytest

from apps import learning_switch as ls
from controller import floods
from controller.pipeline import actions as A, cookies
from controller.pipeline.flow import Flow
from tests.ovs.pipeline_bridge import PipelineBridge, _top_level
from tests.support import is_root, sh
from tests.unit.builders import LEAF2, example_fabric, switch_flows
from tests.unit.test_learning_switch import EDGE3, EDGE4, HV5, leaf_network, two_tenants

pytestmark = pytest.mark.skipif(not is_root(), reason='needs root and the OVS daemons')

MAX = 4
HOSTS = {EDGE3: ('02:00:00:77:00:03', '10.77.0.3/24'), EDGE4: ('02:00:00:77:00:04', '10.77.0.4/24'),
         HV5: ('02:00:00:77:00:05', '10.77.0.5/24')}       # hv5: a trunk (untagged = native VLAN 1)


class VethBridge(PipelineBridge):
    """A PipelineBridge whose ports are veths into namespaces <bridge>n<N> (eth0 inside)."""

    def up(self) -> 'VethBridge':
        try:
            sh('ovs-vsctl add-br {b} -- set bridge {b} datapath_type=netdev fail_mode=secure '
               'protocols=OpenFlow13,OpenFlow14'.format(b=self.name))
            for n in self.ports:
                ns, out = self.ns(n), '%so%d' % (self.name, n)
                mac, ip = HOSTS[n]
                sh('ip netns add %s' % ns)
                sh('ip link add %s type veth peer name %si%d' % (out, self.name, n))
                sh('ip link set %si%d netns %s' % (self.name, n, ns))
                sh('ip -n %s link set %si%d name eth0' % (ns, self.name, n))
                sh('ip -n %s link set eth0 address %s' % (ns, mac))
                sh('ip -n %s addr add %s dev eth0' % (ns, ip))
                sh('ip -n %s link set eth0 up' % ns)
                sh('ip link set %s up' % out)
                sh('ovs-vsctl add-port %s %s -- set interface %s ofport_request=%d' % (self.name, out, out, n))
        except Exception:
            self.down()
            raise
        return self

    def ns(self, n: int) -> str:
        return '%sn%d' % (self.name, n)

    def down(self) -> None:
        super().down()
        for n in self.ports:
            sh('ip netns del %s' % self.ns(n), check=False)
            sh('ip link del %so%d' % (self.name, n), check=False)

    def ping(self, src: int, dst: int, count: int, interval: float) -> tuple[int, int]:
        """(sent, received) of a ping between two hosts."""
        ip = HOSTS[dst][1].split('/')[0]
        out = subprocess.run(['ip', 'netns', 'exec', self.ns(src), 'ping', '-n', '-q', '-c', str(count),
                              '-i', str(interval), '-W', '1', ip], capture_output=True, text=True).stdout
        m = re.search(r'(\d+) packets transmitted, (\d+) received', out)
        return int(m.group(1)), int(m.group(2))

    def meter_drops(self, meter_id: int) -> int:
        out = sh('ovs-ofctl -O OpenFlow14 meter-stats %s meter=%d' % (self.name, meter_id))
        return int(re.search(r'0: packet_count:(\d+)', out).group(1))

    def slow_meter(self, meter_id: int, pps: int = 1) -> None:
        sh('ovs-ofctl -O OpenFlow14 mod-meter %s meter=%d,pktps,burst,band=type=drop,rate=%d,burst_size=1'
           % (self.name, meter_id, pps))


def world(learned=()):
    fabric = example_fabric(max_macs_per_port=MAX)
    inv = leaf_network(fabric)
    for port, mac in learned:
        ls.learn(fabric, inv, LEAF2, port, 1, mac)
    return switch_flows(two_tenants(fabric), inv, LEAF2)


@pytest.fixture(scope='module')
def br():
    with VethBridge(ports=[EDGE3, EDGE4, HV5]) as b:
        yield b


def test_an_unknown_source_is_copied_through_the_meter_inside_a_datapath_clone(br):
    br.load(world(), registry=cookies.Registry())
    t = br.trace(HV5, eth_src=HOSTS[HV5][0], eth_dst=HOSTS[EDGE4][0], eth_type=0x0800)
    top = _top_level(t.datapath_actions)
    clone, = [a for a in top if a.startswith('clone(')]
    assert 'meter(' in clone and 'userspace(' in clone, t.datapath_actions      # the copy, metered
    assert not any(a.startswith('meter(') for a in top), t.datapath_actions     # never the frame
    assert EDGE4 in t.output_ports                   # forwarded (flooded: nothing is learned here)
    # an edge port (a MAC limit): the frame of an unlearned source meets its own meter first
    t = br.trace(EDGE3, eth_src=HOSTS[EDGE3][0], eth_dst=HOSTS[EDGE4][0], eth_type=0x0800)
    top = _top_level(t.datapath_actions)
    assert top[0].startswith('meter('), t.datapath_actions            # e.g. meter(4),push_vlan(...),
    assert any(a.startswith('clone(meter(') for a in top), t.datapath_actions   # clone(meter(1),userspace..)
    assert EDGE4 in t.output_ports


def test_the_meter_drops_copies_while_every_frame_is_forwarded(br):
    br.load(world(), registry=cookies.Registry())
    mid = floods.port_meter(HV5)
    br.slow_meter(mid)
    before = br.meter_drops(mid)
    sent, got = br.ping(HV5, EDGE4, count=60, interval=0.02)
    assert (sent, got) == (60, 60)
    assert br.meter_drops(mid) - before >= 40        # ~59 of 60 echo copies over 1 pps, dropped


def test_unlearned_sources_of_an_edge_port_are_forwarded_at_a_bounded_rate_and_learned_ones_freely(br):
    br.load(world(), registry=cookies.Registry())
    br.slow_meter(floods.unknown_meter(EDGE3))
    sent, got = br.ping(EDGE3, EDGE4, count=30, interval=0.02)
    assert got <= 5, (sent, got)                      # 1 pps: storm control for unknown sources
    br.load(world(learned=[(EDGE3, HOSTS[EDGE3][0]), (EDGE4, HOSTS[EDGE4][0])]), registry=cookies.Registry())
    assert br.ping(EDGE3, EDGE4, count=30, interval=0.02) == (30, 30)


def test_without_the_irreversible_hint_ovs_3_1_meters_the_frame_itself(br):
    """Why floods.punt() carries the no-op output_trunc: OVS 3.1 inlines clone(resubmit) and
    its meter then drops the frame (fixed upstream by d7ec77f6)."""
    naive = A.clone(A.resubmit('punt'))
    flows = {Flow.make(f.table, f.priority, f.match_dict(), [naive], f.goto, cookie=f.cookie)
             if f.table == 'learn' and f.priority == ls.P_GUARD and f.match_dict() == {'in_port': HV5} else f
             for f in world()}
    br.load(flows, registry=cookies.Registry())
    br.slow_meter(floods.port_meter(HV5))
    sent, got = br.ping(HV5, EDGE4, count=30, interval=0.02)
    if 'ovs-vswitchd (Open vSwitch) 3.1' not in sh('ovs-vswitchd --version'):
        pytest.skip('only OVS 3.1 is known to inline the clone')
    assert got < sent / 2, (sent, got)


def test_a_full_edge_port_drops_unknown_sources_and_passes_its_learned_ones(br):
    others = [(EDGE3, '02:00:00:77:01:%02x' % i) for i in range(MAX)]
    br.load(world(learned=others), registry=cookies.Registry())
    assert br.ping(EDGE3, EDGE4, count=5, interval=0.05)[1] == 0                   # host 3's MAC is unknown
    assert 'drop' in br.trace(EDGE3, eth_src=HOSTS[EDGE3][0], eth_type=0x0800).datapath_actions
    br.load(world(learned=others[:MAX - 1] + [(EDGE3, HOSTS[EDGE3][0]), (EDGE4, HOSTS[EDGE4][0])]),
            registry=cookies.Registry())
    assert br.ping(EDGE3, EDGE4, count=5, interval=0.05) == (5, 5)                 # a learned source passes
