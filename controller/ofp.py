"""The only module that imports the OpenFlow framework.

os-ken 4.2 by default; the same names exist in ryu, so `ryu-manager controller.ofp` (with
OPENDVS_FABRIC set) loads the same app.  Everything else in opendvs speaks Flow values and
plain calls; this module turns them into OpenFlow messages and os-ken events into calls on
controller.core.Controller.  Every apps/ module gets an app class here too (capability(),
_bind_capabilities()), so `ryu-manager controller.ofp apps.learning_switch apps.topology`
runs just those capabilities on one core (README: Composing capabilities).
"""
from __future__ import annotations

import functools
import itertools
import logging
import os
import signal
import threading
import types

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

from controller import admission, lifecycle, metrics
from controller.capabilities import Capabilities
from controller.core import Controller, load_apps
from controller.pipeline import actions, fields, tables, wire
from controller.pipeline.flow import CONTROLLER, IN_PORT, LOCAL, Flow

LOG = logging.getLogger('opendvs.ofp')
# Set by the launcher; under ryu-manager, OPENDVS_FABRIC / OPENDVS_STATE_DIR / OPENDVS_API are used.
SETTINGS: dict = {'policy': None, 'state_dir': None, 'api': None}
CONTEXT = 'opendvs'          # the app context the front end and the capability apps share
REPLY_TIMEOUT = 10.0


class SwitchError(RuntimeError):
    def __init__(self, text: str, nothing_applied: bool = False):
        super().__init__(text)
        self.nothing_applied = nothing_applied      # the switch is as it was (a refused bundle)


# ---- Flow <-> OpenFlow ----------------------------------------------------------------------
# One encoder and one decoder per action kind (controller/pipeline/actions.py lists the
# normal forms).  Decoders build their result with the same constructors the compilers use,
# so a flow read back from OVS is == the flow written.

NX_LEARN_F_DELETE_LEARNED = 2
NAT_FLAGS = {'src': 1, 'dst': 2, 'persistent': 4, 'hash': 8, 'random': 16}   # NX_NAT_F_*
CT_RECIRC_NONE = 0xff


def _special_ports(ofp):
    return {CONTROLLER: ofp.OFPP_CONTROLLER, IN_PORT: ofp.OFPP_IN_PORT, LOCAL: ofp.OFPP_LOCAL}


def _user_field(name: str) -> str:
    """os-ken names an NXM header eth_src_nxm; flows use the OXM name (same width)."""
    return name[:-4] if name.endswith('_nxm') and name != 'in_port_nxm' else name


@functools.lru_cache(maxsize=None)
def _nat_class(p):
    """NXActionNAT with its body padded to 8 bytes: os-ken 4.2.2 sends a NAT with an address
    range short, and OVS refuses the next action (BAD_ACTION/BAD_LEN)."""
    class NAT(p.NXActionNAT):
        def serialize_body(self):
            data = super().serialize_body()
            return data + bytes(-(10 + len(data)) % 8)        # 10: experimenter header + subtype
    return NAT


def _set_field(dp, field, value):
    """A masked set is a register load: NXAST_REG_LOAD, as ovs-ofctl sends one and OVS prints
    (load:5->NXM_NX_REG13[0..15]); actions.check() allows only masks it can carry."""
    if isinstance(value, tuple):
        ofs, n = fields.mask_bits(fields.to_int(field, value[1]))
        v = fields.to_int(field, value[0]) >> ofs
        return dp.ofproto_parser.NXActionRegLoad(ofs_nbits=nicira_ext.ofs_nbits(ofs, ofs + n - 1),
                                                 dst=field, value=v)
    return dp.ofproto_parser.OFPActionSetField(**{field: value})


def _ct(dp, a) -> object:
    p, opts = dp.ofproto_parser, dict(a[1:])
    flags = nicira_ext.NX_CT_F_COMMIT * ('commit' in opts) | nicira_ext.NX_CT_F_FORCE * ('force' in opts)
    zone, zone_src = opts.get('zone', 0), ''
    if isinstance(zone, str):
        zone_src, ofs, n = fields.subfield(zone)
        zone = nicira_ext.ofs_nbits(ofs, ofs + n - 1)
    inner = [_nat(dp, opts['nat'])] if 'nat' in opts else []
    inner += to_actions(dp, opts.get('exec', ()))
    table = tables.table_id(opts['table']) if 'table' in opts else CT_RECIRC_NONE
    return p.NXActionCT(flags=flags, zone_src=zone_src, zone_ofs_nbits=zone, recirc_table=table,
                        alg=0, actions=inner)


def _nat(dp, nat):
    o = dict(nat)
    flags = sum(NAT_FLAGS[k] for k in ('persistent', 'hash', 'random') if o.get(k))
    flags |= NAT_FLAGS.get(o.get('kind'), 0)
    ip, port = o.get('ip'), o.get('port')
    ip, port = (ip if isinstance(ip, tuple) else (ip, '')), (port if isinstance(port, tuple) else (port, None))
    return _nat_class(dp.ofproto_parser)(flags=flags, range_ipv4_min=ip[0] or '', range_ipv4_max=ip[1],
                                         range_proto_min=port[0], range_proto_max=port[1])


