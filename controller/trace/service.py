"""The controller side of `dvsctl trace TENANT SRC DST [SERVICE]` (GET /v1/trace/TENANT).

The packet is the one the source nic would send for the first packet of a new connection:
its own MAC and IP, untagged (the VM knows no VLAN), to the destination nic's MAC when the
destination is in the nic's subnet, else to the fabric's gateway_mac (routed); tcp/udp from
port 40000 (tcp with SYN), icmp an echo request, TTL 64.  It enters the source hypervisor's
br-int at the nic's port; walk.follow() does the rest on the real switches.  Conntrack: every
recirculation resumes with ct_state=trk,new (ofproto/trace --ct-next), so the verdict is the
one for a new connection (replies and established connections always pass).

How the controller reaches each switch's vswitchd (ofproto/trace is an ovs-appctl command, on
the daemon's unix control socket, not OpenFlow):
- physical switches: the vswitchd next to the controller (ovs-appctl's default target, the
  lab's root OVS), or --switch-vswitchd-ctl PATH ($OPENDVS_SWITCH_VSWITCHD_CTL);
- hypervisors: --vswitchd-ctl TEMPLATE ($OPENDVS_VSWITCHD_CTL), `{hypervisor}` replaced by its
  name, e.g. /tmp/opendvs-lab-P/{hypervisor}/ovs-vswitchd.ctl for the lab of prefix P (its run
  dirs are on the shared filesystem).  Without it a hypervisor is named as not reachable.
Each switch's bridge is the name of its OpenFlow LOCAL port (the bridge's own name).
"""
from __future__ import annotations

import ipaddress
import os
import re

from controller.trace import explain, walk

REACH = {'hypervisor': os.environ.get('OPENDVS_VSWITCHD_CTL') or None,
         'physical': os.environ.get('OPENDVS_SWITCH_VSWITCHD_CTL') or None}
SRC_PORT = 40000
PROTOS = {'tcp': '6', 'udp': '17', 'icmp': '1'}


class TraceRequestError(ValueError):
    """A trace that cannot be asked (unknown workload, a nic not bound...): the API's 400."""


def configure(hypervisor: str | None = None, physical: str | None = None) -> None:
    """Where the hypervisors' and the physical switches' vswitchd control sockets are."""
    if hypervisor:
        REACH['hypervisor'] = hypervisor
    if physical:
        REACH['physical'] = physical


def parse_service(text: str | None) -> tuple[str, int | None]:
    """'tcp/22' -> ('tcp', 22); 'icmp' -> ('icmp', None)."""
    text = (text or 'icmp').strip().lower()
    m = re.fullmatch(r'(tcp|udp)/(\d{1,5})|(icmp)', text)
    if not m or (m.group(2) and not 0 < int(m.group(2)) < 65536):
        raise TraceRequestError('service %r: expected tcp/PORT, udp/PORT or icmp' % text[:40])
    return (m.group(1), int(m.group(2))) if m.group(1) else ('icmp', None)


def _nic_of(policy, tenant, what: str, own: bool):
    """A nic by workload name (`web1`, `web1/nic1`), `tenant/workload`, or IP; None for an
    address no nic has.  own: only the tenant's."""
    t = policy.tenants[tenant]
    name, _, nic = what.partition('/')
    if name in t.workloads:
        idx = int(nic[3:]) if nic.startswith('nic') and nic[3:].isdigit() else 0
        iface = t.iface_id(name, idx)
        if iface in policy.nics:
            return policy.nics[iface]
        raise TraceRequestError('%s has no nic %s' % (name, nic))
    if not own and name in policy.tenants and nic in policy.tenants[name].workloads:
        return policy.nics.get(policy.tenants[name].iface_id(nic, 0))
    try:
        ip = ipaddress.ip_address(what)
    except ValueError:
        raise TraceRequestError('%s is no workload of tenant %s (nor an IP address%s)' % (
            what[:60], tenant, '' if own else ', nor TENANT/WORKLOAD')) from None
    mine = [bn for bn in policy.nics.values() if bn.nic.ip == ip and bn.tenant.name == tenant]
    if mine or own:
        if not mine:
            raise TraceRequestError('no nic of tenant %s has the address %s' % (tenant, ip))
        return mine[0]
    others = [bn for bn in policy.nics.values() if bn.nic.ip == ip]
    return others[0] if others else ip


