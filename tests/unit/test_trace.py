"""dvsctl trace without OVS: ofproto/trace text captured from the lab (tests/unit/data/trace,
OVS 3.1, tenant shop of tests/integration/test_trace.py) parsed into steps and exits, followed
with a fake ovs-appctl, and explained: the verdict names the rule, the default deny and its
line, a table's miss, a flow nobody made."""
from __future__ import annotations

import dataclasses
import ipaddress
import pathlib

import pytest

from controller.inventory.model import TUNNEL, UPLINK, VM, Binding, Inventory, LinkEnd, Port, SwitchState
from controller.pipeline.cookies import Cookie
from controller.trace import explain, macs, ofproto, service, walk

DATA = pathlib.Path(__file__).parent / 'data' / 'trace'
HV4, HV1, LEAF2 = 0x14, 0x11, 0x202


def text(name: str) -> str:
    return (DATA / name).read_text()


# the lab controller's cookies in the captured texts, as its registry decoded them
COOKIES = {
    0x603000002000033: Cookie('microseg', 3, 'shop', 'rule:web-to-app', 'shop.yaml:14'),
    0x604000002000004: Cookie('microseg', 4, 'shop', 'default', 'shop.yaml'),
    0x60100000200001e: Cookie('microseg', 1, 'shop', 'app1/nic0', 'shop.yaml:9'),
    0x30100000200001e: Cookie('vlan_portgroups', 1, 'shop', 'app1/nic0', 'shop.yaml:9'),
    0x100000002000021: Cookie('learning_switch', 0, 'shop', 'port:2'),
    0xf00000000000002: Cookie('pipeline', 0, None, 'miss:acl_in'),
    0xf00000000000018: Cookie('pipeline', 0, None, 'miss:l3'),
    0xf00000000000020: Cookie('pipeline', 0, None, 'miss:output'),
}


class Registry:
    def decode(self, value):
        return COOKIES.get(value, value)


def test_steps_bridges_cookies_and_the_conntrack_state_of_each_recirculation():
    t = ofproto.parse(text('routed_hv4_destination.txt'))
    assert [p.header[:12] for p in t.passes] == ['', 'recirc(0x3) ']
    assert t.ct_states == ['new|trk']
    first = t.passes[0].steps
    assert first[0].bridge == 'br-phy' and first[0].actions == ('NORMAL',) and first[0].cookie == 0
    assert 'no learned MAC for destination, flooding' in first[0].notes[0]
    assert [s.table for s in first[1:]] == [0, 10, 20, 30, 40, 50, 60, 70]
    assert all(s.bridge == 'br-int' for s in first[1:])
    # OVS heads the resumed pass with the bridge the trace began on (br-phy); it resumes in br-int
    resumed = t.passes[1].steps
    assert [(s.bridge, s.table, s.cookie) for s in resumed] == [('br-int', 70, 0x603000002000033),
                                                               ('br-int', 80, 0x100000002000021)]
    assert resumed[1].actions == ('pop_vlan', 'output:2')


def test_exits_carry_the_headers_of_each_output_a_bond_and_the_host_port():
    out = ofproto.outcome(ofproto.parse(text('routed_hv1_source.txt')))
    # ct(commit),hash(l4(0)),recirc(0x1),4: balance-tcp picks a member in a recirculation the
    # trace does not follow (the bond), and the flood reaches br-phy's own port 4
    assert [e.dp_port for e in out.exits] == [ofproto.BOND, 4]
    bond = out.exits[0]
    assert (bond.field('dl_vlan'), bond.field('dl_src'), bond.field('dl_dst'), bond.field('nw_ttl')) == \
        ('20', '02:d5:00:00:00:01', '02:00:3f:00:00:01', '63')
    out = ofproto.outcome(ofproto.parse(text('routed_leaf1.txt')))
    assert [(e.dp_port, e.field('dl_vlan')) for e in out.exits] == [(5, '20')]


