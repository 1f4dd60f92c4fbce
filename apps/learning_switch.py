"""Per-VLAN MAC learning switch for physical switches and hypervisor br-int bridges.

Stages (see controller/pipeline/tables.py):
  port_sec   which ports admit which VLANs; untagged frames get their VLAN's tag; a port shut
             for a MAC-limit violation drops everything (above all else there)
  classify   the VLAN's network, tenant and conntrack zone ids into registers
  learn      known (vlan, src MAC, port) go on; unknown sources are copied to the controller
             through their port's meter (punt) and go on (from a VM/edge port through
             storm_ctl's meter), or dropped once a VM/edge port is full (controller/floods.py)
  l2_lookup  known destination MAC -> its port in the out-port register (miss: flood)
  output     per port: how to emit (tagged on a trunk, the tag popped for its untagged VLAN)
  flood      per VLAN, every flood port of the switch (OVS skips the ingress port)

Forwarding never waits for the controller: an unknown source is copied to the controller
*and* forwarded.  Learned entries age with idle_timeout=mac_age on the source flow; the
switch tells us (flow removed) and the destination entry goes with it.
"""
from __future__ import annotations

import collections

from controller import floods
from controller.inventory.model import EDGE, HYPERVISOR, VM, Inventory
from controller.pipeline import actions as A, cookies, registers as R
from controller.pipeline.flow import CONTROLLER, UNTAGGED, Flow, vid

from apps import vlan_portgroups
from apps.vlan_portgroups import PortVlans

APP = 'learning_switch'
K_STATIC, K_SRC, K_DST, K_REFUSED, K_GUARD, K_SHUTDOWN = 0, 1, 2, 3, 4, 5
P_PORT, P_UNTAGGED, P_MAC, P_GUARD = 100, 110, 100, 90
P_SHUTDOWN = 3000                # port_sec: above everything, the bonds' fold (2000) too
LIMITED = (EDGE, VM)             # roles whose ports hold at most max_macs_per_port MACs


def _cookie(kind: int, owner: str | None = None, tenant: str | None = None) -> int:
    return cookies.make(APP, kind, owner, tenant)


def compile_flows(policy, inv: Inventory, dpid: int) -> set[Flow]:
    if dpid not in inv.switches:
        return set()
    ports = vlan_portgroups.port_vlans(policy, inv, dpid)
    flows = _admission(policy, ports)
    flows |= classify_flows(policy, {v for pv in ports.values() for v in pv.admits() | {pv.untagged}} - {None})
    flows |= _learned(policy, inv, dpid, ports)
    flows |= _guards(policy, inv, dpid, ports)
    flows |= emission_flows(policy, ports)
    flows |= _flood(policy, ports)
    flows |= _shutdown(policy, inv, dpid)
    return flows


def _vlan_cookie(policy, kind: int, vlan: int, owner: str | None) -> int:
    """Per-VLAN flows belong to the tenant whose port-group the VLAN is."""
    return _cookie(kind, owner, tenant=policy.vlan_owners.get(vlan))


def _admission(policy, ports: dict[int, PortVlans]) -> set[Flow]:
    flows = set()
    for no, pv in ports.items():
        if pv.untagged is not None:
            flows.add(Flow.make('port_sec', P_PORT, {'in_port': no, 'vlan_vid': UNTAGGED},
                                [('push_vlan', pv.untagged)], goto='classify',
                                cookie=_vlan_cookie(policy, K_STATIC, pv.untagged, 'port:%d' % no)))
        for v in pv.admits():
            flows.add(Flow.make('port_sec', P_PORT, {'in_port': no, 'vlan_vid': vid(v)}, goto='classify',
                                cookie=_vlan_cookie(policy, K_STATIC, v, 'port:%d' % no)))
    return flows


def context_actions(policy, tenant: str, network: str) -> list[tuple]:
    """Register loads that give a frame of this tenant network its context (registers.py)."""
    ids = policy.ids
    return [('set_field', R.NETWORK, ids.network[(tenant, network)]),
            ('set_field', R.TENANT, ids.tenant[tenant]), ('set_field', R.ZONE, ids.zone[tenant])]


def classify_flows(policy, vlans) -> set[Flow]:
    """A tenant VLAN's frames carry its network, tenant and zone from here on; the native
    VLAN's carry zeros (the miss goes on with the registers untouched)."""
    flows = set()
    for v in sorted(vlans):
        owner = policy.vlan_networks.get(v)
        if owner is None:
            continue
        tenant, net = owner
        t = policy.tenants[tenant]
        flows.add(Flow.make('classify', P_PORT, {'vlan_vid': vid(v)}, context_actions(policy, tenant, net),
                            goto='learn', cookie=cookies.make(APP, K_STATIC, net, tenant,
                                                              t.where(t.networks[net].line))))
    return flows


