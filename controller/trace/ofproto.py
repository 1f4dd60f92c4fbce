"""`ovs-appctl ofproto/trace` text -> steps, and its datapath actions -> the ports the packet
leaves by, with its headers at each (pure: no OVS here, unit tested on captured text).

What OVS 3.1 prints (one vswitchd, one packet):

    Flow: tcp,in_port=2,vlan_tci=0x0000,dl_src=...,nw_dst=10.4.0.11,...,tp_dst=5432

    bridge("br-int")                      <- a patch port's peer bridge gets its own header
    ----------------
     0. ip,in_port=2,..., priority 130, cookie 0x901000001000002
        push_vlan:0x8100                  <- the actions the matched flow executed
        goto_table:10
    ...
    70. ct_state=-trk,ip,reg15=0x3, priority 300, cookie 0x601000001000003
        ct(table=70,zone=NXM_NX_REG13[0..15])
         -> A clone of the packet is forked to recirculate. ...     <- a note
    60. No match.                         <- a table without a matching flow
    Final flow: ...
    Megaflow: ...
    Datapath actions: push_vlan(vid=10,pcp=0),ct(zone=1),recirc(0x1)

    ==========...
    recirc(0x1) - resume conntrack with ct_state=new|trk            <- --ct-next
    ==========...
    Flow: recirc_id=0x1,ct_state=new|trk,...
    ... (the same again, resumed at the ct table)

The datapath actions are the truth of where the packet leaves this vswitchd: a number is a
datapath port (dpif/show maps it to a bridge's port), push_vlan/pop_vlan/set(...) change the
headers on the way, clone(tnl_push(...vxlan(vni=...)...),N) encapsulates it for a tunnel.
"""
from __future__ import annotations

import dataclasses
import re

_STEP = re.compile(r'^( *)(\d+)\. (?:(No match)\.|(?:(.*), )?priority (\d+)(?:, cookie (0x[0-9a-f]+))?)\s*$')
_BRIDGE = re.compile(r'^\s*bridge\("([^"]+)"\)\s*$')
_RECIRC = re.compile(r'^(recirc\(0x[0-9a-f]+\).*)$')


@dataclasses.dataclass(frozen=True)
class Step:
    """One table lookup, as ofproto/trace printed it."""
    bridge: str
    table: int
    priority: int | None          # None: no flow matched ("No match.")
    match: str
    cookie: int
    actions: tuple[str, ...]      # the actions the matched flow executed, in ovs-ofctl text
    notes: tuple[str, ...]        # OVS's own remarks ('-> forwarding to learned port', '>> ...')
    depth: int                    # nesting: a resubmit or clone inside another step
    recirc: int                   # 0: the first pass; n: the n-th recirculation

    @property
    def hit(self) -> bool:
        return self.priority is not None


@dataclasses.dataclass
class Pass:
    header: str                   # '' or 'recirc(0x1) - resume conntrack with ct_state=new|trk'
    flow: str
    steps: list[Step]
    final_flow: str
    datapath_actions: str


@dataclasses.dataclass
class Trace:
    passes: list[Pass]
    text: str

    @property
    def steps(self) -> list[Step]:
        return [s for p in self.passes for s in p.steps]

    @property
    def ct_states(self) -> list[str]:
        """The conntrack state each recirculation was resumed with."""
        return [m.group(1) for p in self.passes if (m := re.search(r'ct_state=(\S+)', p.header))]


class TraceError(ValueError):
    """ofproto/trace did not trace (no such bridge, a flow it cannot parse...)."""


def parse(text: str) -> Trace:
    p = _Parser()
    for line in text.splitlines():
        p.line(line)
    if not p.passes:
        first = text.strip().splitlines()[0] if text.strip() else 'no output'
        raise TraceError('ofproto/trace gave no datapath actions: %s' % first)
    return Trace(p.passes, text)


