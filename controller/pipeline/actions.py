"""Typed action constructors: each returns the one hashable tuple a Flow carries for it.

Compilers build actions with these functions; controller/ofp.py encodes the tuples and
decodes what a switch hands back into the same tuples, so an installed flow reads back ==
the flow written (nothing is re-installed after a restart).  check() refuses malformed
actions at compile time, with a message naming the problem.

Normal forms (a[0] is the kind):
  ('output', port)                      port number or 'controller' / 'in_port' / 'local'
  ('output_reg', subfield)              output to the port number held in a field, e.g. 'reg15'
  ('push_vlan', vid) ('pop_vlan',)
  ('set_field', field, value)           value or (value, mask): a masked set is a register load
                                        (one run of <= 64 bits), sent and printed as load:;
                                        load('reg13[0..15]', 5) == ('set_field', 'reg13', (5, 0xffff))
  ('move', src, dst)                    subfields, e.g. 'reg0[0..15]', whole fields bare
  ('dec_ttl',)  ('ct_clear',)
  ('multipath', n_links, dst_field)
  ('bundle', algorithm, members)        a bond: 'hrw' or 'active_backup' over a tuple of ports
  ('set_in_port', port)                 NXM load of in_port (16 bits; OXM in_port is read-only)
  ('group', id)  ('meter', id)          meter is an instruction: it must come first
  ('write_metadata', value, mask)       an instruction: it runs after the actions, so it must
                                        come last (use set_field metadata to set it earlier)
  ('resubmit', table)                   table by name (controller.pipeline.tables)
  ('clone', (action, ...))              the actions on a copy of the packet; the original goes
                                        on unchanged (NX clone; no instruction inside)
  ('output_trunc', port, max_len)       output at most max_len bytes (NX output_trunc)
  ('conjunction', id, clause, n)        clause counts from 1, as ovs-ofctl prints it
  ('ct', (key, value), ...)             keys in order commit, force, zone, table, nat, exec;
                                        defaults left out.  zone: int, or a 16-bit subfield
  ('learn', (key, value), ...)          keys table, priority, idle_timeout, hard_timeout,
                                        fin_idle_timeout, fin_hard_timeout, cookie,
                                        delete_learned, specs; defaults left out
Learn specs: ('match', dst, src) ('load', src, dst) ('output', src): src a subfield or an
int immediate, dst a subfield.
"""
from __future__ import annotations

from controller.pipeline import fields as F
from controller.pipeline.fields import FieldError

SPECIAL_PORTS = ('controller', 'in_port', 'local')
MAX_PORT = 0xffffff00
ALL64 = F.ones(64)
LEARN_DEFAULT_PRIORITY = 0x8000
CT_EXEC_FIELDS = ('ct_mark', 'ct_label')
NOT_SETTABLE = frozenset({'ct_state', 'ct_zone', 'conj_id', 'ct_mark', 'ct_label'})


class ActionError(ValueError):
    pass


# ---- constructors -------------------------------------------------------------------------

def output(port) -> tuple:
    return ('output', port)


def output_reg(src: str) -> tuple:
    """Output to the port whose number is in a (sub)field: the output stage's reg15."""
    return ('output_reg', F.norm_sub(src))


def push_vlan(vid: int) -> tuple:
    return ('push_vlan', vid)


def pop_vlan() -> tuple:
    return ('pop_vlan',)


def set_field(field: str, value, mask=None) -> tuple:
    return ('set_field', field, F.norm_value(field, value if mask is None else (value, mask)))


def load(dst: str, value) -> tuple:
    """Load an immediate into a (sub)field: 'reg13[0..15]', 5."""
    field, ofs, n = F.subfield(dst)
    v = F.to_int(field, value)
    if v >> n:
        raise ActionError('load: %#x does not fit in %s (%d bits)' % (v, dst, n))
    return set_field(field, v << ofs, F.ones(n) << ofs)


def move(src: str, dst: str) -> tuple:
    return ('move', F.norm_sub(src), F.norm_sub(dst))


def dec_ttl() -> tuple:
    return ('dec_ttl',)


def ct_clear() -> tuple:
    return ('ct_clear',)


def multipath(n_links: int, dst: str) -> tuple:
    return ('multipath', n_links, dst)


def bundle(algorithm: str, members) -> tuple:
    """Output to one member of a bond: 'hrw' (hash of the symmetric L4 fields) or
    'active_backup' (the first member that is up)."""
    return ('bundle', algorithm, tuple(members))


