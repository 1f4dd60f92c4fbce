"""The pipeline test harness on a tiny hand-written four-stage pipeline:

    T0 admit:   port 1 and 2 get a logical in-port (reg14) and a ct zone (reg13); others drop
    T1 track:   IPv4 goes through conntrack in the port's zone and comes back in T2
    T2 decide:  telnet is refused; new connections are committed; a MAC picks reg15,
                a remote MAC also picks the tunnel (tun_id, tun_dst)
    T3 emit:    reg15 -> the port
"""
from __future__ import annotations

import pytest

from controller.pipeline import actions as A
from controller.pipeline import tables
from controller.pipeline.flow import Flow
from tests.ovs.pipeline_bridge import PipelineBridge, parse_trace

T0, T1, T2, T3 = [t.name for t in tables.TABLES][:4]      # by position: the lead renumbers stages
MAC1, MAC2, REMOTE = '02:00:00:00:00:01', '02:00:00:00:00:02', '02:00:00:00:00:99'
TUN_PORT, VNI, VTEP = 9, 5001, '192.0.2.77'
IP = {'eth_type': 0x0800}
TCP = dict(IP, ip_proto=6)


def _pipeline():
    c = 0xab00
    flows = {Flow.make(T0, 0, {}, [], cookie=c)}                  # anything else: drop
    for port in (1, 2):
        flows.add(Flow.make(T0, 100, {'in_port': port}, [A.load('reg14', port), A.load('reg13[0..15]', 5)],
                            T1, cookie=c + port))
    flows |= {
        Flow.make(T1, 100, IP, [A.ct(zone='reg13', table=T2)], cookie=c + 0x10),
        Flow.make(T1, 0, {}, [], T2, cookie=c + 0x11),
        Flow.make(T2, 300, dict(TCP, tcp_dst=23), [], cookie=c + 0x23),           # refused
        Flow.make(T2, 200, dict(IP, ct_state='+trk+new', eth_dst=MAC2),
                  [A.ct(commit=True, zone='reg13', exec=[A.set_field('ct_mark', 1)]), A.load('reg15', 2)],
                  T3, cookie=c + 0x20),
        Flow.make(T2, 100, {'eth_dst': MAC2}, [A.load('reg15', 2)], T3, cookie=c + 0x21),
        Flow.make(T2, 100, {'eth_dst': REMOTE}, [A.set_field('tunnel_id', VNI), A.set_field('tun_ipv4_dst', VTEP),
                                                 A.load('reg15', TUN_PORT)], T3, cookie=c + 0x22),
        Flow.make(T3, 100, {'reg15': 2}, [A.output(2)], cookie=c + 0x30),
        Flow.make(T3, 100, {'reg15': TUN_PORT}, [A.output(TUN_PORT)], cookie=c + 0x31),
    }
    return flows


@pytest.fixture(scope='module')
def bridge():
    with PipelineBridge(ports=[1, 2, 3], tunnel=TUN_PORT) as br:
        br.load(_pipeline())
        yield br


def _walk(t):
    return [(s.name, s.priority) for s in t.steps]


def test_a_frame_is_delivered_to_the_port_its_mac_picks(bridge):
    t = bridge.trace(in_port=1, eth_type=0x0806, eth_src=MAC1, eth_dst=MAC2)
    assert _walk(t) == [(T0, 100), (T1, 0), (T2, 100), (T3, 100)]
    assert t.output_ports == [2] and not t.dropped
    assert t.steps[0].cookie == 0xab01
    assert t.steps[0].actions == ('set_field:0x1->reg14', 'load:0x5->NXM_NX_REG13[0..15]',  # as in dump-flows
                                  'goto_table:%d' % tables.table_id(T1))
    assert t.taken()[-1] == (tables.table_id(T3), T3, 0xab30, 100, ('output:2',))


def test_a_frame_from_an_unknown_port_is_dropped(bridge):
    t = bridge.trace(in_port=3, eth_type=0x0806, eth_dst=MAC2)
    assert t.dropped and t.output_ports == []
    assert _walk(t) == [(T0, 0)] and t.steps[0].actions == ('drop',)