class _Parser:
    """One line at a time: pass headers and flows, bridge headers, steps, and the actions and
    notes under a step (by indentation: a resubmit's steps nest under the step that made it)."""

    def __init__(self):
        self.passes: list[Pass] = []
        self.cur = dict(header='', flow='', steps=[], final='')
        self.bridge, self.stack = '', []     # stack: (indent, step dict) that lines attach to
        # A recirculation resumes in the bridge whose ct(table=...) forked it, but OVS 3.1 heads
        # the resumed pass with the bridge the trace started on: that first header is replaced.
        self.forks, self.resumed_in = [], None

    def line(self, line: str) -> None:
        stripped = line.strip()
        if not stripped or set(stripped) <= {'-', '='} or line.startswith('Megaflow: '):
            return
        m = _RECIRC.match(stripped)
        if m:
            self.cur['header'] = m.group(1)
            self.resumed_in = self.forks.pop(0) if self.forks else None
        elif line.startswith('Flow: '):
            self.cur['flow'] = line[6:]
        elif line.startswith('Final flow: '):
            self.cur['final'] = line[12:]
        elif line.startswith('Datapath actions: '):
            c = self.cur
            self.passes.append(Pass(c['header'], c['flow'], [_freeze(s) for s in c['steps']], c['final'],
                                    line[len('Datapath actions: '):].strip()))
            self.cur, self.stack = dict(header='', flow='', steps=[], final=''), []
        elif _BRIDGE.match(line):
            self.bridge, self.stack = (self.resumed_in or _BRIDGE.match(line).group(1)), []
            self.resumed_in = None
        elif _STEP.match(line):
            self._step(_STEP.match(line))
        else:
            self._under_step(line, stripped)

    def _pop_to(self, indent: int) -> None:
        while self.stack and self.stack[-1][0] >= indent:
            self.stack.pop()

    def _step(self, m) -> None:
        indent = len(m.group(1))
        self._pop_to(indent)
        step = dict(bridge=self.bridge, table=int(m.group(2)), match=m.group(4) or '',
                    priority=None if m.group(3) else int(m.group(5)),
                    cookie=int(m.group(6), 16) if m.group(6) else 0, actions=[], notes=[],
                    depth=len(self.stack), recirc=len(self.passes))
        self.cur['steps'].append(step)
        self.stack.append((indent, step))

    def _under_step(self, line: str, stripped: str) -> None:
        self._pop_to(len(line) - len(line.lstrip()))
        if not self.stack:
            return                 # 'thaw', 'Resuming from table 70' and other pass-level lines
        step = self.stack[-1][1]
        if stripped.startswith(('->', '>>')):
            step['notes'].append(stripped)
        elif stripped != 'thaw' and not stripped.startswith('Resuming from table'):
            step['actions'].append(stripped)
            if stripped.startswith('ct(') and 'table=' in stripped:
                self.forks.append(step['bridge'])


def _freeze(s: dict) -> Step:
    return Step(**{**s, 'actions': tuple(s['actions']), 'notes': tuple(s['notes'])})


# ---- datapath actions ------------------------------------------------------------------------

BOND = -1       # Exit.dp_port: a bond's member is picked by a hash and a recirculation that
                # ofproto/trace does not follow (balance-tcp): "out of the bond", member unknown
TUNNEL = -2     # Exit.dp_port: a tunnel output the trace refused by its own artifact (below)
OWN_ADDRESS = 'Not tunneling to our own address'
ARTIFACT = ('ofproto/trace resumed the recirculation with the tunnel destination the flows set before '
            'conntrack, then refused the tunnel output as "%s" (OVS 3.1 compares it with the '
            'packet\'s original tunnel destination, which a recirculated datapath packet does not carry: '
            'traffic is tunnelled); followed as the tunnel output the flow made' % OWN_ADDRESS)