def _learn(dp, a):
    p, o = dp.ofproto_parser, dict(a[1:])
    specs = []
    for spec in o['specs']:
        if spec[0] == 'output':
            f, ofs, n = fields.subfield(spec[1])
            specs.append(p.NXFlowSpecOutput(src=(f, ofs), n_bits=n))
            continue
        src, dst = (spec[2], spec[1]) if spec[0] == 'match' else (spec[1], spec[2])
        f, ofs, n = fields.subfield(dst)
        src = fields.subfield(src)[:2] if isinstance(src, str) else src
        cls = p.NXFlowSpecMatch if spec[0] == 'match' else p.NXFlowSpecLoad
        specs.append(cls(src=src, dst=(f, ofs), n_bits=n))
    return p.NXActionLearn(
        table_id=tables.table_id(o['table']), specs=specs, priority=o['priority'],
        idle_timeout=o.get('idle_timeout', 0), hard_timeout=o.get('hard_timeout', 0),
        fin_idle_timeout=o.get('fin_idle_timeout', 0), fin_hard_timeout=o.get('fin_hard_timeout', 0),
        cookie=o.get('cookie', 0), flags=NX_LEARN_F_DELETE_LEARNED if o.get('delete_learned') else 0)


def to_actions(dp, actions) -> list:
    """Apply-actions of a Flow (meter and write_metadata are instructions: see flow_mod)."""
    p, ofp = dp.ofproto_parser, dp.ofproto
    special = _special_ports(ofp)
    out = []
    for a in actions:
        kind = a[0]
        if kind == 'output':
            out.append(p.OFPActionOutput(special.get(a[1], a[1]), ofp.OFPCML_NO_BUFFER))
        elif kind == 'output_reg':
            f, ofs, n = fields.subfield(a[1])
            out.append(p.NXActionOutputReg(ofs_nbits=nicira_ext.ofs_nbits(ofs, ofs + n - 1), src=f,
                                           max_len=ofp.OFPCML_NO_BUFFER))
        elif kind == 'push_vlan':
            out += [p.OFPActionPushVlan(0x8100), p.OFPActionSetField(vlan_vid=0x1000 | a[1])]
        elif kind == 'pop_vlan':
            out.append(p.OFPActionPopVlan())
        elif kind == 'set_field':
            out.append(_set_field(dp, a[1], a[2]))
        elif kind == 'group':
            out.append(p.OFPActionGroup(a[1]))
        elif kind == 'move':
            (sf, so, n), (df, do, _) = fields.subfield(a[1]), fields.subfield(a[2])
            out.append(p.NXActionRegMove(src_field=sf, dst_field=df, n_bits=n, src_ofs=so, dst_ofs=do))
        elif kind == 'dec_ttl':          # NXActionDecTtl is refused in OF1.2+
            out.append(p.OFPActionDecNwTtl())
        elif kind == 'bundle':         # a bond: ('bundle', 'hrw' | 'active_backup', members)
            out.append(_bundle_action(p, a[1], a[2]))
        elif kind == 'set_in_port':    # an OVS extension: OXM in_port is read-only, NXM in_port is not
            out.append(p.NXActionRegLoad(ofs_nbits=nicira_ext.ofs_nbits(0, 15), dst='in_port_nxm', value=a[1]))
        elif kind == 'multipath':      # ECMP: hash of the 5-tuple -> a link index 0..n-1 in a[2]
            out.append(p.NXActionMultipath(
                fields=nicira_ext.NX_HASH_FIELDS_SYMMETRIC_L4, basis=0,
                algorithm=nicira_ext.NX_MP_ALG_HASH_THRESHOLD, max_link=a[1] - 1, arg=0,
                ofs_nbits=nicira_ext.ofs_nbits(0, 15), dst=a[2]))
        elif kind == 'resubmit':
            out.append(p.NXActionResubmitTable(table_id=tables.table_id(a[1])))
        elif kind == 'conjunction':
            out.append(p.NXActionConjunction(clause=a[2] - 1, n_clauses=a[3], id_=a[1]))
        elif kind == 'ct':
            out.append(_ct(dp, a))
        elif kind == 'ct_clear':
            out.append(p.NXActionCTClear())
        elif kind == 'learn':
            out.append(_learn(dp, a))
        elif kind == 'clone':
            out.append(_clone(dp, a[1]))
        elif kind == 'output_trunc':
            out.append(p.NXActionOutputTrunc(NX_PORTS.get(a[1], a[1]), a[2]))      # a 16-bit port
        else:
            raise ValueError('unknown action %r' % (a,))
    return out


NX_PORTS = {CONTROLLER: 0xfffd, IN_PORT: 0xfff8, LOCAL: 0xfffe}     # OpenFlow 1.0 numbers
NXAST_CLONE = 42        # os-ken has no class for it: an NXActionUnknown carrying its body


