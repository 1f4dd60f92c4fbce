"""A switch session that dies stops every wait on it at once (issue 7, part 6): the converge
thread must not sit REPLY_TIMEOUT on a dead session while other switches wait behind it."""
import threading
import time
import types

import pytest
from os_ken.ofproto import ofproto_v1_4, ofproto_v1_4_parser

from controller import ofp


class Dp:
    """Just enough of an os-ken Datapath: xids, and a send that goes nowhere."""
    ofproto, ofproto_parser = ofproto_v1_4, ofproto_v1_4_parser
    id, address = 0x201, ('127.0.0.1', 1)

    def __init__(self):
        self.xid, self.sent = 0, []

    def set_xid(self, msg):
        self.xid += 1
        msg.set_xid(self.xid)

    def send_msg(self, msg):
        self.sent.append(msg)


def test_a_wait_on_a_session_that_closes_fails_at_once():
    sw = ofp.OFSwitch(Dp())
    threading.Timer(0.2, sw.closed).start()
    t0 = time.monotonic()
    with pytest.raises(ofp.SwitchError, match='session closed'):
        sw.barrier()
    assert time.monotonic() - t0 < 5 < ofp.REPLY_TIMEOUT + 1
    with pytest.raises(ofp.SwitchError, match='session closed'):     # and any later request
        sw.read_flows()
    assert not sw._waiters


def test_a_reply_still_answers_a_live_session():
    dp = Dp()
    sw = ofp.OFSwitch(dp)
    threading.Timer(0.1, lambda: sw.deliver(types.SimpleNamespace(xid=dp.xid, flags=0))).start()
    sw.barrier()