def test_a_tunnel_output_the_trace_refuses_by_its_own_artifact_is_followed_and_said():
    out = ofproto.outcome(ofproto.parse(text('overlay_hv4_source.txt')))
    assert [e.dp_port for e in out.exits] == [ofproto.TUNNEL]
    ex = out.exits[0]
    assert dict(ex.encap) == {'vni': '5061', 'dst': '172.16.1.12'} and ex.field('dl_vlan') is None
    assert ex.field('dl_dst') == '02:00:3e:00:00:01' and ex.field('nw_ttl') == '63'
    assert out.notes and ofproto.OWN_ADDRESS in out.notes[0]


def test_datapath_actions_vlan_rewrites_and_a_native_tunnel_push():
    t = ofproto.Trace([ofproto.Pass('', 'ip,in_port=1,vlan_tci=0x0000,dl_src=02:00:00:00:00:01,'
                                    'dl_dst=02:00:00:00:00:02,nw_ttl=64', [], '',
                                    'push_vlan(vid=10,pcp=0),3,pop_vlan,set(eth(src=02:d5:00:00:00:01)),'
                                    'clone(tnl_push(tnl_port(3),header(size=50,type=4,eth(dst=0e:00:00:00:00:01,'
                                    'src=0e:00:00:00:00:02,dl_type=0x0800),ipv4(src=172.16.1.11,dst=172.16.2.12,'
                                    'proto=17,tos=0,ttl=64,frag=0x4000),udp(src=0,csum=0x0,dst=4789),'
                                    'vxlan(flags=0x8000000,vni=0x13c5)),out_port(4)),6),userspace(pid=0)')], '')
    out = ofproto.outcome(t)
    assert [(e.dp_port, e.field('dl_vlan'), e.field('dl_src')) for e in out.exits] == [
        (3, '10', '02:00:00:00:00:01'), (6, None, '02:d5:00:00:00:01')]
    assert dict(out.exits[1].encap) == {'vni': '5061', 'src': '172.16.1.11', 'dst': '172.16.2.12'}
    assert out.to_controller == 1


def test_dpif_show_ports_and_patch_peers():
    ports = {(p.bridge, p.name): p for p in ofproto.parse_dpif_show(text('dpif_hv1.txt'))}
    assert ports[('br-int', 'vnet0')].ofport == 1 and ports[('br-int', 'vnet0')].dp_port == 1
    assert ports[('br-int', 'int-to-phy')].kind == 'patch' and ports[('br-int', 'int-to-phy')].peer == 'phy-to-int'
    assert ports[('br-int', 'int-to-phy')].dp_port is None
    assert ports[('br-phy', 'br-phy')].ofport == 65534 and ports[('br-phy', 'br-phy')].kind == 'tap'
    assert ports[('br-int', 'vxlan0')].kind == 'vxlan'
    assert {p.datapath for p in ports.values()} == {'netdev@ovs-netdev'}
    two = 'system@ovs-system: hit:0 missed:0\n  br-k:\n    br-k 65534/0: (internal)\n    k1 1/1: (system)\n' \
        + text('dpif_hv1.txt')
    assert walk._dp_ports(ofproto.parse_dpif_show(two), 'br-int')[1].name == 'vnet0'
    assert walk._dp_ports(ofproto.parse_dpif_show(two), 'br-k')[1].name == 'k1'


def test_a_trace_that_did_not_run_is_an_error():
    with pytest.raises(ofproto.TraceError):
        ofproto.parse('ovs-appctl: br-nope: unknown bridge\n')


def _ctx(**kw):
    kw.setdefault('registry', Registry())
    return explain.Context(tenant='shop', src='web1 [web]', dst='app1 [app]',
                           dst_iface='shop/app1/nic0', service='tcp/22', source_file='shop.yaml',
                           default_where='shop.yaml:12', dst_ip='10.63.0.31', **kw)


def _hop(switch='hv4', bridge='br-phy'):
    return walk.Hop(HV4, switch, walk.Place('/run/hv4.ctl', bridge), 'phy0', (), 'cable from leaf2 port 4')


def _result(name, exits=()):
    return walk.HopResult(_hop(), ofproto.parse(text(name)), exits=list(exits))


LOCAL = (None, None, walk.End('local', 'hv4', 'br-phy', 'to the host'))


