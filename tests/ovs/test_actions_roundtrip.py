"""Every action kind and typed match reads back from a real OVS exactly as written.

Each case installs one Flow through the production codec (controller.ofp over os-ken, in a
bundle, by the Reconciler) into a scratch bridge and asserts: the Flow read back with
OFPFlowStatsRequest == the Flow written; ovs-ofctl shows the expected text; and a fresh
Reconciler (as after a controller restart) finds nothing to send.
"""
from __future__ import annotations

import pytest

from controller.pipeline import actions as A
from controller.pipeline import ofctl_text, tables
from controller.pipeline.flow import Flow
from tests.ovs.osken_harness import OsKen
from tests.ovs.scratch import _prefix
from tests.support import dump_flows, free_port, sh

T = [t.name for t in tables.TABLES]          # by position: the lead renumbers the stages
T0, T1, TL = T[0], T[1], T[-1]
ID = {n: tables.table_id(n) for n in T}
GROUP, METER = 7, 3
MAC1, MAC2 = '02:00:00:00:00:01', '02:00:00:00:00:02'


def _f(actions=(), match=None, table=T0, goto=None, **kw):
    return Flow.make(table, kw.pop('priority', 100), match or {}, actions, goto, cookie=kw.pop('cookie', 0x5), **kw)


