"""One tenant policy file -> frozen model.Tenant, with strict validation and FILE:LINE:COL errors.

Only what one file can say about itself is checked here; what needs the fabric or the other
tenants (VLAN/VNI/MAC reuse, placement hints) is in tenant_checks.  Every Tenant built here
remembers its YamlDoc (see tenant_doc) so those later checks can point into the right file.
The security section is parsed by tenant_security.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
import weakref

from controller.policy import model
from controller.policy.errors import PolicyError
from controller.policy.tenant_security import LABEL_RE, build_security
from controller.policy.values import NAME_RE, NAME_RULE, ipv4_address, ipv4_network, known, mark_str, named_entries
from controller.policy.yamlsource import Checker, YamlDoc, excerpt, kind, path_str

TOP_KEYS = ('tenant', 'networks', 'workloads', 'security')
# The tenant name goes into iface-ids (<tenant>/<workload>/nic<i>) and cookie descriptions.
# \Z, not $: '$' also matches before a trailing newline ('acme\n' would run beside 'acme')
TENANT_RE = re.compile(r'[a-z][a-z0-9-]{0,31}\Z')
MAC_RE = re.compile(r'[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z')

# id(Tenant) -> the YamlDoc it came from.  Tenant is frozen and unhashable (its Mapping
# fields), so neither a field nor a WeakKeyDictionary can hold it; a finalizer drops the entry.
_DOCS: dict[int, YamlDoc] = {}


def tenant_doc(tenant: model.Tenant) -> YamlDoc | None:
    """The parsed file a Tenant was built from (None for a Tenant built by hand)."""
    return _DOCS.get(id(tenant))


def _remember(tenant: model.Tenant, doc: YamlDoc) -> None:
    _DOCS[id(tenant)] = doc
    weakref.finalize(tenant, _DOCS.pop, id(tenant), None)


def build_tenant(doc: YamlDoc) -> model.Tenant:
    """Validate an already-parsed YAML document as one tenant policy; raise PolicyError listing
    every problem in it."""
    c = Checker(doc)
    if doc.data is not None and not isinstance(doc.data, dict):
        c.error((), f'a tenant policy is a mapping with keys {", ".join(TOP_KEYS)}; got {kind(doc.data)}')
        c.raise_if_errors()
    top = c.mapping((), doc.data, TOP_KEYS, required=('tenant', 'networks'))
    name = _tenant_name(c, top)
    networks, shapes = _networks(c, top)
    salvaged: dict = {}
    workloads, labels = _workloads(c, top, networks, shapes, salvaged)
    security = build_security(c, top.get('security'), networks, workloads, labels)
    if c.diags:
        e = PolicyError(c.diags)
        e.partial = _partial(doc, name, networks, salvaged)
        raise e
    tenant = model.Tenant(name, doc.file, model.frozen_map(networks), model.frozen_map(workloads), security)
    _remember(tenant, doc)
    return tenant


def _partial(doc, name, networks, salvaged) -> model.Tenant | None:
    """What of a broken tenant is valid -- its good networks, and each workload with its good
    nics on them -- for the checks across files; None if it has no valid name."""
    if not (isinstance(name, str) and TENANT_RE.fullmatch(name)):
        return None
    nets = {n: net for n, net in networks.items() if net is not None}
    wls = {}
    for w, wl in salvaged.items():
        nics = tuple(n for n in wl.nics if n.network in nets)
        if nics:
            wls[w] = dataclasses.replace(wl, nics=nics)
    tenant = model.Tenant(name, doc.file, model.frozen_map(nets), model.frozen_map(wls))
    _remember(tenant, doc)
    return tenant


def _tenant_name(c, top):
    v = top.get('tenant')
    if 'tenant' in top and c.string(('tenant',), v) is not None and not TENANT_RE.fullmatch(v):
        c.error(('tenant',), f"invalid tenant name {excerpt(v)}: it starts with a lower-case letter and has at "
                             "most 32 lower-case letters, digits or '-' (it goes into iface-ids and cookies)")
    return v



def _edge(net, addr) -> bool:
    """addr is net's network or broadcast address (which /31 and /32 do not have)."""
    return net.prefixlen < 31 and addr in (net.network_address, net.broadcast_address)


