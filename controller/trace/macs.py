"""`dvsctl show macs` (GET /v1/macs): how many MAC addresses each physical switch holds, and
whose, to show what the overlay spares the top-of-rack tables.

A physical switch's MAC table is its l2_lookup destination entries, per VLAN: the ones it
learned (apps/learning_switch.py, Inventory.macs) and the proactive entries for every bound
VM nic of a VLAN network (apps/vlan_portgroups.py), as the reconciler installed them.  Each
(VLAN, MAC) entry is counted once and put under the tenant whose nic has that MAC (the
policy's nics), or 'unknown' (a host the policy does not name: learned from an edge port,
a hypervisor's own VTEP...).  VXLAN networks' MACs never appear: the leaves see only VTEPs.
"""
from __future__ import annotations

from controller.pipeline import cookies

UNKNOWN = 'unknown'
L2 = 'l2_lookup'


def _known_entries(installed) -> set[tuple[int, str]]:
    """(VLAN, MAC) of the vlan_portgroups destination entries among a switch's flows."""
    out = set()
    for f in installed or ():
        if f.table != L2 or cookies.app_of(f.cookie) != 'vlan_portgroups':
            continue
        m = dict(f.match)
        mac, vlan = m.get('eth_dst'), m.get('vlan_vid')
        if isinstance(mac, str) and vlan is not None:
            out.add((int(vlan[0] if isinstance(vlan, tuple) else vlan) & 0xfff, mac.lower()))
    return out


def view(core) -> list[dict]:
    with core.lock:
        pol = core.policy
        switches = [(sw.name, d, dict(core.inv.macs.get(d, {})), core.rec.installed(d), d in core.conns)
                    for d, sw in core.inv.switches.items() if sw.kind != 'hypervisor']
    owner = {bn.nic.mac.lower(): bn.tenant.name for bn in pol.nics.values()}
    out = []
    for name, dpid, learned, installed, connected in sorted(switches):
        learned_keys = {(vlan, mac.lower()) for vlan, mac in learned}
        known = _known_entries(installed)
        entries = learned_keys | known
        by_tenant: dict[str, int] = {}
        for _, mac in entries:
            t = owner.get(mac, UNKNOWN)
            by_tenant[t] = by_tenant.get(t, 0) + 1
        out.append({'switch': name, 'dpid': '%016x' % dpid, 'connected': connected, 'macs': len(entries),
                    'learned': len(learned_keys), 'known_nics': len(known),
                    'tenants': dict(sorted(by_tenant.items(), key=lambda kv: (kv[0] == UNKNOWN, kv[0])))})
    return out
