"""Fabric YAML -> frozen model.Fabric, with strict validation and FILE:LINE:COL errors.

Every problem in the file is collected before raising, so an operator fixes them in one pass.
See examples/fabric.yaml for the schema.
"""
from __future__ import annotations

import difflib
import ipaddress
import re

from controller.policy import model
from controller.policy.values import NAME_RE, ipv4_network, named_entries  # noqa: F401 (NAME_RE re-exported)
from controller.policy.yamlsource import Checker, YamlDoc, excerpt, kind, load_yaml, parse_yaml

TOP_KEYS = ('controller', 'underlay', 'native_vlan', 'gateway_mac', 'learning', 'switches', 'links', 'hypervisors')
MAX_DPID = 2**64 - 1
# HOST is an IPv4 address or a DNS name; no IPv6 because model.ControllerSettings splits on ':'.
_HOST = r'(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)'
_ENDPOINTS = {
    'openflow': (re.compile(rf'tcp:{_HOST}:(?P<port>[0-9]{{1,5}})\Z'), 'tcp:HOST:PORT', model.DEFAULT_OPENFLOW),
    'api': (re.compile(rf'http://{_HOST}:(?P<port>[0-9]{{1,5}})\Z'), 'http://HOST:PORT', model.DEFAULT_API),
}


def load_fabric(path) -> model.Fabric:
    """Load and validate a fabric file; raise PolicyError listing every problem."""
    return build_fabric(load_yaml(path))


def parse_fabric(text: str, source: str = '<fabric>') -> model.Fabric:
    """Like load_fabric, from a string (tests, API pushes); `source` names it in errors."""
    return build_fabric(parse_yaml(text, source))


def build_fabric(doc: YamlDoc) -> model.Fabric:
    """Validate an already-parsed YAML document as a fabric."""
    c = Checker(doc)
    if doc.data is not None and not isinstance(doc.data, dict):
        c.error((), f'a fabric file is a mapping with keys {", ".join(TOP_KEYS)}; got {kind(doc.data)}')
        c.raise_if_errors()
    top = c.mapping((), doc.data, TOP_KEYS, required=('switches',))

    controller = _controller(c, top)
    mtu = _section_int(c, top, 'underlay', 'mtu', 1280, 9216, 9000)
    native_vlan = _int(c, ('native_vlan',), top, 1, 4094, 1)
    learning = _learning(c, top)
    gateway_mac = _gateway_mac(c, top)
    switches, dpids = _switches(c, top)
    hypervisors = _hypervisors(c, top, switches, dpids)
    links, link_ports = _links(c, top, switches)
    _check_dpids(c, dpids)
    c.raise_if_errors()

    leaves = {h.leaf for h in hypervisors.values()}
    built = {name: model.Switch(name, dpid, 'leaf' if net or name in leaves else 'spine', net)
             for name, (dpid, net) in switches.items()}
    return model.Fabric(
        source=doc.file, controller=controller, underlay_mtu=mtu, native_vlan=native_vlan,
        learning=learning, switches=model.frozen_map(built), links=links,
        link_ports=model.frozen_map(link_ports),
        hypervisors=model.frozen_map(hypervisors), gateway_mac=gateway_mac)


# --- scalar sections ---------------------------------------------------------------------------

def _int(c, path, parent, lo, hi, default):
    if path[-1] not in parent:
        return default
    v = c.integer(path, parent[path[-1]], lo, hi)
    return default if v is None else v


def _gateway_mac(c, top) -> str:
    if 'gateway_mac' not in top:
        return model.DEFAULT_GATEWAY_MAC
    from controller.policy.tenant_parse import _mac
    return _mac(c, ('gateway_mac',), top['gateway_mac']) or model.DEFAULT_GATEWAY_MAC


def _section_int(c, top, section, key, lo, hi, default):
    m = c.mapping((section,), top.get(section), (key,))
    return default if m is None else _int(c, (section, key), m, lo, hi, default)


