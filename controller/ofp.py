"""The only module that imports the OpenFlow framework.

os-ken 4.2 by default; the same names exist in ryu, so `ryu-manager controller.ofp` (with
OPENDVS_FABRIC set) loads the same app.  Everything else in opendvs speaks Flow values and
plain calls; this module turns them into OpenFlow messages and os-ken events into calls on
controller.core.Controller.
"""
from __future__ import annotations

import functools
import itertools
import logging
import os
import signal
import threading

try:
    from os_ken.base import app_manager                 # must come before os_ken.controller.controller
    from os_ken.controller import controller as _ofctl, ofp_event
    from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
    from os_ken.lib import hub
    from os_ken.ofproto import nicira_ext, ofproto_v1_3, ofproto_v1_4
    AppBase, FRAMEWORK = app_manager.OSKenApp, 'os_ken'
except ImportError:                                     # pragma: no cover - ryu fallback
    from ryu.base import app_manager
    from ryu.controller import controller as _ofctl, ofp_event
    from ryu.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
    from ryu.lib import hub
    from ryu.ofproto import nicira_ext, ofproto_v1_3, ofproto_v1_4
    AppBase, FRAMEWORK = app_manager.RyuApp, 'ryu'

from controller.core import Controller
from controller.pipeline import tables
from controller.pipeline.flow import CONTROLLER, IN_PORT, LOCAL, Flow

LOG = logging.getLogger('opendvs.ofp')
# Set by the launcher; under ryu-manager, OPENDVS_FABRIC / OPENDVS_STATE_DIR / OPENDVS_API are used.
SETTINGS: dict = {'policy': None, 'state_dir': None, 'api': None}
REPLY_TIMEOUT = 10.0


class SwitchError(RuntimeError):
    pass


# ---- Flow <-> OpenFlow ----------------------------------------------------------------------

_FIELD_BITS = {'eth_src': 48, 'eth_dst': 48, 'arp_sha': 48, 'arp_tha': 48, 'arp_spa': 32, 'arp_tpa': 32,
               'ipv4_src': 32, 'ipv4_dst': 32}


def _special_ports(ofp):
    return {CONTROLLER: ofp.OFPP_CONTROLLER, IN_PORT: ofp.OFPP_IN_PORT, LOCAL: ofp.OFPP_LOCAL}


def to_actions(dp, actions) -> list:
    p, ofp = dp.ofproto_parser, dp.ofproto
    special = _special_ports(ofp)
    out = []
    for a in actions:
        if a[0] == 'output':
            out.append(p.OFPActionOutput(special.get(a[1], a[1]), ofp.OFPCML_NO_BUFFER))
        elif a[0] == 'push_vlan':
            out += [p.OFPActionPushVlan(0x8100), p.OFPActionSetField(vlan_vid=0x1000 | a[1])]
        elif a[0] == 'pop_vlan':
            out.append(p.OFPActionPopVlan())
        elif a[0] == 'set_field':
            out.append(p.OFPActionSetField(**{a[1]: a[2]}))
        elif a[0] == 'group':
            out.append(p.OFPActionGroup(a[1]))
        elif a[0] == 'move':
            out.append(p.NXActionRegMove(src_field=a[1], dst_field=a[2], n_bits=_FIELD_BITS[a[1]]))
        elif a[0] == 'dec_ttl':
            out.append(p.OFPActionDecNwTtl())
        elif a[0] == 'bundle':         # a bond: ('bundle', 'hrw' | 'active_backup', members)
            out.append(_bundle_action(p, a[1], a[2]))
        elif a[0] == 'set_in_port':    # an OVS extension: OXM in_port is read-only, NXM in_port is not
            out.append(p.NXActionRegLoad(ofs_nbits=nicira_ext.ofs_nbits(0, 15), dst='in_port_nxm', value=a[1]))
        elif a[0] == 'resubmit':       # ('resubmit', in_port or 'in_port' (the current one), table name)
            out.append(p.NXActionResubmitTable(in_port=_NX_IN_PORT if a[1] == IN_PORT else a[1],
                                               table_id=tables.table_id(a[2])))
        elif a[0] == 'multipath':      # ECMP: hash of the 5-tuple -> a link index 0..n-1 in a[2]
            out.append(p.NXActionMultipath(
                fields=nicira_ext.NX_HASH_FIELDS_SYMMETRIC_L4, basis=0,
                algorithm=nicira_ext.NX_MP_ALG_HASH_THRESHOLD, max_link=a[1] - 1, arg=0,
                ofs_nbits=nicira_ext.ofs_nbits(0, 15), dst=a[2]))
        else:
            raise ValueError('unknown action %r' % (a,))
    return out


