"""One controller and one lab with tenants applied: the start-up and tear-down the data path
benchmarks share.

    with tenant_lab(work, {'acl': ACL_YAML, 'open': OPEN_YAML}) as (lab, ctl):
        failed = unreachable(lab, [('c1', 's3')])

The controller starts on a free OpenFlow port listening on every address (the hypervisors
reach it over the lab's management LAN), the tenants are applied with `dvsctl apply` before
the lab comes up, and on the way out the lab goes down before the controller stops: both
only what this run started.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

FABRIC = Path(__file__).resolve().parent.parent / 'examples' / 'fabric.yaml'


@contextmanager
def tenant_lab(work: Path, tenants: dict[str, str], fabric: Path = FABRIC, timeout: float = 60):
    """Yield (lab, ctl): a running Lab of `fabric` whose VMs are `tenants`' workloads (name ->
    tenant YAML text, written under work), programmed by a fresh controller."""
    from bench.apply import run_dvsctl
    from bench.overlay import started
    from mininet_topos import Lab
    paths = []
    for name, text in tenants.items():
        path = work / (name + '.yaml')
        path.write_text(text)
        paths.append(str(path))
    ctl, port = started(work)
    try:
        run_dvsctl(ctl, 'apply', *paths)          # raises on failure
        lab = Lab(str(fabric), ofp_port=port, tenants=paths)
        try:
            lab.up(timeout=timeout)
            yield lab, ctl
        finally:
            lab.down()
    finally:
        ctl.stop()


def unreachable(lab, pairs, timeout: float = 30, both_ways: bool = True) -> list[str]:
    """The pairs ('a -> b') that get no ping reply within timeout each."""
    from tests.support import wait_until
    failed = []
    for a, b in pairs:
        for x, y in ((a, b), (b, a)) if both_ways else ((a, b),):
            try:
                wait_until(lambda: lab.ping(x, y), timeout, 0.2, '%s reaches %s' % (x, y))
            except AssertionError:
                failed.append('%s -> %s' % (x, y))
    return failed


def alternating_rounds(kinds, runs: int, measure) -> list[dict]:
    """runs rounds of {kind: measure(kind)} for every kind, each round starting with the next
    kind (so each goes first as often as the others)."""
    kinds, rounds = list(kinds), []
    for i in range(runs):
        order = kinds[i % len(kinds):] + kinds[:i % len(kinds)]
        rounds.append({kind: measure(kind) for kind in order})
    return rounds
