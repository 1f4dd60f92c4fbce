"""A test-only os-ken process that serves one switch and lets a test drive the real codec.

The parent (OsKen) starts `python -m tests.ovs.osken_harness PORT` and talks to it over
stdin/stdout with pickled (op, args) requests.  The child runs the production pieces --
controller.ofp.OFSwitch (flow_mod / flow_from_stats, bundles) and the Reconciler -- so a
round trip here is exactly what the controller does after a restart.

    converge(flows, fresh=False) -> (adds, deletes)   fresh: a new Reconciler that reads
                                                      the switch first, as after a restart
    read() -> set[Flow]                               OFPFlowStatsRequest, decoded

bench/push.py also times pushes here, where the controller would run them:
    store(name, flows)                                keep a flow set in the child
    reset()                                           a new Reconciler that has read the switch
    push(names) -> (adds, deletes, seconds)           converge to the union of stored sets;
                                                      seconds: Reconciler.converge, nothing else
    push_delta(removed, added, names) -> (...)        converge_delta, as the core sends a change
                                                      to an in-sync switch (names: the new set)
    osken(on)                                         send os-ken message objects, as before
                                                      controller/pipeline/wire.py (the baseline)
"""
from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from pathlib import Path


READY = threading.Event()
STATE: dict = {}


def _app_class():
    from controller import ofp

    class HarnessApp(ofp.AppBase):
        OFP_VERSIONS = [ofp.ofproto_v1_4.OFP_VERSION]

        @ofp.set_ev_cls(ofp.ofp_event.EventOFPStateChange, [ofp.MAIN_DISPATCHER])
        def state_change(self, ev):
            STATE['conn'] = ofp.OFSwitch(ev.datapath)
            READY.set()

        @ofp.set_ev_cls([ofp.ofp_event.EventOFPFlowStatsReply, ofp.ofp_event.EventOFPBarrierReply,
                         ofp.ofp_event.EventOFPBundleCtrlMsg, ofp.ofp_event.EventOFPErrorMsg],
                        ofp.MAIN_DISPATCHER)
        def reply(self, ev):
            conn = STATE.get('conn')
            if conn is not None and conn.dp is ev.msg.datapath:
                conn.deliver(ev.msg)
    HarnessApp.__module__ = __name__
    return HarnessApp


HarnessApp = _app_class() if __name__ == 'tests.ovs.osken_harness' else None


def _osken_send_flows(self, delete, add, bundle):
    """OFSwitch._send_flows as it was before controller/pipeline/wire.py: an os-ken message
    object per flow, serialised by os-ken, batched writes (bench/push.py's baseline)."""
    from controller import ofp
    p, o = self.dp.ofproto_parser, self.dp.ofproto
    mods = [ofp.flow_mod(self.dp, f, o.OFPFC_DELETE_STRICT, self.registry) for f in delete]
    mods += [ofp.flow_mod(self.dp, f, o.OFPFC_ADD, self.registry) for f in add]
    if bundle is not None:
        msgs = [p.OFPBundleCtrlMsg(self.dp, bundle[0], o.OFPBCT_OPEN_REQUEST, bundle[1], [])]
        msgs += [p.OFPBundleAddMsg(self.dp, bundle[0], bundle[1], m, []) for m in mods]
    else:
        msgs = mods
    self._send_all(msgs)
    return msgs[-len(mods)].xid if mods else 0, list(delete) + list(add), msgs[0].xid if bundle else None