def set_in_port(port: int) -> tuple:
    """Rewrite in_port (an NXM register load, 16 bits): folds bond members into one port."""
    return ('set_in_port', port)


def group(group_id: int) -> tuple:
    return ('group', group_id)


def meter(meter_id: int) -> tuple:
    return ('meter', meter_id)


def write_metadata(value: int, mask: int = ALL64) -> tuple:
    return ('write_metadata', value, mask)


def resubmit(table: str) -> tuple:
    return ('resubmit', table)


def clone(*acts) -> tuple:
    """Run `acts` on a copy of the packet; the original goes on as if nothing happened."""
    return ('clone', tuple(acts))


def output_trunc(port, max_len: int) -> tuple:
    return ('output_trunc', port, max_len)


def conjunction(conj_id: int, clause: int, n_clauses: int) -> tuple:
    return ('conjunction', conj_id, clause, n_clauses)


def nat(kind: str | None = None, ip=None, port=None, persistent: bool = False,
        hash: bool = False, random: bool = False) -> tuple:
    """kind 'src'/'dst' with an address (range) and port (range); nat() alone re-applies the
    NAT of an existing connection.  A range (a, a) is written a."""
    out = []
    if kind is not None:
        out.append(('kind', kind))
    if ip is not None:
        out.append(('ip', _range(ip)))
    if port is not None:
        out.append(('port', _range(port)))
    out += [(k, True) for k, v in (('persistent', persistent), ('hash', hash), ('random', random)) if v]
    return tuple(out)


def _range(r):
    if isinstance(r, (tuple, list)):
        return r[0] if r[0] == r[1] else tuple(r)
    return r


def ct(commit: bool = False, zone=0, table: str | None = None, nat=None, exec=(),
       force: bool = False) -> tuple:
    """Conntrack: zone an int or a 16-bit subfield ('reg13' means reg13[0..15]); table to
    recirculate to (by name); nat True or a nat(...) value; exec: set_field of ct_mark/ct_label."""
    out = ['ct']
    if commit:
        out.append(('commit', True))
    if force:
        out.append(('force', True))
    if isinstance(zone, str):
        field, ofs, n = F.subfield(zone)
        zone = F.sub_text(field, ofs, 16 if '[' not in zone else n)
    if zone:
        out.append(('zone', zone))
    if table is not None:
        out.append(('table', table))
    if nat is not None and nat is not False:
        out.append(('nat', () if nat is True else tuple(nat)))
    if exec:
        out.append(('exec', tuple(tuple(a) for a in exec)))
    return tuple(out)


def learn(table: str, specs, priority: int = LEARN_DEFAULT_PRIORITY, idle_timeout: int = 0,
          hard_timeout: int = 0, fin_idle_timeout: int = 0, fin_hard_timeout: int = 0,
          cookie: int = 0, delete_learned: bool = False) -> tuple:
    out = ['learn', ('table', table), ('priority', priority)]
    for k, v in (('idle_timeout', idle_timeout), ('hard_timeout', hard_timeout),
                 ('fin_idle_timeout', fin_idle_timeout), ('fin_hard_timeout', fin_hard_timeout),
                 ('cookie', cookie), ('delete_learned', delete_learned)):
        if v:
            out.append((k, v))
    out.append(('specs', tuple(tuple(s) for s in specs)))
    return tuple(out)


def learn_match(dst: str, src=None) -> tuple:
    """The learned flow matches dst == src (a subfield of this packet or an int); src None
    means the same subfield of this packet."""
    dst = F.norm_sub(dst)
    return ('match', dst, dst if src is None else _learn_src(dst, src))


def learn_load(src, dst: str) -> tuple:
    dst = F.norm_sub(dst)
    return ('load', _learn_src(dst, src), dst)


def learn_output(src: str) -> tuple:
    return ('output', F.norm_sub(src))


def _learn_src(dst: str, src):
    if isinstance(src, str) and ('[' in src or src in F.FIELDS):
        return F.norm_sub(src)
    return F.to_int(F.subfield(dst)[0], src)


# ---- check ---------------------------------------------------------------------------------