def _clone(dp, inner):
    """NX clone: 6 bytes of padding, then the nested actions."""
    body = bytearray(6)
    for act in to_actions(dp, inner):
        act.serialize(body, len(body))
    return dp.ofproto_parser.NXActionUnknown(NXAST_CLONE, data=bytes(body))


def _from_clone(dp, data) -> tuple:
    p, acts, off = dp.ofproto_parser, [], 6
    while off < len(data):
        a = p.OFPAction.parser(data, off)
        acts.append(a)
        off += a.len
    return actions.clone(*from_actions(dp, acts))


_BUNDLE_ALGS = {nicira_ext.NX_BD_ALG_HRW: 'hrw', nicira_ext.NX_BD_ALG_ACTIVE_BACKUP: 'active_backup'}


def _bundle_action(p, algorithm: str, members):
    alg = {v: k for k, v in _BUNDLE_ALGS.items()}[algorithm]
    return p.NXActionBundle(algorithm=alg, fields=nicira_ext.NX_HASH_FIELDS_SYMMETRIC_L4, basis=0,
                            slave_type=nicira_ext.NXM_OF_IN_PORT, n_slaves=len(members), ofs_nbits=0,
                            dst=0, slaves=list(members))


def _sub(name, ofs, n) -> str:
    return fields.sub_text(_user_field(name), ofs, n)


def _from_ct(dp, a) -> tuple:
    p = dp.ofproto_parser
    zone = a.zone_ofs_nbits
    if a.zone_src:
        zone = _sub(a.zone_src, zone >> 6, (zone & 0x3f) + 1)
    nat, inner = None, list(a.actions)
    if inner and isinstance(inner[0], p.NXActionNAT):
        nat = _from_nat(inner.pop(0))
    return actions.ct(commit=bool(a.flags & nicira_ext.NX_CT_F_COMMIT),
                      force=bool(a.flags & nicira_ext.NX_CT_F_FORCE), zone=zone,
                      table=None if a.recirc_table == CT_RECIRC_NONE else tables.table_name(a.recirc_table),
                      nat=nat, exec=from_actions(dp, inner))


def _from_nat(a) -> tuple:
    kind = 'src' if a.flags & 1 else 'dst' if a.flags & 2 else None
    ip = (a.range_ipv4_min, a.range_ipv4_max or a.range_ipv4_min) if a.range_ipv4_min else None
    port = None
    if a.range_proto_min is not None:
        port = (a.range_proto_min, a.range_proto_max if a.range_proto_max is not None else a.range_proto_min)
    return actions.nat(kind, ip, port, **{k: bool(a.flags & NAT_FLAGS[k]) for k in ('persistent', 'hash', 'random')})


def _from_learn(dp, a) -> tuple:
    p = dp.ofproto_parser
    specs = []
    for s in a.specs:
        src = _sub(s.src[0], s.src[1], s.n_bits) if isinstance(s.src, tuple) else s.src
        if isinstance(s, p.NXFlowSpecOutput):
            specs.append(actions.learn_output(src))
            continue
        dst = _sub(s.dst[0], s.dst[1], s.n_bits)
        specs.append(actions.learn_match(dst, src) if isinstance(s, p.NXFlowSpecMatch)
                     else actions.learn_load(src, dst))
    return actions.learn(tables.table_name(a.table_id), specs, priority=a.priority,
                         idle_timeout=a.idle_timeout, hard_timeout=a.hard_timeout,
                         fin_idle_timeout=a.fin_idle_timeout, fin_hard_timeout=a.fin_hard_timeout,
                         cookie=a.cookie, delete_learned=bool(a.flags & NX_LEARN_F_DELETE_LEARNED))