def test_delivered_names_the_workload_and_the_rule_with_its_line():
    delivered = walk.End('delivered', 'hv4', 'vnet2', 'delivered', 'shop/app1/nic0')
    v = explain.verdict([_result('routed_hv4_destination.txt', [LOCAL, (None, None, delivered)])], _ctx())
    assert v == {'result': 'delivered', 'switch': 'hv4', 'table': None,
                 'text': 'delivered to app1 on hv4; allowed by rule web-to-app of tenant shop (shop.yaml:14)'}


def test_the_default_deny_names_its_line_and_what_no_rule_allows():
    r = _result('denied_hv4_destination.txt', [LOCAL])
    assert r.dropped                     # the host's own port is no delivery
    v = explain.verdict([r], _ctx())
    assert v['result'] == 'dropped' and (v['switch'], v['table']) == ('hv4', 'acl_out')
    assert v['text'] == ('dropped by the default deny of tenant shop at acl_out on hv4 (shop.yaml:12); no rule in '
                         'shop.yaml allows tcp/22 from web1 [web] to app1 [app]')


def test_a_missing_flow_shows_as_the_miss_of_its_table_and_a_foreign_cookie_as_such():
    # the destination's emission flow deleted: output's miss flow drops it
    missing = text('routed_hv4_destination.txt').replace(
        '80. reg15=0x2,dl_vlan=20, priority 110, cookie 0x100000002000021\n    pop_vlan\n    output:2\n',
        '80. priority 0, cookie 0xf00000000000020\n    drop\n').replace(
        'Datapath actions: ct(commit,zone=2,mark=0x67041d30/0xffffffff),pop_vlan,2',
        'Datapath actions: ct(commit,zone=2,mark=0x67041d30/0xffffffff)')
    r = walk.HopResult(_hop(), ofproto.parse(missing), exits=[LOCAL])
    v = explain.verdict([r], _ctx())
    assert v['text'].startswith('dropped at output on hv4 by the table\'s miss flow'), v
    foreign = missing.replace('cookie 0xf00000000000020', 'cookie 0xdead')
    v = explain.verdict([walk.HopResult(_hop(), ofproto.parse(foreign), exits=[LOCAL])], _ctx())
    assert 'did not make (cookie 0xdead' in v['text'], v


def test_each_step_reads_as_table_and_decision_with_its_owner():
    r = _result('routed_hv4_destination.txt')
    ours = lambda hop, bridge: bridge == 'br-int'      # noqa: E731
    rows = explain.step_rows(r, _ctx(ours=ours))
    assert (rows[0]['table_name'], rows[0]['decision'], rows[0]['app']) == (
        'table0', 'NORMAL (no learned MAC for destination, flooding)', None)
    by = {(x['table_name'], x['recirc']): x for x in rows}
    assert by[('l2_lookup', 0)]['decision'] == 'out-port=2, -> acl_out'
    assert by[('acl_out', 0)]['decision'] == 'conntrack (recirculate)'
    rule = by[('acl_out', 1)]
    assert (rule['app'], rule['tenant'], rule['owner'], rule['where']) == (
        'microseg', 'shop', 'rule:web-to-app', 'shop.yaml:14')
    assert by[('output', 1)]['decision'] == 'pop_vlan, output:2'


# ---- following hops with a fake ovs-appctl -------------------------------------------------------

def _view():
    from tests.unit.builders import example_fabric
    from controller.policy.model import Policy
    fabric = example_fabric()
    hv4 = fabric.hypervisors['hv4'].dpid
    inv = Inventory()
    sw = SwitchState(hv4, 'hv4', 'hypervisor')
    sw.ports = {1: Port(1, 'int-to-phy', True, UPLINK), 2: Port(2, 'vnet2', True, VM),
                3: Port(3, 'vxlan0', True, TUNNEL)}
    inv.switches[hv4] = sw
    inv.bindings[hv4] = {2: Binding('vnet2', 'shop/app1/nic0', '02:00:3f:00:00:01')}
    inv.switches[LEAF2] = SwitchState(LEAF2, 'leaf2', 'physical', {4: Port(4, 'u4', True, 'hypervisor')})
    inv.links[LinkEnd(LEAF2, 4)] = (LinkEnd(hv4, 1), 0.0)
    inv.hv_ports[LinkEnd(LEAF2, 4)] = hv4
    places = {hv4: walk.Place('/run/hv4.ctl', 'br-int'), LEAF2: walk.Place(None, 'leaf2')}
    return walk.View(Policy(fabric), inv, places), hv4


