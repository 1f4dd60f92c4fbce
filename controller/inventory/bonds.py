"""Bonds as OVSDB describes them: which Ports are bonds, their members, link and LACP state.

A BondWatcher keeps a python-ovs IDL replica of one ovsdb-server's Bridge/Port/Interface
tables and reports every bond (a Port with two or more Interfaces) whenever one changes:

- the physical switches' OVSDB (the root OVS in the lab, unix:/var/run/openvswitch/db.sock):
  the leaf end of each bonded hypervisor; its members are separate OpenFlow ports there,
  and controller/bonds.py makes them one;
- each hypervisor's OVSDB (tcp:<mgmt ip>:6640, the one BindingWatcher follows): br-phy's end.

Both feed `dvsctl show uplinks` through uplink_status(), and /metrics through end_degraded().
"""
from __future__ import annotations

import dataclasses

from controller.inventory.ovsdb import OvsdbWatcher, _one

DEFAULT_SWITCH_OVSDB = 'unix:/var/run/openvswitch/db.sock'


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    ofport: int | None
    link_up: bool
    lacp_current: bool | None        # None: LACP is off on this bond


@dataclasses.dataclass(frozen=True)
class Bond:
    bridge: str
    name: str
    mode: str                        # bond_mode (balance-tcp, balance-slb, active-backup)
    lacp: str                        # active | passive | off
    members: tuple[Member, ...]

    @property
    def ofports(self) -> tuple[int, ...]:
        return tuple(sorted(m.ofport for m in self.members if m.ofport and m.ofport > 0))

    @property
    def negotiated(self) -> bool:
        """LACP runs and some member has a current partner (OVS's lacp_status: negotiated)."""
        return self.lacp != 'off' and any(m.lacp_current for m in self.members)

    def usable(self, m: Member) -> bool:
        """A member that may carry traffic: link up and, with LACP, a current partner."""
        return m.link_up and (self.lacp == 'off' or bool(m.lacp_current))

    def as_dict(self) -> dict:
        return {'bridge': self.bridge, 'name': self.name, 'mode': self.mode, 'lacp': self.lacp,
                'members': [{'name': m.name, 'ofport': m.ofport, 'link': 'up' if m.link_up else 'down',
                             'lacp': _lacp_word(self, m)} for m in self.members]}


def _lacp_word(bond: Bond, m: Member) -> str:
    if bond.lacp == 'off':
        return 'off'
    return 'current' if m.lacp_current else ('no-partner' if m.link_up else 'down')


def read_bonds(idl, before=None) -> dict[str, tuple[int | None, dict[str, Bond], tuple[str, ...]]]:
    """bridge name -> (its datapath id, {bond name: Bond}, its controller targets) for every
    bridge with a bond.  A bridge's datapath id and a member's link and LACP state are status
    columns ovs-vswitchd writes, not kept by ovsdb-server across its restart (ephemeral):
    while one is empty, it keeps what `before` (the last reading) said, so a database restart
    is not a bond flap."""
    out = {}
    for br in idl.tables['Bridge'].rows.values():
        bonds = {}
        old = ((before or {}).get(br.name) or (None, {}, ()))[1]
        for port in br.ports:
            if len(port.interfaces) < 2:
                continue
            was = {m.name: m for m in old[port.name].members} if port.name in old else {}
            members = tuple(sorted((_member(i, port, was.get(i.name)) for i in port.interfaces),
                                   key=lambda m: m.name))
            bonds[port.name] = Bond(br.name, port.name, _one(port.bond_mode) or 'active-backup',
                                    _one(port.lacp) or 'off', members)
        if bonds:
            dpid = _one(br.datapath_id)          # ephemeral too: empty until vswitchd writes it
            was_dpid = ((before or {}).get(br.name) or (None,))[0]
            targets = tuple(sorted(c.target for c in br.controller))
            out[br.name] = (int(dpid, 16) if dpid else was_dpid, bonds, targets)
    return out


