"""VXLAN overlay networks (`vni:`), programmed from bindings: no flood-and-learn over tunnels.

Inside a hypervisor's br-int an overlay network rides a local VLAN (Policy.overlay_vlans, a
stable id) so the learn/l2_lookup/output/flood stages serve it like a port-group; no trunk
ever carries that VLAN.  Every
hypervisor that hosts a member nic of a network gets:
  - unicast to a member on another hypervisor: straight into the tunnel with the network's
    VNI and that hypervisor's VTEP as destination (tun_id, tun_dst set per flow);
  - BUM: its local member ports plus head-end replication to the VTEPs of the hypervisors
    that host members, and no others;
  - from the tunnel: only from a VTEP hosting members, only with that network's VNI, and
    only to that network's local ports (never back into the tunnel: split horizon).  Sources
    seen through the tunnel are never learned; locations come from bindings only.
A network with a gateway is also reached *routed* (apps/anycast_gateway.py): every hypervisor
where its tenant routes gets the tunnel's emission for its VNI (the routes carry the VTEP;
no BUM), and its members accept its VNI from those hypervisors' VTEPs too.
"""
from __future__ import annotations

import sys
from collections import defaultdict

from controller.inventory.model import TUNNEL, Inventory
from controller.pipeline import cookies, incremental, registers as R
from controller.pipeline.flow import Flow, vid

from apps import learning_switch
from apps.vlan_portgroups import nic_cookie, routing_tenants

APP = 'vxlan_overlay'
K_RX, K_LOCAL, K_REMOTE, K_FLOOD = 1, 2, 3, 4
P_RX, P_KNOWN, P_NO_LEARN, P_FLOOD, P_FLOOD_RX = 200, 150, 160, 100, 110


def members(policy, inv: Inventory) -> dict:
    """(tenant, network) -> {hypervisor dpid: [(ofport, BoundNic)]} for overlay nics, each at
    its location (known from OVSDB even while that hypervisor's OpenFlow session is down)."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for iface_id, (hv, no) in sorted(inv.locations.items()):
        bn = policy.nics.get(iface_id)
        if bn is not None and bn.network.vni is not None:
            out[(bn.tenant.name, bn.network.name)][hv].append((no, bn))
    return out


def network_members(policy, inv: Inventory, key) -> dict:
    """{hypervisor dpid: [(ofport, BoundNic)]} of one overlay network, from its nics' locations."""
    out: dict = defaultdict(list)
    for iface_id in policy.network_nics.get(key, ()):
        where = inv.locations.get(iface_id)
        if where is not None:
            out[where[0]].append((where[1], policy.nics[iface_id]))
    return out


def context(policy, inv: Inventory, dpid: int):
    """The tunnel port of a hypervisor's br-int, or None (nothing to do on this switch)."""
    sw = inv.switches[dpid]
    tunnels = sw.ports_with(TUNNEL) if sw.kind == 'hypervisor' else []
    return tunnels[0].no if tunnels else None


def units(policy, inv: Inventory, dpid: int):
    """One unit per overlay network with a member located on this hypervisor, or routed to
    from it."""
    out = set()
    here = {b.iface_id for b in inv.bindings.get(dpid, {}).values()} | inv.claims.get(dpid, frozenset())
    for iface_id in here:                   # bound here, or in flight from here (still located)
        bn = policy.nics.get(iface_id)
        if bn is not None and bn.network.vni is not None and inv.locations.get(iface_id, (None,))[0] == dpid:
            out.add((bn.tenant.name, bn.network.name))
    for t in routing_tenants(policy, inv, dpid):
        out.update((t, n.name) for n in policy.tenants[t].networks.values() if n.vni is not None and n.gateway)
    return sorted(out)


def routing_hypervisors(policy, inv: Inventory, tenant: str) -> set[int]:
    """The hypervisors where a tenant's routed nics are located: they may route into its
    overlay networks."""
    t = policy.tenants[tenant]
    return {inv.locations[i][0] for n in t.networks.values() if n.gateway is not None
            for i in policy.network_nics.get((tenant, n.name), ()) if i in inv.locations}


def compile_switch(policy, inv: Inventory, dpid: int, tun) -> set[Flow]:
    if tun is None:
        return set()
    # sources seen through the tunnel are never learned: locations come from bindings
    return {Flow.make('learn', P_NO_LEARN, {'in_port': tun}, goto='arp_rsp', cookie=cookies.make(APP, K_RX, 'tunnel'))}