@dataclasses.dataclass(frozen=True)
class Exit:
    """The packet leaving the vswitchd by one datapath port (or BOND)."""
    dp_port: int
    fields: tuple[tuple[str, str], ...]     # its headers there, in flow syntax (dl_vlan, dl_dst...)
    encap: tuple[tuple[str, str], ...] = ()  # VXLAN: (('vni', '5020'), ('src', ip), ('dst', ip))

    def field(self, name: str) -> str | None:
        return dict(self.fields).get(name)


@dataclasses.dataclass
class Outcome:
    exits: list[Exit]
    to_controller: int                  # copies sent to the controller (packet-ins)
    notes: list[str] = dataclasses.field(default_factory=list)


KEPT = ('dl_src', 'dl_dst', 'dl_vlan', 'nw_src', 'nw_dst', 'nw_ttl', 'nw_proto', 'tp_src', 'tp_dst',
        'icmp_type', 'icmp_code', 'tcp_flags', 'dl_type')
_PROTO_WORDS = {'tcp': ('0x0800', '6'), 'udp': ('0x0800', '17'), 'icmp': ('0x0800', '1'),
                'ip': ('0x0800', None), 'arp': ('0x0806', None)}


def flow_fields(flow: str) -> dict[str, str]:
    """The header fields of a `Flow:` line (proto words like `tcp` become dl_type/nw_proto)."""
    out: dict[str, str] = {}
    for kv in split_top(flow):
        if '=' not in kv:
            if kv in _PROTO_WORDS:
                dl_type, proto = _PROTO_WORDS[kv]
                out['dl_type'] = dl_type
                if proto:
                    out['nw_proto'] = proto
            continue
        k, v = kv.split('=', 1)
        if k in KEPT:
            out[k] = v
    return out


