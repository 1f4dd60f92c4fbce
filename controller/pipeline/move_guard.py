"""PROPOSAL (issue 10, not wired in): guard flows that make OVS re-create, not modify in place,
the megaflows of a destination whose location changed.

Why: OVS 3.1.0-3.1.2 (Debian 12 ships 3.1.0) userspace datapath modifies a megaflow by looking
its key up in the classifier instead of by its UFID (fixed upstream in 3.0.5/3.1.3,
"dpif-netdev: Fix dpif_netdev_flow_put").  When an overlapping megaflow sits in an earlier
subtable, the revalidator's MODIFY lands on that one, and the real one keeps its old actions
(for opendvs: recirculating into the old frozen state, reg15 = the departed port, dropped)
for as long as packets keep it alive; `ovs-appctl revalidator/purge` is the only cure.
tests/ovs/test_stale_megaflow.py reproduces it.

The revalidator deletes a megaflow instead of modifying it when the new translation needs a
field the megaflow left wildcarded.  So when an l2_lookup entry's actions change (its MAC
moved), the same bundle also adds, one priority higher, a copy of the new entry that also
matches nw_ttl=0 (IPv4 and IPv6): a field no megaflow through l2_lookup has matched.  Every
translation to that MAC now unwildcards nw_ttl, every old megaflow is deleted and the next
packet makes a fresh one.  The guard has the new entry's actions: a TTL-0 packet is treated as
any other.  It need not stay: it is not in the desired set, so the next full converge deletes it
(harmless: the masks only narrow).

Limits: it covers IPv4/IPv6 (non-IP megaflows, e.g. ARP, are still modified in place; they do
not recirculate, but the same OVS bug can misdirect their modify too); and it forces a delete
only if no live megaflow for that MAC already matches the guard field, so a guard left from a
previous move must be gone (or another field used: `field`) before the next move.  The real
fix is OVS >= 3.1.3.
"""
from __future__ import annotations

from typing import Iterable

from controller.pipeline.flow import Flow

GUARDED_TABLES = ('l2_lookup',)


def move_guards(delete: Iterable[Flow], add: Iterable[Flow], installed: Iterable[Flow],
                field: str = 'nw_ttl', tables: Iterable[str] = GUARDED_TABLES) -> list[Flow]:
    """Guard flows to append to a bundle that deletes `delete` and adds `add` on a switch
    holding `installed`: one pair (IPv4, IPv6) per added entry of a guarded table whose match
    was installed before with other actions (replaced in place, or deleted and re-added at
    another priority) -- a destination that moved."""
    tables = set(tables)
    before = {}
    for f in installed:
        if f.table in tables:
            before.setdefault((f.table, f.match), []).append(f)
    guards = []
    for f in add:
        if f.table not in tables:
            continue
        old = before.get((f.table, f.match), ())
        if not any((o.actions, o.goto) != (f.actions, f.goto) for o in old):
            continue
        match = f.match_dict()
        if 'eth_type' in match or field in match:
            continue                               # already protocol-specific: leave it alone
        for eth_type in (0x0800, 0x86dd):
            guards.append(Flow.make(f.table, f.priority + 1, {**match, 'eth_type': eth_type, field: 0},
                                    f.actions, f.goto, cookie=f.cookie))
    return guards
