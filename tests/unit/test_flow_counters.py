"""OFSwitch.flow_counters (issue 9, part 5): one flow-stats request filtered by cookie/mask,
answered on the request/response path every other request uses, and a short timeout of its
own (`dvsctl show rules` must not wait REPLY_TIMEOUT on a hypervisor that does not answer)."""
import threading
import time

import pytest
from os_ken.ofproto import ofproto_v1_4 as ofp14, ofproto_v1_4_parser as p14

from controller import ofp
from tests.unit.test_ofswitch_closed import Dp

COOKIE, MASK = 0x0600000100000000, 0xff00ffffff000000


def stats(cookie, packets, nbytes):
    return p14.OFPFlowStats(table_id=70, priority=200, cookie=cookie, packet_count=packets, byte_count=nbytes,
                            match=p14.OFPMatch(), instructions=[])


def reply(dp, xid, body, more=False):
    msg = p14.OFPFlowStatsReply(dp, body=body, flags=ofp14.OFPMPF_REPLY_MORE if more else 0)
    msg.xid = xid
    return msg


def test_the_request_names_the_cookie_and_mask_and_every_reply_part_counts():
    dp = Dp()
    sw = ofp.OFSwitch(dp)

    def answer():
        while not dp.sent:
            time.sleep(0.01)
        sw.deliver(reply(dp, dp.xid, [stats(COOKIE | 3 << 48 | 7, 4, 296)], more=True))
        sw.deliver(reply(dp, dp.xid, [stats(COOKIE | 4 << 48 | 9, 12, 888), stats(COOKIE | 5 << 48 | 8, 0, 0)]))
    threading.Thread(target=answer).start()
    got = sw.flow_counters(COOKIE, MASK, timeout=5)
    assert got == [(COOKIE | 3 << 48 | 7, 4, 296), (COOKIE | 4 << 48 | 9, 12, 888), (COOKIE | 5 << 48 | 8, 0, 0)]
    req, = dp.sent
    assert isinstance(req, p14.OFPFlowStatsRequest)
    assert (req.cookie, req.cookie_mask, req.table_id, req.out_port) == (COOKIE, MASK, ofp14.OFPTT_ALL, ofp14.OFPP_ANY)
    assert not sw._waiters


def test_no_answer_within_its_timeout_is_an_error_at_once():
    sw = ofp.OFSwitch(Dp())
    t0 = time.monotonic()
    with pytest.raises(ofp.SwitchError, match='no reply to flow stats within 0.2s'):
        sw.flow_counters(COOKIE, MASK, timeout=0.2)
    assert time.monotonic() - t0 < 2 < ofp.REPLY_TIMEOUT
    assert not sw._waiters