def check(action) -> None:
    """Raise ActionError if `action` is not a well-formed normal-form action tuple."""
    if not isinstance(action, tuple) or not action or not isinstance(action[0], str):
        raise ActionError('an action is a tuple starting with its kind, not %r' % (action,))
    fn = _CHECKS.get(action[0])
    if fn is None:
        raise ActionError('unknown action kind %r in %r (known: %s)' % (action[0], action, ', '.join(sorted(_CHECKS))))
    try:
        fn(*action[1:])
    except TypeError:
        raise ActionError('%s: wrong number of arguments for %s (see controller/pipeline/actions.py)'
                          % (_short(action), action[0])) from None
    except (FieldError, ValueError) as e:
        raise ActionError('%s: %s' % (_short(action), e)) from None


def check_list(actions) -> None:
    """Check every action and where instructions sit: meter first, write_metadata last,
    conjunction only with other conjunctions."""
    kinds = [a[0] if isinstance(a, tuple) and a else None for a in actions]
    for a in actions:
        check(a)
    if kinds.count('meter') > 1 or 'meter' in kinds[1:]:
        raise ActionError('meter is an instruction: at most one, and it must come first: %r' % (actions,))
    if kinds.count('write_metadata') > 1 or 'write_metadata' in kinds[:-1]:
        raise ActionError('write_metadata is an instruction that runs after every action: at most one, '
                          'and last (set_field metadata sets it before an action): %r' % (actions,))
    if 'conjunction' in kinds and set(kinds) != {'conjunction'}:
        raise ActionError('a flow with conjunction actions can have no other action: %r' % (actions,))


def check_flow(flow) -> None:
    """check_list on the flow's actions, and its match (and set_fields) against OVS's
    prerequisites; ActionError / FieldError name the problem and the flow."""
    check_list(flow.actions)
    sets = tuple(a[1] for a in flow.actions if a[0] == 'set_field' and a[1] not in F.MACS | {'eth_type'})
    try:
        F.check_match(flow.match_dict(), sets)
    except FieldError as e:
        raise FieldError('%s: %s' % (e, flow)) from None
    for a in flow.actions:      # OVS rewrites a tag only if the match (or a push before) has one
        if a[0] == 'push_vlan':
            break
        if a[:2] == ('set_field', 'vlan_vid') or a[0] == 'pop_vlan':
            m = flow.match_dict().get('vlan_vid')
            value = m[0] if isinstance(m, tuple) else m
            if not (value or 0) & 0x1000:
                raise FieldError('%s needs a tagged vlan_vid in the match (or a push_vlan first): %s'
                                 % (a[0] if a[0] == 'pop_vlan' else 'set_field vlan_vid', flow))
            break


def _short(a) -> str:
    text = repr(a)
    return text if len(text) < 120 else text[:117] + '...'


def _int(v, lo, hi, what):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ActionError('%s must be an int in %d..%d, not %r' % (what, lo, hi, v))


def _table(name, what='table'):
    from controller.pipeline import tables
    if name not in tables.BY_NAME:
        raise ActionError('%s %r is not a declared table' % (what, name))


def _c_output(port, *extra):
    if extra:
        raise ActionError('output takes one port')
    if port not in SPECIAL_PORTS:
        _int(port, 1, MAX_PORT, 'output port')


def _c_output_reg(src):
    field, _, n = F.subfield(src)
    if F.norm_sub(src) != src or n > 32:
        raise ActionError('output_reg takes a subfield of at most 32 bits, written %r' % F.norm_sub(src))


def _c_push_vlan(vid):
    _int(vid, 1, 4094, 'push_vlan vid')


def _c_none(*extra):
    if extra:
        raise ActionError('takes no arguments')


def _c_value(field, value, what):
    """A value (or (value, mask)) that fits the field, in normal form."""
    width = F.bits(field)
    parts = value if isinstance(value, tuple) else (value,)
    if len(parts) not in (1, 2):
        raise ActionError('%s: a value or (value, mask)' % what)
    nums = [F.to_int(field, p) for p in parts]
    if any(n < 0 or n >> width for n in nums):
        raise ActionError('%s: %r does not fit in %s (%d bits)' % (what, value, field, width))
    if len(nums) == 2 and (not nums[1] or nums[0] & ~nums[1]):
        raise ActionError('%s: mask %#x is empty or leaves value bits outside it' % (what, nums[1]))
    if F.norm_value(field, value) != value:
        raise ActionError('%s: write %r as %r' % (what, value, F.norm_value(field, value)))