def compile_unit(policy, inv: Inventory, dpid: int, key, tun) -> set[Flow]:
    if tun is None or key[0] not in policy.tenants:
        return set()
    by_hv = network_members(policy, inv, key)
    routed = policy.tenants[key[0]].networks[key[1]].gateway is not None
    if dpid not in by_hv:
        if routed and key[0] in routing_tenants(policy, inv, dpid):
            return _routed_flows(policy, tun, key)
        return set()                     # not present here: its VNI is not accepted either
    senders = routing_hypervisors(policy, inv, key[0]) if routed else set()
    return _network_flows(policy, dpid, tun, key, by_hv, senders)


def compile_flows(policy, inv: Inventory, dpid: int) -> set[Flow]:
    """Everything at once (the full compile the incremental one is checked against)."""
    return incremental.from_units(sys.modules[__name__], policy, inv, dpid)


def _remote_entry(local_vlan, bn, vtep, tun) -> Flow:
    """A member on another hypervisor: straight into the tunnel toward its VTEP."""
    return Flow.make('l2_lookup', P_KNOWN, {'vlan_vid': vid(local_vlan), 'eth_dst': bn.nic.mac},
                     [('set_field', 'tun_ipv4_dst', vtep), ('set_field', R.OUT_PORT, tun)],
                     goto='acl_out', cookie=nic_cookie(APP, K_REMOTE, bn))


def _emission(policy, key, tun, c) -> Flow:
    return Flow.make('output', P_KNOWN, {R.OUT_PORT: tun, 'vlan_vid': vid(policy.overlay_vlans[key])},
                     [('pop_vlan',), ('set_field', 'tunnel_id', policy.tenants[key[0]].networks[key[1]].vni),
                      ('output', tun)], cookie=c(K_REMOTE, key[1]))


def _cookies(policy, key):
    tenant, net = key
    where = policy.tenants[tenant].where(policy.tenants[tenant].networks[net].line)
    return lambda kind, owner: cookies.make(APP, kind, owner, tenant, where)


def _routed_flows(policy, tun, key) -> set[Flow]:
    """A hypervisor with no member that routes into the network: only the tunnel's emission
    for it (the routes, apps/anycast_gateway.py, carry the VTEP); no BUM, nothing accepted."""
    return {_emission(policy, key, tun, _cookies(policy, key))}


def _network_flows(policy, dpid, tun, key, by_hv, senders=()) -> set[Flow]:
    fabric = policy.fabric
    tenant, net = key
    local_vlan = policy.overlay_vlans[key]
    vni = policy.tenants[tenant].networks[net].vni
    vtep = {hv: str(fabric.switch_by_dpid(hv).vtep) for hv in set(by_hv) | set(senders)}
    remote = sorted({vtep[hv] for hv in by_hv if hv != dpid})
    c = _cookies(policy, key)
    flows = {Flow.make('classify', P_FLOOD, {'vlan_vid': vid(local_vlan)},
                       learning_switch.context_actions(policy, tenant, net), goto='learn', cookie=c(K_RX, net)),
             _emission(policy, key, tun, c)}
    # from member VTEPs, and from the VTEPs of hypervisors that route into it
    for src in sorted(set(remote) | {vtep[hv] for hv in senders if hv != dpid}):
        flows.add(Flow.make('port_sec', P_RX, {'in_port': tun, 'tunnel_id': vni, 'tun_ipv4_src': src},
                            [('push_vlan', local_vlan)], goto='classify', cookie=c(K_RX, '%s/from:%s' % (net, src))))
    for hv, nics in by_hv.items():
        for no, bn in nics:
            match = {'vlan_vid': vid(local_vlan), 'eth_dst': bn.nic.mac}
            if hv == dpid:
                flows.add(Flow.make('l2_lookup', P_KNOWN, match, [('set_field', R.OUT_PORT, no)], goto='acl_out',
                                    cookie=nic_cookie(APP, K_LOCAL, bn)))
                flows.add(Flow.make('learn', P_KNOWN, {'in_port': no, 'vlan_vid': vid(local_vlan),
                                                       'eth_src': bn.nic.mac}, goto='arp_rsp',
                                    cookie=nic_cookie(APP, K_LOCAL, bn)))
            else:
                flows.add(_remote_entry(local_vlan, bn, vtep[hv], tun))
    local = [('output', no) for no, _ in sorted(by_hv[dpid])]
    replicate = [('set_field', 'tunnel_id', vni)] if remote else []
    for dst in remote:
        replicate += [('set_field', 'tun_ipv4_dst', dst), ('output', tun)]
    flows.add(Flow.make('flood', P_FLOOD, {'vlan_vid': vid(local_vlan)}, [('pop_vlan',)] + local + replicate,
                        cookie=c(K_FLOOD, net)))
    flows.add(Flow.make('flood', P_FLOOD_RX, {'in_port': tun, 'vlan_vid': vid(local_vlan)}, [('pop_vlan',)] + local,
                        cookie=c(K_FLOOD, net)))
    return flows