_NX_IN_PORT = 0xfff8           # resubmit's port is 16 bits (OpenFlow 1.0 numbering): OFPP_IN_PORT there
_BUNDLE_ALGS = {nicira_ext.NX_BD_ALG_HRW: 'hrw', nicira_ext.NX_BD_ALG_ACTIVE_BACKUP: 'active_backup'}


def _bundle_action(p, algorithm: str, members):
    alg = {v: k for k, v in _BUNDLE_ALGS.items()}[algorithm]
    return p.NXActionBundle(algorithm=alg, fields=nicira_ext.NX_HASH_FIELDS_SYMMETRIC_L4, basis=0,
                            slave_type=nicira_ext.NXM_OF_IN_PORT, n_slaves=len(members), ofs_nbits=0,
                            dst=0, slaves=list(members))


def from_actions(dp, actions) -> tuple:
    p, ofp = dp.ofproto_parser, dp.ofproto
    special = {v: k for k, v in _special_ports(ofp).items()}
    out, acts = [], list(actions)
    i = 0
    while i < len(acts):
        a = acts[i]
        if isinstance(a, p.OFPActionOutput):
            out.append(('output', special.get(a.port, a.port)))
        elif isinstance(a, p.OFPActionPushVlan):
            nxt = acts[i + 1] if i + 1 < len(acts) else None
            if isinstance(nxt, p.OFPActionSetField) and nxt.key == 'vlan_vid':
                out.append(('push_vlan', nxt.value & 0xfff))
                i += 1
            else:
                out.append(('push_vlan_untagged',))
        elif isinstance(a, p.OFPActionPopVlan):
            out.append(('pop_vlan',))
        elif isinstance(a, p.OFPActionSetField):
            out.append(('set_field', a.key, a.value))
        elif isinstance(a, p.OFPActionGroup):
            out.append(('group', a.group_id))
        elif isinstance(a, p.NXActionRegMove):     # read back with NXM names: eth_src_nxm
            out.append(('move', a.src_field.removesuffix('_nxm'), a.dst_field.removesuffix('_nxm')))
        elif isinstance(a, p.OFPActionDecNwTtl):
            out.append(('dec_ttl',))
        elif isinstance(a, p.NXActionMultipath):
            out.append(('multipath', a.max_link + 1, a.dst))
        elif isinstance(a, p.NXActionBundle):
            out.append(('bundle', _BUNDLE_ALGS.get(a.algorithm, a.algorithm), tuple(a.slaves)))
        elif isinstance(a, (p.NXActionRegLoad, p.NXActionRegLoad2)) and a.dst == 'in_port_nxm':
            out.append(('set_in_port', a.value))
        elif isinstance(a, p.NXActionResubmitTable):
            out.append(('resubmit', IN_PORT if a.in_port == _NX_IN_PORT else a.in_port,
                        tables.table_name(a.table_id)))
        else:
            out.append(('unknown', str(a)))     # never equals a desired flow: gets replaced
        i += 1
    return tuple(out)


def flow_mod(dp, flow: Flow, command: int):
    p, ofp = dp.ofproto_parser, dp.ofproto
    inst = []
    acts = to_actions(dp, flow.actions)
    if acts:
        inst.append(p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, acts))
    if flow.goto:
        inst.append(p.OFPInstructionGotoTable(tables.table_id(flow.goto)))
    return p.OFPFlowMod(
        dp, cookie=flow.cookie, cookie_mask=0, table_id=tables.table_id(flow.table),
        command=command, idle_timeout=flow.idle_timeout, hard_timeout=flow.hard_timeout,
        priority=flow.priority, buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY, flags=ofp.OFPFF_SEND_FLOW_REM if flow.notify_removal else 0,
        match=p.OFPMatch(**flow.match_dict()), instructions=inst)


def flow_from_stats(dp, stat) -> Flow:
    """The Flow an installed entry (flow stats reply body) stands for."""
    p, ofp = dp.ofproto_parser, dp.ofproto
    actions, goto = (), None
    for inst in stat.instructions:
        if isinstance(inst, p.OFPInstructionActions) and inst.type == ofp.OFPIT_APPLY_ACTIONS:
            actions += from_actions(dp, inst.actions)
        elif isinstance(inst, p.OFPInstructionGotoTable):
            goto = tables.table_name(inst.table_id)
        else:
            actions += (('unknown-instruction', str(inst)),)
    return Flow.make(tables.table_name(stat.table_id), stat.priority, dict(stat.match.items()),
                     actions, goto, cookie=stat.cookie, idle_timeout=stat.idle_timeout,
                     hard_timeout=stat.hard_timeout,
                     notify_removal=bool(stat.flags & ofp.OFPFF_SEND_FLOW_REM))