def _c_set_field(field, value, *extra, in_ct=False):
    if extra:
        raise ActionError('set_field takes a field and a value')
    F.bits(field)
    if field in NOT_SETTABLE and not (in_ct and field in CT_EXEC_FIELDS):
        raise ActionError('%s cannot be set%s' % (field, ' (ct_mark/ct_label only inside ct(exec=...))'
                                                  if field in CT_EXEC_FIELDS else ''))
    _c_value(field, value, 'set_field %s' % field)
    if isinstance(value, tuple):        # a register load: one run of at most 64 bits
        n = F.mask_bits(F.to_int(field, value[1]))[1]
        if n > 64:
            raise ActionError('set_field %s: a masked load carries at most 64 bits; split it' % field)


def _c_move(src, dst):
    s, d = F.subfield(src), F.subfield(dst)
    if (src, dst) != (F.sub_text(*s), F.sub_text(*d)):
        raise ActionError('write it as move(%r, %r)' % (src, dst))
    if s[2] != d[2]:
        raise ActionError('move copies %d bits into %d' % (s[2], d[2]))


def _c_multipath(n, dst):
    _int(n, 1, 1024, 'multipath links')
    F.bits(dst)


BUNDLE_ALGORITHMS = ('hrw', 'active_backup')


def _c_bundle(algorithm, members):
    if algorithm not in BUNDLE_ALGORITHMS:
        raise ActionError('bundle algorithm is one of %s, not %r' % (', '.join(BUNDLE_ALGORITHMS), algorithm))
    if not isinstance(members, tuple) or not members:
        raise ActionError('bundle members are a non-empty tuple of ports, not %r' % (members,))
    for m in members:
        _int(m, 1, 0xfeff, 'bundle member port')
    if len(set(members)) != len(members):
        raise ActionError('bundle members repeat a port: %r' % (members,))


def _c_set_in_port(port):
    _int(port, 1, 0xfeff, 'set_in_port port (16 bits, NXM)')


def _c_group(gid):
    _int(gid, 0, 0xffffff00, 'group id')


def _c_meter(mid):
    _int(mid, 1, 0xffff0000, 'meter id')


def _c_write_metadata(value, mask):
    _int(value, 0, ALL64, 'metadata value')
    _int(mask, 1, ALL64, 'metadata mask')
    if value & ~mask:
        raise ActionError('metadata value %#x has bits outside mask %#x' % (value, mask))


def _c_resubmit(table):
    _table(table, 'resubmit table')


def _c_clone(acts):
    if not isinstance(acts, tuple):
        raise ActionError('clone takes a tuple of actions, not %r' % (acts,))
    for a in acts:
        check(a)
        if a[0] in ('meter', 'write_metadata', 'conjunction'):
            raise ActionError('%s cannot run inside clone (an instruction, or a whole-flow action)' % a[0])


def _c_output_trunc(port, max_len):
    _c_output(port)
    _int(max_len, 14, 0xffff, 'output_trunc max_len')


def _c_conjunction(conj_id, clause, n):
    _int(conj_id, 0, F.ones(32), 'conjunction id')
    _int(n, 2, 64, 'conjunction n_clauses')
    _int(clause, 1, n, 'conjunction clause (from 1)')


_CT_KEYS = ('commit', 'force', 'zone', 'table', 'nat', 'exec')


def _pairs(kind, pairs, order):
    keys = []
    for p in pairs:
        if not (isinstance(p, tuple) and len(p) == 2 and p[0] in order):
            raise ActionError('%s options are (key, value) pairs with keys %s, not %r' % (kind, order, p))
        keys.append(p[0])
    if keys != sorted(keys, key=order.index) or len(set(keys)) != len(keys):
        raise ActionError('%s options must come once each, in the order %s' % (kind, order))
    return dict(pairs)


def _c_ct(*pairs):
    opts = _pairs('ct', pairs, _CT_KEYS)
    for k in ('commit', 'force'):
        if k in opts and opts[k] is not True:
            raise ActionError('ct %s is True or left out' % k)
    zone = opts.get('zone')
    if isinstance(zone, str):
        if F.subfield(zone)[2] != 16 or F.norm_sub(zone) != zone:
            raise ActionError('ct zone from a field takes 16 bits, e.g. reg13[0..15], not %r' % zone)
    elif zone is not None:
        _int(zone, 1, 0xffff, 'ct zone')
    if 'table' in opts:
        _table(opts['table'], 'ct table')
    if 'nat' in opts:
        _c_nat(opts['nat'])
    for a in opts.get('exec', ()):
        if not (isinstance(a, tuple) and a[:1] == ('set_field',) and len(a) == 3 and a[1] in CT_EXEC_FIELDS):
            raise ActionError('ct exec takes only set_field of ct_mark/ct_label, not %r' % (a,))
        _c_set_field(*a[1:], in_ct=True)
    if 'exec' in opts and 'commit' not in opts:
        raise ActionError('ct exec needs commit')


