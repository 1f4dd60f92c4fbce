"""The pipeline: every OpenFlow table declared once, by name, in order, with its owner and
the match fields its flows may use (Faucet's faucet_pipeline.py idea, OVN's stage names).

A flow that uses an undeclared table or a field its table does not allow is a bug; check()
catches it (unit tests run every compiler's output through it).  Ids leave gaps so later
stages (acl, l3, tunnel) slot in without renumbering what is deployed.
"""
from __future__ import annotations

import dataclasses

from controller.pipeline import cookies
from controller.pipeline.flow import Flow


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    id: int
    owners: tuple[str, ...]          # apps allowed to put flows here (first is the owner)
    matches: frozenset[str]          # match fields flows in this table may use
    doc: str


def _t(name, tid, owners, matches, doc):
    return Table(name, tid, tuple(owners), frozenset(matches), doc)


TABLES = (
    _t('classify', 0, ['learning_switch', 'topology', 'underlay_routing', 'vxlan_overlay', 'bonds'],
       ['in_port', 'vlan_vid', 'eth_type', 'eth_dst', 'arp_op', 'arp_tpa', 'tunnel_id', 'tun_ipv4_src'],
       'admission: which ports take which VLANs; untagged frames get the native tag; LLDP to '
       'controller; routed underlay traffic (to the router MAC, ARP for a rack gateway) to l3'),
    _t('learn', 10, ['learning_switch', 'vlan_portgroups', 'vxlan_overlay'],
       ['in_port', 'vlan_vid', 'eth_src'],
       'source MAC learning: known (vlan, src, port) go on; unknown are copied to the controller'),
    _t('l2', 20, ['learning_switch', 'vlan_portgroups', 'vxlan_overlay'],
       ['vlan_vid', 'eth_dst'],
       'destination MAC lookup: bound nics and learned MACs -> their port; miss -> flood'),
    _t('flood', 30, ['learning_switch', 'vxlan_overlay'],
       ['vlan_vid', 'in_port'],
       'BUM delivery on the loop-free flood tree of the VLAN'),
    _t('l3', 40, ['underlay_routing'],
       ['eth_type', 'ipv4_dst'],
       'underlay routing between racks: a VTEP of this rack -> its hypervisor; another rack -> toward its leaf'),
    _t('ecmp', 41, ['underlay_routing'],
       ['eth_type', 'ipv4_dst', 'reg0'],
       'equal-cost next hop chosen by the multipath hash in reg0'),
)

BY_NAME = {t.name: t for t in TABLES}
BY_ID = {t.id: t for t in TABLES}
FIRST = TABLES[0].name


def table_id(name: str) -> int:
    return BY_NAME[name].id


def table_name(tid: int) -> str:
    """Name of a table id; undeclared tables get a placeholder (their flows are stale)."""
    t = BY_ID.get(tid)
    return t.name if t else 'table%d' % tid


class PipelineError(ValueError):
    pass


def check(flow: Flow) -> None:
    """Raise PipelineError if the flow breaks its table's declaration."""
    t = BY_NAME.get(flow.table)
    if t is None:
        raise PipelineError('undeclared table %r in %s' % (flow.table, flow))
    bad = {k for k, _ in flow.match} - t.matches
    if bad:
        raise PipelineError('table %s does not allow match on %s: %s' % (t.name, sorted(bad), flow))
    app = cookies.app_of(flow.cookie)
    if app not in t.owners:
        raise PipelineError('app %s may not write table %s: %s' % (app, t.name, flow))
    if flow.goto is not None:
        nxt = BY_NAME.get(flow.goto)
        if nxt is None or nxt.id <= t.id:
            raise PipelineError('goto must go forward to a declared table: %s' % flow)
