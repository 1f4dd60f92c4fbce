"""VLAN port-groups as one distributed switch: which VLANs every port carries, and proactive
forwarding for every bound VM nic.

A VM nic is bound when its br-int Interface carries external_ids:iface-id of a nic in an
accepted tenant policy (<tenant>/<workload>/nic<i>); it then becomes an access port of its
network's VLAN on whichever hypervisor it is.  Trunks carry exactly the VLANs they need:
a hypervisor uplink (and the leaf port LLDP found it on) the VLANs of the nics bound on that
hypervisor that its fabric `trunk_vlans` allows (VLAN pruning: a hypervisor never sees the
broadcasts of a VLAN it has no VM on), fabric cables every VLAN in use.  A VLAN a trunk does
not carry is not admitted at its ingress and never flooded out of it.

Routing (apps/anycast_gateway.py) needs one more thing of trunks: a hypervisor routes a
tenant's frames into any of that tenant's routed VLAN networks, so its uplink may *send*
those VLANs and its leaf port *admits* them (routed_out / routed_in), but neither floods
them to it: BUM traffic of a VLAN still reaches only the hypervisors with a VM on it.

Known nics get destination entries (no flooding for them): on every physical switch (the
hypervisor's leaf port on its leaf, the flood-tree port toward that leaf elsewhere), on
their own hypervisor (the local port) and on every hypervisor with a VM on the same VLAN
(the uplink).  Each nic's entries are one compile unit (units/compile_unit), so a binding
recompiles that nic's entries only.
"""
from __future__ import annotations

import dataclasses
import sys

from controller.inventory.model import EDGE, FABRIC, HYPERVISOR, UPLINK, VM, Inventory
from controller.pipeline import cookies, incremental, registers as R
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
    # routed frames only, one way (apps/anycast_gateway.py): a hypervisor uplink sends these
    # VLANs, the leaf port facing it admits them; never flooded, never admitted back
    routed_out: frozenset[int] = frozenset()
    routed_in: frozenset[int] = frozenset()

    def carries(self, vlan: int) -> bool:
        """Is the port a member of this VLAN (bridged and flooded to; routed frames aside)?"""
        return vlan == self.untagged or vlan in self.tagged

    def admits(self) -> frozenset[int]:
        """The tagged VLANs admitted at this port."""
        return self.tagged | self.routed_in


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
            if isinstance(hv, Hypervisor):
                tagged = frozenset(hv.trunk_vlans) & local_vlans(policy, inv, hv.dpid) & in_use - {native}
                routed = frozenset(hv.trunk_vlans) & routed_vlans(policy, inv, hv.dpid) - tagged - {native}
                out[p.no] = PortVlans(tagged, native, routed_in=routed)
            else:
                out[p.no] = PortVlans(untagged=native)
        for p in sw.ports_with(FABRIC):
            if topology.LinkEnd(dpid, p.no) in tree:
                out[p.no] = PortVlans(in_use)
        return out
    hv = fabric.switch_by_dpid(dpid)
    for p in sw.ports_with(UPLINK):
        tagged = frozenset(hv.trunk_vlans) & local_vlans(policy, inv, dpid) & in_use - {native}
        routed = frozenset(hv.trunk_vlans) & routed_vlans(policy, inv, dpid) - tagged - {native}
        out[p.no] = PortVlans(tagged, native, routed_out=routed)
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


def local_vlans(policy, inv: Inventory, hv: int) -> frozenset[int]:
    """The tenant VLANs of the nics bound on a hypervisor (whether or not they are located
    there yet: a VM arriving by live migration needs its VLAN on the trunk at once)."""
    out = set()
    for b in inv.bindings.get(hv, {}).values():
        bound = policy.nics.get(b.iface_id)
        if bound is not None and bound.network.vlan is not None:
            out.add(bound.network.vlan)
    return frozenset(out)


def placement_refusal(policy, iface_id: str, hypervisor: str) -> str | None:
    """Why a nic can never be located on a hypervisor, or None: a VLAN nic needs its VLAN on
    that hypervisor's trunk (fabric trunk_vlans), or it would be cut off from its network.
    Overlay nics go anywhere (the VTEP carries them); a nic no policy knows is not ours."""
    bound, hv = policy.nics.get(iface_id), policy.fabric.hypervisors.get(hypervisor)
    if bound is None or hv is None or bound.network.vlan is None or bound.network.vlan in hv.trunk_vlans:
        return None
    return ("%s's trunk does not carry VLAN %d of network %s/%s (trunk_vlans: %s in %s)"
            % (hypervisor, bound.network.vlan, bound.tenant.name, bound.network.name,
               ', '.join(map(str, hv.trunk_vlans)) or 'none', policy.fabric.source))


