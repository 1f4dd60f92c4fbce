"""The fast pipeline test level: compiled Flows -> a scratch bridge -> ofproto/trace.

No Mininet and no controller: a real OVS bridge (netdev, fail_mode=secure) with ports at
fixed OpenFlow numbers, loaded with the Flow values an app compiles in one
`ovs-ofctl --bundle replace-flows` (text from controller.pipeline.ofctl_text), then asked
what it would do with a packet:

    with PipelineBridge(ports=[1, 2, 3], tunnel=9) as br:
        br.load(flows)
        t = br.trace(in_port=1, eth_type=0x0800, ipv4_dst='10.0.0.2')
        assert t.output_ports == [2]
        assert [s.name for s in t.steps] == ['classify', 'l2_lookup', 'output']

Ports are internal ports named <prefix>p<N> with ofport_request=N; `tunnel` adds a VXLAN port
(remote_ip=flow, key=flow, its own UDP port so it never clashes with another bridge's).
"""
from __future__ import annotations

import dataclasses
import random
import re
import string
import tempfile
from pathlib import Path

from controller import floods
from controller.pipeline import actions
from controller.pipeline import fields as F
from controller.pipeline import ofctl_text, tables
from controller.pipeline.flow import Flow
from tests.support import sh


@dataclasses.dataclass(frozen=True)
class Step:
    """One table lookup the packet went through."""
    table: int
    name: str
    cookie: int
    priority: int | None          # None: no flow matched (table miss)
    match: str                    # as ofproto/trace prints it
    actions: tuple[str, ...]      # the actions OVS executed, in ovs-ofctl text

    @property
    def hit(self) -> bool:
        return self.priority is not None


@dataclasses.dataclass
class Pass:
    """The packet's walk through the tables once; each recirculation (ct(table=...)) is another."""
    steps: list[Step]
    final_flow: str
    datapath_actions: str


@dataclasses.dataclass
class Trace:
    passes: list[Pass]
    text: str
    dp_to_ofport: dict[int, int]

    @property
    def steps(self) -> list[Step]:
        return [s for p in self.passes for s in p.steps]

    @property
    def datapath_actions(self) -> str:
        return self.passes[-1].datapath_actions

    @property
    def dropped(self) -> bool:
        return self.datapath_actions == 'drop'

    @property
    def output_ports(self) -> list[int]:
        """OpenFlow numbers of the ports the final datapath actions send the packet to."""
        return [self.dp_to_ofport.get(int(a), -1) for a in _top_level(self.datapath_actions) if a.isdigit()]

    @property
    def final_flow(self) -> dict[str, str]:
        """Fields of the packet after the last pass ('tun_id', 'reg13', ... as OVS names them)."""
        for p in reversed(self.passes):
            if p.final_flow != 'unchanged':
                return dict(kv.split('=', 1) for kv in _top_level(p.final_flow) if '=' in kv)
        return {}

    def taken(self) -> list[tuple]:
        """(table id, table name, cookie, priority, actions) for every step."""
        return [(s.table, s.name, s.cookie, s.priority, s.actions) for s in self.steps]


