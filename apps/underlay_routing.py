"""The routed underlay: leaves are the gateways of their racks, spines route between racks.

Each hypervisor's VTEP lives in its rack's subnet (fabric `rack_subnet`) with nothing but a
default route via the rack's first address.  Its leaf answers ARP for that address with the
fabric's router MAC, and every physical switch routes VTEP traffic by flows computed from
the fabric: toward another rack over every up link that leads there (ECMP: a multipath hash
of the 5-tuple picks the link), into the rack straight to the hypervisor whose VTEP it is
(its MAC comes from that hypervisor's OVSDB).  TTL is decremented at every hop.  Routed
frames cross the fabric untagged, addressed to the router MAC, so they never mix with the
VLAN (L2) traffic of the learning switch.  The anycast gateway for tenants builds on this.
"""
from __future__ import annotations

import ipaddress

from controller.inventory.model import FABRIC, HYPERVISOR, Inventory, LinkEnd
from controller.pipeline import cookies, registers as R
from controller.pipeline.flow import IN_PORT, UNTAGGED, Flow

from apps import topology

APP = 'underlay_routing'
ROUTER_MAC = '02:00:00:dd:00:01'     # one MAC for every fabric router interface (anycast)
ETH_IP, ETH_ARP = 0x0800, 0x0806
P_ROUTED, P_LOCAL, P_REMOTE, P_UNROUTED, P_EMIT, P_ECMP = 500, 100, 90, 1, 120, 100
K_ADMIT, K_ARP, K_LOCAL, K_REMOTE, K_EMIT = 1, 2, 3, 4, 5


