"""Flow -> ovs-ofctl text (pure: no os-ken).

flow(f) is one line for `ovs-ofctl -O OpenFlow14 add-flows` (tables by id, cookie, timeouts);
actions(f) is exactly what `ovs-ofctl dump-flows` prints after `actions=` for that flow, so
`dvsctl show flows` and a dump read the same (tests/ovs/test_actions_roundtrip.py holds the
two side by side for every action kind).  The match is written with OVS field names in a
fixed order; ovs-ofctl prints matches in its own order, so only the actions are canonical.
"""
from __future__ import annotations

from controller.pipeline import fields as F
from controller.pipeline import tables
from controller.pipeline.actions import ALL64, LEARN_DEFAULT_PRIORITY
from controller.pipeline.flow import Flow

# fields ovs-ofctl prints in hex; every other int is printed in decimal
HEX = frozenset({'tunnel_id', 'metadata', 'pkt_mark', 'ct_mark', 'ct_label', 'eth_type', 'tcp_flags'}
                | {'reg%d' % i for i in range(16)} | {'xxreg%d' % i for i in range(4)})
PORTS = {'controller': 'CONTROLLER:65535', 'in_port': 'IN_PORT', 'local': 'LOCAL'}
NAT_FLAGS = ('persistent', 'hash', 'random')
FIRST = ('eth_type', 'ip_proto')               # prerequisites before the fields that need them


def flow(f: Flow, registry=None) -> str:
    """One add-flows line; a compiled flow's Cookie value is numbered by `registry`
    (controller.pipeline.cookies.Registry)."""
    cookie = registry.encode(f.cookie) if registry is not None else f.cookie
    parts = ['table=%d' % tables.table_id(f.table), 'priority=%d' % f.priority, 'cookie=%#x' % cookie]
    if f.idle_timeout:
        parts.append('idle_timeout=%d' % f.idle_timeout)
    if f.hard_timeout:
        parts.append('hard_timeout=%d' % f.hard_timeout)
    if f.notify_removal:
        parts.append('send_flow_rem')
    m = match(f)
    if m:
        parts.append(m)
    return ','.join(parts) + ',actions=' + actions(f)


def match(f: Flow) -> str:
    items = sorted(f.match, key=lambda kv: (FIRST.index(kv[0]) if kv[0] in FIRST else len(FIRST), kv[0]))
    return ','.join('%s=%s' % (F.FIELDS[k][1] if k in F.FIELDS else k, _match_value(k, v)) for k, v in items)


def _match_value(field, value) -> str:
    if field == 'ct_state':
        v, m = value if isinstance(value, tuple) else (value, F.ones(32))
        flags = [('+' if v & bit else '-') + name for name, bit in F.CT_STATE.items() if m & bit]
        if m & ~sum(F.CT_STATE.values()) == 0:
            return ''.join(flags)
    if field == 'in_port':
        return PORTS.get(value, str(value)).split(':')[0]
    return value_text(field, value)


def value_text(field, value) -> str:
    """A field value as ovs-ofctl prints it (masked: value/mask)."""
    if isinstance(value, tuple):
        return '%s/%s' % (_one(field, value[0], True), _one(field, value[1], True))
    return _one(field, value, False)


def _one(field, v, masked) -> str:
    if isinstance(v, str):
        return v
    return '%#x' % v if field in HEX or masked else str(v)


def actions(f: Flow) -> str:
    parts = [action(a) for a in f.actions]
    if f.goto:
        parts.append('goto_table:%d' % tables.table_id(f.goto))
    return ','.join(parts) or 'drop'


def action(a: tuple) -> str:
    kind = a[0]
    fn = _FORMAT.get(kind)
    if fn is None:
        raise ValueError('no ovs-ofctl text for action %r' % (a,))
    return fn(*a[1:])


def sub(text: str) -> str:
    """'reg13[0..15]' -> 'NXM_NX_REG13[0..15]', 'eth_src' -> 'NXM_OF_ETH_SRC[]'."""
    field, ofs, n = F.subfield(text)
    name = F.FIELDS[field][2]
    if ofs == 0 and n == F.bits(field):
        return name + '[]'
    return '%s[%d]' % (name, ofs) if n == 1 else '%s[%d..%d]' % (name, ofs, ofs + n - 1)


def _output(port):
    return PORTS.get(port) or 'output:%d' % port


