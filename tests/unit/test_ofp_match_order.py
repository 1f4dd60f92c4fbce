"""The OXM match sent to a switch lists every field after its prerequisites: OVS checks each
field against those before it, and os-ken's own order (by OXM type) puts Nicira fields such as
nw_ttl before eth_type -- the anycast gateway's TTL flow got every hypervisor's bundle refused."""
import pytest
from os_ken.ofproto import ofproto_v1_3_parser, ofproto_v1_4_parser

from controller.ofp import ofp_match


def order(p, match):
    m = ofp_match(p, match)
    buf = bytearray()
    m.serialize(buf, 0)
    return [k for k, _ in p.OFPMatch.parser(bytes(buf), 0).items()], m


@pytest.mark.parametrize('p', [ofproto_v1_3_parser, ofproto_v1_4_parser])
def test_prerequisites_come_first_on_the_wire(p):
    ttl = {'reg12': 5, 'eth_dst': '02:d5:00:00:00:01', 'eth_type': 0x0800, 'nw_ttl': 1}
    got, m = order(p, ttl)
    assert got.index('eth_type') < got.index('nw_ttl') and dict(m.items()) == ttl
    flags = {'tcp_flags': (0x02, 0x12), 'ip_proto': 6, 'eth_type': 0x0800, 'in_port': 3}
    got, _ = order(p, flags)
    assert got.index('eth_type') < got.index('ip_proto') < got.index('tcp_flags')
    icmp = {'icmpv4_type': 8, 'ip_proto': 1, 'ipv4_dst': '10.1.0.1', 'eth_type': 0x0800, 'vlan_vid': (0x1000, 0x1000)}
    got, _ = order(p, icmp)
    assert got.index('eth_type') < got.index('ip_proto') < got.index('icmpv4_type')
    assert got.index('eth_type') < got.index('ipv4_dst')