def test_follow_enters_a_hypervisor_by_its_uplink_and_finds_the_vm_port():
    view, hv4 = _view()
    asked = []

    def runner(argv):
        asked.append(argv)
        if argv[-1] == 'dpif/show':
            return text('dpif_hv4.txt')
        return text('routed_hv4_destination.txt')
    entry = walk._enter(view, _hop(), LinkEnd(hv4, 1), 'cable from leaf2 port 4', {'dl_vlan': '20'}, runner)
    assert (entry.switch, entry.place.bridge, entry.in_port) == ('hv4', 'br-phy', 'phy0')
    results = walk.follow(view, entry, runner)
    assert len(results) == 1 and results[0].error is None
    ends = [n for _, _, n in results[0].exits]
    assert [(e.kind, e.port) for e in ends] == [('local', 'br-phy'), ('delivered', 'vnet2')]
    assert ends[1].iface_id == 'shop/app1/nic0'
    trace = asked[1]
    assert trace[:5] == ['ovs-appctl', '--timeout=5', '-t', '/run/hv4.ctl', 'ofproto/trace']
    assert trace.count('--ct-next') == walk.CT_RECIRCS and trace[-2:] == ['br-phy', 'in_port=phy0,dl_vlan=20']


def test_a_tunnel_goes_to_the_hypervisor_of_that_vtep_at_its_tunnel_port():
    view, hv4 = _view()
    src = walk.Hop(hv4, 'hv4', view.places[hv4], '2', (('tcp_flags', '0x002'),), 'from app1')
    nxt = walk._tunnel(view, src, {'vni': '5061', 'dst': str(view.policy.fabric.hypervisors['hv4'].vtep)},
                       {'dl_dst': '02:00:3e:00:00:01', 'dl_vlan': '4094'})
    assert nxt.in_port == '3' and dict(nxt.fields)['tun_id'] == '5061' and 'dl_vlan' not in dict(nxt.fields)
    assert dict(nxt.fields)['tun_src'] == str(view.policy.fabric.hypervisors['hv4'].vtep)
    gone = walk._tunnel(view, src, {'vni': '5061', 'dst': '192.0.2.9'}, {})
    assert gone.kind == 'left' and 'no hypervisor' in gone.text
    assert 'tun_id=5061' in nxt.flow() and nxt.flow().index('tun_id') < nxt.flow().index('dl_dst')


def test_an_unreachable_vswitchd_is_an_error_of_that_hop_not_a_crash():
    view, hv4 = _view()

    def runner(argv):
        raise RuntimeError('cannot connect to "/run/hv4.ctl"')
    results = walk.follow(view, walk.Hop(hv4, 'hv4', view.places[hv4], '2', (), 'from app1'), runner)
    assert results[0].error.startswith('cannot trace on hv4 (br-int): cannot connect')
    v = explain.verdict(results, _ctx())
    assert v['result'] == 'unknown' and 'cannot connect' in v['text']


# ---- the packet and the request ------------------------------------------------------------------

def test_services_and_the_default_line():
    assert service.parse_service('tcp/22') == ('tcp', 22)
    assert service.parse_service(None) == ('icmp', None)
    for bad in ('tcp', 'tcp/0', 'tcp/70000', 'sctp/3', 'icmp/8'):
        with pytest.raises(service.TraceRequestError):
            service.parse_service(bad)
    assert service.default_line('tenant: a\nsecurity:\n  # deny\n  default: deny\n') == 4
    assert service.default_line('tenant: a\nsecurity: {default: deny, rules: []}\n') == 2
    assert service.default_line('tenant: a\nnetworks: {}\n') == 0


def _policy():
    from controller.policy.model import Policy
    from tests.unit.builders import example_fabric, make_tenant
    t = make_tenant('shop', {'web': {'vlan': 10, 'routed': True}, 'app': {'vlan': 20, 'routed': True},
                             'iso': {'vlan': 30}},
                    {'web1': [('web', '02:00:00:00:00:01')], 'web2': [('web', '02:00:00:00:00:02')],
                     'app1': [('app', '02:00:00:00:00:03')], 'iso1': [('iso', '02:00:00:00:00:04')]})
    o = make_tenant('other', {'lan': {'vlan': 40, 'routed': True}}, {'x1': [('lan', '02:00:00:00:00:05')]})
    return Policy(example_fabric()).with_tenants([t, o])