def _set_field(field, value):
    if isinstance(value, tuple):                   # a register load (see controller/ofp.py)
        ofs, n = F.mask_bits(F.to_int(field, value[1]))
        return 'load:%#x->%s' % (F.to_int(field, value[0]) >> ofs, sub(F.sub_text(field, ofs, n)))
    return 'set_field:%s->%s' % (value_text(field, value), F.FIELDS[field][1])


def _ct(*pairs):
    o = dict(pairs)
    parts = [k for k in ('commit', 'force') if o.get(k)]
    if 'table' in o:
        parts.append('table=%d' % tables.table_id(o['table']))
    if 'zone' in o:
        parts.append('zone=%s' % (sub(o['zone']) if isinstance(o['zone'], str) else o['zone']))
    if 'nat' in o:
        parts.append(_nat(o['nat']))
    if o.get('exec'):
        parts.append('exec(%s)' % ','.join(action(x) for x in o['exec']))
    return 'ct(%s)' % ','.join(parts)


def _nat(nat):
    o = dict(nat)
    if 'kind' not in o:
        return 'nat'
    text = '%s=%s' % (o['kind'], '-'.join(o['ip']) if isinstance(o['ip'], tuple) else o['ip'])
    if 'port' in o:
        text += ':' + ('%d-%d' % o['port'] if isinstance(o['port'], tuple) else str(o['port']))
    return 'nat(%s)' % ','.join([text] + [k for k in NAT_FLAGS if o.get(k)])


def _learn(*pairs):
    o = dict(pairs)
    parts = ['table=%d' % tables.table_id(o['table'])]
    parts += ['%s=%d' % (k, o[k]) for k in ('idle_timeout', 'hard_timeout', 'fin_idle_timeout',
                                           'fin_hard_timeout') if k in o]
    if o['priority'] != LEARN_DEFAULT_PRIORITY:
        parts.append('priority=%d' % o['priority'])
    if o.get('delete_learned'):
        parts.append('delete_learned')
    if 'cookie' in o:
        parts.append('cookie=%#x' % o['cookie'])
    return 'learn(%s)' % ','.join(parts + [_spec(s) for s in o['specs']])


def _spec(s):
    if s[0] == 'output':
        return 'output:' + sub(s[1])
    if s[0] == 'load':
        src, dst = s[1], s[2]
        return 'load:%s->%s' % (sub(src) if isinstance(src, str) else '%#x' % src, sub(dst))
    dst, src = s[1], s[2]
    if src == dst:
        return sub(dst)
    if isinstance(src, str):
        return '%s=%s' % (sub(dst), sub(src))
    field, ofs, n = F.subfield(dst)
    if ofs == 0 and n == F.bits(field):
        return '%s=%s' % (F.FIELDS[field][1], _learn_imm(field, src))
    return '%s=%#x' % (sub(dst), src)


def _learn_imm(field, v):
    if field in F.MACS or field in F.IPV4:
        return F.from_int(field, v)
    return '%#x' % v if field in HEX else str(v)


_FORMAT = {
    'output': _output,
    'output_reg': lambda src: 'output:' + sub(src),
    'push_vlan': lambda vid: 'push_vlan:0x8100,set_field:%d->vlan_vid' % (0x1000 | vid),
    'pop_vlan': lambda: 'pop_vlan',
    'set_field': _set_field,
    'move': lambda src, dst: 'move:%s->%s' % (sub(src), sub(dst)),
    'dec_ttl': lambda: 'dec_ttl',
    'ct_clear': lambda: 'ct_clear',
    'multipath': lambda n, dst: 'multipath(symmetric_l4,0,hash_threshold,%d,0,%s)' % (n, sub(dst + '[0..15]')),
    'bundle': lambda alg, members: 'bundle(symmetric_l4,0,%s,ofport,members:%s)' % (
        alg, ','.join(str(m) for m in members)),
    'set_in_port': lambda port: 'load:%#x->NXM_OF_IN_PORT[]' % port,
    'group': lambda gid: 'group:%d' % gid,
    'meter': lambda mid: 'meter:%d' % mid,
    'write_metadata': lambda v, m: 'write_metadata:%#x' % v + ('' if m == ALL64 else '/%#x' % m),
    'resubmit': lambda table: 'resubmit(,%d)' % tables.table_id(table),
    'conjunction': lambda cid, clause, n: 'conjunction(%d,%d/%d)' % (cid, clause, n),
    'clone': lambda acts: 'clone(%s)' % ','.join(action(a) for a in acts),
    'output_trunc': lambda port, n: 'output(port=%s,max_len=%d)' % (
        port.upper() if isinstance(port, str) else port, n),
    'ct': _ct,
    'learn': _learn,
}