def test_a_frame_with_no_destination_is_dropped_at_the_miss(bridge):
    t = bridge.trace(in_port=1, eth_type=0x0806, eth_dst='02:00:00:00:00:77')
    assert t.dropped
    assert _walk(t) == [(T0, 100), (T1, 0), (T2, None)]          # no flow matched in T2


def test_a_remote_mac_is_tunnelled_with_its_vni_and_vtep(bridge):
    t = bridge.trace(in_port=1, eth_type=0x0806, eth_dst=REMOTE)
    assert _walk(t) == [(T0, 100), (T1, 0), (T2, 100), (T3, 100)]
    assert t.steps[2].actions[:2] == ('set_field:0x1389->tun_id', 'set_field:%s->tun_dst' % VTEP)
    assert t.steps[3].actions == ('output:%d' % TUN_PORT,)
    assert t.final_flow['tun_dst'] == VTEP
    # no route to the VTEP on this machine: the datapath part stops at the native tunnel
    assert 'native tunnel' in t.text


def test_ip_goes_through_conntrack_and_comes_back_in_the_next_stage(bridge):
    t = bridge.trace(in_port=1, eth_src=MAC1, eth_dst=MAC2, ipv4_src='10.0.0.1', ipv4_dst='10.0.0.2',
                     ip_proto=6, tcp_dst=80, **IP)
    assert len(t.passes) == 2                                         # one recirculation
    first, second = t.passes
    assert [(s.name, s.priority) for s in first.steps] == [(T0, 100), (T1, 100)]
    assert first.steps[1].actions[0] == 'ct(table=%d,zone=NXM_NX_REG13[0..15])' % tables.table_id(T2)
    assert first.datapath_actions.startswith('ct(zone=5),recirc(')
    assert [(s.name, s.priority) for s in second.steps] == [(T2, 200), (T3, 100)]   # +trk+new: committed
    assert second.datapath_actions.startswith('ct(commit,zone=5,mark=')
    assert t.output_ports == [2]


def test_an_established_connection_skips_the_commit(bridge):
    t = bridge.trace(in_port=1, ct_next='trk,est', eth_dst=MAC2, ipv4_dst='10.0.0.2', ip_proto=6, tcp_dst=80, **IP)
    assert [(s.name, s.priority) for s in t.passes[1].steps] == [(T2, 100), (T3, 100)]
    assert t.output_ports == [2]


def test_telnet_is_refused_after_conntrack(bridge):
    t = bridge.trace(in_port=2, eth_dst=MAC2, ipv4_dst='10.0.0.2', ip_proto=6, tcp_dst=23, **IP)
    assert t.passes[-1].steps[0].cookie == 0xab23
    assert t.dropped


def test_a_bad_flow_is_refused_and_the_loaded_pipeline_stays(bridge):
    bad = Flow.make(T0, 50, {'ipv4_dst': '10.0.0.9'}, [A.output(2)])   # no eth_type: OVS refuses it
    before = bridge.dump()
    with pytest.raises(ValueError, match='ipv4_dst needs a match on eth_type=0x800'):
        bridge.load(_pipeline() | {bad})
    assert bridge.dump() == before


def test_parse_trace_reads_nested_resubmits():
    text = '''Flow: arp,in_port=1

bridge("x")
-----------
 0. in_port=1, priority 100, cookie 0x5
    resubmit(,30)
    30. priority 1
            output:2
    output:9
     -> output to native tunnel

Final flow: unchanged
Megaflow: recirc_id=0,eth,arp,in_port=1
Datapath actions: 1
'''
    t = parse_trace(text, {1: 2})
    assert [(s.table, s.priority, s.cookie, s.actions) for s in t.steps] == [
        (0, 100, 5, ('resubmit(,30)', 'output:9')), (30, 1, 0, ('output:2',))]
    assert t.output_ports == [2]


def test_groups_and_meters_load_with_the_flows():
    with PipelineBridge(ports=[1, 2, 3]) as br:
        br.load({Flow.make(T0, 10, {'in_port': 1}, [A.meter(3), A.group(7)])},
                groups=['group_id=7,type=all,bucket=actions=output:2,bucket=actions=output:3'],
                meters=['meter=3,pktps,band=type=drop,rate=100'])
        t = br.trace(in_port=1, eth_type=0x0806)
        assert t.steps[0].actions[:2] == ('meter:3', 'group:7')
        assert sorted(t.output_ports) == [2, 3]
