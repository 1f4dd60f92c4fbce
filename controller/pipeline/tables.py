"""Pipeline v2: every OpenFlow table declared once, by name, in order (Faucet's
faucet_pipeline.py idea, OVN's stage names).  Ingress stages decide *where* a frame goes;
egress stages check and *emit* it, so routing and ACLs slot in without renumbering.

    ingress  port_sec -> classify -> learn (-> punt) (-> storm_ctl) -> arp_rsp -> acl_in -> l3 (-> ecmp) -> l2_lookup
    egress   acl_out -> output (-> flood)

A declaration names: the apps that may write the table and each one's priority band, the
match fields its flows may use, the fields they may write, the tables they may go to, and
the miss action (miss flows are generated from it: see miss_flows()).  check() refuses any
flow that breaks its table's declaration; the core runs it over every compiled flow.
Ids leave gaps, so later stages slot in without moving deployed tables.
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Mapping

from controller.pipeline import actions, cookies, registers
from controller.pipeline.flow import CONTROLLER, Flow

R = registers
PIPELINE = 'pipeline'          # the owner of the generated miss flows


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    id: int
    bands: Mapping[str, tuple[int, int]]    # app -> (lowest, highest) priority it may use
    matches: frozenset[str]                 # match fields its flows may use
    sets: frozenset[str]                    # fields its flows may write (set_field, move, push_vlan)
    next: tuple[str, ...]                   # tables its flows may go to
    miss: tuple                             # ('drop',) | ('goto', table) | ('controller', table) | ('flood', table)
    doc: str

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(self.bands)


def _t(name, tid, bands, matches, sets, next_, miss, doc):
    return Table(name, tid, MappingProxyType(dict(bands)), frozenset(matches), frozenset(sets),
                 tuple(next_), miss, doc)


_ARP_REWRITE = ('eth_src', 'eth_dst', 'arp_op', 'arp_sha', 'arp_tha', 'arp_spa', 'arp_tpa')

TABLES = (
    _t('port_sec', 0,
       {'bonds': (2000, 2000), 'topology': (1000, 1000), 'underlay_routing': (500, 500),
        # learning_switch 3000: a port shut for a MAC-limit violation, above everything here
        'vxlan_overlay': (200, 200), 'port_security': (120, 140), 'learning_switch': (100, 3000)},
       ['in_port', 'vlan_vid', 'eth_type', 'eth_dst', 'arp_op', 'arp_tpa', 'tunnel_id', 'tun_ipv4_src',
        # port_security: a VM's own MAC and IP (and the DHCP client broadcast)
        'eth_src', 'ipv4_src', 'ipv4_dst', 'ip_proto', 'udp_src', 'udp_dst', 'arp_sha', 'arp_spa'],
       ('vlan_vid', 'in_port') + _ARP_REWRITE, ['classify', 'l3'], ('drop',),
       'admission per port (a bond\'s members folded into one port first): the VLANs a port takes (untagged frames get their VLAN tag), LLDP to '
       'the controller, tunnel traffic from member VTEPs, routed underlay frames to l3 and the '
       'rack gateway ARP responder; port security on bound VM ports (own MAC and IP only, the '
       'rest dropped by the nic\'s flows); a port waiting for live-migration activation sends '
       'only its GARP/RARP to the controller; a port shut for a MAC-limit violation drops everything'),
    _t('classify', 10,
       {'learning_switch': (100, 100), 'vxlan_overlay': (100, 100)},
       ['vlan_vid'], [R.NETWORK, R.TENANT, R.ZONE], ['learn'], ('goto', 'learn'),
       'the frame\'s VLAN -> network, tenant (VRF) and conntrack zone ids in registers'),
    # learning_switch 90: a port's guard (apps/learning_switch.py: unknown sources from a port
    # are copied to punt and go on, or dropped once the port holds its MAC limit)
    _t('learn', 20,
       {'learning_switch': (90, 100), 'vlan_portgroups': (150, 150), 'vxlan_overlay': (150, 160),
        'anycast_gateway': (165, 170)},
       ['in_port', 'vlan_vid', 'eth_src'], [], ['storm_ctl', 'arp_rsp'], ('controller', 'arp_rsp'),
       'source MACs: known (VLAN, MAC, port) go on; unknown are copied to the controller and go on '
       '(from a VM/edge port through storm_ctl); nothing is learned from tunnels, nor the gateway '
       'MAC from anywhere'),
    _t('storm_ctl', 22, {'learning_switch': (100, 100)}, ['in_port'], [], ['arp_rsp'], ('goto', 'arp_rsp'),
       'storm control for unlearned sources of a VM/edge port: their frames go on through the '
       'port\'s own meter, after their copy to the controller left (learn\'s clone), so the meter '
       'bounds what a flood of forged sources leaks into the fabric, never how soon the '
       'controller hears of it'),
    _t('punt', 25, {'learning_switch': (100, 100)}, ['in_port'], [], [], ('drop',),
       'the copy of an unknown source to the controller, through its port\'s meter: reached only '
       'from learn by clone(resubmit), so a meter drop here drops the copy, never the frame'),
    _t('arp_rsp', 30, {'anycast_gateway': (100, 250)},
       ['in_port', 'vlan_vid', 'eth_type', 'arp_op', 'arp_tpa', R.NETWORK, R.TENANT],
       _ARP_REWRITE + ('vlan_vid',), ['acl_in'], ('goto', 'acl_in'),
       'ARP answered from flows, back out of the VM port: the anycast gateway and ARP suppression '
       '(every located nic of the network)'),
    _t('acl_in', 40, {}, ['eth_type', 'ip_proto', 'ipv4_src', 'ipv4_dst', R.TENANT, R.ZONE],
       [], ['l3'], ('goto', 'l3'),
       'ingress security rules with conntrack (microsegmentation issue)'),
    _t('l3', 50, {'underlay_routing': (1, 100), 'anycast_gateway': (200, 350)},
       ['eth_type', 'eth_dst', 'vlan_vid', 'ipv4_dst', 'ip_proto', 'icmpv4_type', 'nw_ttl', R.TENANT],
       ['eth_src', 'eth_dst', 'ipv4_src', 'ipv4_dst', 'icmpv4_type', 'vlan_vid', 'tun_ipv4_dst', R.NETWORK, R.ECMP,
        R.OUT_PORT],
       ['ecmp', 'l2_lookup', 'acl_out'], ('goto', 'l2_lookup'),
       'routing: the underlay between racks on physical switches (a VTEP of this rack -> its '
       'hypervisor, another rack -> toward its leaf); on hypervisors each tenant\'s VRF (the '
       'anycast gateway: echo, TTL expiry, a host route per nic into its network, drops)'),
    _t('ecmp', 51, {'underlay_routing': (100, 100)},
       ['eth_type', 'ipv4_dst', R.ECMP], [R.OUT_PORT], ['acl_out'], ('drop',),
       'the equal-cost next hop picked by the multipath hash in reg0'),
    _t('l2_lookup', 60,
       {'learning_switch': (100, 100), 'vlan_portgroups': (150, 150), 'vxlan_overlay': (150, 150),
        'anycast_gateway': (170, 170)},
       ['vlan_vid', 'eth_dst'], [R.OUT_PORT, 'tun_ipv4_dst'], ['acl_out'], ('flood', 'acl_out'),
       'destination MAC -> out-port (bound nics, learned MACs, remote overlay members with their '
       'VTEP); a miss sets the flood out-port'),
    _t('acl_out', 70, {'microseg': (100, 300)},
       [R.OUT_PORT, R.TENANT, R.ZONE, 'eth_type', 'eth_dst', 'ip_proto', 'ipv4_src', 'ipv4_dst', 'tcp_dst', 'udp_dst',
        'icmpv4_type', 'ct_state', 'ct_mark', 'conj_id'],
       [], ['output'], ('goto', 'output'),
       'the tenant\'s security rules where the destination is, stateful (conntrack in the tenant\'s zone, '
       'conjunctions): apps/microseg.py'),
    # bonds and in_port: controller/bonds.py drops a frame from a bond chosen for that bond
    _t('output', 80,
       {'learning_switch': (100, 110), 'vxlan_overlay': (150, 150), 'underlay_routing': (120, 120),
        PIPELINE: (1, 1), 'bonds': (200, 200)},
       [R.OUT_PORT, 'vlan_vid', 'in_port'], ['vlan_vid', 'tunnel_id'], ['flood'], ('drop',),
       'emission: the out-port as it carries the frame (tag popped on access ports, VNI on the '
       'tunnel, tagged on trunks); the flood out-port goes to flood'),
    # learning_switch up to 101: controller/bonds.py adds a split-horizon copy of a flood flow
    # that reaches a bond, one priority up, for frames from that bond (same cookie)
    _t('flood', 90, {'learning_switch': (100, 101), 'vxlan_overlay': (100, 110)},
       ['vlan_vid', 'in_port'], ['vlan_vid', 'tunnel_id', 'tun_ipv4_dst'], [], ('drop',),
       'BUM delivery per VLAN: the loop-free flood tree, local members, head-end replication'),
)

BY_NAME = {t.name: t for t in TABLES}
BY_ID = {t.id: t for t in TABLES}
FIRST = TABLES[0].name


def _validate_declarations() -> None:
    for t in TABLES:
        for app in t.bands:
            assert app == PIPELINE or app in cookies.APPS, 'table %s: unknown app %s' % (t.name, app)
        for n in t.next + ((t.miss[1],) if len(t.miss) > 1 else ()):
            assert n in BY_NAME and BY_NAME[n].id > t.id, 'table %s: bad next table %s' % (t.name, n)


_validate_declarations()


def table_id(name: str) -> int:
    t = BY_NAME.get(name)
    if t is not None:
        return t.id
    if name.startswith('table') and name[5:].isdigit():     # a table this pipeline does not
        return int(name[5:])                                 # declare (a stale flow to delete)
    raise KeyError(name)


def table_name(tid: int) -> str:
    """Name of a table id; undeclared tables get a placeholder (their flows are stale)."""
    t = BY_ID.get(tid)
    return t.name if t else 'table%d' % tid


class PipelineError(ValueError):
    pass


def miss_flows() -> set[Flow]:
    """Every table's priority-0 flow, from its declared miss action, plus the output stage's
    hand-over of the flood out-port to flood."""
    out = set()
    for t in TABLES:
        c = cookies.make(PIPELINE, 0, 'miss:%s' % t.name)
        kind = t.miss[0]
        if kind == 'drop':
            out.add(Flow.make(t.name, 0, cookie=c))
        elif kind == 'goto':
            out.add(Flow.make(t.name, 0, goto=t.miss[1], cookie=c))
        elif kind == 'controller':
            out.add(Flow.make(t.name, 0, actions=[('output', CONTROLLER)], goto=t.miss[1], cookie=c))
        elif kind == 'flood':
            out.add(Flow.make(t.name, 0, actions=[('set_field', R.OUT_PORT, R.FLOOD)], goto=t.miss[1], cookie=c))
    out.add(Flow.make('output', 1, {R.OUT_PORT: R.FLOOD}, goto='flood',
                      cookie=cookies.make(PIPELINE, 0, 'flood')))
    return out


def _written(action: tuple) -> str | None:
    if action[0] == 'set_field':
        return action[1]
    if action[0] == 'move':
        return action[2]
    if action[0] in ('push_vlan', 'pop_vlan'):
        return 'vlan_vid'
    if action[0] == 'multipath':
        return action[2]
    if action[0] == 'set_in_port':     # controller/bonds.py folds a bond's members in port_sec
        return 'in_port'
    return None


def check(flow: Flow, deep: bool = True) -> None:
    """Raise PipelineError if the flow breaks its table's declaration; deep: also its actions'
    forms and OVS's match prerequisites (controller.pipeline.actions.check_flow: ~3 us a flow,
    so the incremental engine leaves it to the full compile that tests and dry runs use)."""
    t = BY_NAME.get(flow.table)
    if t is None:
        raise PipelineError('undeclared table %r in %s' % (flow.table, flow))
    for k, _ in flow.match:
        if k not in t.matches:
            bad = sorted({k for k, _ in flow.match} - t.matches)
            raise PipelineError('table %s does not allow match on %s: %s' % (t.name, bad, flow))
    app = cookies.app_of(flow.cookie)
    band = (0, 0) if app == PIPELINE and flow.priority == 0 else t.bands.get(app)
    if band is None:
        raise PipelineError('app %s may not write table %s: %s' % (app, t.name, flow))
    if not band[0] <= flow.priority <= band[1]:
        raise PipelineError('app %s writes table %s at priority %d, outside its band %d..%d: %s'
                            % (app, t.name, flow.priority, band[0], band[1], flow))
    for a in flow.actions:
        w = _written(a)
        if w is not None and w not in t.sets:
            writes = {w for w in map(_written, flow.actions) if w is not None}
            raise PipelineError('table %s may not write %s: %s' % (t.name, sorted(writes - t.sets), flow))
    if flow.goto is not None and flow.goto not in t.next:
        raise PipelineError('table %s may not go to %s (goto must go forward, to %s): %s'
                            % (t.name, flow.goto, ', '.join(t.next) or 'nothing', flow))
    if not deep:
        return
    try:
        actions.check_flow(flow)            # well-formed actions, and OVS's match prerequisites
    except ValueError as e:
        raise PipelineError(str(e)) from None
