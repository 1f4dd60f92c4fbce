"""A followed packet (walk.HopResult list) as the operator reads it: every table lookup as
`switch  table -> decision` with the flow's owner (app, tenant, YAML file:line from the cookie
registry), and one verdict: delivered to which workload where, or dropped by what, of which
tenant, in which table, on which switch, and why (the rule, or the default deny and what no
rule allows)."""
from __future__ import annotations

import dataclasses
import re

from apps import learning_switch
from controller.pipeline import cookies, tables
from controller.trace import ofproto
from controller.trace.walk import End, HopResult, Hop

MICROSEG, PORT_SECURITY, GATEWAY, PIPELINE = 'microseg', 'port_security', 'anycast_gateway', 'pipeline'
K_RULE, K_DEFAULT, K_INVALID, K_FLOOD = 3, 4, 5, 7        # apps/microseg.py's cookie kinds


@dataclasses.dataclass
class Context:
    """What the verdict needs to say why: the cookie registry, the tenant, the two ends."""
    registry: object
    tenant: str
    src: str                      # 'web1 [web]'
    dst: str                      # 'db1 [db]' or an address
    dst_iface: str | None         # the destination nic's iface-id, when it is a nic
    service: str                  # 'tcp/22', 'icmp'
    source_file: str              # the tenant's YAML
    default_where: str            # file:line of the tenant's `default: deny`
    ours: object = None           # (hop, bridge) -> True if the controller programs that bridge
    note: str | None = None       # e.g. the destination is another tenant's
    pair_rules: list = dataclasses.field(default_factory=list)   # rules from src to dst: 'name (FILE:LINE): tcp/80'
    dst_ip: str = ''


def _owner(reg, cookie: int):
    c = reg.decode(cookie) if reg is not None else cookie
    return c if isinstance(c, cookies.Cookie) else None


def decision(step: ofproto.Step) -> str:
    """The step's actions in a few words: `-> l2_lookup`, `out-port=3`, `output:3`, `drop`..."""
    if not step.hit:
        return 'no flow matched: drop'
    words = []
    for a in step.actions:
        if a.startswith('goto_table:'):
            words.append('-> ' + tables.table_name(int(a.split(':')[1])))
        elif a.startswith('resubmit('):
            m = re.match(r'resubmit\((\w*),(\d+)\)', a)
            words.append('resubmit ' + (tables.table_name(int(m.group(2))) if m else a[9:-1]))
        elif a.startswith('set_field:') and '->reg15' in a:
            words.append('out-port=%d' % int(a[10:a.index('->')], 0))
        elif a.startswith('set_field:') and a.endswith('->vlan_vid'):
            words.append('vlan %d' % (int(a[10:a.index('->')], 0) & 0xfff))
        elif a.startswith('set_field:') and a.endswith(('->reg11', '->reg12', '->reg13')):
            continue                        # context registers: in the match of later steps
        elif a.startswith('set_field:') and '->' in a:
            value, _, name = a[10:].partition('->')
            words.append('%s=%s' % (name, value))
        elif a.startswith('push_vlan'):
            continue                        # the vlan word says it
        elif a.startswith('ct('):
            words.append('conntrack commit' if 'commit' in a else 'conntrack (recirculate)')
        elif a.startswith('conjunction('):
            words.append('conjunction clause')
        elif a.startswith(('controller', 'CONTROLLER')):
            words.append('copy to controller')
        elif a == 'drop':
            words.append('drop')
        else:
            words.append(a)
    if any(a.startswith('ct(') and 'table=' in a for a in step.actions) and words[-1:] == ['drop']:
        words.pop()                         # the packet goes on in the recirculation, not dropped
    notes = [n.lstrip('->> ').strip() for n in step.notes
             if 'untracked state' not in n and 'clone of the packet' not in n]
    text = ', '.join(dict.fromkeys(words)) or 'drop'
    return text + (' (%s)' % '; '.join(notes) if notes else '')


def step_rows(res: HopResult, ctx: Context) -> list[dict]:
    rows = []
    if res.trace is not None:
        for s in res.trace.steps:
            ours = ctx.ours(res.hop, s.bridge) if ctx.ours else True
            c = _owner(ctx.registry, s.cookie) if ours else None
            rows.append({
                'switch': res.hop.switch, 'bridge': s.bridge, 'table': s.table,
                'table_name': tables.table_name(s.table) if ours else 'table%d' % s.table,
                'priority': s.priority, 'cookie': '%#x' % s.cookie, 'match': s.match, 'actions': list(s.actions),
                'decision': decision(s), 'recirc': s.recirc, 'depth': s.depth,
                'app': c.app if c else (cookies.app_of(s.cookie) if ours and s.cookie else None),
                'tenant': c.tenant if c else None, 'owner': c.owner if c else None,
                'where': c.where if c else None,
                'foreign': bool(ours and s.hit and s.cookie and c is None),
            })
    return rows


