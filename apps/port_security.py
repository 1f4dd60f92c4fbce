"""Port security: a VM sends only as itself.

On a VM port bound to a nic of an accepted tenant, frames go on only with the nic's own MAC;
IPv4 only from the nic's own address, ARP only with sender = the nic's MAC and IP.  The
rest -- another source MAC, IPv4 from another address, ARP claiming another IP (or another
hardware address), IPv6 (a nic has no IPv6 address in the policy; the pipeline's routing and
ACLs are IPv4-only), an 802.1Q-tagged frame -- is dropped in port_sec by flows carrying the
nic's cookie (kind K_DROP), so their counters are the nic's drops, traced to its YAML line.

Allowed besides: ARP probes (arp_op 1, sender 0.0.0.0, RFC 5227), DHCP client broadcasts
(0.0.0.0:68 -> 255.255.255.255:67: they claim no one's address, as Neutron allows), and any
other ethertype from the nic's own MAC (LLDP from a VM still goes to the controller first:
topology's flow is above this band).

Per bound port, in port_sec (the frame, untagged, goes on exactly as learning_switch's
admission sends it: its VLAN pushed, to classify; that flow stays, one priority band below,
and no longer matches anything from a bound port):

    130  own MAC, IPv4 from own IP | ARP sha=own MAC spa=own IP | ARP probe | DHCP discover -> go on
    125  IPv4 | ARP | IPv6 (anything the flows above did not take)                         -> drop
    122  own MAC, untagged (other ethertypes)                                              -> go on
    120  anything else: other source MACs, tagged frames                                   -> drop

Those are the flows of the port where the nic is *located*.  A nic bound in a second place
(a live migration: the VM's new port appears before the old one goes) waits there for
activation, as OVN's activation-strategy=rarp does: its new port sends only the VM's
announcement -- a RARP, or a gratuitous ARP (sender = target = its own IP) -- to the
controller (metered), and drops the rest; the controller then makes that port the nic's
location (core.activate) and every location-dependent flow moves.  A binding on a hypervisor
that may never hold the nic (its trunk lacks the nic's VLAN) drops everything:

    140  pending: own MAC, RARP | GARP for own IP                                 -> controller
    135  pending or refused: anything else                                        -> drop

Every port bound to the nic gets flows, and only where learning_switch admits the nic (an
up VM port): no bound port ever admits without them.  Ports with no bound nic (native VLAN), or a binding no policy knows, are
left as they are.  One compile unit per iface-id bound on a hypervisor; the core marks the
iface-ids whose bindings changed there (stale_units) and refreshes the context.
"""
from __future__ import annotations

import sys

from controller.inventory.model import VM, Inventory
from controller.pipeline import incremental
from controller.pipeline.flow import CONTROLLER, UNTAGGED, Flow

from apps.anycast_gateway import METER
from apps.vlan_portgroups import nic_cookie

APP = 'port_security'
K_ALLOW, K_DROP, K_ANNOUNCE, K_PENDING, K_REFUSED = 1, 2, 3, 4, 5
P_ANNOUNCE, P_BLOCK = 140, 135
P_ALLOW, P_GUARD, P_OTHER, P_DROP = 130, 125, 122, 120
ETH_IP, ETH_ARP, ETH_IPV6, ETH_RARP = 0x0800, 0x0806, 0x86dd, 0x8035
ANY = '0.0.0.0'


def nic_vlan(policy, bound) -> int:
    """The VLAN learning_switch pushes on a port bound to this nic (vlan_portgroups.port_vlans)."""
    if bound.network.vlan is not None:
        return bound.network.vlan
    return policy.overlay_vlans[(bound.tenant.name, bound.network.name)]


def context(policy, inv: Inventory, dpid: int) -> dict[str, list[int]]:
    """iface-id -> the up VM ports of this hypervisor bound to it."""
    sw = inv.switches[dpid]
    out: dict[str, list[int]] = {}
    if sw.kind != 'hypervisor':
        return out
    for no, b in sorted(inv.bindings.get(dpid, {}).items()):
        p = sw.ports.get(no)
        if p is not None and p.up and p.role == VM:
            out.setdefault(b.iface_id, []).append(no)
    return out


def units(policy, inv: Inventory, dpid: int):
    sw = inv.switches[dpid]
    if sw.kind != 'hypervisor':
        return []
    return sorted({b.iface_id for b in inv.bindings.get(dpid, {}).values() if b.iface_id in policy.nics})


def compile_switch(policy, inv: Inventory, dpid: int, ctx) -> set[Flow]:
    return set()