# ---- one connected switch ---------------------------------------------------------------

class _Waiter:
    def __init__(self):
        self.msgs, self.error, self.done = [], None, threading.Event()


class OFSwitch:
    """A connected datapath as the reconciler sees it (controller.pipeline.reconciler.SwitchConn).

    Methods that wait for replies run on the converge thread; replies arrive through
    deliver() from the event loop."""

    def __init__(self, dp):
        self.dp = dp
        self.dpid = dp.id
        self.address = dp.address[0] if dp.address else None   # where its OVSDB is, for hypervisors
        self.bundles = dp.ofproto.OFP_VERSION >= ofproto_v1_4.OFP_VERSION
        self._waiters: dict[int, _Waiter] = {}
        self._errors: dict[int, object] = {}
        self._lock = threading.Lock()
        self._bundle_ids = itertools.count(1)

    # -- plumbing
    def _xid(self, msg) -> int:
        with self._lock:
            self.dp.set_xid(msg)
        return msg.xid

    def _expect(self, msg) -> _Waiter:
        w = _Waiter()
        self._waiters[self._xid(msg)] = w
        return w

    def _wait(self, msg, w: _Waiter, what: str):
        try:
            if not w.done.wait(REPLY_TIMEOUT):
                raise SwitchError('%016x: no reply to %s within %ss' % (self.dpid, what, REPLY_TIMEOUT))
            if w.error is not None:
                raise SwitchError('%016x: %s failed: %s' % (self.dpid, what, _error_text(self.dp, w.error)))
            return w.msgs
        finally:
            self._waiters.pop(msg.xid, None)

    def deliver(self, msg) -> None:
        """A reply or error from the switch (called on the event loop)."""
        w = self._waiters.get(msg.xid)
        if isinstance(msg, self.dp.ofproto_parser.OFPErrorMsg):
            if w is None:
                self._errors[msg.xid] = msg
                if len(self._errors) > 10000:
                    self._errors.pop(next(iter(self._errors)))
                return
            w.error = msg
            w.done.set()
            return
        if w is None:
            return
        w.msgs.append(msg)
        if not getattr(msg, 'flags', 0) & self.dp.ofproto.OFPMPF_REPLY_MORE:
            w.done.set()

    def _send_all(self, msgs) -> None:
        """Serialise and send many messages in few writes (about twice as fast as send_msg)."""
        buf = bytearray()
        for m in msgs:
            self._xid(m)
            m.serialize()
            buf += m.buf
            if len(buf) > 65536:
                self.dp.send(bytes(buf))
                buf = bytearray()
        if buf:
            self.dp.send(bytes(buf))

    def barrier(self) -> None:
        req = self.dp.ofproto_parser.OFPBarrierRequest(self.dp)
        self._send_and_wait(req, 'barrier')

    def _send_and_wait(self, msg, what):
        w = self._expect(msg)
        self.dp.send_msg(msg)
        return self._wait(msg, w, what)

    # -- SwitchConn
    def read_flows(self) -> set[Flow]:
        p, ofp = self.dp.ofproto_parser, self.dp.ofproto
        req = p.OFPFlowStatsRequest(self.dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                    0, 0, p.OFPMatch())
        replies = self._send_and_wait(req, 'flow stats')
        return {flow_from_stats(self.dp, s) for r in replies for s in r.body}

    def apply(self, delete: list[Flow], add: list[Flow]) -> None:
        ofp = self.dp.ofproto
        mods = [flow_mod(self.dp, f, ofp.OFPFC_DELETE_STRICT) for f in delete]
        mods += [flow_mod(self.dp, f, ofp.OFPFC_ADD) for f in add]
        if not self.bundles:                      # OpenFlow 1.3: best effort, not atomic
            self._send_all(mods)
            self.barrier()
            return
        self._bundle(mods)

    def _bundle(self, mods) -> None:
        p, ofp = self.dp.ofproto_parser, self.dp.ofproto
        flags = ofp.OFPBF_ATOMIC | ofp.OFPBF_ORDERED
        bid = next(self._bundle_ids)
        msgs = [p.OFPBundleCtrlMsg(self.dp, bid, ofp.OFPBCT_OPEN_REQUEST, flags, [])]
        msgs += [p.OFPBundleAddMsg(self.dp, bid, flags, m, []) for m in mods]
        self._send_all(msgs)
        self.barrier()                 # every add-time error has arrived before the barrier reply
        bad = [self._errors.pop(m.xid) for m in msgs if m.xid in self._errors]
        if bad:
            self.dp.send_msg(p.OFPBundleCtrlMsg(self.dp, bid, ofp.OFPBCT_DISCARD_REQUEST, flags, []))
            raise SwitchError('%016x: bundle rejected, nothing applied: %s' % (
                self.dpid, '; '.join(_error_text(self.dp, e) for e in bad[:3])))
        commit = p.OFPBundleCtrlMsg(self.dp, bid, ofp.OFPBCT_COMMIT_REQUEST, flags, [])
        self._send_and_wait(commit, 'bundle commit')

    def packet_out(self, port: int, data: bytes) -> None:
        p, ofp = self.dp.ofproto_parser, self.dp.ofproto
        self.dp.send_msg(p.OFPPacketOut(self.dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                                        actions=[p.OFPActionOutput(port, 0)], data=data))


