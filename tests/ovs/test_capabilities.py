"""Capabilities composed on the command line run alone, on real OVS (the scratch fabric: two
spines, two leaves, a host on each leaf).

`opendvs-controller --apps apps.learning_switch,apps.topology` (ryu-manager's
`controller.ofp apps.learning_switch apps.topology`, see tests/ryu) gives a fabric-aware
learning switch and nothing else: every flow on every switch is learning_switch's,
topology's or a pipeline miss, and the hosts ping each other.  topology alone forwards
nothing; the default (no --apps) adds the other apps' flows (the leaves' underlay gateway),
and a restart with fewer apps removes them."""
from __future__ import annotations

import pytest

from controller.pipeline import cookies
from tests.ovs.scratch import ScratchFabric
from tests.support import ControllerProcess, dump_flows, free_port, wait_until

SWITCHES = ('spine1', 'spine2', 'leaf1', 'leaf2')
L2 = {'learning_switch', 'topology', 'pipeline'}


@pytest.fixture
def fabric(tmp_path):
    with ScratchFabric(tmp_path, free_port()) as fab:
        yield fab


def apps_on(fab, sw) -> set:
    """The apps whose cookies the flows on one switch carry."""
    return {cookies.app_of(f['cookie']) or hex(f['cookie']) for f in dump_flows(fab.br(sw))}


def run(fab, workdir, *args) -> ControllerProcess:
    workdir.mkdir()
    return ControllerProcess(fab.fabric, workdir, args=args).start()


def test_only_the_named_capabilities_program_the_fabric(fabric, tmp_path):
    # none named: every app runs, and the leaves get the routed underlay's gateway flows
    ctl = run(fabric, tmp_path / 'all')
    try:
        wait_until(lambda: all('underlay_routing' in apps_on(fabric, sw) for sw in ('leaf1', 'leaf2')), 40,
                   what='underlay_routing flows on the leaves')
        assert 'capabilities: learning_switch, topology, vlan_portgroups, vxlan_overlay, anycast_gateway, microseg, ' \
               'underlay_routing, port_security (none named: all of them)' in ctl.text()
        wait_until(lambda: fabric.ping('h1', '10.99.0.2'), 40, what='h1 pings h2 (every app)')
    finally:
        ctl.stop()

    # restarted as a fabric-aware learning switch and nothing else: the other apps' flows go
    ctl = run(fabric, tmp_path / 'l2', '--apps', 'apps.learning_switch,apps.topology')
    try:
        wait_until(lambda: all(apps_on(fabric, sw) == L2 for sw in SWITCHES), 40,
                   what='learning_switch, topology and pipeline flows only')
        wait_until(lambda: fabric.ping('h1', '10.99.0.2'), 40, what='h1 pings h2 (learning_switch, topology)')
        assert fabric.ping('h2', '10.99.0.1')
        assert all(apps_on(fabric, sw) == L2 for sw in SWITCHES)
        assert 'capabilities: learning_switch, topology\n' in ctl.text()
        assert 'Traceback' not in ctl.text()
    finally:
        ctl.stop()

    # topology alone: LLDP to the controller and the pipeline's misses, nothing forwards
    ctl = run(fabric, tmp_path / 'topology', '--apps', 'topology')
    try:
        wait_until(lambda: all(apps_on(fabric, sw) == {'topology', 'pipeline'} for sw in SWITCHES), 40,
                   what='topology and pipeline flows only, on every switch')
        assert 'capabilities: topology\n' in ctl.text()
        assert not fabric.ping('h1', '10.99.0.2', count=2)
    finally:
        ctl.stop()

    # learning_switch named alone: the framework loads topology with it (and logs it), the same flows
    ctl = run(fabric, tmp_path / 'ls', '--apps', 'learning_switch')
    try:
        wait_until(lambda: 'capabilities: learning_switch, topology\n' in ctl.text(), 20,
                   what='topology loaded for learning_switch')
        assert 'loading app apps.topology' in ctl.text()
        wait_until(lambda: fabric.ping('h1', '10.99.0.2'), 40, what='h1 pings h2 (learning_switch)')
        assert all(apps_on(fabric, sw) == L2 for sw in SWITCHES)
    finally:
        ctl.stop()
