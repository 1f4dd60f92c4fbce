"""The anycast gateway as compiled flows (no OVS: tests/ovs/test_routing_pipeline.py traces
them in a real bridge): who gets gateway flows, routes and ARP answers, and what trunks carry
for routed VLANs."""
from __future__ import annotations

import struct

from apps import anycast_gateway as gw, vlan_portgroups
from controller import floods
from controller.core import Controller
from controller.inventory.model import Binding
from controller.pipeline import cookies, registers as R, tables
from controller.pipeline.flow import vid
from controller.policy.model import Policy
from tests.unit.builders import (DB1, HV_UPLINK, HV_VM2, WEB1, FakeSwitch, add_hypervisor, by_table,
                                 example_fabric, make_tenant, routing_world, switch_flows)


def app_flows(flows, app=gw.APP):
    return {f for f in flows if cookies.app_of(f.cookie) == app}


def test_networks_without_a_gateway_stay_islands_and_get_nothing():
    fabric = example_fabric()
    t = make_tenant('acme', {'users': 10, 'servers': 20}, {'w1': [('users', WEB1)], 'd1': [('servers', DB1)]})
    _, policy, inv, hv1 = routing_world()
    policy = Policy(fabric).with_tenants([t])
    inv.bind(hv1, {HV_VM2: Binding('vnet0', 'acme/w1/nic0', WEB1)})
    for dpid in inv.switches:
        assert not app_flows(switch_flows(policy, inv, dpid)), inv.switches[dpid].name
    assert vlan_portgroups.port_vlans(policy, inv, hv1)[HV_UPLINK].routed_out == frozenset()


def test_a_tenant_routes_only_where_it_has_a_vm_on_a_routed_network():
    fabric, policy, inv, hv1 = routing_world()
    hv4 = add_hypervisor(inv, fabric, 'hv4')            # nothing bound: no gateway, no route
    assert not app_flows(switch_flows(policy, inv, hv4))
    flows = app_flows(switch_flows(policy, inv, hv1))
    vrfs = {f.match_dict().get(R.TENANT) for f in by_table(flows, 'l3')}
    assert vrfs == {policy.ids.tenant['acme'], policy.ids.tenant['zeta']}
    # a host route per located nic of each tenant: acme's five, zeta's one
    routes = [f for f in by_table(flows, 'l3') if cookies.kind_of(f.cookie) == gw.K_ROUTE]
    assert len(routes) == 6
    db1 = next(f for f in routes if f.match_dict()['ipv4_dst'] == str(policy.nics['acme/db1/nic0'].nic.ip))
    assert ('dec_ttl',) in db1.actions and ('set_field', 'eth_dst', DB1) in db1.actions
    # straight to where db1 is: hv1's uplink, tagged with db's VLAN (no l2 entry needed)
    assert ('set_field', 'vlan_vid', vid(20)) in db1.actions and db1.goto == 'acl_out'
    assert db1.actions[-1] == ('set_field', R.OUT_PORT, HV_UPLINK)
    assert db1.match_dict()[R.TENANT] == policy.ids.tenant['acme']
    app2 = next(f for f in routes if f.match_dict()['ipv4_dst'] == str(policy.nics['acme/app2/nic0'].nic.ip))
    assert ('set_field', 'tun_ipv4_dst', str(fabric.hypervisors['hv3'].vtep)) in app2.actions
    # ARP is answered for the networks with a VM here: acme's users and servers, not db
    answers = {f.match_dict()['arp_tpa'] for f in by_table(flows, 'arp_rsp') if 'arp_op' in f.match_dict()}
    assert str(policy.nics['acme/web2/nic0'].nic.ip) in answers
    assert str(policy.nics['acme/db1/nic0'].nic.ip) not in answers


def test_a_routed_vlan_is_sent_by_the_hypervisor_and_admitted_by_its_leaf_but_never_flooded_to_it():
    fabric, policy, inv, hv1 = routing_world()
    up = vlan_portgroups.port_vlans(policy, inv, hv1)[HV_UPLINK]
    assert up.tagged == {10, 30} and up.routed_out == {20, 40} and not up.carries(20)   # acme and zeta
    assert 20 not in up.admits()
    flows = switch_flows(policy, inv, hv1)
    assert not [f for f in by_table(flows, 'flood') if f.match_dict().get('vlan_vid') == vid(20)]
    assert not [f for f in by_table(flows, 'port_sec') if f.match_dict().get('vlan_vid') == vid(20)]
    # hv1 only routes into VLAN 20: no l2 entries for it (the routes say where), one emission for the trunk
    assert not [f for f in by_table(flows, 'l2_lookup') if f.match_dict().get('eth_dst') == DB1]
    assert [f for f in by_table(flows, 'output') if f.match_dict() == {R.OUT_PORT: HV_UPLINK}]
    leaf1 = fabric.switches['leaf1'].dpid
    port = vlan_portgroups.port_vlans(policy, inv, leaf1)[9]
    assert port.routed_in == {20, 40} and 20 in port.admits() and not port.carries(20)
    lf = switch_flows(policy, inv, leaf1)
    assert [f for f in by_table(lf, 'port_sec') if f.match_dict() == {'in_port': 9, 'vlan_vid': vid(20)}]
    flood20 = [f for f in by_table(lf, 'flood') if f.match_dict().get('vlan_vid') == vid(20)]
    assert all(('output', 9) not in f.actions for f in flood20)


def test_the_gateway_mac_is_never_learned_nor_forwarded_by_physical_switches():
    fabric, policy, inv, _ = routing_world()
    flows = app_flows(switch_flows(policy, inv, fabric.switches['spine1'].dpid))
    assert {(f.table, tuple(f.match_dict().items()), f.goto) for f in flows} == {
        ('learn', (('eth_src', fabric.gateway_mac),), 'arp_rsp'), ('l2_lookup', (('eth_dst', fabric.gateway_mac),), None)}
    assert all(f.actions == () for f in flows)       # no packet-in, no output


def test_ttl_expiry_is_answered_through_the_meter_and_the_hypervisor_it_came_from():
    fabric, policy, inv, hv1 = routing_world()
    ctl = Controller(policy)
    try:
        conn = FakeSwitch(hv1)
        ctl.switch_up(conn, [(p.no, p.name, True) for p in inv.switches[hv1].ports.values()])
        assert conn.meters[gw.METER] == (gw.METER_PPS, gw.METER_BURST)
        ports = inv.switches[hv1].ports
        assert set(conn.meters) - {gw.METER} == {m for p in ports for m, _, _ in floods.port_meters(p)}
        ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 28, 1, 0, 1, 17, 0, bytes([10, 4, 0, 10]), bytes([10, 4, 2, 14]))
        mac = lambda m: bytes.fromhex(m.replace(':', ''))       # noqa: E731
        frame = mac(fabric.gateway_mac) + mac(WEB1) + struct.pack('!HH', 0x8100, 10) + b'\x08\x00' + ip + bytes(8)
        ctl.packet_in(hv1, HV_VM2, tables.table_id('l3'), frame)
        [(port, reply)] = conn.sent
        assert port == HV_VM2 and reply[:6] == mac(WEB1) and reply[14 + 20] == 11
        ctl.packet_in(hv1, HV_VM2, tables.table_id('l3'), frame[:14] + struct.pack('!H', 99) + frame[16:])
        assert len(conn.sent) == 1                  # a VLAN nobody routes: nothing
    finally:
        ctl.stop()
