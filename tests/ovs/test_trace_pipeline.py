"""dvsctl trace on real OVS, no Mininet: every switch of the path a scratch bridge holding its
compiled flows (hv1 and hv3 in two racks, both leaves, both spines), the packet followed
with the real ovs-appctl ofproto/trace from bridge to bridge by controller/trace.  Tenant shop
denies by default and lets web open app on tcp/8080; tenant other lives next door.  A flow
deleted by hand on one spine shows as the point where the packet goes wrong."""
from __future__ import annotations

import dataclasses
import threading

import pytest

from apps import anycast_gateway as gw
from controller.inventory.model import Binding, Port
from controller.pipeline import cookies
from controller.policy.model import Allow, Endpoint, Policy, Rule, Security, frozen_map
from controller.trace import service, walk
from tests.ovs.pipeline_bridge import PipelineBridge
from tests.support import is_root, sh
from tests.unit.builders import (HV_TUN, HV_VM2, HV_VM3, add_hypervisor, cabled_mesh, example_fabric,
                                 hypervisor_seen, make_tenant, switch_flows)

pytestmark = pytest.mark.skipif(not is_root(), reason='needs root and the OVS daemons')

WEB1, WEB2, APP1, APP2, X1 = ('02:00:0c:00:00:%02x' % i for i in range(1, 6))
RULE = Rule('web-to-app', Endpoint(label='web'), Endpoint(label='app'), (Allow('tcp', (8080, 8080)),), line=14)
SHOP_TEXT = 'tenant: shop\n' + '\n' * 9 + 'security:\n  default: deny\n'     # `default:` on line 12


def world():
    fabric = example_fabric()
    shop = make_tenant('shop', {'web': {'vlan': 10, 'routed': True}, 'app': {'vlan': 20, 'routed': True}},
                       {'web1': [('web', WEB1)], 'web2': [('web', WEB2)], 'app1': [('app', APP1)],
                        'app2': [('app', APP2)]}, security=Security('deny', (RULE,)))
    labels = {'web1': 'web', 'web2': 'web', 'app1': 'app', 'app2': 'app'}
    shop = dataclasses.replace(shop, workloads=frozen_map(
        {n: dataclasses.replace(w, labels=(labels[n],)) for n, w in shop.workloads.items()}))
    other = make_tenant('other', {'lan': {'vlan': 30, 'routed': True}}, {'x1': [('lan', X1)]})
    policy = Policy(fabric).with_tenants([shop, other])
    inv, _ = cabled_mesh(fabric)
    hv1, hv3 = add_hypervisor(inv, fabric, 'hv1'), add_hypervisor(inv, fabric, 'hv3')
    inv.switches[hv3].ports[5] = Port(5, 'tap-hv3-c', True, 'vm')
    inv.bind(hv1, {HV_VM2: Binding('v0', 'shop/web1/nic0', WEB1), HV_VM3: Binding('v1', 'shop/app2/nic0', APP2)})
    inv.bind(hv3, {HV_VM2: Binding('v0', 'shop/app1/nic0', APP1), HV_VM3: Binding('v1', 'shop/web2/nic0', WEB2),
                   5: Binding('v2', 'other/x1/nic0', X1)})
    hypervisor_seen(fabric, inv, fabric.switches['leaf1'].dpid, 9, hv1)
    hypervisor_seen(fabric, inv, fabric.switches['leaf2'].dpid, 9, hv3)
    return policy, inv


@pytest.fixture(scope='module')
def fabric():
    policy, inv = world()
    reg = cookies.Registry()
    bridges = {}
    try:
        for dpid, sw in sorted(inv.switches.items()):
            hv = sw.kind == 'hypervisor'
            br = PipelineBridge(ports=sorted(p for p in sw.ports if p != HV_TUN), tunnel=HV_TUN if hv else None).up()
            bridges[dpid] = br
            br.load(switch_flows(policy, inv, dpid), registry=reg,
                    meters=['meter=%d,pktps,band=type=drop,rate=%d' % (gw.METER, gw.METER_PPS)] if hv else [])
            for no, p in list(sw.ports.items()):          # the inventory knows the ports by their names
                sw.ports[no] = dataclasses.replace(p, name='%sp%d' % (br.name, no) if no != HV_TUN else br.name + 'vx')
        yield policy, inv, reg, bridges
    finally:
        for br in bridges.values():
            br.down()


class Core:
    """What controller.trace.service reads of the controller core."""

    def __init__(self, policy, inv, reg, bridges):
        self.lock, self.policy, self.inv, self.cookies = threading.Lock(), policy, inv, reg
        self.conns = {d: type('Conn', (), {'bridge': br.name})() for d, br in bridges.items()}
        self.switch_bonds = {}