def gateway(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """A rack's gateway: its subnet's first address (the hypervisors' default route)."""
    return next(subnet.hosts())


def compile_flows(policy, inv: Inventory, dpid: int) -> set[Flow]:
    sw = inv.switches.get(dpid)
    if sw is None or sw.kind != 'physical':
        return set()
    fabric = policy.fabric
    me = fabric.switch_by_dpid(dpid)
    racks = {s.dpid: s.rack_subnet for s in fabric.switches.values() if s.rack_subnet is not None}
    flows = set()
    cookie = lambda kind, owner: cookies.make(APP, kind, owner)           # noqa: E731
    # routed frames enter from hypervisors and fabric cables, untagged, to the router MAC,
    # and leave the same way
    for p in sw.ports_with(HYPERVISOR, FABRIC):
        flows.add(Flow.make('port_sec', P_ROUTED, {'in_port': p.no, 'vlan_vid': UNTAGGED, 'eth_type': ETH_IP,
                                                   'eth_dst': ROUTER_MAC},
                            goto='l3', cookie=cookie(K_ADMIT, 'port:%d' % p.no)))
        flows.add(Flow.make('output', P_EMIT, {R.OUT_PORT: p.no, 'vlan_vid': UNTAGGED}, [('output', p.no)],
                            cookie=cookie(K_EMIT, 'port:%d' % p.no)))
    # a routed frame with no route ends here (it must never fall through to bridging)
    flows.add(Flow.make('l3', P_UNROUTED, {'eth_type': ETH_IP, 'eth_dst': ROUTER_MAC, 'vlan_vid': UNTAGGED},
                        cookie=cookie(K_REMOTE, 'unrouted')))
    if me.rack_subnet is not None:
        flows |= _gateway_flows(fabric, inv, dpid, me.rack_subnet, sw, cookie)
    for leaf, subnet in sorted(racks.items()):
        if leaf != dpid:
            flows |= _toward_rack(inv, dpid, leaf, subnet, cookie)
    return flows


def _gateway_flows(fabric, inv, dpid, subnet, sw, cookie) -> set[Flow]:
    """This leaf is its rack's gateway: answer ARP for it, deliver to the rack's VTEPs."""
    gw = str(gateway(subnet))
    flows = set()
    for p in sw.ports_with(HYPERVISOR):
        flows.add(Flow.make('port_sec', P_ROUTED, {'in_port': p.no, 'vlan_vid': UNTAGGED, 'eth_type': ETH_ARP,
                                                   'arp_op': 1, 'arp_tpa': gw},
                            [('move', 'eth_src', 'eth_dst'), ('set_field', 'eth_src', ROUTER_MAC),
                             ('set_field', 'arp_op', 2), ('move', 'arp_sha', 'arp_tha'),
                             ('set_field', 'arp_sha', ROUTER_MAC), ('move', 'arp_spa', 'arp_tpa'),
                             ('set_field', 'arp_spa', gw), ('output', IN_PORT)],
                            cookie=cookie(K_ARP, 'gateway:%s' % gw)))
    for end, hv in sorted(inv.hv_ports.items(), key=lambda kv: (kv[0].dpid, kv[0].port)):
        mac, node = inv.vtep_macs.get(hv), fabric.switch_by_dpid(hv)
        if end.dpid != dpid or mac is None or end.port not in sw.ports or node is None:
            continue
        vtep = str(node.vtep)
        if node.vtep not in subnet:
            continue
        flows.add(Flow.make('l3', P_LOCAL, {'eth_type': ETH_IP, 'eth_dst': ROUTER_MAC, 'vlan_vid': UNTAGGED,
                                            'ipv4_dst': vtep},
                            [('set_field', 'eth_src', ROUTER_MAC), ('set_field', 'eth_dst', mac), ('dec_ttl',),
                             ('set_field', R.OUT_PORT, end.port)], goto='acl_out',
                            cookie=cookie(K_LOCAL, 'vtep:%s' % vtep)))
    return flows


def _toward_rack(inv, dpid, leaf, subnet, cookie) -> set[Flow]:
    """Routes to another rack: every up cable whose far end is that leaf, or a switch
    cabled to it, is an equal-cost next hop."""
    hops = next_hops(inv, dpid, leaf)
    # only frames admitted as routed (untagged, to the router MAC, from a hypervisor or fabric
    # port) are routed; everything bridged is tagged by now and passes l3 untouched
    match = {'eth_type': ETH_IP, 'eth_dst': ROUTER_MAC, 'vlan_vid': UNTAGGED,
             'ipv4_dst': (str(subnet.network_address), str(subnet.netmask))}
    owner = 'rack:%s' % subnet
    if not hops:
        return set()
    if len(hops) == 1:
        return {Flow.make('l3', P_REMOTE, match, [('dec_ttl',), ('set_field', R.OUT_PORT, hops[0])], goto='acl_out',
                          cookie=cookie(K_REMOTE, owner))}
    flows = {Flow.make('l3', P_REMOTE, match, [('dec_ttl',), ('multipath', len(hops), R.ECMP)], goto='ecmp',
                       cookie=cookie(K_REMOTE, owner))}
    for i, port in enumerate(hops):
        flows.add(Flow.make('ecmp', P_ECMP, {'eth_type': ETH_IP, 'ipv4_dst': match['ipv4_dst'], R.ECMP: i},
                            [('set_field', R.OUT_PORT, port)],
                            goto='acl_out', cookie=cookie(K_REMOTE, owner)))
    return flows


def next_hops(inv: Inventory, dpid: int, leaf: int) -> list[int]:
    """Ports of `dpid` on an up fabric cable to `leaf`, or else to a switch cabled to it;
    only cables that carry traffic both ways (see topology.both_ends_fabric)."""
    sw = inv.switches[dpid]
    ours = ((p.no, topology.peer(inv, dpid, p.no)) for p in sw.ports_with(FABRIC))
    links = {no: end for no, end in ours
             if end is not None and topology.both_ends_fabric(inv, LinkEnd(dpid, no), end)}
    direct = sorted(no for no, end in links.items() if end.dpid == leaf)
    if direct:
        return direct
    cables = [(rx, tx) for rx, tx in topology.links(inv).items() if topology.both_ends_fabric(inv, rx, tx)]
    reach = {rx.dpid for rx, tx in cables if tx.dpid == leaf} | {tx.dpid for rx, tx in cables if rx.dpid == leaf}
    return sorted(no for no, end in links.items() if end.dpid in reach)