def _from_action(dp, a, nxt):
    """(decoded action, number of os-ken actions it used)."""
    p, ofp = dp.ofproto_parser, dp.ofproto
    if isinstance(a, p.OFPActionOutput):
        special = {v: k for k, v in _special_ports(ofp).items()}
        return ('output', special.get(a.port, a.port)), 1
    if isinstance(a, p.OFPActionPushVlan):
        if isinstance(nxt, p.OFPActionSetField) and nxt.key == 'vlan_vid':
            return ('push_vlan', nxt.value & 0xfff), 2
        return ('push_vlan_untagged',), 1
    simple = {p.OFPActionPopVlan: ('pop_vlan',), p.OFPActionDecNwTtl: ('dec_ttl',),
              p.NXActionCTClear: ('ct_clear',)}
    if type(a) in simple:
        return simple[type(a)], 1
    if isinstance(a, p.OFPActionSetField):
        return actions.set_field(_user_field(a.key), a.value), 1
    if isinstance(a, p.NXActionRegLoad2):
        return actions.set_field(_user_field(a.dst), a.value, a.mask), 1
    if isinstance(a, p.NXActionBundle):
        return actions.bundle(_BUNDLE_ALGS.get(a.algorithm, a.algorithm), tuple(a.slaves)), 1
    if isinstance(a, (p.NXActionRegLoad, p.NXActionRegLoad2)) and a.dst == 'in_port_nxm':
        return actions.set_in_port(a.value), 1
    if isinstance(a, p.NXActionRegLoad):
        ofs, n = a.ofs_nbits >> 6, (a.ofs_nbits & 0x3f) + 1
        return actions.load(_sub(a.dst, ofs, n), a.value), 1
    if isinstance(a, (p.NXActionOutputReg, p.NXActionOutputReg2)):
        return actions.output_reg(_sub(a.src, a.ofs_nbits >> 6, (a.ofs_nbits & 0x3f) + 1)), 1
    if isinstance(a, p.OFPActionGroup):
        return ('group', a.group_id), 1
    if isinstance(a, p.NXActionRegMove):     # read back with NXM names: eth_src_nxm
        return actions.move(_sub(a.src_field, a.src_ofs, a.n_bits), _sub(a.dst_field, a.dst_ofs, a.n_bits)), 1
    if isinstance(a, p.NXActionMultipath):
        return ('multipath', a.max_link + 1, a.dst), 1
    if isinstance(a, p.NXActionResubmitTable) and a.in_port == 0xfff8:
        return actions.resubmit(tables.table_name(a.table_id)), 1
    if isinstance(a, p.NXActionConjunction):
        return actions.conjunction(a.id, a.clause + 1, a.n_clauses), 1
    if isinstance(a, p.NXActionCT):
        return _from_ct(dp, a), 1
    if isinstance(a, p.NXActionLearn):
        return _from_learn(dp, a), 1
    if isinstance(a, p.NXActionUnknown) and a.subtype == NXAST_CLONE:
        return _from_clone(dp, bytes(a.data)), 1
    if isinstance(a, p.NXActionOutputTrunc):
        special = {v: k for k, v in NX_PORTS.items()}
        return actions.output_trunc(special.get(a.port, a.port), a.max_len), 1
    return ('unknown', str(a)), 1     # never equals a desired flow: gets replaced


def from_actions(dp, acts) -> tuple:
    out, acts, i = [], list(acts), 0
    while i < len(acts):
        a, used = _from_action(dp, acts[i], acts[i + 1] if i + 1 < len(acts) else None)
        out.append(a)
        i += used
    return tuple(out)


def flow_mod(dp, flow: Flow, command: int, registry=None):
    p, ofp = dp.ofproto_parser, dp.ofproto
    acts, inst = list(flow.actions), []
    if acts and acts[0][0] == 'meter':                   # instructions: meter first ...
        inst.append(p.OFPInstructionMeter(acts.pop(0)[1], ofp.OFPIT_METER))
    wmeta = acts.pop() if acts and acts[-1][0] == 'write_metadata' else None
    apply_ = to_actions(dp, acts)
    if apply_:
        inst.append(p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, apply_))
    if wmeta:                                             # ... write_metadata after the actions
        inst.append(p.OFPInstructionWriteMetadata(wmeta[1], wmeta[2]))
    if flow.goto:
        inst.append(p.OFPInstructionGotoTable(tables.table_id(flow.goto)))
    cookie = registry.encode(flow.cookie) if registry is not None else flow.cookie
    return p.OFPFlowMod(
        dp, cookie=cookie, cookie_mask=0, table_id=tables.table_id(flow.table),
        command=command, idle_timeout=flow.idle_timeout, hard_timeout=flow.hard_timeout,
        priority=flow.priority, buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY, flags=ofp.OFPFF_SEND_FLOW_REM if flow.notify_removal else 0,
        match=_match(p, flow), instructions=inst)


def _match(p, flow: Flow):
    """The flow's OXM match with every field after its prerequisites: OVS checks them in
    order, and os-ken sorts by OXM type, which puts Nicira fields (nw_ttl, arp_sha...) before
    the eth_type they need."""
    m = p.OFPMatch(**flow.match_dict())
    depth = fields.PREREQS
    m._fields2.sort(key=lambda kv: len(depth.get(kv[0], ())))        # stable: OXM order otherwise
    return m


# -- issue 11 part 4: the wire encoder (controller/pipeline/wire.py), one per OpenFlow version;
# the kinds it does not write itself go through os-ken, once per distinct action.
_ENCODERS: dict[int, wire.Encoder] = {}


def encoder(dp) -> wire.Encoder:
    version = dp.ofproto.OFP_VERSION
    enc = _ENCODERS.get(version)
    if enc is None:
        ns = types.SimpleNamespace(ofproto=dp.ofproto, ofproto_parser=dp.ofproto_parser)
        enc = _ENCODERS[version] = wire.Encoder(version, functools.partial(_action_bytes, ns))
    return enc


def _action_bytes(dp, a: tuple) -> bytes:
    buf = bytearray()
    for act in to_actions(dp, [a]):
        start = len(buf)
        act.serialize(buf, start)
        buf += bytes(start + act.len - len(buf))     # os-ken leaves an NX action's padding out
    return bytes(buf)