def _member(i, port, was: Member | None) -> Member:
    link, current = _one(i.link_state), _one(i.lacp_current)
    link_up = was.link_up if link is None and was is not None else link == 'up'
    if (port.lacp or ['off'])[0] == 'off':
        lacp_current = None
    elif current is None and was is not None:
        lacp_current = was.lacp_current
    else:
        lacp_current = bool(current)
    return Member(i.name, _one(i.ofport), link_up, lacp_current)


class BondWatcher(OvsdbWatcher):
    """Follow one OVSDB; call on_change({bridge: (dpid, {bond: Bond}, targets)}) after every change."""

    COLUMNS = {'Bridge': ['name', 'ports', 'datapath_id', 'controller'], 'Controller': ['target'],
               'Port': ['name', 'interfaces', 'bond_mode', 'lacp'],
               'Interface': ['name', 'ofport', 'link_state', 'lacp_current']}
    THREAD = 'bonds'
    RETRY = 2.0

    def read(self, idl):
        # after an ovsdb-server restart the first reading lacks the members' status until
        # ovs-vswitchd writes it again: keep what the last reading said (read_bonds)
        return read_bonds(idl, self._last)


# ---- what `dvsctl show uplinks` says about one hypervisor --------------------------------

OK, DEGRADED, DOWN, NO_LACP, MISCONFIGURED, UNKNOWN, SINGLE = (
    'ok', 'degraded', 'down', 'no-lacp-partner', 'misconfigured', 'unknown', 'single')
BONDED_STATUSES = (OK, DEGRADED, DOWN, NO_LACP, MISCONFIGURED, UNKNOWN)     # all but SINGLE


def uplink_status(declared: int, kind: str, leaf: Bond | None, hv: Bond | None) -> tuple[str, list[str]]:
    """(status, problems) of a hypervisor's uplink bond from both ends' OVSDB views.

    ok: every declared member usable on both ends; degraded: some but not all; down: none;
    no-lacp-partner: links are up but an end hears no LACP from the other (the other end does
    not speak LACP, or is not a bond): the bond is not used, and says so."""
    if declared < 2:
        return SINGLE, []
    problems = []
    if hv is None:
        problems.append('br-phy has no bond (its OVSDB is unread or it is cabled as one port)')
    if leaf is None:
        problems.append('no bond found on the leaf port LLDP found it on')
    if hv is None or leaf is None:
        return (UNKNOWN if hv is None and leaf is None else MISCONFIGURED), problems
    want_lacp = kind == 'lacp'
    for end, b in (('leaf', leaf), ('hypervisor', hv)):
        if (b.lacp != 'off') != want_lacp:
            problems.append('%s bond %s has lacp=%s, the fabric says bond: %s' % (end, b.name, b.lacp, kind))
        if len(b.members) != declared:
            problems.append('%s bond %s has %d members, the fabric says uplinks: %d'
                            % (end, b.name, len(b.members), declared))
    silent = [m.name for b in (leaf, hv) for m in b.members
              if b.lacp != 'off' and m.link_up and not m.lacp_current]
    if silent:
        problems.append('no LACP from the partner on %s' % ', '.join(silent))
    usable = min(sum(map(leaf.usable, leaf.members)), sum(map(hv.usable, hv.members)))
    if usable == 0:
        status = NO_LACP if silent else DOWN
    elif usable < declared or problems:
        status = DEGRADED
    else:
        status = OK
    down = [m.name for b in (leaf, hv) for m in b.members if not m.link_up]
    if down:
        problems.append('link down: %s' % ', '.join(down))
    return status, problems


def end_degraded(declared: int, kind: str, b: Bond) -> bool:
    """One end of a hypervisor's uplink bond is degraded when it has fewer members than the
    fabric declares, a member cannot carry traffic (link down, or LACP on and no current
    partner), or it runs LACP where the fabric says otherwise (then its partner hears none)."""
    return (len(b.members) < declared or not all(map(b.usable, b.members))
            or (b.lacp != 'off') != (kind == 'lacp'))
