"""The anycast distributed gateway: every tenant network's `gateway` on every hypervisor
where its tenant has a VM, and routing between a tenant's networks on the source hypervisor.

One router MAC for the whole fabric (fabric `gateway_mac`, like an EVPN fabric's anycast
gateway MAC): a VM that moves keeps its gateway's ARP entry.  Each tenant is one VRF (the
tenant register, reg12, set by classify), so two tenants may use the same subnets and the
same MAC for their gateways and still never route into each other.  Only networks with a
`gateway` are routed; a network without one stays an L2 island.

On a hypervisor where a tenant routes (a VM of it bound on a network with a gateway):
  arp_rsp  the gateways and every located nic of the tenant answer ARP from flows (ARP
           suppression); requests from the uplink or the tunnel, and a VM's requests for its
           own address (gratuitous ARP, duplicate address probes), are not answered
  l3       ICMP echo to any gateway of the tenant is answered here; TTL 1 to the gateway MAC
           goes to the controller (metered), which answers Time Exceeded from the gateway
           (time_exceeded()); a host route per located nic: TTL - 1, source MAC = gateway,
           destination MAC = the nic, the frame moved into the nic's network (its VLAN, or
           its overlay's local VLAN) and handed to l2_lookup, which delivers it over VLAN or
           VXLAN straight to the nic's hypervisor (asymmetric IRB: see vlan_portgroups
           routed_out/routed_in and vxlan_overlay's routed entries); an address of a routed
           subnet with no nic, or anything else to the gateway MAC, is dropped and counted
Everywhere, the gateway MAC is never learned (routed frames carry it as their source on
every trunk) and, on physical switches, never forwarded.

Units: one per tenant (its gateways, routes and ARP answers on this hypervisor).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import struct
import sys

from controller.inventory.model import TUNNEL, UPLINK, Inventory
from controller.pipeline import cookies, incremental, registers as R
from controller.pipeline.flow import CONTROLLER, IN_PORT, OFPVID_PRESENT, Flow, vid

from apps.vlan_portgroups import nic_cookie, routing_tenants

APP = 'anycast_gateway'
K_SWITCH, K_ARP, K_ECHO, K_TTL, K_ROUTE, K_DROP = 1, 2, 3, 4, 5, 6
# arp_rsp
P_NOT_ANSWERED, P_OWN, P_ARP = 250, 200, 100
# l3: an echo to the gateway beats TTL expiry, which beats the routes, which beat the drops
P_ECHO, P_TTL, P_HOST, P_SUBNET, P_VRF = 350, 320, 300, 250, 200
# learn / l2_lookup
P_TRANSIT, P_SPOOFED, P_NEVER = 170, 165, 170

ETH_IP, ETH_ARP = 0x0800, 0x0806
TAGGED = (OFPVID_PRESENT, OFPVID_PRESENT)       # vlan_vid match: any 802.1Q tag
METER = 1                   # the meter on every hypervisor that rate-limits Time Exceeded
METER_PPS, METER_BURST = 100, 10


@dataclasses.dataclass(frozen=True)
class Context:
    """What a hypervisor's routes need: its uplink, its tunnel, the VLANs its trunk may carry."""
    uplink: int | None
    tunnel: int | None
    trunk: frozenset[int]

    @property
    def fabric_ports(self) -> tuple[int, ...]:
        return tuple(p for p in (self.uplink, self.tunnel) if p is not None)


def context(policy, inv: Inventory, dpid: int) -> Context | None:
    """A hypervisor's Context, or None on a physical switch."""
    sw = inv.switches[dpid]
    if sw.kind != 'hypervisor':
        return None
    first = lambda role: next((p.no for p in sw.ports_with(role)), None)      # noqa: E731
    hv = policy.fabric.switch_by_dpid(dpid)
    return Context(first(UPLINK), first(TUNNEL), frozenset(getattr(hv, 'trunk_vlans', ())))


def units(policy, inv: Inventory, dpid: int):
    if inv.switches[dpid].kind != 'hypervisor':
        return []
    return sorted(routing_tenants(policy, inv, dpid))


def compile_switch(policy, inv: Inventory, dpid: int, ctx) -> set[Flow]:
    gw_mac = policy.fabric.gateway_mac
    c = cookies.make(APP, K_SWITCH, 'gateway-mac')
    if ctx is None:                       # a physical switch: never learn it, never forward it
        if not any(n.gateway for t in policy.tenants.values() for n in t.networks.values()):
            return set()
        return {Flow.make('learn', P_TRANSIT, {'eth_src': gw_mac}, goto='arp_rsp', cookie=c),
                Flow.make('l2_lookup', P_NEVER, {'eth_dst': gw_mac}, cookie=c)}
    if not routing_tenants(policy, inv, dpid):
        return set()
    flows = {Flow.make('learn', P_SPOOFED, {'eth_src': gw_mac}, cookie=c)}    # from a VM: spoofed
    for no in ctx.fabric_ports:
        # routed frames from other hypervisors carry the gateway MAC: not a location
        flows.add(Flow.make('learn', P_TRANSIT, {'in_port': no, 'eth_src': gw_mac}, goto='arp_rsp', cookie=c))
        # only this hypervisor's VMs are answered: ARP from elsewhere goes its usual way
        flows.add(Flow.make('arp_rsp', P_NOT_ANSWERED, {'in_port': no}, goto='acl_in', cookie=c))
    return flows