def split_top(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    out, depth, cur = [], 0, ''
    for ch in text:
        if ch == ',' and depth == 0:
            out.append(cur)
            cur = ''
            continue
        depth += (ch == '(') - (ch == ')')
        cur += ch
    return [x.strip() for x in out + [cur] if x.strip()]


def outcome(trace: Trace) -> Outcome:
    """Every datapath port the packet leaves by, with its headers there: the passes' datapath
    actions walked in order (a recirculation resumes with the headers the last pass left)."""
    state = {'fields': flow_fields(trace.passes[0].flow), 'vlans': [], 'encap': {}}
    v = state['fields'].pop('dl_vlan', None)
    if v is not None:
        state['vlans'].append(v)
    out = Outcome([], 0)
    state['resumed'] = {m.group(1) for p in trace.passes if (m := re.match(r'recirc\((0x[0-9a-f]+)\)', p.header))}
    received = 'tun_dst=' in trace.passes[0].flow and not re.search(r'tun_dst=0\.0\.0\.0\b', trace.passes[0].flow)
    for p in trace.passes:
        _walk(split_top(p.datapath_actions), state, out)
        if p.header and not received and any(OWN_ADDRESS in n for s in p.steps for n in s.notes):
            out.exits.append(_refused_tunnel(p.final_flow))
            out.notes.append(ARTIFACT)
    return out


def _refused_tunnel(final_flow: str) -> Exit:
    """The tunnel output of a recirculated pass that the trace refused, from its final flow."""
    kv = dict(x.split('=', 1) for x in split_top(final_flow) if '=' in x)
    fields = flow_fields(final_flow)
    fields.pop('dl_vlan', None)
    encap = {'vni': str(int(kv.get('tun_id', '0'), 0)), 'dst': kv.get('tun_dst', '')}
    return Exit(TUNNEL, tuple(sorted(fields.items())), tuple(sorted(encap.items())))


def _copy(state: dict) -> dict:
    return {'fields': dict(state['fields']), 'vlans': list(state['vlans']), 'encap': dict(state['encap']),
            'resumed': state['resumed']}


def _inner(action: str) -> str:
    return action[action.index('(') + 1:action.rindex(')')]


def _walk(actions: list[str], state: dict, out: Outcome) -> None:
    for a in actions:
        bond = a.startswith('recirc(') and _inner(a) not in state['resumed']
        if a.isdigit() or bond:
            fields = dict(state['fields'])
            if state['vlans']:
                fields['dl_vlan'] = state['vlans'][-1]
            out.exits.append(Exit(BOND if bond else int(a), tuple(sorted(fields.items())),
                                  tuple(sorted(state['encap'].items()))))
        elif a.startswith('push_vlan('):
            m = re.search(r'vid=(\d+)', a)
            state['vlans'].append(m.group(1) if m else '0')
        elif a == 'pop_vlan':
            if state['vlans']:
                state['vlans'].pop()
        elif a.startswith('set(') or a.startswith('masked_set('):
            _set(_inner(a), state)
        elif a.startswith('clone('):
            _walk(split_top(_inner(a)), _copy(state), out)
        elif a.startswith('tnl_push('):
            _tunnel(a, state)
        elif a.startswith('userspace('):
            out.to_controller += 1
        # ct, recirc, meter, hash, trunc, sample, drop: no change of headers or port


def _set(body: str, state: dict) -> None:
    """set(eth(src=..,dst=..)), set(ipv4(src=..,dst=..,ttl=..)), set(tunnel(tun_id=..,dst=..))."""
    m = re.match(r'(\w+)\((.*)\)$', body)
    if not m:
        return
    what, kvs = m.group(1), dict(kv.split('=', 1) for kv in split_top(m.group(2)) if '=' in kv)
    kvs = {k: v.split('/')[0] for k, v in kvs.items()}
    names = {'eth': {'src': 'dl_src', 'dst': 'dl_dst'},
             'ipv4': {'src': 'nw_src', 'dst': 'nw_dst', 'ttl': 'nw_ttl'}}.get(what)
    if names:
        for k, v in kvs.items():
            if k in names:
                state['fields'][names[k]] = v
    elif what == 'tunnel':
        if 'tun_id' in kvs:
            state['encap']['vni'] = str(int(kvs['tun_id'], 0))
        for k in ('src', 'dst'):
            if k in kvs:
                state['encap'][k] = kvs[k]


def _tunnel(action: str, state: dict) -> None:
    vni = re.search(r'vni=(0x[0-9a-f]+|\d+)', action)
    ip = re.search(r'ipv4\(src=([\d.]+),dst=([\d.]+)', action)
    if vni:
        state['encap']['vni'] = str(int(vni.group(1), 0))
    if ip:
        state['encap']['src'], state['encap']['dst'] = ip.group(1), ip.group(2)


# ---- dpif/show ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DpPort:
    bridge: str
    name: str
    ofport: int | None              # None: OVS prints 'none' (patch ports have no dp port)
    dp_port: int | None
    kind: str                       # '' or 'patch', 'vxlan', 'internal', 'tap', ...
    peer: str | None = None         # a patch port's peer
    datapath: str = ''              # 'netdev@ovs-netdev': port numbers are unique within one


_DPIF_PORT = re.compile(r'^\s+(\S+) (\d+|none)/(\d+|none):\s*(?:\((\w+)(?::\s*(.*))?\))?\s*$')


def parse_dpif_show(text: str) -> list[DpPort]:
    """`ovs-appctl dpif/show`: every bridge's ports with their OpenFlow and datapath numbers."""
    out, bridge, datapath = [], None, ''
    for line in text.splitlines():
        if re.match(r'^\S+@\S+:', line):
            datapath, bridge = line.split(':', 1)[0], None
            continue
        if re.match(r'^  \S+:$', line):
            bridge = line.strip()[:-1]
            continue
        m = _DPIF_PORT.match(line)
        if bridge and m:
            opts = m.group(5) or ''
            peer = re.search(r'peer=([^,)\s]+)', opts)
            out.append(DpPort(bridge, m.group(1), None if m.group(2) == 'none' else int(m.group(2)),
                              None if m.group(3) == 'none' else int(m.group(3)), m.group(4) or '',
                              peer.group(1) if peer else None, datapath))
    return out