def _label(bn) -> str:
    labels = ','.join(bn.workload.labels)
    return '%s [%s]' % (bn.workload.name, labels) if labels else bn.workload.name


def _pick_src(policy, bn, dst_ip):
    """The nic of the source workload that would send to dst_ip: one in its subnet, else one
    with a gateway (the default route)."""
    nics = [policy.nics[bn.tenant.iface_id(bn.workload.name, n.index)] for n in bn.workload.nics]
    if bn.nic.index != 0 or len(nics) == 1:
        return bn
    same = [n for n in nics if dst_ip in n.network.subnet]
    routed = [n for n in nics if n.network.gateway is not None]
    return (same or routed or nics)[0]


def default_line(text: str | None) -> int:
    """The line of `default:` under the top-level `security:` of a tenant file (0: not found)."""
    inside = False
    for no, line in enumerate((text or '').splitlines(), start=1):
        if re.match(r'^security\s*:', line):
            inside = True
            if re.search(r'\bdefault\s*:', line):
                return no
            continue
        if inside and re.match(r'^\S', line):
            inside = False
        if inside and re.match(r'^\s+default\s*:', line):
            return no
    return 0


def build_packet(policy, src, dst, proto: str, port: int | None) -> dict:
    """The flow fields of the packet the source nic sends (see the module docstring)."""
    dst_ip = dst if isinstance(dst, ipaddress.IPv4Address) else dst.nic.ip
    if dst_ip in src.network.subnet:
        if isinstance(dst, ipaddress.IPv4Address):
            raise TraceRequestError('no nic has %s in %s\'s subnet %s: its ARP gets no answer, nothing is sent'
                                    % (dst_ip, src.workload.name, src.network.subnet))
        dl_dst, how = dst.nic.mac, 'bridged'
    elif src.network.gateway is not None:
        dl_dst, how = policy.fabric.gateway_mac, 'routed'
    else:
        raise TraceRequestError('%s is outside %s\'s subnet %s, which has no gateway: nothing is sent'
                                % (dst_ip, src.workload.name, src.network.subnet))
    f = {'dl_src': src.nic.mac, 'dl_dst': dl_dst, 'dl_type': '0x0800', 'nw_src': str(src.nic.ip),
         'nw_dst': str(dst_ip), 'nw_proto': PROTOS[proto], 'nw_ttl': '64'}
    if proto == 'icmp':
        f.update(icmp_type='8', icmp_code='0')
    else:
        f.update(tp_src=str(SRC_PORT), tp_dst=str(port))
        if proto == 'tcp':
            f['tcp_flags'] = '0x002'
    return {'fields': f, 'how': how}


def places(core) -> dict:
    """dpid -> walk.Place of every connected switch whose vswitchd the controller can reach."""
    out = {}
    for dpid, conn in core.conns.items():
        sw, bridge = core.inv.switches.get(dpid), getattr(conn, 'bridge', None)
        if sw is None or not bridge:
            continue
        if sw.kind == 'hypervisor':
            if REACH['hypervisor']:
                out[dpid] = walk.Place(REACH['hypervisor'].replace('{hypervisor}', sw.name), bridge)
        else:
            out[dpid] = walk.Place(REACH['physical'], bridge)
    return out


def view(core, docs: dict, tenant: str, src: str, dst: str, service: str | None = None, runner=None) -> dict:
    """The trace of SRC -> DST of `tenant` (see the module docstring), as `dvsctl trace --json` prints it."""
    from controller.api.service import NoSuchTenant
    with core.lock:
        policy, inv = core.policy, core.inv.snapshot()
        where = places(core)
        anchors = {(dpid, m): min(b.ofports) for dpid, bonds in getattr(core, 'switch_bonds', {}).items()
                   for b in bonds.values() for m in b.ofports if b.ofports}
    if tenant not in policy.tenants:
        raise NoSuchTenant(tenant, sorted(policy.tenants))
    proto, port = parse_service(service)
    s, d = _ends(policy, tenant, src, dst)
    src_iface = s.tenant.iface_id(s.workload.name, s.nic.index)
    loc, hv = _source_port(inv, where, src, src_iface)
    pkt = build_packet(policy, s, d, proto, port)
    v = walk.View(policy, inv, where, anchors)
    start = walk.Hop(loc[0], hv.name, where[loc[0]], str(loc[1]), tuple(sorted(pkt['fields'].items())),
                     'from %s' % s.workload.name)
    results = walk.follow(v, start, runner or walk.run)
    svc = proto if port is None else '%s/%d' % (proto, port)
    ctx = _context(core, v, docs, policy.tenants[tenant], s, d, dst, svc)
    if not isinstance(d, ipaddress.IPv4Address) and d.tenant.iface_id(d.workload.name, d.nic.index) \
            not in inv.locations:
        ctx.note = '; '.join(filter(None, (ctx.note, '%s is not bound on any hypervisor' % dst)))
    return {'tenant': tenant, 'src': {'workload': s.workload.name, 'iface_id': src_iface, 'ip': str(s.nic.ip),
                                      'mac': s.nic.mac, 'hypervisor': hv.name, 'port': loc[1]},
            'dst': {'name': ctx.dst, 'iface_id': ctx.dst_iface, 'ip': ctx.dst_ip},
            'service': svc, 'forwarding': pkt['how'], 'packet': start.flow(), 'ct_state': walk.CT_NEXT,
            'hops': explain.hop_rows(results, ctx), 'verdict': explain.verdict(results, ctx)}