def compile_unit(policy, inv: Inventory, dpid: int, tenant: str, ctx) -> set[Flow]:
    t = policy.tenants.get(tenant)
    if ctx is None or t is None or tenant not in routing_tenants(policy, inv, dpid):
        return set()
    ids, gw_mac = policy.ids, policy.fabric.gateway_mac
    vrf = ids.tenant[tenant]
    flows = set()
    for net in sorted(t.networks.values(), key=lambda n: n.name):
        if net.gateway is None:
            continue
        c = cookies.make(APP, K_ARP, 'gateway:%s' % net.name, tenant, t.where(net.line))
        gw = str(net.gateway)
        flows.add(Flow.make('arp_rsp', P_ARP, {R.NETWORK: ids.network[(tenant, net.name)], 'eth_type': ETH_ARP,
                                               'arp_op': 1, 'arp_tpa': gw, 'vlan_vid': TAGGED},
                            arp_reply(gw_mac, gw), cookie=c))
        c = cookies.make(APP, K_ECHO, 'gateway:%s' % net.name, tenant, t.where(net.line))
        flows.add(Flow.make('l3', P_ECHO, {R.TENANT: vrf, 'eth_dst': gw_mac, 'eth_type': ETH_IP, 'ip_proto': 1,
                                           'icmpv4_type': 8, 'ipv4_dst': gw, 'vlan_vid': TAGGED},
                            echo_reply(gw_mac, gw), cookie=c))
        c = cookies.make(APP, K_DROP, 'subnet:%s' % net.name, tenant, t.where(net.line))
        flows.add(Flow.make('l3', P_SUBNET, {R.TENANT: vrf, 'eth_dst': gw_mac, 'eth_type': ETH_IP,
                                             'ipv4_dst': str(net.subnet)}, cookie=c))
    c = cookies.make(APP, K_TTL, 'vrf', tenant, t.source)
    flows.add(Flow.make('l3', P_TTL, {R.TENANT: vrf, 'eth_dst': gw_mac, 'eth_type': ETH_IP, 'nw_ttl': 1},
                        [('meter', METER), ('output', CONTROLLER)], cookie=c))
    # no route out of the VRF (no default route): never flooded, counted here
    flows.add(Flow.make('l3', P_VRF, {R.TENANT: vrf, 'eth_dst': gw_mac}, cookie=cookies.make(
        APP, K_DROP, 'vrf', tenant, t.source)))
    # where the tenant's nics are; ARP is answered for the networks with a VM here only
    located = [(policy.nics[i], inv.locations[i]) for n in t.networks.values()
               for i in policy.network_nics.get((tenant, n.name), ()) if i in inv.locations]
    here = {bn.network.name for bn, where in located if where[0] == dpid}
    for bn, where in located:
        flows |= _nic_flows(policy, dpid, ctx, bn, where, bn.network.name in here)
    return flows


