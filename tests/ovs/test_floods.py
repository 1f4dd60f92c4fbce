"""The flood guard on a real OVS (userspace datapath), no controller: a leaf's compiled flows
in a scratch bridge whose edge ports are veths into namespaces.  The punt meter must drop
only the copy to the controller, never the frame (controller/floods.py)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from apps import learning_switch as ls
from controller import floods
from controller.pipeline import actions as A, cookies
from controller.pipeline.flow import Flow
from tests.ovs.pipeline_bridge import PipelineBridge, _top_level
from tests.support import ROOT, is_root, sh
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

    def meter_in(self, meter_id: int) -> int:
        """Packets that reached the meter (passed or dropped)."""
        out = sh('ovs-ofctl -O OpenFlow14 meter-stats %s meter=%d' % (self.name, meter_id))
        return int(re.search(r'packet_in_count:(\d+)', out).group(1))

    def slow_meter(self, meter_id: int, pps: int = 1) -> None:
        sh('ovs-ofctl -O OpenFlow14 mod-meter %s meter=%d,pktps,burst,band=type=drop,rate=%d,burst_size=1'
           % (self.name, meter_id, pps))


def world(learned=(), shut=()):
    fabric = example_fabric(max_macs_per_port=MAX)
    inv = leaf_network(fabric)
    for port, mac in learned:
        ls.learn(fabric, inv, LEAF2, port, 1, mac)
    inv.shutdown[LEAF2] = set(shut)
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
    # an edge port (a MAC limit): the frame of an unlearned source meets its own meter too
    # (storm_ctl), after its copy left: push_vlan,clone(meter(1),userspace(..)),meter(4),pop_vlan,4
    t = br.trace(EDGE3, eth_src=HOSTS[EDGE3][0], eth_dst=HOSTS[EDGE4][0], eth_type=0x0800)
    top = _top_level(t.datapath_actions)
    copy = next(i for i, a in enumerate(top) if a.startswith('clone(meter(') and 'userspace(' in a)
    storm = next(i for i, a in enumerate(top) if a.startswith('meter('))
    assert copy < storm < min(i for i, a in enumerate(top) if a.isdigit()), t.datapath_actions
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


def test_the_storm_meter_of_an_edge_port_never_holds_back_the_copies_to_the_controller(br):
    """What storm_ctl is for: a flood of forged sources is held to the unknown-source meter's
    rate on the wire, while every copy still reaches the punt meter -- the controller hears of
    the MAC limit's violation as soon as the punt meter allows, not at the storm meter's rate."""
    br.load(world(), registry=cookies.Registry())
    storm, punt = floods.unknown_meter(EDGE3), floods.port_meter(EDGE3)
    br.slow_meter(storm)
    storm0, punt0, dropped0 = br.meter_in(storm), br.meter_in(punt), br.meter_drops(storm)
    flood(br, EDGE3, 200, seed=0x54)
    copies, stormed, held = br.meter_in(punt) - punt0, br.meter_in(storm) - storm0, br.meter_drops(storm) - dropped0
    assert copies >= 190 and stormed >= 190 and held >= 180, (copies, stormed, held)


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


def megaflows(br, port: int) -> dict[str, int]:
    """The datapath flows for storm.py's frames (ethertype 0x88b5) from `port`: their match
    (without in_port) -> packets they carried."""
    dp = {of: d for d, of in br._dp_ports().items()}[port]
    out = sh('ovs-appctl dpctl/dump-flows netdev@ovs-netdev')
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r'^recirc_id\(0\),in_port\(%d\),(.*eth_type\(0x88b5\).*?), packets:(\d+)' % dp, out, re.M)}


def flood(br, port: int, frames: int, seed: int) -> None:
    """`frames` broadcast frames from new source MACs, all within about a second."""
    subprocess.run(['ip', 'netns', 'exec', br.ns(port), sys.executable, str(ROOT / 'tests' / 'tools' / 'storm.py'),
                    'eth0', str(frames), '1', 'macs', '--seed', str(seed)], check=True, capture_output=True)


def test_a_shut_port_costs_the_datapath_one_megaflow_however_many_sources_it_forges(br):
    """Why violation: shutdown exists.  A full port in restrict mode drops each new source only
    after an upcall: the learn table matches eth_src, so no megaflow covers the next MAC.  A
    shut port's drop matches in_port alone, above everything: one megaflow for them all."""
    full = [(port, '02:00:00:77:%02x:%02x' % (port, i)) for port in (EDGE3, EDGE4) for i in range(MAX - 1)]
    full += [(EDGE3, '02:00:00:77:03:ff'), (EDGE4, HOSTS[EDGE4][0])]         # both full; host 4 is known
    br.load(world(learned=full), registry=cookies.Registry())
    flood(br, EDGE4, 500, seed=0x51)                # EDGE4: full, not shut (as with restrict)
    restricted = megaflows(br, EDGE4)
    br.load(world(learned=full, shut=[EDGE3]), registry=cookies.Registry())
    t = br.trace(EDGE3, eth_src='02:52:00:00:00:01', eth_dst=HOSTS[EDGE4][0], eth_type=0x0800)
    assert t.dropped, t.text
    megaflow, = re.findall(r'^Megaflow: (.*)$', t.text, re.M)
    assert 'dl_src' not in megaflow and 'in_port=%d' % EDGE3 in megaflow, megaflow
    flood(br, EDGE3, 500, seed=0x52)                # EDGE3: shut
    shut = megaflows(br, EDGE3)
    assert len(restricted) >= 400 and all('src=02:51:' in m for m in restricted), len(restricted)
    (match, packets), = shut.items()                # one flow, no source MAC in it, carried them all
    assert 'src=' not in match and packets >= 490, shut
    # the shut port reaches nobody; the others still reach each other
    assert br.ping(EDGE3, EDGE4, count=3, interval=0.05)[1] == 0
    assert br.ping(HV5, EDGE4, count=3, interval=0.05) == (3, 3)


def test_dvsctl_trace_says_which_port_is_shut_and_which_source_a_full_port_refuses(br):
    """The verdict names the drop: a shut port, or a source past the MAC limit."""
    from controller.trace import explain, ofproto, walk
    full = [(EDGE3, '02:00:00:77:03:%02x' % i) for i in range(MAX)]
    registry = cookies.Registry()
    br.load(world(learned=full, shut=[EDGE4]), registry=registry)
    ctx = explain.Context(registry=registry, tenant='-', src='h', dst='h', dst_iface=None, service='ip',
                          source_file='-', default_where='-')

    def verdict(port):
        t = br.trace(port, eth_src='02:52:00:00:00:01', eth_dst=HOSTS[HV5][0], eth_type=0x0800)
        hop = walk.Hop(LEAF2, 'leaf2', walk.Place(None, br.name), str(port), (), 'a test')
        return explain.verdict([walk.HopResult(hop, ofproto.parse(t.text))], ctx)
    shut = verdict(EDGE4)
    assert (shut['result'], shut['table']) == ('dropped', 'port_sec'), shut
    assert shut['text'] == ('dropped at port_sec on leaf2: port %d is shut for a MAC-limit violation '
                            '(learning.violation: shutdown) until its errdisable_recovery; `dvsctl events` '
                            'says which source broke it' % EDGE4), shut
    refused = verdict(EDGE3)
    assert (refused['result'], refused['table']) == ('dropped', 'learn'), refused
    assert refused['text'] == ('dropped at learn on leaf2: the source MAC is not one of the max_macs_per_port '
                               'its port %d has learned (learning: the MAC limit)' % EDGE3), refused
