"""Packet and metadata fields as flows name them: widths, OVS names, subfields, normal values.

Flows name fields as os-ken does (eth_src, ipv4_dst, tunnel_id, reg13, ct_state, ...).  This
module knows, for each, its width in bits, the name ovs-ofctl prints in matches and
set_field (ip_dst, tun_id) and the NXM/OXM name it prints in subfields (NXM_NX_REG13[0..15]).

A subfield is written 'reg13' (the whole field) or 'reg13[0..15]' / 'reg0[3]' (bits, as OVS
writes them); subfield() parses and normalises it: a range covering the whole field is
written as the bare name, so one subfield has one spelling.

Values: MACs are lower-case strings, IPv4 addresses dotted strings, everything else ints;
a masked value is (value, mask).  norm_value() gives the one form OVS hands back: bits
outside the mask cleared, an all-ones mask dropped, 'a.b.c.d/n' turned into (addr, mask),
ct_state flags '+trk+est-rpl' turned into (value, mask).
"""
from __future__ import annotations

import ipaddress
import re
import socket

# name: (bits, ovs name, subfield name)
FIELDS: dict[str, tuple[int, str, str]] = {
    'in_port': (32, 'in_port', 'OXM_OF_IN_PORT'),
    'eth_src': (48, 'eth_src', 'NXM_OF_ETH_SRC'),
    'eth_dst': (48, 'eth_dst', 'NXM_OF_ETH_DST'),
    'eth_type': (16, 'eth_type', 'NXM_OF_ETH_TYPE'),
    'vlan_vid': (13, 'vlan_vid', 'OXM_OF_VLAN_VID'),
    'vlan_pcp': (3, 'vlan_pcp', 'OXM_OF_VLAN_PCP'),
    'ip_proto': (8, 'nw_proto', 'NXM_OF_IP_PROTO'),
    'ip_dscp': (6, 'ip_dscp', 'OXM_OF_IP_DSCP'),
    'ip_ecn': (2, 'ip_ecn', 'NXM_NX_IP_ECN'),
    'nw_ttl': (8, 'nw_ttl', 'NXM_NX_IP_TTL'),
    'ipv4_src': (32, 'ip_src', 'NXM_OF_IP_SRC'),
    'ipv4_dst': (32, 'ip_dst', 'NXM_OF_IP_DST'),
    'tcp_src': (16, 'tcp_src', 'NXM_OF_TCP_SRC'),
    'tcp_dst': (16, 'tcp_dst', 'NXM_OF_TCP_DST'),
    'tcp_flags': (12, 'tcp_flags', 'NXM_NX_TCP_FLAGS'),
    'udp_src': (16, 'udp_src', 'NXM_OF_UDP_SRC'),
    'udp_dst': (16, 'udp_dst', 'NXM_OF_UDP_DST'),
    'icmpv4_type': (8, 'icmp_type', 'NXM_OF_ICMP_TYPE'),
    'icmpv4_code': (8, 'icmp_code', 'NXM_OF_ICMP_CODE'),
    'arp_op': (16, 'arp_op', 'NXM_OF_ARP_OP'),
    'arp_spa': (32, 'arp_spa', 'NXM_OF_ARP_SPA'),
    'arp_tpa': (32, 'arp_tpa', 'NXM_OF_ARP_TPA'),
    'arp_sha': (48, 'arp_sha', 'NXM_NX_ARP_SHA'),
    'arp_tha': (48, 'arp_tha', 'NXM_NX_ARP_THA'),
    'tunnel_id': (64, 'tun_id', 'NXM_NX_TUN_ID'),
    'tun_ipv4_src': (32, 'tun_src', 'NXM_NX_TUN_IPV4_SRC'),
    'tun_ipv4_dst': (32, 'tun_dst', 'NXM_NX_TUN_IPV4_DST'),
    'metadata': (64, 'metadata', 'OXM_OF_METADATA'),
    'pkt_mark': (32, 'pkt_mark', 'NXM_NX_PKT_MARK'),
    'conj_id': (32, 'conj_id', 'NXM_NX_CONJ_ID'),
    'ct_state': (32, 'ct_state', 'NXM_NX_CT_STATE'),
    'ct_zone': (16, 'ct_zone', 'NXM_NX_CT_ZONE'),
    'ct_mark': (32, 'ct_mark', 'NXM_NX_CT_MARK'),
    'ct_label': (128, 'ct_label', 'NXM_NX_CT_LABEL'),
}
FIELDS.update({'reg%d' % i: (32, 'reg%d' % i, 'NXM_NX_REG%d' % i) for i in range(16)})
FIELDS.update({'xxreg%d' % i: (128, 'xxreg%d' % i, 'NXM_NX_XXREG%d' % i) for i in range(4)})
BY_SUBFIELD_NAME = {v[2]: k for k, v in FIELDS.items()}

MACS = frozenset({'eth_src', 'eth_dst', 'arp_sha', 'arp_tha'})
IPV4 = frozenset({'ipv4_src', 'ipv4_dst', 'arp_spa', 'arp_tpa', 'tun_ipv4_src', 'tun_ipv4_dst'})

# ct_state bits, as ovs-fields(7) names them
CT_STATE = {'new': 0x01, 'est': 0x02, 'rel': 0x04, 'rpl': 0x08, 'inv': 0x10, 'trk': 0x20,
            'snat': 0x40, 'dnat': 0x80}


class FieldError(ValueError):
    pass


def bits(field: str) -> int:
    try:
        return FIELDS[field][0]
    except KeyError:
        raise FieldError('unknown field %r (known: %s)' % (field, ', '.join(sorted(FIELDS)))) from None


def ones(n: int) -> int:
    return (1 << n) - 1


