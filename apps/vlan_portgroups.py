"""VLAN port-groups as one distributed switch: which VLANs every port carries, and proactive
forwarding for every bound VM nic.

A VM nic is bound when its br-int Interface carries external_ids:iface-id of a nic in an
accepted tenant policy (<tenant>/<workload>/nic<i>); it then becomes an access port of its
network's VLAN on whichever hypervisor it is.  Trunks carry exactly the VLANs in use that
their allowed list permits: the hypervisor uplink (and the leaf port LLDP found it on) its
fabric `trunk_vlans`, fabric cables every VLAN in use.  A VLAN a trunk does not allow is not
admitted at its ingress and never flooded out of it.

Known nics get destination entries on every switch (no flooding for them): the local port
on their hypervisor, the uplink on the others, the hypervisor's leaf port on its leaf and
the flood-tree port toward that leaf elsewhere.
"""
from __future__ import annotations

import dataclasses

from controller.inventory.model import EDGE, FABRIC, HYPERVISOR, UPLINK, VM, Inventory
from controller.pipeline import cookies, registers as R
from controller.pipeline.flow import Flow, vid
from controller.policy.model import Hypervisor

from apps import topology

APP = 'vlan_portgroups'
K_DST, K_SRC = 1, 2
P_KNOWN = 150                       # above learned entries (100): a binding beats a guess


@dataclasses.dataclass(frozen=True)
class PortVlans:
    tagged: frozenset[int] = frozenset()
    untagged: int | None = None          # the VLAN untagged frames on this port belong to

    def carries(self, vlan: int) -> bool:
        return vlan == self.untagged or vlan in self.tagged


def port_vlans(policy, inv: Inventory, dpid: int) -> dict[int, PortVlans]:
    """Forwarding ports of one switch and the VLANs each carries (pending and off-tree
    ports carry nothing)."""
    sw = inv.switches[dpid]
    fabric, native = policy.fabric, policy.fabric.native_vlan
    in_use = policy.vlans_in_use()
    out = {}
    if sw.kind == 'physical':
        tree = topology.flood_tree(inv)
        for p in sw.ports_with(EDGE):
            out[p.no] = PortVlans(untagged=native)
        for p in sw.ports_with(HYPERVISOR):
            hv = fabric.switch_by_dpid(inv.hv_ports.get(topology.LinkEnd(dpid, p.no)))
            trunk = frozenset(hv.trunk_vlans) if isinstance(hv, Hypervisor) else frozenset()
            out[p.no] = PortVlans(trunk & in_use - {native}, native)
        for p in sw.ports_with(FABRIC):
            if topology.LinkEnd(dpid, p.no) in tree:
                out[p.no] = PortVlans(in_use)
        return out
    hv = fabric.switch_by_dpid(dpid)
    for p in sw.ports_with(UPLINK):
        out[p.no] = PortVlans(frozenset(hv.trunk_vlans) & in_use - {native}, native)
    bindings = inv.bindings.get(dpid, {})
    for p in sw.ports_with(VM):
        b = bindings.get(p.no)
        bound = policy.nics.get(b.iface_id) if b else None
        if bound is not None:
            if bound.network.vlan is not None:
                out[p.no] = PortVlans(untagged=bound.network.vlan)
            else:                                       # an overlay nic: its network's local VLAN
                out[p.no] = PortVlans(untagged=policy.overlay_vlans[(bound.tenant.name, bound.network.name)])
        elif not (b and b.iface_id.split('/')[0] in policy.tenants):
            out[p.no] = PortVlans(untagged=native)      # no tenant claims it: the native VLAN
        # a port claiming an accepted tenant with an unknown workload/nic carries nothing:
        # a stale or mistyped binding must never leak into another network
    return out


def located_nics(policy, inv: Inventory, overlay: bool = False):
    """(hypervisor dpid, ofport, BoundNic) for every nic at its location (one place, even
    while a nic is bound twice), whose port is up: VLAN nics, or overlay nics."""
    for iface_id, (dpid, no) in sorted(inv.locations.items()):
        bound = policy.nics.get(iface_id)
        sw = inv.switches.get(dpid)
        if bound is None or sw is None or no not in sw.ports or not sw.ports[no].up:
            continue
        if (bound.network.vni is not None) == overlay:
            yield dpid, no, bound


def bound_nics(policy, inv: Inventory):
    """(hypervisor dpid, ofport, BoundNic) for every located VM port of a VLAN network nic."""
    return located_nics(policy, inv)


def nic_cookie(app: str, kind: int, bound) -> cookies.Cookie:
    """A nic's flows: owned by the workload's nic, traced to the workload's line."""
    return cookies.make(app, kind, '%s/nic%d' % (bound.workload.name, bound.nic.index), bound.tenant.name,
                        bound.tenant.where(bound.workload.line))


def compile_flows(policy, inv: Inventory, dpid: int) -> set[Flow]:
    sw = inv.switches.get(dpid)
    if sw is None:
        return set()
    ports = port_vlans(policy, inv, dpid)
    tree = topology.flood_tree(inv) if sw.kind == 'physical' else set()
    hv_leaf_port = topology.hypervisor_ports(inv)
    paths: dict[int, dict[int, int]] = {}         # leaf dpid -> {switch: port toward it}
    flows = set()
    for hv_dpid, ofport, bound in bound_nics(policy, inv):
        vlan, mac = bound.network.vlan, bound.nic.mac
        if sw.kind == 'hypervisor':
            out = ofport if hv_dpid == dpid else next(iter(p.no for p in sw.ports_with(UPLINK)), None)
        else:
            leaf = hv_leaf_port.get(hv_dpid)
            if leaf is None:
                continue
            if leaf.dpid not in paths:
                paths[leaf.dpid] = topology.toward(inv, tree, leaf.dpid)
            out = leaf.port if leaf.dpid == dpid else paths[leaf.dpid].get(dpid)
        if out is None or out not in ports or not ports[out].carries(vlan):
            continue
        flows.add(Flow.make('l2_lookup', P_KNOWN, {'vlan_vid': vid(vlan), 'eth_dst': mac},
                            [('set_field', R.OUT_PORT, out)], goto='acl_out', cookie=nic_cookie(APP, K_DST, bound)))
        if hv_dpid == dpid:
            # the nic's own source is known: no packet-in, no learning for it
            flows.add(Flow.make('learn', P_KNOWN, {'in_port': ofport, 'vlan_vid': vid(vlan), 'eth_src': mac},
                                goto='arp_rsp', cookie=nic_cookie(APP, K_SRC, bound)))
    return flows