def test_the_packet_is_bridged_in_the_subnet_routed_to_the_gateway_mac_outside():
    pol = _policy()
    web1, web2 = pol.nics['shop/web1/nic0'], pol.nics['shop/web2/nic0']
    p = service.build_packet(pol, web1, web2, 'tcp', 5432)
    assert p['how'] == 'bridged' and p['fields']['dl_dst'] == '02:00:00:00:00:02'
    assert p['fields']['tcp_flags'] == '0x002' and p['fields']['tp_dst'] == '5432'
    p = service.build_packet(pol, web1, pol.nics['shop/app1/nic0'], 'icmp', None)
    assert p['how'] == 'routed' and p['fields']['dl_dst'] == pol.fabric.gateway_mac
    assert (p['fields']['icmp_type'], p['fields']['nw_proto']) == ('8', '1')
    with pytest.raises(service.TraceRequestError, match='no gateway'):
        service.build_packet(pol, pol.nics['shop/iso1/nic0'], web1, 'icmp', None)
    with pytest.raises(service.TraceRequestError, match='ARP gets no answer'):
        service.build_packet(pol, web1, ipaddress.ip_address(str(web1.network.subnet[99])), 'icmp', None)


def test_sources_and_destinations_by_name_ip_and_other_tenant():
    pol = _policy()
    web1 = pol.nics['shop/web1/nic0']
    assert service._nic_of(pol, 'shop', 'web1', own=True) == web1
    assert service._nic_of(pol, 'shop', str(web1.nic.ip), own=True) == web1
    assert service._nic_of(pol, 'shop', 'other/x1', own=False).tenant.name == 'other'
    with pytest.raises(service.TraceRequestError):
        service._nic_of(pol, 'shop', 'other/x1', own=True)          # the source is the tenant's own
    with pytest.raises(service.TraceRequestError):
        service._nic_of(pol, 'shop', 'web9', own=True)
    x1 = pol.nics['other/x1/nic0']
    assert service._nic_of(pol, 'shop', str(x1.nic.ip), own=False) == x1
    assert service._nic_of(pol, 'shop', '192.0.2.1', own=False) == ipaddress.ip_address('192.0.2.1')


# ---- show macs -----------------------------------------------------------------------------------

def test_show_macs_counts_learned_and_known_entries_once_by_tenant():
    import threading

    from controller.pipeline import cookies
    from controller.pipeline.flow import Flow, vid
    pol = _policy()

    class Rec:
        def installed(self, dpid):
            c = cookies.make('vlan_portgroups', 1, 'web1/nic0', 'shop')
            return {Flow.make('l2_lookup', 150, {'vlan_vid': vid(10), 'eth_dst': '02:00:00:00:00:01'}, cookie=c),
                    Flow.make('l2_lookup', 150, {'vlan_vid': vid(40), 'eth_dst': '02:00:00:00:00:05'}, cookie=c)}

    class Core:
        lock, policy, rec, conns = threading.Lock(), pol, Rec(), {0x201: object()}
        inv = Inventory(switches={0x201: SwitchState(0x201, 'leaf1', 'physical'),
                                  0x11: SwitchState(0x11, 'hv1', 'hypervisor')},
                        macs={0x201: {(10, '02:00:00:00:00:01'): 3, (1, '0e:00:00:00:00:09'): 4}})
    rows = macs.view(Core())
    assert rows == [{'switch': 'leaf1', 'dpid': '%016x' % 0x201, 'connected': True, 'macs': 3, 'learned': 2,
                     'known_nics': 2, 'tenants': {'other': 1, 'shop': 1, 'unknown': 1}}]


