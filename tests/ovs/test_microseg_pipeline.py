"""Microsegmentation on a real OVS, no Mininet: hv1's compiled flows in a scratch bridge,
conntrack states given to ofproto/trace (--ct-next).  Tenant acme denies by default and
allows web -> db on tcp/5432; web1 and db1 share hv1, db2 is on hv3."""
from __future__ import annotations

import pytest

from apps import anycast_gateway as gw, microseg
from controller.inventory.model import Binding
from controller.pipeline import cookies
from controller.policy.model import Allow, Endpoint, Policy, Rule, Security
from tests.ovs.pipeline_bridge import PipelineBridge
from tests.support import is_root
from tests.unit.builders import (HV_TUN, HV_UPLINK, HV_VM2, HV_VM3, add_hypervisor, cabled_mesh, example_fabric,
                                 hypervisor_seen, make_tenant, switch_flows)

pytestmark = pytest.mark.skipif(not is_root(), reason='needs root and the OVS daemons')

WEB1, DB1, DB2 = '02:00:0b:00:00:01', '02:00:0b:00:00:02', '02:00:0b:00:00:03'
RULE = Rule('web-to-db', Endpoint(label='web'), Endpoint(label='db'), (Allow('tcp', (5432, 5432)),), line=7)


def world():
    fabric = example_fabric()
    t = make_tenant('acme', {'users': {'vlan': 10, 'routed': True}},
                    {'web1': [('users', WEB1)], 'db1': [('users', DB1)], 'db2': [('users', DB2)]},
                    security=Security('deny', (RULE,)))
    wls = dict(t.workloads)
    for name, label in (('web1', 'web'), ('db1', 'db'), ('db2', 'db')):
        wls[name] = wls[name].__class__(name, (label,), wls[name].nics)
    import dataclasses
    from controller.policy.model import frozen_map
    t = dataclasses.replace(t, workloads=frozen_map(wls))
    policy = Policy(fabric).with_tenants([t])
    inv, _ = cabled_mesh(fabric)
    hv1, hv3 = add_hypervisor(inv, fabric, 'hv1'), add_hypervisor(inv, fabric, 'hv3')
    inv.bind(hv1, {HV_VM2: Binding('v0', 'acme/web1/nic0', WEB1), HV_VM3: Binding('v1', 'acme/db1/nic0', DB1)})
    inv.bind(hv3, {HV_VM2: Binding('v0', 'acme/db2/nic0', DB2)})
    hypervisor_seen(fabric, inv, fabric.switches['leaf1'].dpid, 9, hv1)
    hypervisor_seen(fabric, inv, fabric.switches['leaf2'].dpid, 9, hv3)
    return policy, inv, hv1, hv3


def ip(policy, w):
    return str(policy.nics['acme/%s/nic0' % w].nic.ip)


@pytest.fixture(scope='module')
def hv1():
    policy, inv, hv, _ = world()
    reg = cookies.Registry()
    with PipelineBridge(ports=[HV_UPLINK, HV_VM2, HV_VM3], tunnel=HV_TUN) as br:
        br.load(switch_flows(policy, inv, hv), registry=reg,
                meters=['meter=%d,pktps,band=type=drop,rate=%d' % (gw.METER, gw.METER_PPS)])   # the gateway's
        yield br, reg, policy


def tcp(br, src_port, src, dst, policy, dport, ct):
    return br.trace(src_port, ct_next=ct, eth_src=src[0], eth_dst=dst[0], eth_type=0x0800, ip_proto=6,
                    ipv4_src=ip(policy, src[1]), ipv4_dst=ip(policy, dst[1]), tcp_dst=dport)


def acl(t):
    return [s for s in t.steps if s.name == 'acl_out']


def test_a_rule_admits_new_connections_to_its_port_and_counts_them_on_the_rule(hv1):
    br, reg, policy = hv1
    t = tcp(br, HV_VM2, (WEB1, 'web1'), (DB1, 'db1'), policy, 5432, 'trk,new')
    assert t.output_ports == [HV_VM3], t.text
    rule = [reg.decode(s.cookie) for s in acl(t) if reg.decode(s.cookie).kind == microseg.K_RULE]
    assert any(c.owner == 'rule:web-to-db' and c.where == 'acme.yaml:7' for c in rule), t.text
    assert 'ct(commit' in t.text and 'ct_mark' in t.text


def test_the_default_denies_other_ports_and_the_other_direction_and_counts_it(hv1):
    br, reg, policy = hv1
    for src, dst, sp, port in (((WEB1, 'web1'), (DB1, 'db1'), HV_VM2, 22), ((DB1, 'db1'), (WEB1, 'web1'), HV_VM3, 5432)):
        t = tcp(br, sp, src, dst, policy, port, 'trk,new')
        assert t.dropped and not t.output_ports, t.text
        assert reg.decode(acl(t)[-1].cookie).kind == microseg.K_DEFAULT


def test_replies_pass_and_leaving_for_another_hypervisor_is_tracked_and_committed(hv1):
    br, _, policy = hv1
    t = tcp(br, HV_VM3, (DB1, 'db1'), (WEB1, 'web1'), policy, 40000, 'trk,est,rpl')
    assert t.output_ports == [HV_VM2], t.text
    t = tcp(br, HV_VM2, (WEB1, 'web1'), (DB2, 'db2'), policy, 5432, 'trk,new')
    assert t.output_ports == [HV_UPLINK] and 'ct(commit' in t.text, t.text


def test_invalid_packets_are_dropped(hv1):
    br, reg, policy = hv1
    t = tcp(br, HV_VM2, (WEB1, 'web1'), (DB1, 'db1'), policy, 5432, 'trk,inv')
    assert t.dropped and reg.decode(acl(t)[-1].cookie).kind == microseg.K_INVALID