_SUB = re.compile(r'^([a-z_0-9]+)(?:\[(\d+)(?:\.\.(\d+))?\])?$')


def subfield(text: str) -> tuple[str, int, int]:
    """'reg13[0..15]' -> ('reg13', 0, 16): field, first bit, number of bits."""
    m = _SUB.match(text) if isinstance(text, str) else None
    if not m:
        raise FieldError('bad subfield %r: write field, field[a..b] or field[a]' % (text,))
    field, lo, hi = m.group(1), m.group(2), m.group(3)
    width = bits(field)
    if lo is None:
        return field, 0, width
    lo, hi = int(lo), int(hi if hi is not None else lo)
    if hi < lo or hi >= width:
        raise FieldError('bits %d..%d are outside %s (%d bits)' % (lo, hi, field, width))
    return field, lo, hi - lo + 1


def sub_text(field: str, ofs: int, n: int) -> str:
    """The normal spelling of a subfield: bare name when it covers the whole field."""
    if ofs == 0 and n == bits(field):
        return field
    return '%s[%d]' % (field, ofs) if n == 1 else '%s[%d..%d]' % (field, ofs, ofs + n - 1)


def norm_sub(text: str) -> str:
    return sub_text(*subfield(text))


def mask_bits(mask: int) -> tuple[int, int]:
    """(first bit, number of bits) of a contiguous mask; FieldError if it is not one."""
    if mask <= 0:
        raise FieldError('empty mask')
    ofs = (mask & -mask).bit_length() - 1
    n = (mask >> ofs).bit_length()
    if mask != ones(n) << ofs:
        raise FieldError('mask %#x is not one run of bits' % mask)
    return ofs, n


def to_int(field: str, value) -> int:
    """A field value as an int (MACs and IPv4 addresses from their strings)."""
    if isinstance(value, bool):
        raise FieldError('%s: %r is not a field value' % (field, value))
    if isinstance(value, int):
        return value
    if isinstance(value, str) and ':' in value:
        return int(value.replace(':', ''), 16)
    if isinstance(value, str) and value.count('.') == 3:
        try:
            return int.from_bytes(socket.inet_aton(value), 'big')
        except OSError:
            pass
    return _bad(field, value)


def _bad(field, value):
    raise FieldError('%s: %r is not a field value' % (field, value))


def from_int(field: str, value: int):
    """The normal form of a field value given as an int."""
    if field in MACS:
        return ':'.join('%02x' % b for b in value.to_bytes(6, 'big'))
    if field in IPV4:
        return socket.inet_ntoa(value.to_bytes(4, 'big'))
    return value


def ct_state(flags: str) -> tuple[int, int]:
    """'+trk+est-rpl' -> (value, mask)."""
    value = mask = 0
    for sign, name in re.findall(r'([+-])([a-z]+)', flags):
        if name not in CT_STATE:
            raise FieldError('unknown ct_state flag %r in %r (known: %s)' % (name, flags, ', '.join(CT_STATE)))
        mask |= CT_STATE[name]
        value |= CT_STATE[name] if sign == '+' else 0
    if not mask or re.sub(r'[+-][a-z]+', '', flags):
        raise FieldError('bad ct_state %r: write flags like +trk+est-rpl' % flags)
    return value, mask


def norm_value(field: str, value):
    """The one form OVS reads back for a match or set_field value (see module doc)."""
    if field == 'ct_state' and isinstance(value, str):
        value = ct_state(value)
    elif field in IPV4 and isinstance(value, str) and '/' in value:
        net = ipaddress.IPv4Network(value, strict=False)
        value = (str(net.network_address), str(net.netmask))
    if isinstance(value, str) and field in MACS:
        return value.lower()
    if not (isinstance(value, tuple) and len(value) == 2) or field not in FIELDS:
        return value
    v, m = to_int(field, value[0]), to_int(field, value[1])
    if m == ones(bits(field)):
        return from_int(field, v)
    return from_int(field, v & m), from_int(field, m)


# A match on a field needs these other matches first (OVS refuses the flow-mod otherwise, and
# ovs-ofctl silently drops the field from the match, so check before either sees it).
_IP = ('eth_type', (0x0800, 0x86dd))
PREREQS: dict[str, tuple] = {
    **{f: (('eth_type', (0x0800,)),) for f in ('ipv4_src', 'ipv4_dst')},
    **{f: (_IP,) for f in ('ip_proto', 'ip_dscp', 'ip_ecn', 'nw_ttl')},
    **{f: (_IP, ('ip_proto', (6,))) for f in ('tcp_src', 'tcp_dst', 'tcp_flags')},
    **{f: (_IP, ('ip_proto', (17,))) for f in ('udp_src', 'udp_dst')},
    **{f: (('eth_type', (0x0800,)), ('ip_proto', (1,))) for f in ('icmpv4_type', 'icmpv4_code')},
    **{f: (('eth_type', (0x0806,)),) for f in ('arp_op', 'arp_spa', 'arp_tpa', 'arp_sha', 'arp_tha')},
}


def check_match(match: dict, also: tuple = ()) -> None:
    """Raise FieldError for an unknown field or a field whose prerequisite match is missing;
    `also` names fields the flow's actions set (set_field has the same prerequisites)."""
    for field in list(match) + list(also):
        if field not in FIELDS:
            raise FieldError('unknown field %r (known: %s)' % (field, ', '.join(sorted(FIELDS))))
        for need, values in PREREQS.get(field, ()):
            if match.get(need) not in values:
                raise FieldError('%s needs a match on %s=%s' % (
                    field, need, ' or '.join('%#x' % v if need == 'eth_type' else str(v) for v in values)))