def _top_level(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    out, depth, cur = [], 0, ''
    for ch in text:
        if ch == ',' and depth == 0:
            out.append(cur)
            cur = ''
            continue
        depth += (ch == '(') - (ch == ')')
        cur += ch
    return out + [cur] if cur else out


_STEP = re.compile(r'^( *)(\d+)\. (?:(No match)\.|(?:(.*), )?priority (\d+)(?:, cookie (0x[0-9a-f]+))?)$')


def parse_trace(text: str, dp_to_ofport: dict[int, int] | None = None) -> Trace:
    passes, steps, stack, final = [], [], [], ''
    for line in text.splitlines():
        m = _STEP.match(line)
        if m:
            indent = len(m.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            tid = int(m.group(2))
            step = dict(table=tid, name=tables.table_name(tid), match=m.group(4) or '',
                        priority=None if m.group(3) else int(m.group(5)),
                        cookie=int(m.group(6), 16) if m.group(6) else 0, actions=[])
            steps.append(step)
            stack.append((indent, step))
        elif line.startswith('Final flow: '):
            final = line[len('Final flow: '):]
        elif line.startswith('Datapath actions: '):
            passes.append(Pass([Step(**{**s, 'actions': tuple(s['actions'])}) for s in steps], final,
                               line[len('Datapath actions: '):]))
            steps, stack = [], []
        elif line.strip() and stack and not line.strip().startswith(('->', '>>')):
            indent = len(line) - len(line.lstrip())
            while stack and stack[-1][0] >= indent:
                stack.pop()
            if stack:
                stack[-1][1]['actions'].append(line.strip())
        elif not line.strip():
            stack = []
    return Trace(passes, text, dp_to_ofport or {})


def _prefix() -> str:
    return 'os' + ''.join(random.choice(string.ascii_lowercase) for _ in range(3))


class PipelineBridge:
    def __init__(self, ports=(1, 2, 3), tunnel: int | None = None):
        self.name = _prefix() + 'pl'
        self.ports, self.tunnel = list(ports), tunnel
        self._meters: set[int] = set()

    def up(self) -> 'PipelineBridge':
        cmd = ('ovs-vsctl add-br {b} -- set bridge {b} datapath_type=netdev fail_mode=secure '
               'protocols=OpenFlow13,OpenFlow14'.format(b=self.name))
        for n in self.ports:
            cmd += (' -- add-port {b} {b}p{n} -- set interface {b}p{n} type=internal ofport_request={n}'
                    .format(b=self.name, n=n))
        if self.tunnel is not None:
            cmd += (' -- add-port {b} {b}vx -- set interface {b}vx type=vxlan ofport_request={n} '
                    'options:remote_ip=flow options:key=flow options:dst_port={u}'
                    .format(b=self.name, n=self.tunnel, u=random.randint(20000, 60000)))
        try:
            sh(cmd)
            got = {self.ofport('%sp%d' % (self.name, n)) for n in self.ports}
            if got != set(self.ports):
                raise RuntimeError('ports got ofports %s, not %s' % (sorted(got), self.ports))
        except Exception:
            self.down()
            raise
        return self

    def ofport(self, iface: str) -> int:
        return int(sh('ovs-vsctl get interface %s ofport' % iface).strip())

    def load(self, flows, groups: list[str] = (), meters: list[str] = (), registry=None) -> None:
        """Make the bridge hold exactly `flows` (groups and meters first, in ovs-ofctl syntax,
        e.g. 'group_id=7,type=all,bucket=actions=output:2', 'meter=3,pktps,band=type=drop,rate=100').
        Each flow is checked first: ovs-ofctl would silently drop a match field whose
        prerequisite is missing, where the controller's flow-mod is refused."""
        for f in flows:
            actions.check_flow(f)
        for g in groups:
            sh('ovs-ofctl -O OpenFlow14 add-group %s %s' % (self.name, g))
        for m in meters:
            sh('ovs-ofctl -O OpenFlow14 add-meter %s %s' % (self.name, m))
        # every other meter the flows use (the per-port packet-in meters, controller/floods.py)
        given = {int(re.match(r'meter=(\d+)', m).group(1)) for m in meters} | self._meters
        for mid in sorted({a[1] for f in flows for a in f.actions if a[0] == 'meter'} - given):
            sh('ovs-ofctl -O OpenFlow14 add-meter %s meter=%d,pktps,burst,band=type=drop,rate=%d,burst_size=%d'
               % (self.name, mid, floods.PUNT_PPS, floods.PUNT_BURST))
        self._meters = given | {a[1] for f in flows for a in f.actions if a[0] == 'meter'}
        with tempfile.NamedTemporaryFile('w', suffix='.flows', delete=False) as fh:
            fh.write(''.join(ofctl_text.flow(f, registry) + '\n' for f in sorted(flows, key=_order)))
        try:
            sh('ovs-ofctl -O OpenFlow14 --bundle replace-flows %s %s' % (self.name, fh.name))
        finally:
            Path(fh.name).unlink()

    def dump(self) -> str:
        return sh('ovs-ofctl -O OpenFlow14 --no-stats dump-flows %s' % self.name)

    def trace(self, in_port: int, ct_next: str | None = None, **fields) -> Trace:
        """What the bridge does with a packet: fields by flow names (eth_type, ipv4_dst, ...)."""
        first = sorted(fields, key=lambda k: (k not in ofctl_text.FIRST, ofctl_text.FIRST.index(k)
                                              if k in ofctl_text.FIRST else 0))
        flow = ','.join(['in_port=%d' % in_port] + [
            '%s=%s' % (F.FIELDS[k][1], ofctl_text.value_text(k, F.norm_value(k, fields[k]))) for k in first])
        opts = "--ct-next '%s' " % ct_next if ct_next else ''
        return parse_trace(sh("ovs-appctl ofproto/trace %s%s '%s'" % (opts, self.name, flow)), self._dp_ports())

    def _dp_ports(self) -> dict[int, int]:
        """Datapath port number -> OpenFlow port number, from dpif/show."""
        out, mine, ports = sh('ovs-appctl dpif/show'), False, {}
        for line in out.splitlines():
            if re.match(r'^  \S+:$', line):
                mine = line.strip() == self.name + ':'
            m = re.match(r'^\s+(\S+) (\d+)/(\d+):', line)
            if mine and m:
                ports[int(m.group(3))] = int(m.group(2))
        return ports

    def down(self) -> None:
        sh('ovs-vsctl --if-exists del-br %s' % self.name, check=False)

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()


def _order(f: Flow) -> tuple:
    return (tables.table_id(f.table), -f.priority, repr(f.match))