def routing_tenants(policy, inv: Inventory, hv: int) -> frozenset[str]:
    """The tenants that route on a hypervisor: those with a nic bound there on a network with
    a gateway (apps/anycast_gateway.py)."""
    out = set()
    for b in inv.bindings.get(hv, {}).values():
        bound = policy.nics.get(b.iface_id)
        if bound is not None and bound.network.gateway is not None:
            out.add(bound.tenant.name)
    return frozenset(out)


def routed_vlans(policy, inv: Inventory, hv: int) -> frozenset[int]:
    """The routed VLAN networks of the tenants that route on a hypervisor: it may route
    frames into any of them."""
    return frozenset(n.vlan for t in routing_tenants(policy, inv, hv) for n in policy.tenants[t].networks.values()
                     if n.vlan is not None and n.gateway is not None)


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


@dataclasses.dataclass
class Context:
    """What every nic's entries on one switch need, computed once per compile of it."""
    sw: object
    ports: dict
    tree: set
    hv_leaf_port: dict
    paths: dict            # leaf dpid -> {switch: port toward it}, filled on demand
    uplink: int | None


def context(policy, inv: Inventory, dpid: int) -> Context:
    sw = inv.switches[dpid]
    return Context(sw, port_vlans(policy, inv, dpid), topology.flood_tree(inv) if sw.kind == 'physical' else set(),
                   topology.hypervisor_ports(inv), {}, next(iter(p.no for p in sw.ports_with(UPLINK)), None))


def units(policy, inv: Inventory, dpid: int):
    """One unit per VLAN nic that has a location: every one on a physical switch; on a
    hypervisor, those of the VLANs its trunk carries (the others never get there)."""
    if inv.switches[dpid].kind == 'physical':
        return [i for i in inv.locations if (b := policy.nics.get(i)) is not None and b.network.vlan is not None]
    out = [i for v in local_vlans(policy, inv, dpid) for i in policy.network_nics.get(policy.vlan_networks[v], ())]
    return [i for i in out if i in inv.locations]


def compile_switch(policy, inv: Inventory, dpid: int, ctx: Context) -> set[Flow]:
    return set()


def compile_unit(policy, inv: Inventory, dpid: int, iface_id: str, ctx: Context) -> set[Flow]:
    """The entries of one nic on one switch."""
    bound, where = policy.nics.get(iface_id), inv.locations.get(iface_id)
    if bound is None or where is None or bound.network.vlan is None:
        return set()
    hv_dpid, ofport = where
    hv = inv.switches.get(hv_dpid)
    if hv is None or ofport not in hv.ports or not hv.ports[ofport].up:
        return set()
    vlan, mac = bound.network.vlan, bound.nic.mac
    if ctx.sw.kind == 'hypervisor':
        out = ofport if hv_dpid == dpid else ctx.uplink
    else:
        leaf = ctx.hv_leaf_port.get(hv_dpid)
        if leaf is None:
            return set()
        if leaf.dpid not in ctx.paths:
            ctx.paths[leaf.dpid] = topology.toward(inv, ctx.tree, leaf.dpid)
        out = leaf.port if leaf.dpid == dpid else ctx.paths[leaf.dpid].get(dpid)
    if out is None or out not in ctx.ports or not ctx.ports[out].carries(vlan):
        return set()
    flows = {Flow.make('l2_lookup', P_KNOWN, {'vlan_vid': vid(vlan), 'eth_dst': mac},
                       [('set_field', R.OUT_PORT, out)], goto='acl_out', cookie=nic_cookie(APP, K_DST, bound))}
    # The nic's source is known where its frames come in (its own port, or the port toward
    # it: the same tree carries both ways): never copied to the controller, never learned.
    # Learning it would only add two entries the one above already covers, and re-learn
    # them after every reconnect or restart.
    flows.add(Flow.make('learn', P_KNOWN, {'in_port': out, 'vlan_vid': vid(vlan), 'eth_src': mac},
                        goto='arp_rsp', cookie=nic_cookie(APP, K_SRC, bound)))
    return flows


def compile_flows(policy, inv: Inventory, dpid: int) -> set[Flow]:
    """Everything at once (the full compile the incremental one is checked against)."""
    return incremental.from_units(sys.modules[__name__], policy, inv, dpid)