def _last_step(res: HopResult) -> ofproto.Step | None:
    steps = [s for s in res.trace.passes[-1].steps] if res.trace else []
    return steps[-1] if steps else None


def verdict(results: list[HopResult], ctx: Context) -> dict:
    ends = [nxt for r in results for _, _, nxt in r.exits if isinstance(nxt, End) and nxt.kind != 'local']
    delivered = [e for e in ends if e.kind == 'delivered']
    to_dst = [e for e in delivered if ctx.dst_iface and e.iface_id == ctx.dst_iface]
    rule = _rule(results, ctx)
    if to_dst:
        e = to_dst[0]
        text = 'delivered to %s on %s' % (_workload(e.iface_id), e.switch)
        if rule:
            text += '; allowed by rule %s of tenant %s (%s)' % (rule[0], ctx.tenant, rule[1])
        return _out('delivered', text, e.switch, None, ctx)
    if delivered:
        names = ', '.join('%s on %s' % (_workload(e.iface_id), e.switch) for e in delivered)
        return _out('misdelivered', 'delivered to %s, not to %s' % (names, ctx.dst), delivered[0].switch, None, ctx)
    drops = [r for r in results if r.dropped]
    if drops:
        return _drop(_main_drop(drops, ctx), ctx)
    errors = [r for r in results if r.error]
    if errors:
        return _out('unknown', errors[0].error, errors[0].hop.switch, None, ctx)
    if ends:
        e = ends[0]
        return _out('left' if e.kind == 'left' else 'unknown', e.text, e.switch, None, ctx)
    return _out('unknown', 'the trace stopped after %d switches without an answer' % len(results), None, None, ctx)


def _out(result: str, text: str, switch, table, ctx: Context) -> dict:
    if ctx.note:
        text += ' (%s)' % ctx.note
    return {'result': result, 'text': text, 'switch': switch, 'table': table}


def _workload(iface_id: str | None) -> str:
    """'shop/web1/nic0' -> 'web1' (or 'web1/nic1', or 'other/x' for another tenant's nic)."""
    if not iface_id:
        return '?'
    parts = iface_id.split('/')
    if len(parts) != 3:
        return iface_id
    name = parts[1] if parts[2] == 'nic0' else '%s/%s' % (parts[1], parts[2])
    return name


def _rule(results: list[HopResult], ctx: Context):
    """(rule name, file:line) of the microseg rule that admitted the packet on its way, if any."""
    for r in results:
        for s in r.trace.steps if r.trace else ():
            c = _owner(ctx.registry, s.cookie)
            if c and c.app == MICROSEG and c.kind == K_RULE and (c.owner or '').startswith('rule:'):
                return c.owner[5:], c.where
    return None


def _main_drop(drops: list[HopResult], ctx: Context) -> HopResult:
    """The drop that matters when a flood was dropped in many places: one by a microseg or
    port-security flow first, then the first on the path."""
    for r in drops:
        s = _last_step(r)
        c = _owner(ctx.registry, s.cookie) if s else None
        if c and c.app in (MICROSEG, PORT_SECURITY):
            return r
    return drops[0]