def _mac(c, path, v):
    if isinstance(v, int) and not isinstance(v, bool):
        c.error(path, f'expected a MAC address string, got {kind(v)}: YAML reads an unquoted '
                      'MAC of digits as a base-60 number; quote it, e.g. "02:00:0a:0a:00:0b"')
        return None
    if c.string(path, v) is None:
        return None
    mac = v.lower()
    if not MAC_RE.fullmatch(mac):
        c.error(path, f"{excerpt(v)} is not a MAC address: six hex pairs separated by ':', e.g. 02:00:0a:0a:00:0b")
        return None
    if int(mac[:2], 16) & 1 or mac == '00:00:00:00:00:00':
        c.error(path, f'{mac} is not a unicast MAC address (the low bit of the first byte must be 0; '
                      'locally administered ones start with 02)')
        return None
    return mac


# --- networks ------------------------------------------------------------------------------------

def _networks(c, top) -> tuple[dict, dict]:
    """-> (name -> model.Network, or None for a network whose entry is broken: it is still known,
    so nics and rules naming it add no 'not defined' noise;  name -> a Network with just its
    subnet and gateway, whenever those are valid: nic addresses are checked against it even
    when the network's VLAN is wrong)."""
    path = ('networks',)
    raw = top.get('networks')
    entries = named_entries(c, path, raw)
    if 'networks' in top and raw in (None, {}):
        c.error(path, 'define at least one network, e.g. users: {vlan: 10, subnet: 10.10.0.0/24}', key=True)
    out, shapes, seen = {}, {}, {'vlan': {}, 'vni': {}}
    for name, entry in entries.items():
        p = path + (name,)
        out[name] = None
        m = c.mapping(p, entry, ('vlan', 'vni', 'subnet', 'gateway'), required=('subnet',))
        if m is None:
            continue
        seg = _segment(c, p, m, seen, name)
        net = ipv4_network(c, p + ('subnet',), m['subnet']) if 'subnet' in m else None
        if net is not None:
            net = _check_subnet(c, p + ('subnet',), net, out)
        gw = _gateway(c, p + ('gateway',), m['gateway'], net) if 'gateway' in m else None
        if net is not None:
            shapes[name] = model.Network(name, net, gateway=gw)
        if seg is not None and net is not None and (gw is not None or 'gateway' not in m):
            out[name] = model.Network(name, net, gateway=gw, line=c.doc.key_mark(p)[0], **{seg[0]: seg[1]})
    return out, shapes


def _segment(c, p, m, seen, name):
    """('vlan', N) or ('vni', N): exactly one, each used once in the tenant."""
    given = [k for k in ('vlan', 'vni') if k in m]
    if not given:
        c.error(p, 'needs exactly one of vlan (a VLAN port-group, 2..4094) or vni (a VXLAN overlay, '
                   '1..16777215)', key=True)
        return None
    if len(given) == 2:
        c.error(p, 'give either vlan or vni, not both', at=p + ('vni',), key=True)
        return None
    key, v = given[0], m[given[0]]
    if key == 'vlan' and v == 1 and type(v) is int:
        c.error(p + ('vlan',), "VLAN 1 is the fabric's untagged (native) VLAN; use 2..4094")
        return None
    n = c.integer(p + (key,), v, *((2, 4094) if key == 'vlan' else (1, 2**24 - 1)))
    if n is None:
        return None
    if n in seen[key]:
        other = seen[key][n]
        c.error(p + (key,), f"{key.upper()} {n} is already used by network '{other}' "
                            f"({mark_str(c, ('networks', other, key))})")
        return None
    seen[key][n] = name
    return key, n


def _check_subnet(c, path, net, networks):
    if net.is_multicast or net.is_loopback or net.is_reserved or net.overlaps(ipaddress.IPv4Network('0.0.0.0/8')):
        c.error(path, f'{net} is not a unicast subnet (multicast, loopback, reserved or 0.0.0.0/8)')
        return None
    for other, n in networks.items():
        if n is not None and n.subnet.overlaps(net):
            c.error(path, f"subnet {net} overlaps {n.subnet} of network '{other}' "
                          f"({mark_str(c, ('networks', other, 'subnet'))})")
            return None
    return net


def _gateway(c, path, v, net):
    gw = ipv4_address(c, path, v, '10.10.0.1')
    if gw is None or net is None:
        return gw
    if gw not in net:
        c.error(path, f'gateway {gw} is not inside subnet {net}')
        return None
    if _edge(net, gw):
        c.error(path, f'gateway {gw} is the network or broadcast address of subnet {net}')
        return None
    return gw


# --- workloads -----------------------------------------------------------------------------------