# (id, flow, expected ovs-ofctl match text, expected ovs-ofctl actions text)
CASES = [
    ('output', _f([A.output(3), A.output('in_port'), A.output('controller'), A.output('local')]),
     'priority=100', 'output:3,IN_PORT,CONTROLLER:65535,LOCAL'),
    ('output_reg', _f([A.output_reg('reg15'), A.output_reg('reg14[0..15]')]), 'priority=100',
     'output:NXM_NX_REG15[],output:NXM_NX_REG14[0..15]'),
    ('drop', _f([]), 'priority=100', 'drop'),
    ('goto', _f([A.output(2)], goto=T1), 'priority=100', 'output:2,goto_table:%d' % ID[T1]),
    ('push_pop_vlan', _f([A.push_vlan(10), A.output(1), A.pop_vlan(), A.output(2)]), 'priority=100',
     'push_vlan:0x8100,set_field:4106->vlan_vid,output:1,pop_vlan,output:2'),
    ('set_field_l2', _f([A.set_field('eth_src', MAC1.upper()), A.set_field('eth_dst', MAC2), A.output(1)]),
     'priority=100', 'set_field:%s->eth_src,set_field:%s->eth_dst,output:1' % (MAC1, MAC2)),
    ('set_field_ipv4', _f([A.set_field('ipv4_src', '10.1.0.1'), A.set_field('ipv4_dst', '10.2.0.9'),
                           A.set_field('ip_dscp', 46), A.set_field('nw_ttl', 255), A.output(1)],
                          {'eth_type': 0x0800}),
     'priority=100,ip', 'set_field:10.1.0.1->ip_src,set_field:10.2.0.9->ip_dst,set_field:46->ip_dscp,'
     'set_field:255->nw_ttl,output:1'),
    ('set_field_icmp', _f([A.set_field('icmpv4_type', 0), A.set_field('icmpv4_code', 0), A.output('in_port')],
                          {'eth_type': 0x0800, 'ip_proto': 1, 'icmpv4_type': 8}),
     'priority=100,icmp,icmp_type=8', 'set_field:0->icmp_type,set_field:0->icmp_code,IN_PORT'),
    ('set_field_arp', _f([A.move('eth_src', 'eth_dst'), A.set_field('eth_src', MAC1), A.set_field('arp_op', 2),
                          A.move('arp_sha', 'arp_tha'), A.set_field('arp_sha', MAC1),
                          A.move('arp_spa', 'arp_tpa'), A.set_field('arp_spa', '10.1.0.1'), A.output('in_port')],
                         {'eth_type': 0x0806, 'arp_op': 1, 'arp_tpa': '10.1.0.1'}),
     'priority=100,arp,arp_tpa=10.1.0.1,arp_op=1',
     'move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:%s->eth_src,set_field:2->arp_op,'
     'move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],set_field:%s->arp_sha,move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],'
     'set_field:10.1.0.1->arp_spa,IN_PORT' % (MAC1, MAC1)),
    ('set_field_tunnel', _f([A.set_field('tunnel_id', 5001), A.set_field('tun_ipv4_dst', '192.0.2.20'),
                             A.set_field('tun_ipv4_src', '192.0.2.1'), A.output(9)]),
     'priority=100', 'set_field:0x1389->tun_id,set_field:192.0.2.20->tun_dst,set_field:192.0.2.1->tun_src,output:9'),
    ('register_load', _f([A.set_field('reg10', 0x0a000001), A.set_field('xxreg1', 1 << 100),
                          A.set_field('metadata', 0x1234), A.set_field('pkt_mark', 0x10), A.output(1)]),
     'priority=100', 'set_field:0xa000001->reg10,set_field:0x10000000000000000000000000->xxreg1,'
     'set_field:0x1234->metadata,set_field:0x10->pkt_mark,output:1'),
    ('register_load_bits', _f([A.load('reg13[0..15]', 5), A.load('reg0[16..31]', 7), A.load('reg1[3]', 1),
                               A.set_field('metadata', 0x20, 0xf0), A.output(1)]),
     'priority=100', 'load:0x5->NXM_NX_REG13[0..15],load:0x7->NXM_NX_REG0[16..31],load:0x1->NXM_NX_REG1[3],'
     'load:0x2->OXM_OF_METADATA[4..7],output:1'),
    ('move', _f([A.move('reg0[0..15]', 'reg4[16..31]'), A.move('tunnel_id[0..23]', 'reg11[0..23]'),
                 A.move('reg14', 'reg15'), A.move('in_port', 'reg14'), A.output(1)]),
     'priority=100', 'move:NXM_NX_REG0[0..15]->NXM_NX_REG4[16..31],move:NXM_NX_TUN_ID[0..23]->NXM_NX_REG11[0..23],'
     'move:NXM_NX_REG14[]->NXM_NX_REG15[],move:OXM_OF_IN_PORT[]->NXM_NX_REG14[],output:1'),
    ('dec_ttl', _f([A.dec_ttl(), A.output(1)], {'eth_type': 0x0800}), 'priority=100,ip', 'dec_ttl,output:1'),
    ('multipath', _f([A.multipath(2, 'reg0')], {'eth_type': 0x0800}, goto=T1), 'priority=100,ip',
     'multipath(symmetric_l4,0,hash_threshold,2,0,NXM_NX_REG0[0..15]),goto_table:%d' % ID[T1]),
    ('group', _f([A.group(GROUP)]), 'priority=100', 'group:%d' % GROUP),
    ('meter', _f([A.meter(METER), A.output(1)]), 'priority=100', 'meter:%d,output:1' % METER),
    ('clone_punt', _f([A.clone(A.output_trunc(1, 64), A.resubmit('punt'))], goto='arp_rsp'), 'priority=100',
     'clone(output(port=1,max_len=64),resubmit(,%d)),goto_table:%d' % (ID['punt'], ID['arp_rsp'])),
    ('write_metadata', _f([A.output(1), A.write_metadata(0x20, 0xf0)], goto=T1), 'priority=100',
     'output:1,write_metadata:0x20/0xf0,goto_table:%d' % ID[T1]),
    ('write_metadata_full', _f([A.write_metadata(0x99)], goto=T1), 'priority=100',
     'write_metadata:0x99,goto_table:%d' % ID[T1]),
    ('resubmit', _f([A.resubmit(TL), A.resubmit(T0), A.output(1)]), 'priority=100',
     'resubmit(,%d),resubmit(,%d),output:1' % (ID[TL], ID[T0])),
    ('conjunction', _f([A.conjunction(10, 1, 2), A.conjunction(11, 3, 3)],
                       {'eth_type': 0x0800, 'ipv4_src': '10.0.0.11'}, table=T1),
     'priority=100,ip,nw_src=10.0.0.11', 'conjunction(10,1/2),conjunction(11,3/3)'),
    ('conj_id', _f([A.output(1)], {'eth_type': 0x0800, 'conj_id': 10}, table=T1),
     'priority=100,conj_id=10,ip', 'output:1'),
    ('ct_recirc', _f([A.ct(zone='reg13', table=TL)], {'eth_type': 0x0800}),
     'priority=100,ip', 'ct(table=%d,zone=NXM_NX_REG13[0..15])' % ID[TL]),
    ('ct_commit_exec', _f([A.ct(commit=True, zone=5, exec=[A.set_field('ct_mark', 1),
                                                           A.set_field('ct_label', 0x1234)]), A.output(1)],
                          {'eth_type': 0x0800}),
     'priority=100,ip', 'ct(commit,zone=5,exec(set_field:0x1->ct_mark,set_field:0x1234->ct_label)),output:1'),
    ('ct_exec_masked', _f([A.ct(commit=True, zone='reg13[0..15]', exec=[A.set_field('ct_mark', 2, 0x2)])],
                          {'eth_type': 0x0800}),
     'priority=100,ip', 'ct(commit,zone=NXM_NX_REG13[0..15],exec(load:0x1->NXM_NX_CT_MARK[1]))'),
    ('ct_snat', _f([A.ct(commit=True, zone='reg13', exec=[A.set_field('ct_mark', 1)],
                         nat=A.nat('src', ('10.1.12.0', '10.1.13.255'), (1024, 2047))), A.output(1)],
                   {'eth_type': 0x0800}),
     'priority=100,ip', 'ct(commit,zone=NXM_NX_REG13[0..15],nat(src=10.1.12.0-10.1.13.255:1024-2047),'
     'exec(set_field:0x1->ct_mark)),output:1'),
    ('ct_dnat_one', _f([A.ct(commit=True, table=TL, nat=A.nat('dst', ('10.0.0.5', '10.0.0.5'), 8080))],
                       {'eth_type': 0x0800}),
     'priority=100,ip', 'ct(commit,table=%d,nat(dst=10.0.0.5:8080))' % ID[TL]),
    ('ct_nat_reverse', _f([A.ct(zone='reg13', table=TL, nat=True)], {'eth_type': 0x0800}),
     'priority=100,ip', 'ct(table=%d,zone=NXM_NX_REG13[0..15],nat)' % ID[TL]),
    ('ct_force_clear', _f([A.ct_clear(), A.ct(commit=True, force=True, zone=9)], {'eth_type': 0x0800}),
     'priority=100,ip', 'ct_clear,ct(commit,force,zone=9)'),
    ('learn_mac', _f([A.learn(TL, [A.learn_match('reg11'), A.learn_match('eth_dst', 'eth_src'),
                                   A.learn_load('in_port', 'reg15')],
                              priority=100, hard_timeout=300, cookie=0x77), A.resubmit(T1)]),
     'priority=100', 'learn(table=%d,hard_timeout=300,priority=100,cookie=0x77,NXM_NX_REG11[],'
     'NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:OXM_OF_IN_PORT[]->NXM_NX_REG15[]),resubmit(,%d)' % (ID[TL], ID[T1])),
    ('learn_reverse', _f([A.learn(T1, [A.learn_match('eth_type', 0x0800), A.learn_match('ipv4_src', 'ipv4_dst'),
                                       A.learn_match('ipv4_dst', 'ipv4_src'), A.learn_load(1, 'reg0[0]'),
                                       A.learn_output('reg14')],
                                  idle_timeout=60, fin_idle_timeout=5, delete_learned=True)],
                         {'eth_type': 0x0800}),
     'priority=100,ip', 'learn(table=%d,idle_timeout=60,fin_idle_timeout=5,delete_learned,eth_type=0x800,'
     'NXM_OF_IP_SRC[]=NXM_OF_IP_DST[],NXM_OF_IP_DST[]=NXM_OF_IP_SRC[],load:0x1->NXM_NX_REG0[0],'
     'output:NXM_NX_REG14[])' % ID[T1]),
    ('match_ct_regs', _f([A.output(1)], {'eth_type': 0x0800, 'ct_state': '+trk+est-rpl', 'reg13': 5,
                                         'reg14': (0x10, 0xf0), 'metadata': (0x1, 0xff), 'ct_mark': 1,
                                         'ct_label': (0x1, 0x1), 'ct_zone': 5}),
     'priority=100,ct_state=+est-rpl+trk,ct_zone=5,ct_mark=0x1,ct_label=0x1/0x1,ip,reg13=0x5,reg14=0x10/0xf0,'
     'metadata=0x1/0xff', 'output:1'),
    ('match_tunnel', _f([A.output(1)], {'tunnel_id': 5001, 'tun_ipv4_src': '192.0.2.1',
                                        'tun_ipv4_dst': '192.0.2.2', 'pkt_mark': (0x10, 0xff)}),
     'priority=100,pkt_mark=0x10/0xff,tun_id=0x1389,tun_src=192.0.2.1,tun_dst=192.0.2.2', 'output:1'),
    ('match_l3l4', _f([A.output(1)], {'eth_type': 0x0800, 'ipv4_src': '10.1.0.0/16', 'ipv4_dst': '10.2.3.4/32',
                                      'ip_proto': 6, 'tcp_dst': 443, 'tcp_flags': (0x002, 0x012),
                                      'ip_dscp': 46}),
     'priority=100,tcp,nw_src=10.1.0.0/16,nw_dst=10.2.3.4,nw_tos=184,tp_dst=443,tcp_flags=+syn-ack', 'output:1'),
    ('match_udp_icmp_arp', _f([A.output(1)], {'eth_type': 0x0800, 'ip_proto': 17, 'udp_src': 68, 'udp_dst': 67,
                                              'eth_dst': ('01:00:5E:00:00:00', 'ff:ff:ff:80:00:00')}),
     'priority=100,udp,dl_dst=01:00:5e:00:00:00/ff:ff:ff:80:00:00,tp_src=68,tp_dst=67', 'output:1'),
    ('timeouts', _f([A.output(1)], idle_timeout=300, hard_timeout=600, notify_removal=True, cookie=0x77),
     'priority=100', 'output:1'),
]