def _nic_flows(policy, dpid: int, ctx: Context, bn, where, answered: bool) -> set[Flow]:
    """A located nic: its ARP answer where its network has a VM, its own requests passed on
    on its port, and its host route in the VRF when its network is routed.  The route emits
    straight to where the nic is (its port, the uplink tagged with its VLAN, or the tunnel
    toward its VTEP with its VNI): no l2 entries for networks this hypervisor only routes to."""
    ids, gw_mac = policy.ids, policy.fabric.gateway_mac
    tenant, net, ip, mac = bn.tenant.name, bn.network, str(bn.nic.ip), bn.nic.mac
    c = nic_cookie(APP, K_ARP, bn)
    flows = set()
    if answered:
        flows.add(Flow.make('arp_rsp', P_ARP, {R.NETWORK: ids.network[(tenant, net.name)], 'eth_type': ETH_ARP,
                                               'arp_op': 1, 'arp_tpa': ip, 'vlan_vid': TAGGED},
                            arp_reply(mac, ip), cookie=c))
    if where[0] == dpid:      # its own address: gratuitous ARP and probes go their usual way
        flows.add(Flow.make('arp_rsp', P_OWN, {'in_port': where[1], 'eth_type': ETH_ARP, 'arp_tpa': ip},
                            goto='acl_in', cookie=c))
    if net.gateway is None:
        return flows
    hv_vtep = None
    if where[0] == dpid:
        out = where[1]
    elif net.vlan is not None:
        out = ctx.uplink if net.vlan in ctx.trunk else None        # over the fabric, tagged
    else:
        node = policy.fabric.switch_by_dpid(where[0])
        out, hv_vtep = ctx.tunnel, str(node.vtep) if node is not None else None
        out = out if hv_vtep else None
    if out is None:
        return flows              # no way there from here: the subnet's drop counts it
    local_vlan = net.vlan if net.vlan is not None else policy.overlay_vlans[(tenant, net.name)]
    # (every frame here is tagged: OVS wants the tag in the match to rewrite it)
    flows.add(Flow.make('l3', P_HOST, {R.TENANT: ids.tenant[tenant], 'eth_dst': gw_mac, 'eth_type': ETH_IP,
                                       'ipv4_dst': ip, 'vlan_vid': TAGGED},
                        [('dec_ttl',), ('set_field', 'eth_src', gw_mac), ('set_field', 'eth_dst', mac),
                         ('set_field', 'vlan_vid', vid(local_vlan)),
                         ('set_field', R.NETWORK, ids.network[(tenant, net.name)])]
                        + ([('set_field', 'tun_ipv4_dst', hv_vtep)] if hv_vtep else [])
                        + [('set_field', R.OUT_PORT, out)],
                        goto='acl_out', cookie=nic_cookie(APP, K_ROUTE, bn)))
    return flows


def arp_reply(mac: str, ip: str) -> list[tuple]:
    """Turn an ARP request for ip into the reply from mac, back out of the VM port it came in."""
    return [('move', 'eth_src', 'eth_dst'), ('set_field', 'eth_src', mac), ('set_field', 'arp_op', 2),
            ('move', 'arp_sha', 'arp_tha'), ('set_field', 'arp_sha', mac), ('move', 'arp_spa', 'arp_tpa'),
            ('set_field', 'arp_spa', ip), ('pop_vlan',), ('output', IN_PORT)]


def echo_reply(mac: str, ip: str) -> list[tuple]:
    """Turn an ICMP echo request to the gateway ip into its reply (OVS fixes the checksums)."""
    return [('move', 'eth_src', 'eth_dst'), ('set_field', 'eth_src', mac), ('move', 'ipv4_src', 'ipv4_dst'),
            ('set_field', 'ipv4_src', ip), ('set_field', 'icmpv4_type', 0), ('pop_vlan',), ('output', IN_PORT)]


def compile_flows(policy, inv: Inventory, dpid: int) -> set[Flow]:
    """Everything at once (the full compile the incremental one is checked against)."""
    return incremental.from_units(sys.modules[__name__], policy, inv, dpid)


# ---- Time Exceeded (called from packet-in; the l3 TTL flow sends TTL-1 frames here) -------

def time_exceeded(policy, data: bytes) -> bytes | None:
    """The ICMP Time Exceeded a gateway returns for a frame that reached it with TTL 1 (as
    the l3 stage hands it over: tagged with its network's VLAN or local VLAN), untagged, to
    go back out of the port it came in; None if it is not such a frame."""
    if len(data) < 18 + 20 or data[12:14] != b'\x81\x00':
        return None
    vlan = struct.unpack('!H', data[14:16])[0] & 0xfff
    net = _network_of_vlan(policy, vlan)
    if net is None or net.gateway is None or data[16:18] != b'\x08\x00':
        return None
    ip = data[18:]
    ihl = (ip[0] & 0x0f) * 4
    if ip[0] >> 4 != 4 or ihl < 20 or len(ip) < ihl or ip[9] == 1 and len(ip) > ihl and ip[ihl] not in (0, 8):
        return None                         # never answer an ICMP error with another
    src = ip[12:16]
    icmp = struct.pack('!BBHI', 11, 0, 0, 0) + bytes(ip[:ihl + 8])
    icmp = icmp[:2] + struct.pack('!H', _checksum(icmp)) + icmp[4:]
    hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0,
                      ipaddress.IPv4Address(net.gateway).packed, src)
    hdr = hdr[:10] + struct.pack('!H', _checksum(hdr)) + hdr[12:]
    eth = data[6:12] + bytes.fromhex(policy.fabric.gateway_mac.replace(':', '')) + b'\x08\x00'
    return eth + hdr + icmp


def _network_of_vlan(policy, vlan: int):
    owner = policy.vlan_networks.get(vlan)
    if owner is None:
        owner = next((k for k, v in policy.overlay_vlans.items() if v == vlan), None)
    return policy.tenants[owner[0]].networks[owner[1]] if owner else None


def _checksum(b: bytes) -> int:
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