def _same(cookie):
    return cookie
# -- end issue 11 part 4


def flow_from_stats(dp, stat, registry=None) -> Flow:
    """The Flow an installed entry (flow stats reply body) stands for."""
    p, ofp = dp.ofproto_parser, dp.ofproto
    meter, acts, wmeta, goto = (), (), (), None
    for inst in stat.instructions:
        if isinstance(inst, p.OFPInstructionActions) and inst.type == ofp.OFPIT_APPLY_ACTIONS:
            acts += from_actions(dp, inst.actions)
        elif isinstance(inst, p.OFPInstructionMeter):
            meter = (actions.meter(inst.meter_id),)
        elif isinstance(inst, p.OFPInstructionWriteMetadata):
            wmeta = (actions.write_metadata(inst.metadata, inst.metadata_mask),)
        elif isinstance(inst, p.OFPInstructionGotoTable):
            goto = tables.table_name(inst.table_id)
        else:
            acts += (('unknown-instruction', str(inst)),)
    match = {_user_field(k): v for k, v in stat.match.items()}
    cookie = registry.decode(stat.cookie) if registry is not None else stat.cookie
    return Flow.make(tables.table_name(stat.table_id), stat.priority, match,
                     meter + acts + wmeta, goto, cookie=cookie, idle_timeout=stat.idle_timeout,
                     hard_timeout=stat.hard_timeout,
                     notify_removal=bool(stat.flags & ofp.OFPFF_SEND_FLOW_REM))


# ---- one connected switch ---------------------------------------------------------------

class _Waiter:
    def __init__(self):
        self.msgs, self.error, self.done = [], None, threading.Event()
        self.closed = False                # the session died before the reply came (issue 7)


