"""controller/pipeline/wire.py writes the very bytes os-ken writes for the same Flow (issue 11
part 4): every action kind and match field of the round-trip cases, a routing hypervisor's
whole compiled flow set, flow-mods and bundle adds, ADD and DELETE_STRICT; and it refuses
what os-ken refuses.  (tests/ovs/test_actions_roundtrip.py installs these bytes into OVS.)"""
from __future__ import annotations

import dataclasses
import struct
import types

import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser, ofproto_v1_4, ofproto_v1_4_parser

from controller import ofp
from controller.pipeline import actions as A
from controller.pipeline import cookies, wire
from controller.pipeline.flow import Flow
from tests.ovs.test_actions_roundtrip import CASES

V13 = types.SimpleNamespace(ofproto=ofproto_v1_3, ofproto_parser=ofproto_v1_3_parser)
V14 = types.SimpleNamespace(ofproto=ofproto_v1_4, ofproto_parser=ofproto_v1_4_parser)


def osken_flow_mod(dp, flow, command, cookie, xid) -> bytes:
    msg = ofp.flow_mod(dp, dataclasses.replace(flow, cookie=cookie), command)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def osken_bundle_add(dp, flow, command, cookie, xid, bid, flags) -> bytes:
    inner = ofp.flow_mod(dp, dataclasses.replace(flow, cookie=cookie), command)
    msg = dp.ofproto_parser.OFPBundleAddMsg(dp, bid, flags, inner, [])
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def fresh(flow: Flow) -> Flow:
    """An equal Flow with no encoding cached on it."""
    return dataclasses.replace(flow)


def routing_flows() -> list[Flow]:
    from tests.unit.builders import routing_world, switch_flows
    _, policy, inv, hv = routing_world()
    reg = cookies.Registry()
    return sorted({dataclasses.replace(f, cookie=reg.encode(f.cookie)) for f in switch_flows(policy, inv, hv)},
                  key=lambda f: (f.table, f.priority, repr(f.match)))


EXTRA = [        # kinds and fields the round-trip cases do not have (OVS takes each: tests/ovs)
    Flow.make('port_sec', 7, {'in_port': 5, 'vlan_vid': (0x1000, 0x1000), 'eth_type': 0x0806, 'arp_op': 1,
                              'arp_sha': '02:00:00:00:00:aa', 'arp_tha': ('02:00:00:00:00:00', 'ff:ff:ff:00:00:00'),
                              'arp_spa': '10.0.0.0/8'}, [A.set_field('arp_tha', '02:00:00:00:00:01'), A.output(1)],
              cookie=1),
    Flow.make('port_sec', 8, {'vlan_vid': (0x1000, 0x1000), 'vlan_pcp': 3, 'eth_type': 0x0800, 'ip_proto': 6,
                              'tcp_src': 1, 'tcp_flags': 2, 'ip_ecn': 1, 'nw_ttl': 3, 'xxreg2': (1 << 90, 1 << 90)},
              [A.set_field('vlan_pcp', 2), A.set_field('xxreg3', (5 << 64, 0xff << 64)), A.output(1)], cookie=2),
    Flow.make('port_sec', 9, {}, [A.bundle('hrw', (1, 2, 3)), A.bundle('active_backup', (4, 5))], cookie=3),
    Flow.make('port_sec', 10, {'eth_type': 0x0800, 'ip_proto': 1, 'icmpv4_type': 3, 'icmpv4_code': 0},
              [A.set_in_port(7), A.output_trunc(2, 100), A.output_trunc(3, 64)], cookie=4),
    Flow.make('port_sec', 11, {'in_port': 0xfffffffe}, [A.output(0xfeff)], hard_timeout=5, cookie=1 << 63),
]


def all_flows() -> list[Flow]:
    return [c[1] for c in CASES] + EXTRA + routing_flows()


@pytest.mark.parametrize('dp', [V14, V13], ids=['of14', 'of13'])
def test_flow_mods_are_byte_for_byte_what_os_ken_sends(dp):
    enc = wire.Encoder(dp.ofproto.OFP_VERSION, lambda a: ofp._action_bytes(dp, a))
    flows = all_flows()
    assert len(flows) > 100
    for i, f in enumerate(flows):
        cookie = 0x0300000000000000 | i
        want = osken_flow_mod(dp, f, dp.ofproto.OFPFC_ADD, cookie, 1000 + i)
        assert enc.flow_mod(fresh(f), wire.OFPFC_ADD, cookie, 1000 + i) == want, f
        assert enc.flow_mod(f, wire.OFPFC_ADD, cookie, 1000 + i) == want, f       # cached on the flow now
        assert enc.flow_mod(f, wire.OFPFC_ADD, cookie, 1000 + i) == want, f       # and read from the cache


