"""What a policy change did, for the event log (controller/eventlog.py): who applied it, which
tenants, rules and fabric entries changed, and how many flows each switch gained and lost.

PolicyService (controller/api/service.py) makes every live change through apply(): pushes
and deletes from the API, and the fabric reload on SIGHUP.  Dry runs change nothing and are
not logged.
"""
from __future__ import annotations

import dataclasses

from controller.policy.model import Policy


def apply(core, candidate: Policy, by: str | None) -> dict:
    """core.apply_policy(candidate), then an `apply` event (with `error` if a switch did not
    converge: the policy is live all the same, and the switch keeps being retried)."""
    old, events = core.policy, getattr(core, 'events', None)
    try:
        diffs = core.apply_policy(candidate)
    except RuntimeError as e:
        if events is not None:
            events.record('apply', by=by or 'unknown', **changes(old, candidate), switches={}, error=str(e))
        raise
    if events is not None:
        events.record('apply', by=by or 'unknown', **changes(old, candidate),
                      switches={name: {'add': len(d.add), 'delete': len(d.delete)}
                                for name, d in sorted(diffs.items()) if d.add or d.delete})
    return diffs


def refused(core, input: str, by: str | None, reason: str, **fields) -> None:
    events = getattr(core, 'events', None)
    if events is not None:
        events.record('refused', input=input, by=by or 'unknown', reason=reason, **fields)


def changes(old: Policy, new: Policy) -> dict:
    """The tenants added, removed and changed, the rule sets changed, and the fabric entries
    a reload added, removed or changed."""
    before, after = old.tenants, new.tenants
    changed = sorted(n for n in set(before) & set(after) if before[n] != after[n])
    rules = {n: r for n in changed for r in [rule_changes(before[n], after[n])] if r}
    return {'tenants_added': sorted(set(after) - set(before)),
            'tenants_removed': sorted(set(before) - set(after)),
            'tenants_changed': changed, 'rules': rules,
            'fabric': fabric_changes(old.fabric, new.fabric)}


def rule_changes(old, new) -> dict:
    """{added, removed, changed: [rule names], default: 'allow -> deny'}, the keys that apply;
    a rule that only moved in its file is not a change."""
    a = {r.name: dataclasses.replace(r, line=0) for r in old.security.rules}
    b = {r.name: dataclasses.replace(r, line=0) for r in new.security.rules}
    out = {'added': sorted(set(b) - set(a)), 'removed': sorted(set(a) - set(b)),
           'changed': sorted(n for n in set(a) & set(b) if a[n] != b[n])}
    out = {k: v for k, v in out.items() if v}
    if old.security.default != new.security.default:
        out['default'] = '%s -> %s' % (old.security.default, new.security.default)
    return out


def fabric_changes(old, new) -> dict:
    """{switches_added, hypervisors_removed, ..., settings: [names]}, the keys that apply."""
    out = {}
    for what in ('switches', 'hypervisors'):
        a, b = getattr(old, what), getattr(new, what)
        out[what + '_added'] = sorted(set(b) - set(a))
        out[what + '_removed'] = sorted(set(a) - set(b))
        out[what + '_changed'] = sorted(n for n in set(a) & set(b) if a[n] != b[n])
    out['links_added'] = ['%s-%s' % l for l in sorted(set(new.links) - set(old.links))]
    out['links_removed'] = ['%s-%s' % l for l in sorted(set(old.links) - set(new.links))]
    out['settings'] = sorted(f.name for f in dataclasses.fields(old) if f.name not in
                             ('source', 'switches', 'hypervisors', 'links')
                             and getattr(old, f.name) != getattr(new, f.name))
    return {k: v for k, v in out.items() if v}