def _workloads(c, top, networks, shapes, salvaged):
    """-> ({name: model.Workload or None if broken}, {label: first workload using it});
    salvaged gets every workload with just its valid nics (for tenant_parse._partial)."""
    path = ('workloads',)
    out, labels, macs, ips = {}, {}, {}, {}
    for name, entry in named_entries(c, path, top.get('workloads')).items():
        p = path + (name,)
        out[name] = None
        m = c.mapping(p, entry, ('hypervisor', 'labels', 'nics'), required=('nics',))
        if m is None:
            continue
        hv = _hypervisor(c, p + ('hypervisor',), m['hypervisor']) if 'hypervisor' in m else None
        lbls = _labels(c, p + ('labels',), m.get('labels'), labels, name)
        nics = c.sequence(p + ('nics',), m.get('nics'))
        if nics == [] and 'nics' in m:
            c.error(p + ('nics',), 'a workload needs at least one nic, e.g. [{network: users, '
                                   'mac: "02:00:0a:0a:00:0b", ip: 10.10.0.11}]')
        built = [_nic(c, p + ('nics', i), i, nic, networks, shapes, macs, ips) for i, nic in enumerate(nics or ())]
        good = tuple(n for n in built if n is not None)
        if good:
            salvaged[name] = model.Workload(name, lbls or (), good, hv or None)
        if nics and lbls is not None and None not in built and hv is not False:
            out[name] = model.Workload(name, lbls, tuple(built), hv, line=c.doc.key_mark(p)[0])
    return out, labels


def _hypervisor(c, path, v):
    """The placement hint (checked against the fabric by tenant_checks); False when broken."""
    if c.string(path, v) is None:
        return False
    if not NAME_RE.fullmatch(v):
        c.error(path, f'invalid hypervisor name {excerpt(v)}: {NAME_RULE}')
        return False
    return v


def _labels(c, path, v, labels, workload):
    items = c.sequence(path, v)
    if items is None:
        return None
    seen, ok = [], True
    for i, item in enumerate(items):
        if c.string(path + (i,), item) is None:
            ok = False
        elif not LABEL_RE.fullmatch(item):
            c.error(path + (i,), f"invalid label {excerpt(item)}: a lower-case letter, then lower-case letters, "
                                 "digits, '_' or '-'")
            ok = False
        elif item in seen:
            c.error(path + (i,), f"label '{item}' is listed twice (first at labels[{seen.index(item)}])")
            ok = False
        else:
            seen.append(item)
            labels.setdefault(item, workload)
    return tuple(seen) if ok else None


def _nic(c, p, index, v, networks, shapes, macs, ips):
    m = c.mapping(p, v, ('network', 'mac', 'ip'), required=('network', 'mac', 'ip'))
    if m is None:
        return None
    netname = m.get('network')
    if 'network' in m and c.string(p + ('network',), netname) is None:
        netname = None
    elif netname is not None and netname not in networks:
        c.error(p + ('network',), f"network {excerpt(netname)} is not defined in networks (known: {known(networks)})")
        netname = None
    mac = _mac(c, p + ('mac',), m['mac']) if 'mac' in m else None
    if mac is not None:
        if mac in macs:
            c.error(p + ('mac',), f'MAC {mac} is already used by {path_str(macs[mac])} ({mark_str(c, macs[mac])})')
            mac = None
        else:
            macs[mac] = p + ('mac',)
    ip = ipv4_address(c, p + ('ip',), m['ip']) if 'ip' in m else None
    net = shapes.get(netname) if isinstance(netname, str) else None
    if ip is not None and net is not None:
        ip = _nic_ip(c, p + ('ip',), ip, net, ips)
    if None in (netname, mac, ip):
        return None
    return model.Nic(index, netname, mac, ip)


def _nic_ip(c, path, ip, net, ips):
    if ip not in net.subnet:
        c.error(path, f"{ip} is not inside subnet {net.subnet} of network '{net.name}'")
    elif _edge(net.subnet, ip):
        c.error(path, f"{ip} is the network or broadcast address of subnet {net.subnet}")
    elif ip == net.gateway:
        c.error(path, f"{ip} is the gateway of network '{net.name}'")
    elif (net.name, ip) in ips:
        other = ips[(net.name, ip)]
        c.error(path, f"IP {ip} is already used on network '{net.name}' by {path_str(other)} ({mark_str(c, other)})")
    else:
        ips[(net.name, ip)] = path
        return ip
    return None