def _drop(res: HopResult, ctx: Context) -> dict:
    s, sw = _last_step(res), res.hop.switch
    if s is None:
        return _out('dropped', 'dropped on %s before any table' % sw, sw, None, ctx)
    ours = ctx.ours(res.hop, s.bridge) if ctx.ours else True
    table = tables.table_name(s.table) if ours else 'table%d' % s.table
    where = '%s on %s' % (table, sw)
    if not s.hit:
        return _out('dropped', 'dropped at %s: no flow matched, not even the table\'s miss flow (a missing flow)'
                    % where, sw, table, ctx)
    if not ours:
        notes = '; '.join(n.lstrip('->> ') for n in s.notes) or 'no port to send it to'
        return _out('dropped', 'dropped at %s of bridge %s (not programmed by the controller): %s'
                    % (table, s.bridge, notes), sw, table, ctx)
    c = _owner(ctx.registry, s.cookie)
    outputs = [a for a in s.actions if a.startswith('output:')]
    if outputs and s.notes:
        # the flow sent it on, OVS did not: a tunnel without a route or neighbour, a port gone...
        flow = '%s flow %s%s%s' % (c.app, c.owner or '-', ' of tenant %s' % c.tenant if c.tenant else '',
                                   ' (%s)' % c.where if c.where else '') if c else 'flow (cookie %#x)' % s.cookie
        return _out('dropped', 'dropped at %s: the %s sent it to %s, but OVS says: %s' % (
            where, flow, ', '.join(outputs), '; '.join(n.lstrip('->> ') for n in s.notes)), sw, table, ctx)
    if c is None:
        return _out('dropped', 'dropped at %s by a flow the controller did not make (cookie %#x: stale or foreign)'
                    % (where, s.cookie), sw, table, ctx)
    if c.app == MICROSEG and c.kind == K_DEFAULT:
        near = '; the rules from %s to %s allow only: %s' % (ctx.src, ctx.dst, '; '.join(ctx.pair_rules)) \
            if ctx.pair_rules else ''
        return _out('dropped', 'dropped by the default deny of tenant %s at %s (%s); no rule in %s allows %s '
                    'from %s to %s%s' % (c.tenant, where, ctx.default_where, ctx.source_file, ctx.service, ctx.src,
                                         ctx.dst, near), sw, table, ctx)
    if c.app == MICROSEG and c.kind == K_INVALID:
        return _out('dropped', 'dropped as invalid by conntrack in tenant %s\'s zone at %s' % (c.tenant, where),
                    sw, table, ctx)
    if c.app == MICROSEG and c.kind == K_FLOOD:
        return _out('dropped', 'dropped as unknown unicast of tenant %s at %s: no nic of the tenant with that '
                    'destination is known here' % (c.tenant, where), sw, table, ctx)
    if c.app == PORT_SECURITY:
        return _out('dropped', 'dropped by port security of %s (tenant %s) at %s (%s): the nic may send only as '
                    'itself' % (c.owner, c.tenant, where, c.where), sw, table, ctx)
    if c.app == GATEWAY and table == 'l3':
        return _out('dropped', 'dropped at %s: tenant %s\'s VRF routes no nic at %s (%s flow %s, %s)'
                    % (where, c.tenant, ctx.dst_ip, c.app, c.owner, c.where), sw, table, ctx)
    if c.app == learning_switch.APP and c.kind == learning_switch.K_SHUTDOWN:
        return _out('dropped', 'dropped at %s: %s is shut for a MAC-limit violation (learning.violation: '
                    'shutdown) until its errdisable_recovery; `dvsctl events` says which source broke it'
                    % (where, (c.owner or 'its port').replace('port:', 'port ')), sw, table, ctx)
    if c.app == learning_switch.APP and c.kind in (learning_switch.K_REFUSED, learning_switch.K_GUARD):
        return _out('dropped', 'dropped at %s: the source MAC is not one of the max_macs_per_port its %s has '
                    'learned (learning: the MAC limit)' % (where, 'port' if c.kind == learning_switch.K_REFUSED else
                                                          (c.owner or 'port').replace('port:', 'port ')),
                    sw, table, ctx)
    if c.app == PIPELINE and (c.owner or '').startswith('miss:'):
        return _out('dropped', 'dropped at %s by the table\'s miss flow: no flow of the pipeline matched (a '
                    'missing or deleted flow?)' % where, sw, table, ctx)
    what = '%s flow %s' % (c.app, c.owner or '-') + (' of tenant %s' % c.tenant if c.tenant else '')
    return _out('dropped', 'dropped by the %s at %s%s' % (what, where, ' (%s)' % c.where if c.where else ''),
                sw, table, ctx)


def hop_rows(results: list[HopResult], ctx: Context) -> list[dict]:
    out = []
    for r in results:
        out.append({'steps': step_rows(r, ctx), 'switch': r.hop.switch, 'bridge': r.hop.place.bridge,
                    'in_port': r.hop.in_port,
                    'flow': r.hop.flow(), 'via': r.hop.via, 'error': r.error, 'to_controller': r.to_controller,
                    'notes': list(r.notes),
                    'ct_states': r.trace.ct_states if r.trace else [],
                    'exits': [_exit_row(port, ex, nxt) for port, ex, nxt in r.exits],
                    'dropped': r.dropped, 'raw': r.trace.text if r.trace else None})
    return out


def _exit_row(port, ex, nxt) -> dict:
    special = {ofproto.TUNNEL: 'the VXLAN tunnel', ofproto.BOND: 'the uplink bond'}.get(ex.dp_port)
    row = {'port': port.name if port else special, 'bridge': port.bridge if port else None, 'dp_port': ex.dp_port,
           'encap': dict(ex.encap) or None}
    if isinstance(nxt, Hop):
        row.update(next={'switch': nxt.switch, 'bridge': nxt.place.bridge, 'in_port': nxt.in_port, 'via': nxt.via})
    else:
        row.update(end={'kind': nxt.kind, 'text': nxt.text, 'switch': nxt.switch, 'iface_id': nxt.iface_id})
    return row