class OFSwitch:
    """A connected datapath as the reconciler sees it (controller.pipeline.reconciler.SwitchConn).

    Methods that wait for replies run on the converge thread; replies arrive through
    deliver() from the event loop."""

    def __init__(self, dp, registry=None):
        self.dp = dp
        self.registry = registry                 # controller.pipeline.cookies.Registry
        self.dpid = dp.id
        self.address = dp.address[0] if dp.address else None   # where its OVSDB is, for hypervisors
        local = (getattr(dp, 'ports', None) or {}).get(dp.ofproto.OFPP_LOCAL)   # issue 14: the bridge's name,
        self.bridge = _name(local) if local is not None else None   # where ofproto/trace finds it (dvsctl trace)
        self.bundles = dp.ofproto.OFP_VERSION >= ofproto_v1_4.OFP_VERSION
        self._waiters: dict[int, _Waiter] = {}
        self._errors: dict[int, object] = {}
        self._lock = threading.Lock()
        self._bundle_ids = itertools.count(1)
        self._closed = False

    # -- issue 7 part 6: a session that dies stops every wait on it at once.  Without this the
    # converge thread, the only one that writes to switches, waited REPLY_TIMEOUT (10 s) per
    # request on a dead session when the root OVS restarted, and every switch waited with it.
    def closed(self) -> None:
        """The session is gone (DEAD_DISPATCHER): whoever waits for a reply stops waiting."""
        self._closed = True
        for w in list(self._waiters.values()):
            w.closed = True
            w.done.set()
    # -- end issue 7 part 6

    # -- plumbing
    def _xid(self, msg) -> int:
        with self._lock:
            self.dp.set_xid(msg)
        return msg.xid

    def _expect(self, msg) -> _Waiter:
        w = _Waiter()
        self._waiters[self._xid(msg)] = w
        if self._closed:                   # issue 7 part 6: nothing will ever answer
            w.closed = True
            w.done.set()
        return w

    def _wait(self, msg, w: _Waiter, what: str, timeout: float = REPLY_TIMEOUT):
        try:
            if not w.done.wait(timeout):
                raise SwitchError('%016x: no reply to %s within %ss' % (self.dpid, what, timeout))
            if w.closed:                   # issue 7 part 6
                raise SwitchError('%016x: the session closed before the reply to %s' % (self.dpid, what))
            if w.error is not None:
                raise SwitchError('%016x: %s failed: %s' % (self.dpid, what, _error_text(self.dp, w.error)),
                                  nothing_applied=True)     # refused: an atomic request changed nothing
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

    def _send_and_wait(self, msg, what, timeout: float = REPLY_TIMEOUT):
        w = self._expect(msg)
        self.dp.send_msg(msg)
        return self._wait(msg, w, what, timeout)

    def flow_counters(self, cookie: int, mask: int, timeout: float = REPLY_TIMEOUT) -> list[tuple[int, int, int]]:
        """(cookie, packets, bytes) of every flow whose cookie matches cookie/mask, as the
        switch counts them (`dvsctl show rules`: one tenant's microseg flows)."""
        p, ofp = self.dp.ofproto_parser, self.dp.ofproto
        req = p.OFPFlowStatsRequest(self.dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                    cookie, mask, p.OFPMatch())
        replies = self._send_and_wait(req, 'flow stats', timeout)
        return [(s.cookie, s.packet_count, s.byte_count) for r in replies for s in r.body]

    # -- SwitchConn
    def read_flows(self) -> set[Flow]:
        p, ofp = self.dp.ofproto_parser, self.dp.ofproto
        req = p.OFPFlowStatsRequest(self.dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                    0, 0, p.OFPMatch())
        replies = self._send_and_wait(req, 'flow stats')
        return {flow_from_stats(self.dp, s, self.registry) for r in replies for s in r.body}

    def apply(self, delete: list[Flow], add: list[Flow]) -> None:
        ofp = self.dp.ofproto
        metrics.flow_mods(self.dpid, len(delete), len(add), self.bundles)
        if not self.bundles:                      # OpenFlow 1.3: best effort, not atomic
            first, flows, _ = self._send_flows(delete, add, None)
            self.barrier()                        # every flow-mod error has arrived before its reply
            bad = self._refused(first, flows)
            if bad:
                raise SwitchError('%016x: %d of %d flow-mods refused (OpenFlow 1.3, no bundle: the '
                                  'others are applied): %s' % (self.dpid, len(bad), len(flows), '; '.join(bad[:3])))
            return
        p = self.dp.ofproto_parser
        flags = ofp.OFPBF_ATOMIC | ofp.OFPBF_ORDERED
        bid = next(self._bundle_ids)
        first, flows, opening = self._send_flows(delete, add, (bid, flags))
        self.barrier()                 # every add-time error has arrived before the barrier reply
        bad = self._refused(first, flows, opening)
        if bad:
            metrics.bundle_rejected(self.dpid)
            self.dp.send_msg(p.OFPBundleCtrlMsg(self.dp, bid, ofp.OFPBCT_DISCARD_REQUEST, flags, []))
            raise SwitchError('%016x: bundle rejected, nothing applied: %s' % (
                self.dpid, '; '.join(bad[:3])), nothing_applied=True)
        commit = p.OFPBundleCtrlMsg(self.dp, bid, ofp.OFPBCT_COMMIT_REQUEST, flags, [])
        self._send_and_wait(commit, 'bundle commit')     # a refused commit rolls back everything

    # -- issue 11 part 4: flow-mods as wire bytes (controller/pipeline/wire.py), not os-ken
    # objects: one struct.pack per flow, the match and instructions cached on the Flow, sent
    # in few big writes.  A flow-mod (or bundle add) i of the batch has xid first + i.
    SEND_CHUNK = 1 << 18

    def _send_flows(self, delete: list[Flow], add: list[Flow], bundle) -> tuple[int, list[Flow], int | None]:
        """Send DELETE_STRICT of `delete` then ADD of `add` (bundle: (id, flags) -> inside an
        OPEN bundle, no commit).  Returns (xid of the first, the flows in xid order, the
        OPEN's xid)."""
        enc = encoder(self.dp)
        code = self.registry.encode if self.registry is not None else _same
        flows = list(delete) + list(add)
        mask = self.dp.ofproto.MAX_XID
        chunks, size, opened = [], 0, None
        if bundle is not None:
            p, ofp = self.dp.ofproto_parser, self.dp.ofproto
            opening = p.OFPBundleCtrlMsg(self.dp, bundle[0], ofp.OFPBCT_OPEN_REQUEST, bundle[1], [])
            opened = self._xid(opening)
            opening.serialize()
            chunks.append(bytes(opening.buf))
        with self._lock:                          # reserve len(flows) xids in a row
            first = (self.dp.xid + 1) & mask
            self.dp.xid = (self.dp.xid + len(flows)) & mask
        n_del = len(delete)
        for i, f in enumerate(flows):
            command = wire.OFPFC_DELETE_STRICT if i < n_del else wire.OFPFC_ADD
            xid = (first + i) & mask
            if bundle is None:
                b = enc.flow_mod(f, command, code(f.cookie), xid)
            else:
                b = enc.bundle_add(f, command, code(f.cookie), xid, bundle[0], bundle[1])
            chunks.append(b)
            size += len(b)
            if size >= self.SEND_CHUNK:
                self.dp.send(b''.join(chunks))
                chunks, size = [], 0
        if chunks:
            self.dp.send(b''.join(chunks))
        return first, flows, opened

    def _refused(self, first: int, flows: list[Flow], opened: int | None = None) -> list[str]:
        """The switch's errors for the batch sent by _send_flows, each with its flow."""
        bad = ['%s: bundle open' % _error_text(self.dp, self._errors.pop(opened))] if opened in self._errors else []
        mask, n = self.dp.ofproto.MAX_XID, len(flows)
        mine = sorted((((x - first) & mask), x) for x in list(self._errors) if ((x - first) & mask) < n)
        return bad + ['%s: %s' % (_error_text(self.dp, self._errors.pop(x)), flows[i]) for i, x in mine]
    # -- end issue 11 part 4

    def set_meter(self, meter_id: int, pps: int, burst: int) -> None:
        """Make a packets-per-second drop meter exist with this rate: add it, and modify it in
        case it was there already (its 'exists' error is expected and dropped)."""
        p, ofp = self.dp.ofproto_parser, self.dp.ofproto
        flags = ofp.OFPMF_PKTPS | ofp.OFPMF_BURST
        band = [p.OFPMeterBandDrop(rate=pps, burst_size=burst)]
        mods = [p.OFPMeterMod(self.dp, command=cmd, flags=flags, meter_id=meter_id, bands=band)
                for cmd in (ofp.OFPMC_ADD, ofp.OFPMC_MODIFY)]
        self._send_all(mods)        # the refused ADD's error lands in the bounded _errors, unread

    def delete_meter(self, meter_id: int) -> None:
        """Delete a meter (OVS also deletes the flows that still use it)."""
        p, ofp = self.dp.ofproto_parser, self.dp.ofproto
        self.dp.send_msg(p.OFPMeterMod(self.dp, command=ofp.OFPMC_DELETE, flags=0, meter_id=meter_id, bands=[]))

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
    """The OpenFlow front end: one core for every capability app loaded next to it (the
    shared context says which; none named: all of them).  The core is built in start(),
    once the framework has instantiated every app."""
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION]
    _CONTEXTS = {CONTEXT: Capabilities}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.capabilities = kwargs[CONTEXT]
        self.core = self.service = self.api = None
        self.conns: dict[int, OFSwitch] = {}     # id(datapath) -> OFSwitch

    def start(self):
        self._build()
        return super().start()

    def _build(self):
        from controller.api import server, service
        from controller.inventory.ovsdb import OVSDB_PORT, BindingWatcher
        from controller.policy.store import PolicyStore, ensure_token
        policy, state_dir, api = SETTINGS['policy'], SETTINGS['state_dir'], SETTINGS['api']
        switch_ovsdb, ofp_port = SETTINGS.get('switch_ovsdb'), SETTINGS.get('ofp_port')
        if policy is None:                       # loaded by ryu-manager / osken tooling
            from controller.cli.controller_main import _switch_ovsdb, parse_hostport    # OPENDVS_API is HOST:PORT
            policy, state_dir, api = load_running_policy(
                os.environ['OPENDVS_FABRIC'], os.environ.get('OPENDVS_STATE_DIR', '/var/lib/opendvs'),
                parse_hostport(os.environ['OPENDVS_API']) if os.environ.get('OPENDVS_API') else None)
            # the switches' OVSDB (their bonds), as opendvs-controller's --switch-ovsdb default
            switch_ovsdb = _switch_ovsdb(os.environ.get('OPENDVS_SWITCH_OVSDB'))
            ofp_port = _framework_ofp_port()

        def watch(name, address, on_change):
            return BindingWatcher(name, 'tcp:%s:%d' % (address, OVSDB_PORT), on_change).start()
        running = self.capabilities.running()
        LOG.info('capabilities: %s%s', ', '.join(running),
                 '' if self.capabilities.named else ' (none named: all of them)')
        self.core = _bonded_controller(policy, watch, switch_ovsdb, ofp_port, state_dir=state_dir, apps=running)
        self.core.start()
        self.service = service.PolicyService(self.core, PolicyStore(state_dir))   # SIGHUP reloads through it
        if api:
            self.api = server.serve(self.service, ensure_token(state_dir), *api)

    def close(self):
        if self.core is not None:
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
            conn = OFSwitch(dp, self.core.cookies)
            ports = [(no, _name(pt), _up(dp, pt)) for no, pt in dp.ports.items()
                     if no <= dp.ofproto.OFPP_MAX]
            admission.admit(self.core, conn, ports, close=lambda c: c.dp.close(), accept=self._accept)
        elif ev.state == DEAD_DISPATCHER:
            conn = self.conns.pop(id(dp), None)
            if conn is not None:
                conn.closed()                  # issue 7 part 6: no wait on it outlives it
                self.core.switch_down(conn)

    def _accept(self, conn, ports) -> None:
        """An admitted connection (controller/admission.py) becomes the switch's session."""
        if conn.dp.is_active:
            self.conns[id(conn.dp)] = conn
            self.core.switch_up(conn, ports)

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
        if self._conn(msg.datapath) is None:         # refused or not yet admitted
            return
        self.core.packet_in(msg.datapath.id, msg.match['in_port'], msg.table_id, bytes(msg.data))
        metrics.packet_in(msg.datapath.id, msg.reason, msg.table_id)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    @_safe
    def flow_removed(self, ev):
        msg = ev.msg
        if self._conn(msg.datapath) is None:
            return
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