def _error_text(dp, err) -> str:
    return 'OFPErrorMsg type=%d code=%d' % (err.type, err.code)


# ---- the app shim -----------------------------------------------------------------------

# Test hook: OPENDVS_INJECT_FAULT=packet_in,... makes those handlers raise once, so tests can
# prove a handler exception is logged and never stops the controller.
_FAULTS = set(filter(None, os.environ.get('OPENDVS_INJECT_FAULT', '').split(',')))


def _safe(fn):
    """An exception in a handler is logged and the event loop goes on (os-ken's native hub
    would otherwise end the app's loop silently and wedge every switch)."""
    @functools.wraps(fn)
    def wrapper(self, ev):
        try:
            if fn.__name__ in _FAULTS:
                _FAULTS.discard(fn.__name__)
                raise RuntimeError('injected fault (OPENDVS_INJECT_FAULT)')
            return fn(self, ev)
        except Exception:
            LOG.exception('handler %s failed on %s', fn.__name__, type(ev).__name__)
    return wrapper


class OpenDVSApp(AppBase):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from controller.api import server, service
        from controller.inventory.ovsdb import OVSDB_PORT, BindingWatcher
        from controller.policy.store import PolicyStore, ensure_token
        policy, state_dir, api = SETTINGS['policy'], SETTINGS['state_dir'], SETTINGS['api']
        if policy is None:                       # loaded by ryu-manager / osken tooling
            policy, state_dir, api = load_running_policy(
                os.environ['OPENDVS_FABRIC'], os.environ.get('OPENDVS_STATE_DIR', '/var/lib/opendvs'),
                os.environ.get('OPENDVS_API'))

        def watch(name, address, on_change):
            return BindingWatcher(name, 'tcp:%s:%d' % (address, OVSDB_PORT), on_change).start()
        self.core = _bonded_controller(policy, watch, SETTINGS.get('switch_ovsdb'), SETTINGS.get('ofp_port'))
        self.core.start()
        self.conns: dict[int, OFSwitch] = {}     # id(datapath) -> OFSwitch
        self.api = None
        if api:
            svc = service.PolicyService(self.core, PolicyStore(state_dir))
            self.api = server.serve(svc, ensure_token(state_dir), *api)

    def close(self):
        self.core.stop()
        if self.api is not None:
            self.api.shutdown()
        super().close()

    def _conn(self, dp) -> OFSwitch | None:
        return self.conns.get(id(dp))

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    @_safe
    def state_change(self, ev):
        dp = ev.datapath
        if ev.state == MAIN_DISPATCHER:
            conn = OFSwitch(dp)
            self.conns[id(dp)] = conn
            ports = [(no, _name(pt), _up(dp, pt)) for no, pt in dp.ports.items()
                     if no <= dp.ofproto.OFPP_MAX]
            self.core.switch_up(conn, ports)
        elif ev.state == DEAD_DISPATCHER:
            conn = self.conns.pop(id(dp), None)
            if conn is not None:
                self.core.switch_down(conn)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    @_safe
    def port_status(self, ev):
        msg, dp = ev.msg, ev.msg.datapath
        ofp = dp.ofproto
        if msg.desc.port_no > ofp.OFPP_MAX or self._conn(dp) is None:
            return
        reason = {ofp.OFPPR_ADD: 'add', ofp.OFPPR_DELETE: 'delete'}.get(msg.reason, 'modify')
        self.core.port_status(dp.id, reason, msg.desc.port_no, _name(msg.desc), _up(dp, msg.desc))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @_safe
    def packet_in(self, ev):
        msg = ev.msg
        self.core.packet_in(msg.datapath.id, msg.match['in_port'], msg.table_id, bytes(msg.data))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    @_safe
    def flow_removed(self, ev):
        msg = ev.msg
        flow = Flow.make(tables.table_name(msg.table_id), msg.priority, dict(msg.match.items()),
                         cookie=msg.cookie)
        self.core.flow_removed(msg.datapath.id, flow)

    @set_ev_cls([ofp_event.EventOFPFlowStatsReply, ofp_event.EventOFPBarrierReply,
                 ofp_event.EventOFPBundleCtrlMsg, ofp_event.EventOFPErrorMsg], MAIN_DISPATCHER)
    @_safe
    def reply(self, ev):
        conn = self._conn(ev.msg.datapath)
        if conn is not None:
            conn.deliver(ev.msg)


