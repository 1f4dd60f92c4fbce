"""OFSwitch.apply over the wire encoder (issue 11 part 4): one bundle per apply (OPEN, the
deletes then the adds, a barrier, COMMIT), consecutive xids, big writes; a refused add is
named with its flow and the bundle discarded; OpenFlow 1.3 sends plain flow-mods."""
from __future__ import annotations

import struct

import pytest
from os_ken.ofproto import ofproto_parser, ofproto_v1_3, ofproto_v1_3_parser, ofproto_v1_4, ofproto_v1_4_parser

from controller import ofp
from controller.pipeline import actions as A
from controller.pipeline.flow import Flow


class Dp:
    """Just enough of an os-ken Datapath: xids, and sends kept as bytes."""
    id, address = 0x201, ('127.0.0.1', 1)

    def __init__(self, proto, parser):
        self.ofproto, self.ofproto_parser = proto, parser
        self.xid, self.writes = 0, []

    def set_xid(self, msg):
        self.xid += 1
        msg.set_xid(self.xid)

    def send(self, buf):
        self.writes.append(bytes(buf))

    def send_msg(self, msg):
        if msg.xid is None:
            self.set_xid(msg)
        msg.serialize()
        self.send(msg.buf)

    def messages(self) -> list:
        """Every message written: os-ken parses the controller-side kinds it can (bundle
        control, barrier); flow-mods, bare or in a bundle add, are read here."""
        data, out, off = b''.join(self.writes), [], 0
        while off < len(data):
            version, type_, n, xid = struct.unpack_from('!BBHI', data, off)
            body = data[off:off + n]
            if type_ == 34:                                   # bundle add: its flow-mod
                bid, = struct.unpack_from('!I', body, 8)
                out.append(Msg('bundle_add', xid, bid, FlowMod(self.ofproto_parser, body[16:])))
            elif type_ == 14:
                out.append(Msg('flow_mod', xid, None, FlowMod(self.ofproto_parser, body)))
            elif type_ == self.ofproto.OFPT_BARRIER_REQUEST:
                out.append(Msg('OFPBarrierRequest', xid, None, None))
            else:
                m = ofproto_parser.msg(self, version, type_, n, xid, body)
                out.append(Msg(type(m).__name__, xid, getattr(m, 'bundle_id', None), m))
            off += n
        return out


class Msg:
    def __init__(self, kind, xid, bundle_id, body):
        self.kind, self.xid, self.bundle_id, self.body = kind, xid, bundle_id, body


class FlowMod:
    def __init__(self, parser, buf):
        (_, _, n, self.xid, self.cookie, _, self.table_id, self.command, _, _, self.priority) = \
            struct.unpack_from('!BBHIQQBBHHH', buf, 0)
        self.match = parser.OFPMatch.parser(buf, 48)
        end = 48 + self.match.length + (-self.match.length % 8)
        self.instructions = buf[end:n]


class Switch(ofp.OFSwitch):
    """Replies come from `refuse` (xid -> error) at the barrier; the commit succeeds."""

    def __init__(self, dp, refuse=()):
        super().__init__(dp)
        self.refuse, self.waited = refuse, []

    def _send_and_wait(self, msg, what, timeout=1.0):
        self.dp.send_msg(msg)
        self.waited.append(what)
        if what == 'barrier':
            for index in self.refuse:
                p = self.dp.ofproto_parser
                err = p.OFPErrorMsg(self.dp, type_=4, code=9, data=b'')
                err.xid = self.first + index
                self.deliver(err)
        return []

    def _send_flows(self, delete, add, bundle):
        first, flows, opened = super()._send_flows(delete, add, bundle)
        self.first = first
        return first, flows, opened


def flows(n, port=1):
    return [Flow.make('l2_lookup', 150, {'vlan_vid': 0x100a, 'eth_dst': '02:00:00:00:%02x:%02x' % (i >> 8, i & 255)},
                      [A.load('reg15', port)], goto='acl_out', cookie=i) for i in range(n)]


def test_one_bundle_deletes_first_consecutive_xids_big_writes():
    dp = Dp(ofproto_v1_4, ofproto_v1_4_parser)
    sw = Switch(dp)
    gone, new = flows(3000)[:1000], flows(3000, port=2)[1000:]
    sw.apply(gone, new)
    msgs = dp.messages()
    assert msgs[0].kind == 'OFPBundleCtrlMsg' and msgs[0].body.type == ofproto_v1_4.OFPBCT_OPEN_REQUEST
    adds = msgs[1:3001]
    assert all(m.kind == 'bundle_add' and m.bundle_id == msgs[0].bundle_id for m in adds)
    assert [m.xid for m in adds] == list(range(adds[0].xid, adds[0].xid + 3000))
    assert all(m.body.xid == m.xid for m in adds)              # the inner xid is the outer one
    assert [m.body.command for m in adds] == [ofproto_v1_4.OFPFC_DELETE_STRICT] * 1000 + [ofproto_v1_4.OFPFC_ADD] * 2000
    assert adds[0].body.instructions == b'' and adds[1000].body.instructions
    assert dict(adds[1000].body.match.items()) == {'vlan_vid': 0x100a, 'eth_dst': '02:00:00:00:03:e8'}
    assert (adds[1000].body.cookie, adds[1000].body.priority, adds[1000].body.table_id) == (1000, 150, 60)
    assert msgs[-2].kind == 'OFPBarrierRequest' and msgs[-1].body.type == ofproto_v1_4.OFPBCT_COMMIT_REQUEST
    assert sw.waited == ['barrier', 'bundle commit']
    assert len(dp.writes) < 10 and dp.xid == msgs[-1].xid       # a few big writes; xids reserved


def test_a_refused_add_is_named_and_the_bundle_discarded():
    dp = Dp(ofproto_v1_4, ofproto_v1_4_parser)
    fl = flows(500)
    sw = Switch(dp, refuse=(7, 300))
    with pytest.raises(ofp.SwitchError) as e:
        sw.apply([], fl)
    assert e.value.nothing_applied
    text = str(e.value)
    assert text.count('type=4 code=9') == 2 and str(fl[7]) in text and str(fl[300]) in text, text
    last = dp.messages()[-1]
    assert last.body.type == ofproto_v1_4.OFPBCT_DISCARD_REQUEST and sw.waited == ['barrier']
    assert not sw._errors


def test_openflow_13_sends_plain_flow_mods_and_names_the_refused():
    dp = Dp(ofproto_v1_3, ofproto_v1_3_parser)
    fl = flows(50)
    sw = Switch(dp, refuse=(49,))
    with pytest.raises(ofp.SwitchError, match='1 of 50 flow-mods refused') as e:
        sw.apply(fl[:10], fl[10:])
    assert not e.value.nothing_applied and str(fl[49]) in str(e.value)
    msgs = dp.messages()
    assert [m.kind for m in msgs] == ['flow_mod'] * 50 + ['OFPBarrierRequest']
    assert [m.body.command for m in msgs[:50]] == [ofproto_v1_3.OFPFC_DELETE_STRICT] * 10 + [ofproto_v1_3.OFPFC_ADD] * 40