_NAT_KEYS = ('kind', 'ip', 'port', 'persistent', 'hash', 'random')


def _c_nat(value):
    opts = _pairs('nat', value, _NAT_KEYS)
    if opts.get('kind', 'src') not in ('src', 'dst'):
        raise ActionError("nat kind is 'src' or 'dst'")
    if ('ip' in opts) != ('kind' in opts):
        raise ActionError('nat with an address needs kind src/dst, and a kind needs an address')
    if 'port' in opts and 'ip' not in opts:
        raise ActionError('nat port range needs an address')
    ip = opts.get('ip')
    for addr in (ip if isinstance(ip, tuple) else (ip,)) if ip else ():
        F.to_int('ipv4_src', addr)
    port = opts.get('port')
    for p in (port if isinstance(port, tuple) else (port,)) if port is not None else ():
        _int(p, 0, 0xffff, 'nat port')
    if opts.get('hash') and opts.get('random'):
        raise ActionError('nat hash and random exclude each other')


_LEARN_KEYS = ('table', 'priority', 'idle_timeout', 'hard_timeout', 'fin_idle_timeout',
               'fin_hard_timeout', 'cookie', 'delete_learned', 'specs')


def _c_learn(*pairs):
    opts = _pairs('learn', pairs, _LEARN_KEYS)
    if 'table' not in opts or 'priority' not in opts or not opts.get('specs'):
        raise ActionError('learn needs a table, a priority and at least one spec')
    _table(opts['table'], 'learn table')
    _int(opts['priority'], 0, 0xffff, 'learn priority')
    for k in ('idle_timeout', 'hard_timeout', 'fin_idle_timeout', 'fin_hard_timeout'):
        if k in opts:
            _int(opts[k], 1, 0xffff, 'learn ' + k)
    if 'cookie' in opts:
        _int(opts['cookie'], 1, ALL64, 'learn cookie')
    if opts.get('delete_learned', True) is not True:
        raise ActionError('learn delete_learned is True or left out')
    for spec in opts['specs']:
        _c_spec(spec)


def _c_spec(spec):
    if not (isinstance(spec, tuple) and spec and spec[0] in ('match', 'load', 'output')):
        raise ActionError("a learn spec is ('match', dst, src), ('load', src, dst) or ('output', src), not %r"
                          % (spec,))
    if spec[0] == 'output':
        if len(spec) != 2 or not isinstance(spec[1], str):
            raise ActionError("learn output spec is ('output', subfield)")
        F.subfield(spec[1])
        return
    if len(spec) != 3:
        raise ActionError('learn %s spec takes two operands: %r' % (spec[0], spec))
    dst, src = (spec[1], spec[2]) if spec[0] == 'match' else (spec[2], spec[1])
    field, _, n = F.subfield(dst)
    if F.norm_sub(dst) != dst:
        raise ActionError('write the learn subfield %r as %r' % (dst, F.norm_sub(dst)))
    if isinstance(src, str):
        if F.subfield(src)[2] != n or F.norm_sub(src) != src:
            raise ActionError('learn %s: %s and %s differ in width or spelling' % (spec[0], src, dst))
    else:
        _int(src, 0, F.ones(n), 'learn %s immediate for %s' % (spec[0], dst))


_CHECKS = {
    'output': _c_output, 'output_reg': _c_output_reg, 'push_vlan': _c_push_vlan, 'pop_vlan': _c_none, 'set_field': _c_set_field,
    'move': _c_move, 'dec_ttl': _c_none, 'ct_clear': _c_none, 'multipath': _c_multipath,
    'bundle': _c_bundle, 'set_in_port': _c_set_in_port,
    'group': _c_group, 'meter': _c_meter, 'write_metadata': _c_write_metadata,
    'resubmit': _c_resubmit, 'clone': _c_clone, 'output_trunc': _c_output_trunc, 'conjunction': _c_conjunction,
    'ct': _c_ct, 'learn': _c_learn,
}
