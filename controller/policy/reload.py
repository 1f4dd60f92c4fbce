"""A new fabric file for a running controller (SIGHUP, like Faucet's reload): what changed,
and whether it can be applied live.

Applied live -- recompiled and converged as a diff, so only changed flows are touched:
switches, hypervisors and links added, the ports of named cables, trunk VLANs, native VLAN,
MTU, learning settings, rack subnets, VTEPs.  Refused, with the reason, leaving everything as it was:

- a fabric file that does not validate;
- controller.openflow / controller.api changed (listening sockets: restart to apply);
- a connected switch or hypervisor removed from the fabric, renamed (its dpid now names
  another entry) or turned from switch to hypervisor (disconnect it first, then reload);
- running tenants that no longer fit the new fabric (a trunk VLAN they use removed, the
  native VLAN moved onto a tenant VLAN, an MTU too small for VXLAN...).
"""
from __future__ import annotations

from controller.policy.errors import PolicyError
from controller.policy.model import Fabric, Policy


def plan(running: Policy, new: Fabric, connected: dict[int, tuple[str, str]]) -> tuple[Policy | None, list[str]]:
    """-> (the Policy to apply, []) or (None, reasons it cannot be applied live).
    connected: dpid -> (name, 'physical' | 'hypervisor') of every connected datapath."""
    from controller.policy.tenant import check_together
    old, reasons = running.fabric, []
    if new.controller != old.controller:
        reasons.append('controller.openflow/api changed (%s, %s -> %s, %s): these are listening sockets; '
                       'restart the controller to apply them' % (old.controller.openflow, old.controller.api,
                                                                 new.controller.openflow, new.controller.api))
    for dpid, (name, kind) in sorted(connected.items()):
        node = new.switch_by_dpid(dpid)
        if node is None:
            reasons.append('%s %s (%016x) is connected but not in the new fabric; disconnect it first'
                           % (kind, name, dpid))
        elif node.name != name or (node.name in new.hypervisors) != (kind == 'hypervisor'):
            reasons.append('%s %s (%016x) is connected; the new fabric makes its dpid %s %s'
                           % (kind, name, dpid, 'hypervisor' if node.name in new.hypervisors else 'switch',
                              node.name))
    if reasons:
        return None, reasons
    try:
        tenants = check_together(new, list(running.tenants.values()))
    except PolicyError as e:
        return None, ['the running tenants do not fit the new fabric: ' + str(d) for d in e.diags]
    return Policy(new).with_tenants(tenants), []