def emission_flows(policy, ports: dict[int, PortVlans]) -> set[Flow]:
    """How a frame chosen for a port leaves it: tagged on a trunk (whatever the VLAN: only
    VLANs the port carries are ever chosen for it), the tag popped for its untagged VLAN."""
    flows = set()
    for no, pv in ports.items():
        if pv.tagged or pv.routed_out:
            flows.add(Flow.make('output', P_PORT, {R.OUT_PORT: no}, [('output', no)],
                                cookie=_cookie(K_STATIC, 'port:%d' % no)))
        if pv.untagged is not None:
            flows.add(Flow.make('output', P_UNTAGGED, {R.OUT_PORT: no, 'vlan_vid': vid(pv.untagged)},
                                [('pop_vlan',), ('output', no)],
                                cookie=_vlan_cookie(policy, K_STATIC, pv.untagged, 'port:%d' % no)))
    return flows


def _learned(policy, inv: Inventory, dpid: int, ports) -> set[Flow]:
    flows = set()
    age = policy.fabric.learning.mac_age
    for (vlan, mac), port in inv.macs.get(dpid, {}).items():
        if port not in ports or not ports[port].carries(vlan):
            continue
        # learned entries carry no owner id: the match says which MAC (and they churn)
        flows.add(Flow.make('learn', P_MAC, {'in_port': port, 'vlan_vid': vid(vlan), 'eth_src': mac},
                            goto='arp_rsp', cookie=_vlan_cookie(policy, K_SRC, vlan, None), idle_timeout=age,
                            notify_removal=True))
        flows.add(Flow.make('l2_lookup', P_MAC, {'vlan_vid': vid(vlan), 'eth_dst': mac},
                            [('set_field', R.OUT_PORT, port)], goto='acl_out',
                            cookie=_vlan_cookie(policy, K_DST, vlan, None)))
    for vlan, mac, port in inv.refused.get(dpid, ()):
        # over the port's MAC limit: drop this source quietly until it has been silent a while
        flows.add(Flow.make('learn', P_MAC, {'in_port': port, 'vlan_vid': vid(vlan), 'eth_src': mac},
                            cookie=_vlan_cookie(policy, K_REFUSED, vlan, None),
                            idle_timeout=age, notify_removal=True))
    return flows


def _guards(policy, inv: Inventory, dpid: int, ports) -> set[Flow]:
    """Per port, below every known source: an unknown source is copied to the controller
    through the port's meter and goes on -- from a VM/edge port through storm_ctl and its
    unknown-source meter, and once that port holds its MAC limit it is dropped
    (controller/floods.py).  Only switch ports get one: their meters exist."""
    sw = inv.switches[dpid]
    limit = policy.fabric.learning.max_macs_per_port
    counts = collections.Counter(inv.macs.get(dpid, {}).values())
    flows = set()
    for no in ports:
        port, meter = sw.ports.get(no), floods.port_meter(no)
        if port is None or meter is None:
            continue
        c = _cookie(K_GUARD, 'port:%d' % no)
        if port.role not in LIMITED:
            flows.add(Flow.make('learn', P_GUARD, {'in_port': no}, [floods.punt(no)], goto='arp_rsp', cookie=c))
        elif counts[no] < limit:            # unknown sources forwarded at a bounded rate too
            flows.add(Flow.make('learn', P_GUARD, {'in_port': no}, [floods.punt(no)], goto='storm_ctl', cookie=c))
            flows.add(Flow.make('storm_ctl', P_PORT, {'in_port': no}, [A.meter(floods.unknown_meter(no))],
                                goto='arp_rsp', cookie=c))
        else:
            flows.add(Flow.make('learn', P_GUARD, {'in_port': no}, cookie=c))
        flows.add(Flow.make('punt', P_PORT, {'in_port': no}, [A.meter(meter), A.output(CONTROLLER)], cookie=c))
    return flows


def _shutdown(policy, inv: Inventory, dpid: int) -> set[Flow]:
    """A port shut for a MAC-limit violation (learning.violation: shutdown): one drop flow on
    in_port above everything, so a flood of forged sources costs the datapath one megaflow
    instead of an upcall per new MAC (the learn table matches eth_src: no megaflow covers
    the next one).  The switch removes it after errdisable_recovery and tells us."""
    sw, learning = inv.switches[dpid], policy.fabric.learning
    if learning.violation != 'shutdown':        # a reload to restrict opens every shut port at once
        return set()
    hold = learning.errdisable_recovery
    return {Flow.make('port_sec', P_SHUTDOWN, {'in_port': no}, cookie=_cookie(K_SHUTDOWN, 'port:%d' % no),
                      hard_timeout=hold, notify_removal=True)
            for no in inv.shutdown.get(dpid, ()) if no in sw.ports}