def _learning(c, top) -> model.Learning:
    m = c.mapping(('learning',), top.get('learning'),
                  ('mac_age', 'max_macs_per_port', 'violation', 'errdisable_recovery'))
    d = model.Learning()
    if m is None:
        return d
    return model.Learning(
        mac_age=_int(c, ('learning', 'mac_age'), m, 10, 86400, d.mac_age),
        max_macs_per_port=_int(c, ('learning', 'max_macs_per_port'), m, 1, 65535, d.max_macs_per_port),
        violation=_choice(c, ('learning', 'violation'), m, model.VIOLATIONS) or model.VIOLATIONS[0],
        errdisable_recovery=_int(c, ('learning', 'errdisable_recovery'), m, 1, 65535, d.errdisable_recovery))


def _choice(c, path, parent, choices):
    """One of `choices`: the first when the key is absent, None (and an error) when it is
    none of them."""
    if path[-1] not in parent:
        return choices[0]
    v = parent[path[-1]]
    if v not in choices:
        close = difflib.get_close_matches(str(v)[:64], choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ''
        c.error(path, f"expected one of {', '.join(choices)}, got {kind(v)}{hint}")
        return None
    return v


def _controller(c, top) -> model.ControllerSettings:
    m = c.mapping(('controller',), top.get('controller'), tuple(_ENDPOINTS))
    if m is None:
        return model.ControllerSettings()
    out = {}
    for key, (rx, shape, default) in _ENDPOINTS.items():
        path, v = ('controller', key), m.get(key, default)
        match = rx.fullmatch(v) if isinstance(v, str) else None
        if not match:
            c.error(path, f'expected {shape} (e.g. {default}), got {kind(v)}')
        elif not 1 <= int(match['port']) <= 65535:
            c.error(path, f'port {int(match["port"])} is out of range 1..65535')
        elif re.fullmatch(r'[0-9.]+', match['host']) and not _is_ipv4(match['host']):
            c.error(path, f"'{match['host']}' is not a valid IPv4 address")
        else:
            out[key] = v
    return model.ControllerSettings(**out)


def _is_ipv4(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
        return True
    except ValueError:
        return False


# --- named entities ----------------------------------------------------------------------------


def _known(names) -> str:
    names = sorted(names)
    return ', '.join(names[:12]) + (', ...' if len(names) > 12 else '') if names else 'none'


def _switches(c, top):
    """-> ({name: (dpid, rack_subnet)}, dpid claims).  Names with broken entries are still
    kept (dpid None) so later references to them do not add 'not defined' noise."""
    path = ('switches',)
    raw = top.get('switches')
    entries = named_entries(c, path, raw)
    if 'switches' in top and raw in (None, {}):
        c.error(path, 'define at least one switch, e.g. spine1: {dpid: 0x101}', key=True)
    switches, dpids = {}, []
    for name, entry in entries.items():
        p = path + (name,)
        m = c.mapping(p, entry, ('dpid', 'rack_subnet'), required=('dpid',))
        if m is None:
            switches[name] = (None, None)
            continue
        dpid = c.integer(p + ('dpid',), m['dpid'], 1, MAX_DPID, fmt=hex) if 'dpid' in m else None
        net = ipv4_network(c, p + ('rack_subnet',), m['rack_subnet'], example='172.16.1.0/24') if 'rack_subnet' in m else None
        switches[name] = (dpid, net)
        if dpid is not None:
            dpids.append((c.doc.mark(p + ('dpid',)), dpid, f"switch '{name}'", p + ('dpid',), False))
    return switches, dpids


def _address(c, path, v):
    if not isinstance(v, str):
        c.error(path, f'expected an IPv4 address like 172.16.1.11, got {kind(v)}')
        return None
    try:
        a = ipaddress.IPv4Address(v)
    except ValueError:
        hint = '; write the address without a prefix length' if '/' in v else ' (e.g. 172.16.1.11)'
        c.error(path, f"{excerpt(v)} is not a valid IPv4 address{hint}")
        return None
    if a.is_multicast or a.is_unspecified or a.is_loopback or a == ipaddress.IPv4Address('255.255.255.255'):
        c.error(path, f'{a} is not a usable unicast address for a VTEP')
        return None
    return a


def _hypervisors(c, top, switches, dpids) -> dict:
    path = ('hypervisors',)
    out, vteps = {}, {}
    for name, entry in named_entries(c, path, top.get('hypervisors')).items():
        p = path + (name,)
        if name in switches:
            line, col = c.doc.key_mark(('switches', name))
            c.error(p, f"name '{name}' is already used by a switch (switches.{name} at {line}:{col})", key=True)
        m = c.mapping(p, entry, ('leaf', 'vtep', 'trunk_vlans', 'dpid', 'uplinks', 'bond'),
                      required=('leaf', 'vtep'))
        if m is None:
            continue
        leaf = _leaf(c, p + ('leaf',), m['leaf'], switches, top) if 'leaf' in m else None
        vtep = _address(c, p + ('vtep',), m['vtep']) if 'vtep' in m else None
        if vtep is not None:
            vtep = _check_vtep(c, p + ('vtep',), name, vtep, vteps, switches.get(leaf, (None, None))[1])
        vlans = _trunk_vlans(c, p + ('trunk_vlans',), m.get('trunk_vlans'))
        if 'dpid' in m:
            dpid = c.integer(p + ('dpid',), m['dpid'], 1, MAX_DPID, fmt=hex)
            claim = (c.doc.mark(p + ('dpid',)), dpid, f"hypervisor '{name}'", p + ('dpid',), False)
        else:
            dpid = model.default_hypervisor_dpid(name)
            claim = (c.doc.key_mark(p), dpid, f"hypervisor '{name}'", p, True)
        if dpid is not None:
            dpids.append(claim)
        uplinks, bond = _uplinks(c, p, m)
        if None not in (leaf, vtep, vlans, dpid, uplinks, bond):
            out[name] = model.Hypervisor(name, leaf, vtep, vlans, dpid, uplinks, bond)
    return out


def _uplinks(c, p, m):
    """-> (uplinks, bond): how many cables go to the leaf and how they are bonded.  Two or
    more cables are always one bond (an EtherChannel, never independent ports: nothing runs
    STP); `bond` says which kind, and only makes sense with more than one cable."""
    uplinks = c.integer(p + ('uplinks',), m['uplinks'], 1, model.MAX_UPLINKS) if 'uplinks' in m else 1
    bond = _choice(c, p + ('bond',), m, model.BOND_MODES)
    if 'bond' not in m or bond is None:
        return uplinks, bond
    if uplinks == 1:
        c.error(p + ('bond',), 'a bond needs at least two uplinks; add `uplinks: 2` (or drop `bond:`)')
        return uplinks, None
    return uplinks, bond


def _leaf(c, path, v, switches, top):
    if not isinstance(v, str):
        c.error(path, f'expected a switch name, got {kind(v)}')
    elif v in switches:
        return v
    elif isinstance(top.get('hypervisors'), dict) and v in top['hypervisors']:
        c.error(path, f"{excerpt(v)} is a hypervisor; `leaf:` must name a switch (known: {_known(switches)})")
    else:
        c.error(path, f"switch {excerpt(v)} is not defined in switches (known: {_known(switches)})")
    return None


def _check_vtep(c, path, name, vtep, vteps, net):
    if vtep in vteps:
        other, at = vteps[vtep]
        c.error(path, f"vtep {vtep} is already used by hypervisor '{other}' ({at[0]}:{at[1]})")
        return None
    vteps[vtep] = (name, c.doc.mark(path))
    if net is None:
        return vtep
    if vtep not in net:
        c.error(path, f"{vtep} is not inside its leaf's rack_subnet {net}")
        return None
    if net.prefixlen < 31 and vtep in (net.network_address, net.broadcast_address):
        c.error(path, f'{vtep} is the network or broadcast address of rack_subnet {net}')
        return None
    return vtep


def _trunk_vlans(c, path, v):
    items = c.sequence(path, v)
    if items is None:
        return None
    seen, ok = {}, True
    for i, item in enumerate(items):
        vlan = c.integer(path + (i,), item, 1, 4094)
        if vlan is None:
            ok = False
        elif vlan in seen:
            c.error(path + (i,), f'VLAN {vlan} is listed twice (first at trunk_vlans[{seen[vlan]}])')
            ok = False
        else:
            seen[vlan] = i
    return tuple(sorted(seen)) if ok else None


def _check_dpids(c, claims):
    """Each datapath id belongs to one switch or hypervisor; the later claim (in file order) is wrong."""
    first = {}
    for mark, dpid, owner, path, is_default in sorted(claims, key=lambda cl: cl[0]):
        if dpid not in first:
            first[dpid] = (owner + (' (its name-derived default)' if is_default else ''), mark)
            continue
        other, (line, col) = first[dpid]
        if is_default:
            c.error(path, f'default dpid {dpid:#x} of {owner} (derived from its name) is already used by '
                          f'{other} ({line}:{col}); give it an explicit `dpid:`', key=True)
        else:
            c.error(path, f'dpid {dpid:#x} of {owner} is already used by {other} ({line}:{col})')


# --- links -------------------------------------------------------------------------------------

MAX_PORT = 0xfffffeff                    # OpenFlow 1.3's highest physical port number


def _links(c, top, switches) -> tuple[tuple, dict]:
    """-> (links, ports): the cabled switch pairs, each sorted by name, and for the pairs
    whose ends name their ports (`[spine1:1, leaf1:3]`), (port on a, port on b)."""
    path = ('links',)
    items = c.sequence(path, top.get('links'))
    hv_names = set(top['hypervisors']) if isinstance(top.get('hypervisors'), dict) else set()
    seen, ports, used = {}, {}, {}
    for i, link in enumerate(items or ()):
        p = path + (i,)
        if not isinstance(link, list):
            c.error(p, f'expected a pair [SWITCH, SWITCH] or [SWITCH:PORT, SWITCH:PORT], got {kind(link)}')
            continue
        if len(link) != 2:
            c.error(p, f'a link has exactly two ends [SWITCH, SWITCH], got {len(link)}')
            continue
        ends = [_link_end(c, p + (j,), end, switches, hv_names) for j, end in enumerate(link)]
        if None in ends:
            continue
        (a, pa), (b, pb) = sorted(ends)
        if a == b:
            c.error(p, f"link from '{a}' to itself")
            continue
        if (pa is None) != (pb is None):
            c.error(p, 'name the ports of both ends of a cable, or of neither')
            continue
        if (a, b) in seen:
            k = seen[(a, b)]
            line, col = c.doc.mark(path + (k,))
            c.error(p, f'duplicate link {a} -- {b} (same as links[{k}] at {line}:{col})')
            continue
        clash = next(((sw, no) for sw, no in ((a, pa), (b, pb)) if no is not None and (sw, no) in used), None)
        if clash is not None:
            line, col = c.doc.mark(path + (used[clash],))
            c.error(p, f'port {clash[0]}:{clash[1]} is already cabled (links[{used[clash]}] at {line}:{col})')
            continue
        seen[(a, b)] = i
        if pa is not None:
            ports[(a, b)] = (pa, pb)
            used[(a, pa)] = used[(b, pb)] = i
    return tuple(seen), ports


def _link_end(c, p, end, switches, hv_names):
    """One end of a cable: 'SWITCH' or 'SWITCH:PORT' -> (switch, port or None), or None."""
    if not isinstance(end, str):
        c.error(p[:-1], f'expected a switch name, got {kind(end)}', at=p)
        return None
    name, sep, port = end.partition(':')
    if name in hv_names:
        c.error(p[:-1], f"{excerpt(name)} is a hypervisor; hypervisors attach to their leaf via `leaf:` "
                        'under hypervisors, not via links', at=p)
        return None
    if name not in switches:
        c.error(p[:-1], f"switch {excerpt(name)} is not defined in switches (known: {_known(switches)})", at=p)
        return None
    if not sep:
        return name, None
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= MAX_PORT:
        c.error(p[:-1], f'{excerpt(end)}: the port after the colon is an OpenFlow port number 1..{MAX_PORT}', at=p)
        return None
    return name, int(port)
