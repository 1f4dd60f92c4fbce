"""Capabilities composed the Ryu way, under ryu-manager (ryu 4.34):

    OPENDVS_FABRIC=fabric.yaml ryu-manager controller.ofp apps.learning_switch apps.topology

is a fabric-aware learning switch and nothing else: on the scratch fabric (two spines, two
leaves, a host on each leaf) the hosts ping each other and every flow on every switch is
learning_switch's, topology's or a pipeline miss (no vlan_portgroups, vxlan_overlay or
underlay_routing cookie; the leaves would carry underlay gateway flows with every app)."""
from __future__ import annotations

import pytest

from controller.pipeline import cookies
from tests.ovs.scratch import ScratchFabric
from tests.ryu.test_ryu_manager import RyuManager
from tests.support import dump_flows, free_port, wait_until

SWITCHES = ('spine1', 'spine2', 'leaf1', 'leaf2')
L2 = {'learning_switch', 'topology', 'pipeline'}


class Composed(RyuManager):
    def __init__(self, *a, apps=(), **kw):
        super().__init__(*a, **kw)
        self.apps = list(apps)

    def argv(self) -> list[str]:
        return super().argv() + self.apps


@pytest.fixture
def fabric(tmp_path):
    with ScratchFabric(tmp_path, free_port()) as fab:
        yield fab


def apps_on(fab, sw) -> set:
    return {cookies.app_of(f['cookie']) or hex(f['cookie']) for f in dump_flows(fab.br(sw))}


@pytest.mark.parametrize('apps', [['apps.learning_switch', 'apps.topology'],
                                  ['apps.learning_switch']])        # topology comes as a requirement
def test_ryu_manager_runs_only_the_named_capabilities(fabric, tmp_path, apps):
    ctl = Composed(fabric.fabric, tmp_path, ofp='127.0.0.1:%d' % fabric.port, apps=apps).start()
    try:
        assert ctl.argv()[-len(apps) - 1:] == ['controller.ofp'] + apps
        wait_until(lambda: fabric.ping('h1', '10.99.0.2'), 40, what='h1 pings h2 under ryu-manager')
        wait_until(lambda: all(apps_on(fabric, sw) == L2 for sw in SWITCHES), 20,
                   what='learning_switch, topology and pipeline flows only')
        assert fabric.ping('h2', '10.99.0.1')
        text = ctl.text()
        assert 'instantiating app apps.topology of TopologyApp' in text
        assert 'instantiating app apps.learning_switch of LearningSwitchApp' in text
        assert 'apps.vlan_portgroups' not in text and 'apps.underlay_routing' not in text
        assert 'capabilities: learning_switch, topology\n' in text
        assert 'Traceback' not in text
    finally:
        ctl.stop()