@pytest.fixture(scope='module')
def switch(tmp_path_factory):
    br = _prefix() + 'act'
    port = free_port()
    sh('ovs-vsctl add-br {b} -- set bridge {b} datapath_type=netdev fail_mode=secure '
       'protocols=OpenFlow13,OpenFlow14'.format(b=br))
    osk = None
    try:
        osk = OsKen(port, tmp_path_factory.mktemp('osken') / 'osken.log').start()
        sh('ovs-vsctl set-controller %s tcp:127.0.0.1:%d' % (br, port))
        osk.wait_ready()
        # after set-controller, which flushes the bridge's tables
        sh('ovs-ofctl -O OpenFlow14 add-group %s group_id=%d,type=all,bucket=actions=output:1' % (br, GROUP))
        sh('ovs-ofctl -O OpenFlow14 add-meter %s meter=%d,pktps,band=type=drop,rate=100' % (br, METER))
        yield br, osk
    finally:
        if osk is not None:
            osk.stop()
        sh('ovs-vsctl --if-exists del-br %s' % br, check=False)


@pytest.mark.parametrize('flow,match_text,actions_text', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_flow_reads_back_exactly_as_written(switch, flow, match_text, actions_text):
    br, osk = switch
    A.check_flow(flow)
    adds, _ = osk.converge({flow})
    assert adds == 1
    assert osk.read() == {flow}
    [dumped] = dump_flows(br)
    assert (dumped['table'], dumped['cookie']) == (tables.table_id(flow.table), flow.cookie)
    assert dumped['match'] == match_text
    assert dumped['actions'] == actions_text
    assert ofctl_text.actions(flow) == actions_text        # the formatter writes what OVS prints
    assert osk.converge({flow}, fresh=True) == (0, 0)       # after a restart: nothing re-installed


def test_timeouts_and_removal_flag_show_in_ovs_ofctl(switch):
    br, osk = switch
    [flow] = [c[1] for c in CASES if c[0] == 'timeouts']
    osk.converge({flow})
    out = sh('ovs-ofctl -O OpenFlow14 dump-flows %s' % br)
    assert 'idle_timeout=300' in out and 'hard_timeout=600' in out and 'send_flow_rem' in out, out


def test_a_flow_the_codec_cannot_read_is_replaced_not_kept(switch):
    """Something put there by hand (an action outside the model) never equals a desired flow."""
    br, osk = switch
    osk.converge(set())
    sh('ovs-ofctl -O OpenFlow14 add-flow %s "table=%d,priority=100,actions=note:01020304"' % (br, ID[T0]))
    [got] = osk.read()
    assert got.actions[0][0] == 'unknown'
    want = _f([A.output(1)])
    assert osk.converge({want}, fresh=True) == (1, 0)      # replaced in place (same key)
    assert osk.read() == {want}


@pytest.mark.parametrize('flow', [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_ofctl_text_loads_the_same_flow(switch, flow, tmp_path):
    """What ofctl_text writes, ovs-ofctl loads as the very flow the controller would install."""
    br, osk = switch
    osk.converge(set())
    path = tmp_path / 'flows.txt'
    path.write_text(ofctl_text.flow(flow) + '\n')
    sh('ovs-ofctl -O OpenFlow14 --bundle add-flows %s %s' % (br, path))
    assert osk.read() == {flow}
    assert osk.converge({flow}, fresh=True) == (0, 0)


def test_a_routing_hypervisors_whole_flow_set_goes_through_the_codec_and_reads_back(switch):
    """The anycast gateway's matches (masked tag, nw_ttl, ICMP, ARP with registers) as os-ken
    encodes them: OVS checks prerequisites in OXM order, which ovs-ofctl would hide."""
    from apps import anycast_gateway
    from tests.unit.builders import routing_world as world, switch_flows
    br, osk = switch
    sh('ovs-ofctl -O OpenFlow14 add-meter %s meter=%d,pktps,band=type=drop,rate=100' % (br, anycast_gateway.METER),
       check=False)
    import dataclasses
    from controller.pipeline import cookies
    _, policy, inv, hv = world()
    reg = cookies.Registry()
    compiled = switch_flows(policy, inv, hv)
    for mid in {a[1] for f in compiled for a in f.actions if a[0] == 'meter'} - {anycast_gateway.METER}:
        sh('ovs-ofctl -O OpenFlow14 add-meter %s meter=%d,pktps,band=type=drop,rate=100' % (br, mid), check=False)
    assert {f for f in compiled if f.cookie.app == anycast_gateway.APP}
    flows = {dataclasses.replace(f, cookie=reg.encode(f.cookie)) for f in compiled}
    osk.converge(set())
    for f in sorted(flows, key=lambda f: (f.table, f.priority, repr(f.match))):   # one by one: name the refused one
        try:
            osk.converge({f})
        except Exception as e:
            raise AssertionError('refused: %s: %s' % (f, e)) from None
    osk.converge(flows)
    assert osk.read() == flows
    assert osk.converge(flows, fresh=True) == (0, 0)


# ---- issue 11 part 4: the wire encoder (controller/pipeline/wire.py) against os-ken's own ----

def _dump(br) -> list[str]:
    out = sh('ovs-ofctl -O OpenFlow14 --no-stats dump-flows %s' % br).splitlines()
    return sorted(line.strip() for line in out if 'actions=' in line)


def test_the_wire_encoder_installs_what_os_ken_objects_install(switch):
    """Every case and a routing hypervisor's whole flow set, sent once as os-ken message objects
    (the path before wire.py) and once as wire bytes: ovs-ofctl dumps the same flows."""
    import dataclasses
    from controller.pipeline import cookies
    from tests.unit.builders import routing_world, switch_flows
    from tests.unit.test_wire import EXTRA
    br, osk = switch
    _, policy, inv, hv = routing_world()
    reg = cookies.Registry()
    routing = {dataclasses.replace(f, cookie=reg.encode(f.cookie)) for f in switch_flows(policy, inv, hv)}
    for mid in {a[1] for f in routing for a in f.actions if a[0] == 'meter'}:
        sh('ovs-ofctl -O OpenFlow14 add-meter %s meter=%d,pktps,band=type=drop,rate=100' % (br, mid), check=False)
    # one flow per key (the cases reuse table/priority/match), the EXTRA kinds (bundle, output_trunc,
    # set_in_port, tcp_flags, xxreg, arp fields) on their own priorities
    flows = {f.key: f for f in [c[1] for c in CASES] + EXTRA}
    flows = set(flows.values()) | routing
    dumps = []
    for osken in (True, False):
        osk.converge(set())
        sh('ovs-ofctl -O OpenFlow14 del-flows %s' % br)
        osk.osken(osken)
        try:
            assert osk.converge(flows, fresh=True) == (len(flows), 0)
        finally:
            osk.osken(False)
        dumps.append(_dump(br))
    assert len(dumps[1]) == len(flows) > 100
    assert dumps[0] == dumps[1]


def test_a_flow_refused_in_a_big_bundle_is_named_and_nothing_is_applied(switch):
    """An add OVS refuses (a match without its prerequisite, which the encoder does not
    check) among 5000: the error names that flow, the bundle is discarded, the switch keeps
    what it held; a commit-time refusal (a missing meter) rolls back everything too."""
    br, osk = switch
    keep = _f([A.output(1)], {'reg0': 1})
    osk.converge({keep})
    many = {_f([A.output(2)], {'reg1': i}) for i in range(5000)}
    bad = Flow.make(T0, 100, {'ipv4_dst': '10.0.0.1'}, [A.output(1)], cookie=0x5)   # no eth_type
    with pytest.raises(RuntimeError) as e:
        osk.converge(many | {keep, bad})
    assert 'bundle rejected, nothing applied' in str(e.value) and str(e.value).count('type=') == 1
    assert 'type=4 code=9: table=%s priority=100 cookie=0x5 ipv4_dst=10.0.0.1 actions=output:1' % T0 in str(e.value)
    assert len(_dump(br)) == 1 and osk.read() == {keep}
    no_meter = _f([A.meter(99), A.output(1)], {'reg2': 1})
    with pytest.raises(RuntimeError, match='bundle commit failed'):
        osk.converge(many | {keep, no_meter}, fresh=True)
    assert osk.read() == {keep}
    assert osk.converge(many | {keep}, fresh=True) == (5000, 0)
    assert len(_dump(br)) == 5001