def compile_unit(policy, inv: Inventory, dpid: int, iface_id: str, ctx) -> set[Flow]:
    bound = policy.nics.get(iface_id)
    if bound is None:
        return set()
    flows = set()
    for no in ctx.get(iface_id, ()):
        if (iface_id, dpid) in inv.refused_places:
            flows.add(Flow.make('port_sec', P_BLOCK, {'in_port': no}, cookie=nic_cookie(APP, K_REFUSED, bound)))
        elif inv.locations.get(iface_id) == (dpid, no):
            flows |= port_flows(policy, bound, no)
        else:
            flows |= pending_flows(bound, no)
    return flows


def pending_flows(bound, no: int) -> set[Flow]:
    """A port waiting for activation: the VM's announcement to the controller, the rest dropped."""
    mac, ip = bound.nic.mac, str(bound.nic.ip)
    own = {'in_port': no, 'vlan_vid': UNTAGGED, 'eth_src': mac}
    punt = dict(actions=[('meter', METER), ('output', CONTROLLER)], cookie=nic_cookie(APP, K_ANNOUNCE, bound))
    return {
        Flow.make('port_sec', P_ANNOUNCE, dict(own, eth_type=ETH_RARP), **punt),
        Flow.make('port_sec', P_ANNOUNCE, dict(own, eth_type=ETH_ARP, arp_sha=mac, arp_spa=ip, arp_tpa=ip), **punt),
        Flow.make('port_sec', P_BLOCK, {'in_port': no}, cookie=nic_cookie(APP, K_PENDING, bound)),
    }


def announcement(policy, inv: Inventory, dpid: int, port: int, frame: bytes) -> str | None:
    """'rarp' or 'garp' if this frame, punted from a port waiting for activation, is the
    bound nic announcing itself there; else None."""
    b = inv.bindings.get(dpid, {}).get(port)
    bound = policy.nics.get(b.iface_id) if b is not None else None
    if bound is None or len(frame) < 14 or frame[6:12] != _mac_bytes(bound.nic.mac):
        return None
    eth_type = int.from_bytes(frame[12:14], 'big')
    if eth_type == ETH_RARP:
        return 'rarp'
    ip = bound.nic.ip.packed
    if eth_type == ETH_ARP and len(frame) >= 42 and frame[28:32] == ip and frame[38:42] == ip:
        return 'garp'
    return None


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(':'))


def port_flows(policy, bound, no: int) -> set[Flow]:
    """The flows guarding one port bound to one nic."""
    mac, ip, vlan = bound.nic.mac, str(bound.nic.ip), nic_vlan(policy, bound)
    allow, drop = nic_cookie(APP, K_ALLOW, bound), nic_cookie(APP, K_DROP, bound)
    go = dict(actions=[('push_vlan', vlan)], goto='classify', cookie=allow)
    own = {'in_port': no, 'vlan_vid': UNTAGGED, 'eth_src': mac}
    flows = {
        Flow.make('port_sec', P_ALLOW, dict(own, eth_type=ETH_IP, ipv4_src=ip), **go),
        Flow.make('port_sec', P_ALLOW, dict(own, eth_type=ETH_ARP, arp_sha=mac, arp_spa=ip), **go),
        Flow.make('port_sec', P_ALLOW, dict(own, eth_type=ETH_ARP, arp_op=1, arp_sha=mac, arp_spa=ANY), **go),
        Flow.make('port_sec', P_ALLOW, dict(own, eth_type=ETH_IP, ipv4_src=ANY, ipv4_dst='255.255.255.255',
                                            ip_proto=17, udp_src=68, udp_dst=67), **go),
        Flow.make('port_sec', P_OTHER, own, **go),
        Flow.make('port_sec', P_DROP, {'in_port': no}, cookie=drop),
    }
    for eth_type in (ETH_IP, ETH_ARP, ETH_IPV6):
        flows.add(Flow.make('port_sec', P_GUARD, {'in_port': no, 'eth_type': eth_type}, cookie=drop))
    return flows


def compile_flows(policy, inv: Inventory, dpid: int) -> set[Flow]:
    """Everything at once (the full compile the incremental one is checked against)."""
    return incremental.from_units(sys.modules[__name__], policy, inv, dpid)


def changed(before: dict, after: dict) -> set[str]:
    """The iface-ids whose ports on one hypervisor differ between two bindings snapshots
    ({ofport: Binding}): the units a bindings change makes stale."""
    return ({b.iface_id for no, b in before.items() if after.get(no) != b}
            | {b.iface_id for no, b in after.items() if before.get(no) != b})