def capability(module) -> type:
    """The app class of one capability module (apps/<name>.py), as ryu-manager and
    os-ken's AppManager find it: a subclass of the framework's app whose __module__ is that
    module.  Instantiated, it names itself in the shared context; it needs the front end
    (controller.ofp) and the apps its flows depend on (capabilities.REQUIRES), which the
    framework loads by itself (the module's _REQUIRED_APP, set by _bind_capabilities) and logs."""
    name = module.APP

    def __init__(self, *args, **kwargs):
        AppBase.__init__(self, *args, **kwargs)
        kwargs[CONTEXT].add(name)
    cls = type(''.join(w.title() for w in name.split('_')) + 'App', (AppBase,), {
        '__init__': __init__, '__module__': module.__name__, '__doc__': 'opendvs capability %s' % name,
        '_CONTEXTS': {CONTEXT: Capabilities}, 'OPENDVS_APP': name})
    return cls


def _bind_capabilities() -> None:
    """Put each apps/ module's app class into that module, so `ryu-manager apps.<name>`
    finds it there (apps/*.py stay free of framework imports), and what it requires (the
    framework reads _REQUIRED_APP from the module)."""
    from controller.capabilities import REQUIRES
    for module in load_apps():
        if not any(getattr(v, 'OPENDVS_APP', None) == module.APP for v in vars(module).values()):
            cls = capability(module)
            setattr(module, cls.__name__, cls)
            module._REQUIRED_APP = [__name__] + ['apps.%s' % d for d in REQUIRES.get(module.APP, ())]