def _ends(policy, tenant: str, src: str, dst: str):
    """(the source BoundNic, the destination BoundNic or bare address)."""
    s = _nic_of(policy, tenant, src, own=True)
    d = _nic_of(policy, tenant, dst, own=False)
    return _pick_src(policy, s, d if isinstance(d, ipaddress.IPv4Address) else d.nic.ip), d


def _source_port(inv, where: dict, src: str, src_iface: str):
    """((hypervisor dpid, port), its SwitchState) where the source nic is bound and traceable."""
    loc = inv.locations.get(src_iface)
    if loc is None:
        raise TraceRequestError('%s is not bound on any hypervisor: no packet to trace' % src_iface)
    hv = inv.switches.get(loc[0])
    if loc[0] not in where:
        why = ('the controller cannot reach its vswitchd: start it with --vswitchd-ctl TEMPLATE (see README, '
               '"dvsctl trace")' if hv is not None and not REACH['hypervisor'] else 'it is not connected')
        raise TraceRequestError('cannot trace from %s on %s: %s' % (src, hv.name if hv else '%016x' % loc[0], why))
    return loc, hv


def _selects(ep, bn) -> bool:
    """Does a rule's `from`/`to` endpoint take this nic (a network or CIDR by its address)?"""
    if ep.label is not None:
        return ep.label in bn.workload.labels
    if ep.workload is not None:
        return ep.workload == bn.workload.name
    if ep.network is not None:
        return bn.nic.ip in bn.tenant.networks[ep.network].subnet if ep.network in bn.tenant.networks else False
    return ep.cidr is not None and bn.nic.ip in ep.cidr


def _allowed(a) -> str:
    if a.proto == 'icmp' and a.icmp_type is not None:
        return 'icmp type %d' % a.icmp_type
    if a.ports is None:
        return a.proto
    lo, hi = a.ports
    return '%s/%d' % (a.proto, lo) if lo == hi else '%s/%d-%d' % (a.proto, lo, hi)


def pair_rules(t, s, d) -> list[str]:
    """The tenant's rules from the source nic to the destination nic, as `name (FILE:LINE): what
    it allows`: said next to a default-deny verdict, so the rule that almost applies is named."""
    if isinstance(d, ipaddress.IPv4Address) or d.tenant.name != t.name:
        return []
    return ['%s (%s): %s' % (r.name, t.where(r.line), ', '.join(map(_allowed, r.allow)))
            for r in t.security.rules if _selects(r.src, s) and _selects(r.dst, d)]


def _context(core, v, docs: dict, t, s, d, dst: str, svc: str) -> explain.Context:
    bare = isinstance(d, ipaddress.IPv4Address)
    other = not bare and d.tenant.name != t.name
    return explain.Context(pair_rules=pair_rules(t, s, d),
        registry=core.cookies, tenant=t.name, src=_label(s),
        dst=str(d) if bare else ('%s/%s' % (d.tenant.name, _label(d)) if other else _label(d)),
        dst_iface=None if bare else d.tenant.iface_id(d.workload.name, d.nic.index),
        dst_ip=str(d) if bare else str(d.nic.ip),
        service=svc, source_file=t.source,
        default_where=t.where(default_line((docs.get(t.name) or {}).get('text'))),
        ours=lambda hop, bridge: v.dpid_of(hop.place.target, bridge) is not None,
        note='%s belongs to tenant %s: tenants never reach each other' % (dst, d.tenant.name) if other else None)