def _bonded_controller(policy, watch_bindings, switch_ovsdb, ofp_port=None):
    """The core with bonded hypervisor uplinks (controller/bonds.py): bonds come from the
    physical switches' OVSDB (`switch_ovsdb`, a remote; None: no bonds) and each hypervisor's."""
    from controller.bonds import BondedController
    from controller.inventory.bonds import BondWatcher
    from controller.inventory.ovsdb import OVSDB_PORT

    def uplinks(name, address, on_change):
        return BondWatcher(name, 'tcp:%s:%d' % (address, OVSDB_PORT), on_change).start()
    switches = (lambda on_change: BondWatcher('switches', switch_ovsdb, on_change).start()) if switch_ovsdb else None
    return BondedController(policy, watch_bindings=watch_bindings, switch_ovsdb=switches, watch_uplinks=uplinks,
                            ofp_port=ofp_port)


def _name(port) -> str:
    n = port.name
    return n.decode(errors='replace') if isinstance(n, bytes) else n


def _up(dp, port) -> bool:
    return not (port.state & dp.ofproto.OFPPS_LINK_DOWN or port.config & dp.ofproto.OFPPC_PORT_DOWN)


# ---- the launcher (os-ken 4.x has no osken-manager) -------------------------------------

class _TaskExit(BaseException):
    """os-ken's native hub uses Exception as TaskExit, so `except TaskExit: raise` re-raises
    every handler error and silently ends the app loop; a BaseException subclass fixes both
    that and the silent death of spawned threads."""


def _harden_framework() -> None:
    hub.TaskExit = _TaskExit
    orig = _ofctl.Datapath._recv_loop
    if getattr(orig, '_opendvs', False):
        return

    def _recv_loop(self):
        # When the socket closes, wake the send thread so the Datapath closes and
        # DEAD_DISPATCHER is raised (it otherwise never is, see reference/osken-ovs.md 6.2).
        try:
            orig(self)
        finally:
            if self.send_q is not None:
                self.send(b'', close_socket=True)
    _recv_loop._opendvs = True
    _ofctl.Datapath._recv_loop = _recv_loop


def load_running_policy(fabric_path: str, state_dir: str, api: tuple | None):
    """The fabric plus the tenant policies accepted before (state dir); PolicyError if bad."""
    from controller.api.service import build_tenants
    from controller.policy.fabric import load_fabric
    from controller.policy.model import Policy
    from controller.policy.store import PolicyStore
    fabric = load_fabric(fabric_path)
    policy = Policy(fabric).with_tenants(build_tenants(fabric, PolicyStore(state_dir).load()))
    return policy, state_dir, api


def run(policy, state_dir: str, ofp: tuple[str, int], api: tuple[str, int] | None,
        switch_ovsdb: str | None = None) -> None:
    """Serve OpenFlow (and the API) until SIGINT/SIGTERM; never returns."""
    from os_ken import cfg
    host, port = ofp
    SETTINGS.update(policy=policy, state_dir=state_dir, api=api, switch_ovsdb=switch_ovsdb, ofp_port=port)
    _harden_framework()

    def _stop(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    mgr = app_manager.AppManager.get_instance()
    code = 0
    try:        # a signal may arrive at any point here: everything below exits through finally
        cfg.CONF(args=['--ofp-listen-host', host, '--ofp-tcp-listen-port', str(port)],
                 project='os_ken', default_config_files=[])
        mgr.load_apps([__name__])
        services = mgr.instantiate_apps(**mgr.create_contexts())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # see controller_main
        hub.joinall(services)
    except SystemExit:
        LOG.info('stopping')
    except BaseException:
        LOG.exception('controller failed')
        code = 1
    finally:
        threading.Timer(3.0, os._exit, (code or 1,)).start()   # in case close() blocks
        try:
            mgr.close()
        except BaseException:
            LOG.exception('closing apps failed')
        finally:
            logging.shutdown()
            os._exit(code)      # os-ken's server/datapath threads are not daemons