def test_the_uplink_leads_to_the_leaf_port_lldp_found_and_an_edge_port_leaves_the_fabric():
    view, hv4 = _view()
    src = walk.Hop(hv4, 'hv4', view.places[hv4], '2', (), 'from app1')
    bond = ofproto.Exit(ofproto.BOND, (('dl_vlan', '20'),))
    nxt = walk._next(view, src, None, bond, lambda argv: '')
    assert (nxt.switch, nxt.place, nxt.in_port, dict(nxt.fields)) == ('leaf2', view.places[LEAF2], '4',
                                                                      {'dl_vlan': '20'})
    view.inv.switches[LEAF2].ports[7] = Port(7, 'e7', True, 'edge')
    port = ofproto.DpPort('leaf2', 'e7', 7, 12, '')
    end = walk._next(view, nxt, port, ofproto.Exit(12, ()), lambda argv: '')
    assert end.kind == 'left' and 'leaves the fabric at leaf2 port e7' in end.text


def test_the_rules_between_the_pair_are_named_next_to_the_default_deny():
    from controller.policy.model import Allow, Endpoint, Rule, Security
    pol = _policy()
    t = dataclasses.replace(pol.tenants['shop'], security=Security('deny', (
        Rule('web-to-app', Endpoint(workload='web1'), Endpoint(network='app'), (Allow('tcp', (8080, 8081)),
                                                                              Allow('icmp', None, 8)), line=14),
        Rule('to-web', Endpoint(cidr=ipaddress.ip_network('0.0.0.0/0')), Endpoint(workload='web2'),
             (Allow('any'),), line=15))))
    pol = pol.with_tenants([t, pol.tenants['other']])
    web1, app1, web2 = (pol.nics['shop/%s/nic0' % w] for w in ('web1', 'app1', 'web2'))
    assert service.pair_rules(t, web1, app1) == ['web-to-app (shop.yaml:14): tcp/8080-8081, icmp type 8']
    assert service.pair_rules(t, app1, web2) == ['to-web (shop.yaml:15): any']
    assert service.pair_rules(t, app1, web1) == []
    r = _result('denied_hv4_destination.txt', [LOCAL])
    v = explain.verdict([r], _ctx(pair_rules=service.pair_rules(t, web1, app1)))
    assert v['text'].endswith('allows tcp/22 from web1 [web] to app1 [app]; the rules from web1 [web] to app1 [app] '
                              'allow only: web-to-app (shop.yaml:14): tcp/8080-8081, icmp type 8'), v


def test_the_flow_names_l4_ports_by_protocol_as_ofproto_trace_parses_them():
    hop = lambda proto: walk.Hop(1, 'hv1', walk.Place(None, 'br-int'), '2', (   # noqa: E731
        ('dl_type', '0x0800'), ('nw_proto', proto), ('tp_dst', '53'), ('tp_src', '40000')), 'x')
    assert hop('17').flow() == 'in_port=2,dl_type=0x0800,nw_proto=17,udp_src=40000,udp_dst=53'
    assert hop('6').flow() == 'in_port=2,dl_type=0x0800,nw_proto=6,tcp_src=40000,tcp_dst=53'


def test_a_tunnel_output_ovs_drops_says_why_and_an_open_one_leaves_with_its_vni():
    miss = ofproto.parse(text('overlay_neighbor_miss_hv1.txt'))
    assert ofproto.outcome(miss).exits == []
    ctx = _ctx(registry=type('R', (), {'decode': lambda self, v: {
        0x403000001000012: Cookie("vxlan_overlay", 3, "other", "ovl", "other.yaml:4")}.get(v, v)})())
    v = explain.verdict([walk.HopResult(_hop('hv1', 'br-int'), miss)], ctx)
    assert v['text'].startswith('dropped at output on hv1: the vxlan_overlay flow ovl of tenant other (other.yaml:4) '
                                'sent it to output:4, but OVS says: output to native tunnel; '), v
    assert v['text'].endswith('neighbor cache miss for 172.16.1.1 on bridge br-phy, sending ARP request'), v
    out = ofproto.outcome(ofproto.parse(text('overlay_open_hv1.txt')))
    # tnl_push(...),hash(l4(0)),recirc(0x1): encapsulated, then out of the bond
    assert [e.dp_port for e in out.exits] == [ofproto.BOND]
    assert dict(out.exits[0].encap) == {'vni': '5071', 'src': '172.16.1.11', 'dst': '172.16.2.12'}
