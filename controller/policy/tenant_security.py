"""The `security:` section of a tenant policy -> model.Security (rules checked against the
tenant's own networks, workloads and labels)."""
from __future__ import annotations

import re

from controller.policy import model
from controller.policy.values import NAME_RE, ipv4_network, known, mark_str
from controller.policy.yamlsource import excerpt, kind

LABEL_RE = re.compile(r'[a-z][a-z0-9_-]{0,63}\Z')
DEFAULTS = ('deny', 'allow')
PROTOS = ('tcp', 'udp', 'icmp', 'any')
PORTED = ('tcp', 'udp')
ENDPOINT_KEYS = ('label', 'workload', 'network', 'cidr')
PORTS_RE = re.compile(r'([0-9]{1,5})-([0-9]{1,5})\Z')


def build_security(c, value, networks, workloads, labels) -> model.Security:
    """networks/workloads: the tenant's names (entries may be None when broken: still known);
    labels: every label some workload carries."""
    path = ('security',)
    if value is None:           # no `security:` at all: open inside, like a Faucet VLAN without ACLs
        return model.Security(default='allow')
    m = c.mapping(path, value, ('default', 'rules'))
    if m is None:
        return model.Security()
    default = m.get('default', 'deny')
    if default not in DEFAULTS:
        c.error(path + ('default',), f'expected deny or allow, got {kind(default)}')
    rules, names = [], {}
    for i, item in enumerate(c.sequence(path + ('rules',), m.get('rules')) or ()):
        rules.append(_rule(c, path + ('rules', i), item, names, networks, workloads, labels))
    return model.Security(default, tuple(r for r in rules if r is not None))


def _rule(c, p, v, names, networks, workloads, labels):
    m = c.mapping(p, v, ('name', 'from', 'to', 'allow'), required=('name', 'from', 'to', 'allow'))
    if m is None:
        return None
    name = m.get('name')
    if 'name' in m and c.string(p + ('name',), name) is not None:
        if not NAME_RE.fullmatch(name):
            c.error(p + ('name',), f"invalid rule name {excerpt(name)}: a name starts with a letter and has at "
                                   "most 32 letters, digits, '_' or '-'")
        elif name in names:
            c.error(p + ('name',), f"rule name '{name}' is already used by security.rules[{names[name][-2]}] "
                                   f'({mark_str(c, names[name])})')
        else:
            names[name] = p + ('name',)
    src = _endpoint(c, p + ('from',), m['from'], networks, workloads, labels) if 'from' in m else None
    dst = _endpoint(c, p + ('to',), m['to'], networks, workloads, labels) if 'to' in m else None
    allow = _allows(c, p + ('allow',), m['allow']) if 'allow' in m else None
    if None in (src, dst, allow) or not isinstance(name, str):
        return None
    # The rule's line is kept so flows (via cookies) and counters trace back to the YAML.
    return model.Rule(name, src, dst, allow, line=c.doc.mark(p)[0])


def _endpoint(c, p, v, networks, workloads, labels):
    m = c.mapping(p, v, ENDPOINT_KEYS)
    if m is None:
        return None
    given = [k for k in ENDPOINT_KEYS if k in m]
    if len(given) != 1:
        if len(given) == len(m):        # an unknown key is already reported: one error is enough
            got = f" (got {', '.join(given)})" if given else ''
            c.error(p, f"give exactly one of {', '.join(sorted(ENDPOINT_KEYS))}{got}")
        return None
    key = given[0]
    q, ref = p + (key,), m[key]
    if key == 'cidr':
        net = ipv4_network(c, q, ref, '0.0.0.0/0')
        return None if net is None else model.Endpoint(cidr=net)
    if c.string(q, ref) is None:
        return None
    if key == 'label':
        if not LABEL_RE.fullmatch(ref):
            c.error(q, f"invalid label {excerpt(ref)}: a lower-case letter, then lower-case letters, digits, '_' or '-'")
            return None
        if ref not in labels:
            c.error(q, f"label {excerpt(ref)} matches no workload (labels in use: {known(labels)})")
            return None
    else:
        defined = networks if key == 'network' else workloads
        if ref not in defined:
            section = 'networks' if key == 'network' else 'workloads'
            c.error(q, f"{key} {excerpt(ref)} is not defined in {section} (known: {known(defined)})")
            return None
    return model.Endpoint(**{key: ref})


def _allows(c, p, v):
    items = c.sequence(p, v)
    if items is None:
        return None
    if not items:
        c.error(p, 'a rule allows at least one thing, e.g. [{proto: tcp, port: 443}] or [{proto: any}]')
        return None
    out = [_allow(c, p + (i,), item) for i, item in enumerate(items)]
    return None if None in out else tuple(out)


def _allow(c, p, v):
    m = c.mapping(p, v, ('proto', 'port', 'ports', 'type'), required=('proto',))
    if m is None or 'proto' not in m:
        return None
    proto = m['proto']
    if proto not in PROTOS:
        c.error(p + ('proto',), f"expected one of {', '.join(PROTOS)}, got {kind(proto)}")
        return None
    if 'type' in m:
        if proto != 'icmp':
            c.error(p, f'type needs proto icmp ({proto} has no ICMP type)', at=p + ('type',), key=True)
            return None
        t = c.integer(p + ('type',), m['type'], 0, 255)
        return None if t is None else model.Allow('icmp', icmp_type=t)
    given = [k for k in ('port', 'ports') if k in m]
    if not given:
        return model.Allow(proto)
    if len(given) == 2:
        c.error(p, 'give port or ports, not both', at=p + ('ports',), key=True)
        return None
    key = given[0]
    if proto not in PORTED:
        c.error(p, f'{key} needs proto tcp or udp ({proto} has no ports)', at=p + (key,), key=True)
        return None
    if key == 'port':
        port = c.integer(p + ('port',), m['port'], 1, 65535)
        return None if port is None else model.Allow(proto, (port, port))
    return _ports(c, p + ('ports',), m['ports'], proto)


def _ports(c, q, v, proto):
    match = PORTS_RE.fullmatch(v) if isinstance(v, str) else None
    if not match:
        hint = '; use `port:` for a single port' if isinstance(v, int) and not isinstance(v, bool) else ''
        c.error(q, f'expected a port range like "8000-8100", got {kind(v)}{hint}')
        return None
    lo, hi = int(match[1]), int(match[2])
    if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
        c.error(q, f'ports {v} are out of range 1..65535')
    elif lo > hi:
        c.error(q, f'port range {v} is backwards; write {hi}-{lo}')
    else:
        return model.Allow(proto, (lo, hi))
    return None