@pytest.fixture
def trace(fabric, monkeypatch):
    policy, inv, reg, bridges = fabric
    # every scratch bridge lives in the root ovs-vswitchd: ovs-appctl's default target
    monkeypatch.setattr(service, 'places', lambda core: {d: walk.Place(None, br.name) for d, br in bridges.items()})
    core = Core(policy, inv, reg, bridges)
    docs = {'shop': {'source': 'shop.yaml', 'text': SHOP_TEXT}}
    return lambda src, dst, svc=None: service.view(core, docs, 'shop', src, dst, svc)


def path(v) -> list[str]:
    return [h['switch'] for h in v['hops']]


def test_allowed_routed_across_racks_names_the_rule_and_every_switch(trace):
    v = trace('web1', 'app1', 'tcp/8080')
    assert v['verdict']['result'] == 'delivered', v['verdict']
    assert v['verdict']['text'] == 'delivered to app1 on hv3; allowed by rule web-to-app of tenant shop (shop.yaml:14)'
    assert v['forwarding'] == 'routed'
    assert path(v)[0] == 'hv1' and path(v)[-1] == 'hv3' and path(v)[1] == 'leaf1' and path(v)[-2] == 'leaf2'
    assert path(v)[2] in ('spine1', 'spine2')
    rows = [r for h in v['hops'] for r in h['steps']]
    l3 = next(r for r in rows if r['switch'] == 'hv1' and r['table_name'] == 'l3')
    assert l3['app'] == 'anycast_gateway' and l3['owner'] == 'app1/nic0' and 'dec_ttl' in l3['decision']
    rule = [r for r in rows if r['switch'] == 'hv3' and r['owner'] == 'rule:web-to-app']
    assert rule and rule[0]['table_name'] == 'acl_out' and rule[0]['where'] == 'shop.yaml:14'


def test_denied_by_the_default_the_wrong_port_and_the_wrong_direction(trace):
    for src, dst, svc, words in (('web1', 'app1', 'tcp/22', 'tcp/22 from web1 [web] to app1 [app]; the rules from '
                                  'web1 [web] to app1 [app] allow only: web-to-app (shop.yaml:14): tcp/8080'),
                                 ('app1', 'web1', 'tcp/8080', 'tcp/8080 from app1 [app] to web1 [web]')):
        v = trace(src, dst, svc)
        assert v['verdict']['result'] == 'dropped', v['verdict']
        where = 'hv3' if dst == 'app1' else 'hv1'
        assert v['verdict']['text'] == ('dropped by the default deny of tenant shop at acl_out on %s (shop.yaml:12); '
                                        'no rule in shop.yaml allows %s' % (where, words)), v['verdict']
        assert v['verdict']['switch'] == where and v['verdict']['table'] == 'acl_out'


def test_routed_on_the_same_hypervisor_and_bridged_across_racks(trace):
    v = trace('web1', 'app2', 'tcp/8080')                   # hv1 -> hv1, VLAN 10 -> VLAN 20
    assert path(v) == ['hv1'] and v['verdict']['text'].startswith('delivered to app2 on hv1'), v['verdict']
    v = trace('web1', 'web2', 'icmp')                       # bridged, but web-to-web has no rule
    assert v['forwarding'] == 'bridged' and path(v)[-1] == 'hv3'
    assert v['verdict']['text'].startswith('dropped by the default deny of tenant shop at acl_out on hv3')


def test_another_tenant_is_never_reached(trace):
    v = trace('web1', 'other/x1', 'icmp')
    assert v['verdict']['result'] == 'dropped' and path(v) == ['hv1'], v['verdict']
    assert 'at l3 on hv1' in v['verdict']['text'] and 'tenant other' in v['verdict']['text']


def test_a_deleted_flow_on_one_spine_is_where_the_packet_goes_wrong(fabric, trace):
    policy, inv, reg, bridges = fabric
    v = trace('web1', 'app1', 'tcp/8080')
    spine = path(v)[2]
    dpid = policy.fabric.switches[spine].dpid
    out = next(r for h in v['hops'] if h['switch'] == spine for r in h['steps'] if r['table_name'] == 'output')
    br = bridges[dpid].name
    before = sh('ovs-ofctl -O OpenFlow14 --no-stats dump-flows %s cookie=%s/-1,table=80' % (br, out['cookie']))
    sh('ovs-ofctl -O OpenFlow14 del-flows %s cookie=%s/-1,table=80' % (br, out['cookie']))
    try:
        v = trace('web1', 'app1', 'tcp/8080')
        assert v['verdict']['result'] == 'dropped', v['verdict']
        assert v['verdict']['text'].startswith("dropped at output on %s by the table's miss flow" % spine), v['verdict']
        assert path(v)[-1] == spine
    finally:
        for line in before.strip().splitlines():
            spec = line.strip().replace(' actions=', ',actions=').replace(', ', ',').replace(' ', ',')
            sh("ovs-ofctl -O OpenFlow14 add-flow %s '%s'" % (br, spec))
    assert trace('web1', 'app1', 'tcp/8080')['verdict']['result'] == 'delivered'