def _bonded_controller(policy, watch_bindings, switch_ovsdb, ofp_port=None, state_dir=None, apps=None):
    """The core with bonded hypervisor uplinks (controller/bonds.py): bonds come from the
    physical switches' OVSDB (`switch_ovsdb`, a remote; None: no bonds) and each hypervisor's."""
    from controller.bonds import BondedController
    from controller.inventory.bonds import BondWatcher
    from controller.inventory.ovsdb import OVSDB_PORT

    def uplinks(name, address, on_change):
        return BondWatcher(name, 'tcp:%s:%d' % (address, OVSDB_PORT), on_change).start()
    switches = (lambda on_change: BondWatcher('switches', switch_ovsdb, on_change).start()) if switch_ovsdb else None
    return BondedController(policy, watch_bindings=watch_bindings, switch_ovsdb=switches, watch_uplinks=uplinks,
                            ofp_port=ofp_port, state_dir=state_dir, apps=apps)


def _framework_ofp_port() -> int | None:
    """The OpenFlow port ryu-manager / osken listens on (--ofp-tcp-listen-port), if set."""
    try:
        from os_ken import cfg
    except ImportError:                                 # pragma: no cover - ryu
        from ryu import cfg
    return getattr(cfg.CONF, 'ofp_tcp_listen_port', None)


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


def _app(mgr):
    """The running OpenDVSApp (None before it has started its core)."""
    return next((a for a in mgr.applications.values()
                 if isinstance(a, OpenDVSApp) and a.core is not None), None)


def load_running_policy(fabric_path: str, state_dir: str, api: tuple | None):
    """The fabric plus the tenant policies accepted before (state dir); PolicyError if bad."""
    from controller.api.service import build_tenants
    from controller.policy.fabric import load_fabric
    from controller.policy.model import Policy
    from controller.policy.store import PolicyStore
    fabric = load_fabric(fabric_path)
    policy = Policy(fabric).with_tenants(build_tenants(fabric, PolicyStore(state_dir).load()))
    return policy, state_dir, api


def run(policy, state_dir: str, ofp: tuple[str, int], api: tuple[str, int] | None, apps=(),
        switch_ovsdb: str | None = None) -> None:
    """Serve OpenFlow (and the API) until SIGINT/SIGTERM; never returns.  apps: the
    capabilities to run (names of apps/ modules; none: all), loaded as ryu-manager would;
    switch_ovsdb: the physical switches' OVSDB, for their bonds."""
    from os_ken import cfg
    host, port = ofp
    SETTINGS.update(policy=policy, state_dir=state_dir, api=api, switch_ovsdb=switch_ovsdb, ofp_port=port)
    _harden_framework()

    def _stop(signum, frame):
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    mgr = app_manager.AppManager.get_instance()
    signal.signal(signal.SIGHUP, lambda signum, frame: lifecycle.reload_in_background(_app(mgr)))
    code = 0
    try:        # a signal may arrive at any point here: everything below exits through finally
        cfg.CONF(args=['--ofp-listen-host', host, '--ofp-tcp-listen-port', str(port)],
                 project='os_ken', default_config_files=[])
        mgr.load_apps([__name__] + ['apps.' + n.removeprefix('apps.') for n in apps])
        services = mgr.instantiate_apps(**mgr.create_contexts())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})  # see controller_main
        hub.joinall(services)
    except SystemExit:
        LOG.info('stopping')
    except BaseException:
        LOG.exception('controller failed')
        code = 1
    finally:
        lifecycle.drain(_app(mgr))      # answer the API requests in flight (a second signal: exit now)
        threading.Timer(3.0, os._exit, (code or 1,)).start()   # in case close() blocks
        try:
            mgr.close()
        except BaseException:
            LOG.exception('closing apps failed')
        finally:
            logging.shutdown()
            os._exit(code)      # os-ken's server/datapath threads are not daemons


_bind_capabilities()