def _flood(policy, ports: dict[int, PortVlans]) -> set[Flow]:
    tagged: dict[int, list[int]] = {}
    untagged: dict[int, list[int]] = {}
    for p, pv in sorted(ports.items()):
        for v in pv.tagged:
            tagged.setdefault(v, []).append(p)
        if pv.untagged is not None:
            untagged.setdefault(pv.untagged, []).append(p)
    flows = set()
    for v in sorted(policy.vlans_in_use() & (tagged.keys() | untagged.keys())):
        acts = [('output', p) for p in tagged.get(v, ())]
        if v in untagged:
            acts += [('pop_vlan',)] + [('output', p) for p in untagged[v]]
        flows.add(Flow.make('flood', P_PORT, {'vlan_vid': vid(v)}, acts,
                            cookie=_vlan_cookie(policy, K_STATIC, v, 'flood:%d' % v)))
    return flows


# ---- learning (called from packet-in; mutates inventory) ----------------------------------

def learn(fabric, inv: Inventory, dpid: int, port: int, vlan: int, mac: str) -> bool:
    """Record that `mac` on `vlan` was seen on `port`.  True if the inventory changed.
    O(1): the port's count comes from the MacTable, a refusal goes to the bounded
    RefusedTable (oldest evicted: controller/floods.py).  A VM/edge port that holds its
    limit and sends one more source is shut (violation: shutdown) or that source refused
    (violation: restrict)."""
    mac = mac.lower()
    if int(mac[:2], 16) & 1:
        return False                                # never learn a multicast source
    sw = inv.switches.get(dpid)
    if sw is None or port not in sw.ports:
        return False
    if fabric.learning.violation == 'shutdown' and port in inv.shutdown.get(dpid, ()):
        return False                                # (copies sent before the port was shut)
    table = floods.mac_table(inv, dpid)
    if table.get((vlan, mac)) == port:
        return False
    if sw.ports[port].role in LIMITED and table.on_port(port) >= fabric.learning.max_macs_per_port:
        if fabric.learning.violation == 'shutdown':
            inv.shutdown.setdefault(dpid, set()).add(port)
            inv.forget_port(dpid, port)             # an errdisabled port forgets, as a down one does
            return True
        refused = floods.refused_table(inv, dpid)
        if (vlan, mac, port) in refused:
            return False
        refused.add((vlan, mac, port))
        return True
    table[(vlan, mac)] = port                       # new, or a MAC move: the old entry is replaced
    return True


def is_shut(inv: Inventory, dpid: int, port: int) -> bool:
    return port in inv.shutdown.get(dpid, ())


def adopt(inv: Inventory, dpid: int, installed: set[Flow]) -> None:
    """Take learned entries and shut ports back from a switch's flows (after a controller
    restart), so the restarted controller wants exactly what the switch already has."""
    table = floods.mac_table(inv, dpid)
    refused = floods.refused_table(inv, dpid)
    for f in installed:
        if cookies.app_of(f.cookie) != APP:
            continue
        kind, m = cookies.kind_of(f.cookie), f.match_dict()
        if f.table == 'port_sec' and kind == K_SHUTDOWN:
            inv.shutdown.setdefault(dpid, set()).add(m['in_port'])
        elif f.table == 'learn' and kind == K_SRC:
            table.setdefault((m['vlan_vid'] & 0xfff, m['eth_src']), m['in_port'])
        elif f.table == 'learn' and kind == K_REFUSED:
            refused.add((m['vlan_vid'] & 0xfff, m['eth_src'], m['in_port']))


def forget(inv: Inventory, dpid: int, flow: Flow) -> bool:
    """A learned/refused entry aged out on the switch, or a shut port's hold time ended: drop
    it.  True if anything changed."""
    kind = cookies.kind_of(flow.cookie)
    m = flow.match_dict()
    if flow.table == 'port_sec' and kind == K_SHUTDOWN and cookies.app_of(flow.cookie) == APP:
        shut = inv.shutdown.get(dpid, set())
        if m.get('in_port') in shut:
            shut.discard(m['in_port'])
            return True
        return False
    if flow.table != 'learn' or 'eth_src' not in m:
        return False
    key = (m['vlan_vid'] & 0xfff, m['eth_src'])
    if kind == K_SRC and inv.macs.get(dpid, {}).get(key) == m['in_port']:
        del inv.macs[dpid][key]
        return True
    if kind == K_REFUSED:
        inv.refused.get(dpid, set()).discard((key[0], key[1], m['in_port']))
        return True
    return False


def flush_fabric_macs(inv: Inventory) -> None:
    """The flood tree changed: MACs learned over fabric links may now be behind other ports,
    so physical switches forget what they learned on anything but edge/hypervisor ports
    (like an STP topology change)."""
    for dpid, sw in inv.switches.items():
        if sw.kind != 'physical':
            continue
        for no, p in sw.ports.items():
            if p.role not in (EDGE, HYPERVISOR):
                inv.forget_port(dpid, no)