def _serve(out) -> None:
    import gc
    import time
    from controller.pipeline.reconciler import Reconciler
    rec = Reconciler()
    stored: dict[str, list] = {}
    while True:
        hdr = sys.stdin.buffer.read(4)
        if len(hdr) < 4:
            return
        op, args = pickle.loads(sys.stdin.buffer.read(struct.unpack('!I', hdr)[0]))
        try:
            conn = STATE['conn']
            if op == 'converge':
                flows, fresh = args
                if fresh:
                    rec = Reconciler()
                d = rec.converge(conn, set(flows))
                reply = ('ok', (len(d.add), len(d.delete)))
            elif op == 'read':
                reply = ('ok', conn.read_flows())
            elif op == 'store':
                stored[args[0]] = args[1]
                gc.collect()          # the collector's debt for making the flows is not the push's
                reply = ('ok', len(args[1]))
            elif op == 'reset':
                rec = Reconciler()
                reply = ('ok', len(rec.load(conn)))
            elif op == 'push':
                desired = set().union(*(stored[n] for n in args[0]))
                t0 = time.perf_counter()
                d = rec.converge(conn, desired)
                reply = ('ok', (len(d.add), len(d.delete), time.perf_counter() - t0))
            elif op == 'push_delta':
                removed, added, names = args
                removed = set().union(*(stored[n] for n in removed))
                added = set().union(*(stored[n] for n in added))
                want = {f.key: f for n in names for f in stored[n]}    # the compiled set's index
                t0 = time.perf_counter()
                d = rec.converge_delta(conn, removed, added, want.get)
                reply = ('ok', (len(d.add), len(d.delete), time.perf_counter() - t0))
            elif op == 'osken':
                conn._send_flows = _osken_send_flows.__get__(conn) if args[0] else type(conn)._send_flows.__get__(conn)
                reply = ('ok', args[0])
            else:
                reply = ('error', 'unknown op %r' % op)
        except Exception as e:           # the test shows it
            reply = ('error', '%s: %s' % (type(e).__name__, e))
        data = pickle.dumps(reply)
        out.write(struct.pack('!I', len(data)) + data)
        out.flush()


def main(port: int) -> None:
    import logging
    from os_ken import cfg
    from controller import ofp
    out = os.fdopen(os.dup(1), 'wb')
    os.dup2(2, 1)                          # anything printed goes to the log, not the pipe
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    ofp._harden_framework()
    cfg.CONF(args=['--ofp-listen-host', '127.0.0.1', '--ofp-tcp-listen-port', str(port)],
             project='os_ken', default_config_files=[])
    mgr = ofp.app_manager.AppManager.get_instance()
    mgr.load_apps(['tests.ovs.osken_harness'])
    mgr.instantiate_apps(**mgr.create_contexts())
    try:
        if READY.wait(30):
            out.write(b'RDY!')
            out.flush()
            _serve(out)
    finally:
        os._exit(0)                        # os-ken's threads are not daemons


class OsKen:
    """The parent side: start, converge, read, stop."""

    def __init__(self, port: int, log: Path):
        self.port, self.log = port, Path(log)
        self.proc = None

    def start(self) -> 'OsKen':
        from tests import support
        self._logf = open(self.log, 'w')
        self.proc = subprocess.Popen([sys.executable, '-m', 'tests.ovs.osken_harness', str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._logf,
                                     cwd=str(support.ROOT), start_new_session=True)
        support._RUNNING.add(self.proc)
        return self

    def wait_ready(self) -> None:
        if self.proc.stdout.read(4) != b'RDY!':
            raise AssertionError('switch never connected to the harness:\n' + self.text())

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ''

    def _call(self, op, *args):
        data = pickle.dumps((op, args))
        self.proc.stdin.write(struct.pack('!I', len(data)) + data)
        self.proc.stdin.flush()
        hdr = self.proc.stdout.read(4)
        if len(hdr) < 4:
            raise AssertionError('harness died:\n' + self.text())
        status, value = pickle.loads(self.proc.stdout.read(struct.unpack('!I', hdr)[0]))
        if status != 'ok':
            raise RuntimeError(value)
        return value

    def converge(self, flows, fresh: bool = False) -> tuple[int, int]:
        """(adds, deletes) the reconciler sent to make the switch hold exactly `flows`."""
        return self._call('converge', list(flows), fresh)

    def read(self) -> set:
        return self._call('read')

    def store(self, name: str, flows) -> int:
        return self._call('store', name, list(flows))

    def reset(self) -> int:
        return self._call('reset')

    def push(self, *names: str) -> tuple[int, int, float]:
        return self._call('push', names)

    def push_delta(self, removed, added, names) -> tuple[int, int, float]:
        return self._call('push_delta', tuple(removed), tuple(added), tuple(names))

    def osken(self, on: bool) -> bool:
        return self._call('osken', on)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._logf.close()


if __name__ == '__main__':
    from tests.ovs import osken_harness
    osken_harness.main(int(sys.argv[1]))
