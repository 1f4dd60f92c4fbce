"""VXLAN overlay networks (`vni:`), programmed from bindings: no flood-and-learn over tunnels.

Inside a hypervisor's br-int an overlay network rides a local VLAN (Policy.overlay_vlans) so
the learn/l2/flood tables serve it like a port-group; no trunk ever carries that VLAN.  Every
hypervisor that hosts a member nic of a network gets:
  - unicast to a member on another hypervisor: straight into the tunnel with the network's
    VNI and that hypervisor's VTEP as destination (tun_id, tun_dst set per flow);
  - BUM: its local member ports plus head-end replication to the VTEPs of the hypervisors
    that host members, and no others;
  - from the tunnel: only from a VTEP hosting members, only with that network's VNI, and
    only to that network's local ports (never back into the tunnel: split horizon).  Sources
    seen through the tunnel are never learned; locations come from bindings only.
"""
from __future__ import annotations

from collections import defaultdict

from controller.inventory.model import TUNNEL, Inventory
from controller.pipeline import cookies
from controller.pipeline.flow import Flow, vid

APP = 'vxlan_overlay'
K_RX, K_LOCAL, K_REMOTE, K_FLOOD = 1, 2, 3, 4
P_RX, P_KNOWN, P_FLOOD, P_FLOOD_RX = 200, 150, 100, 110


def members(policy, inv: Inventory) -> dict:
    """(tenant, network) -> {hypervisor dpid: [(ofport, BoundNic)]} for bound overlay nics."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for hv, ports in sorted(inv.bindings.items()):
        for no, b in sorted(ports.items()):
            bn = policy.nics.get(b.iface_id)
            if bn is not None and bn.network.vni is not None:
                out[(bn.tenant.name, bn.network.name)][hv].append((no, bn))
    return out


def compile_flows(policy, inv: Inventory, dpid: int) -> set[Flow]:
    sw = inv.switches.get(dpid)
    if sw is None or sw.kind != 'hypervisor':
        return set()
    tunnels = sw.ports_with(TUNNEL)
    if not tunnels:
        return set()
    tun = tunnels[0].no
    flows = set()
    for key, by_hv in sorted(members(policy, inv).items()):
        if dpid not in by_hv:
            continue                     # not present here: its VNI is not accepted either
        flows |= _network_flows(policy, dpid, tun, key, by_hv)
    return flows


def _network_flows(policy, dpid, tun, key, by_hv) -> set[Flow]:
    fabric = policy.fabric
    tenant, net = key
    local_vlan = policy.overlay_vlans[key]
    vni = by_hv[dpid][0][1].network.vni
    vtep = {hv: str(fabric.switch_by_dpid(hv).vtep) for hv in by_hv}
    remote = sorted({vtep[hv] for hv in by_hv if hv != dpid})
    c = lambda kind, owner: cookies.make(APP, kind, owner, tenant)        # noqa: E731
    flows = set()
    for src in remote:
        flows.add(Flow.make('classify', P_RX, {'in_port': tun, 'tunnel_id': vni, 'tun_ipv4_src': src},
                            [('push_vlan', local_vlan)], goto='l2', cookie=c(K_RX, '%s/from:%s' % (net, src))))
    for hv, nics in by_hv.items():
        for no, bn in nics:
            owner = '%s/nic%d' % (bn.workload.name, bn.nic.index)
            match = {'vlan_vid': vid(local_vlan), 'eth_dst': bn.nic.mac}
            if hv == dpid:
                flows.add(Flow.make('l2', P_KNOWN, match, [('pop_vlan',), ('output', no)], cookie=c(K_LOCAL, owner)))
                flows.add(Flow.make('learn', P_KNOWN, {'in_port': no, 'vlan_vid': vid(local_vlan),
                                                       'eth_src': bn.nic.mac}, goto='l2', cookie=c(K_LOCAL, owner)))
            else:
                flows.add(Flow.make('l2', P_KNOWN, match, [('pop_vlan',), ('set_field', 'tunnel_id', vni),
                                                           ('set_field', 'tun_ipv4_dst', vtep[hv]), ('output', tun)],
                                    cookie=c(K_REMOTE, owner)))
    local = [('output', no) for no, _ in sorted(by_hv[dpid])]
    replicate = [('set_field', 'tunnel_id', vni)] if remote else []
    for dst in remote:
        replicate += [('set_field', 'tun_ipv4_dst', dst), ('output', tun)]
    flows.add(Flow.make('flood', P_FLOOD, {'vlan_vid': vid(local_vlan)}, [('pop_vlan',)] + local + replicate,
                        cookie=c(K_FLOOD, net)))
    flows.add(Flow.make('flood', P_FLOOD_RX, {'in_port': tun, 'vlan_vid': vid(local_vlan)}, [('pop_vlan',)] + local,
                        cookie=c(K_FLOOD, net)))
    return flows