def test_bundle_adds_are_byte_for_byte_what_os_ken_sends():
    enc = wire.Encoder(V14.ofproto.OFP_VERSION, lambda a: ofp._action_bytes(V14, a))
    flags = ofproto_v1_4.OFPBF_ATOMIC | ofproto_v1_4.OFPBF_ORDERED
    for i, f in enumerate(all_flows()):
        want = osken_bundle_add(V14, f, ofproto_v1_4.OFPFC_ADD, i * 7, 0xfffffff0 + i if i < 15 else i, 9, flags)
        assert enc.bundle_add(f, wire.OFPFC_ADD, i * 7, 0xfffffff0 + i if i < 15 else i, 9, flags) == want, f


def test_a_delete_carries_the_match_and_no_instructions():
    """os-ken would also send the instructions, which OVS ignores for a delete; leaving them
    out lets a flow read back with an action nobody can write (('unknown', ...)) be deleted."""
    enc = wire.Encoder(4, lambda a: ofp._action_bytes(V13, a))
    for i, f in enumerate(all_flows()):
        full = osken_flow_mod(V13, f, ofproto_v1_3.OFPFC_DELETE_STRICT, 5, i)
        got = enc.flow_mod(fresh(f), wire.OFPFC_DELETE_STRICT, 5, i)
        match_len = struct.unpack_from('!H', got, 50)[0]
        end = 48 + match_len + (-match_len % 8)
        assert len(got) == end and struct.unpack_from('!H', got, 2)[0] == end
        assert got[4:] == full[4:end] and got[:2] == full[:2], f
    unknown = Flow.make('port_sec', 100, {}, [('unknown', 'note:01020304')])
    assert enc.flow_mod(unknown, wire.OFPFC_DELETE_STRICT, 0, 1)
    with pytest.raises(wire.WireError):
        enc.flow_mod(unknown, wire.OFPFC_ADD, 0, 1)


def test_the_os_ken_encoder_is_used_once_per_distinct_action():
    calls = []

    def slow(a):
        calls.append(a)
        return ofp._action_bytes(V14, a)
    enc = wire.Encoder(5, slow)
    ct = A.ct(commit=True, zone='reg13', exec=[A.set_field('ct_mark', 1)])
    for i in range(50):
        enc.flow_mod(Flow.make('port_sec', 100, {'reg0': i}, [ct, A.output(1 + i % 3)]), wire.OFPFC_ADD, 0, i)
    assert calls == [ct]                   # the outputs are written by wire.py itself
    assert len(enc._actions) == 4


@pytest.mark.parametrize('flow', [
    Flow.make('port_sec', 1, {'no_such_field': 1}),
    Flow.make('port_sec', 1, {'in_port': 'local'}),
    Flow.make('port_sec', 1, {'eth_dst': 'zz:zz'}),
    Flow.make('port_sec', 1, {'reg0': 1 << 40}),
    Flow.make('port_sec', 1, {}, [('no_such_action', 1)]),
    Flow.make('port_sec', 1, {}, [A.output(1 << 40)]),
], ids=['field', 'in_port-name', 'mac', 'too-wide', 'action', 'port'])
def test_what_cannot_be_encoded_is_refused_with_the_reason(flow):
    enc = wire.Encoder(5, lambda a: ofp._action_bytes(V14, a))
    with pytest.raises(ValueError):
        enc.flow_mod(flow, wire.OFPFC_ADD, 0, 1)


def test_the_cache_is_not_part_of_a_flows_identity():
    f = fresh(CASES[0][1])
    g = fresh(f)
    wire.Encoder(5, lambda a: ofp._action_bytes(V14, a)).flow_mod(g, wire.OFPFC_ADD, 0, 1)
    assert g == f and hash(g) == hash(f) and g._wire is not None and f._wire is None
    import pickle
    h = pickle.loads(pickle.dumps(g))
    assert h == g and h._wire is None and h._hash is None and h.key == g.key


@pytest.mark.parametrize('field,value', [('ipv4_dst', '10.1'), ('ipv4_dst', '10.0.0.300'), ('eth_dst', '02:00:00:00:00'),
                                         ('eth_dst', '02:00:00:00:00:00:01'), ('arp_tpa', 'x.y.z.w')])
def test_a_bad_address_is_refused(field, value):
    enc = wire.Encoder(5, lambda a: ofp._action_bytes(V14, a))
    match = {'eth_type': 0x0806 if field.startswith('arp') else 0x0800, field: value}
    with pytest.raises(wire.WireError, match=field):
        enc.flow_mod(Flow.make('port_sec', 1, match), wire.OFPFC_ADD, 0, 1)
