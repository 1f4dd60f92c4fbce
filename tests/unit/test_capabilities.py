"""Capabilities composed the Ryu way: the apps named are the apps that compile flows.

Controller(apps=...) compiles only those apps' flows (plus the pipeline's miss flows), in the
full compile and the incremental one; dependencies are added and logged; an unknown app is
refused.  The framework side: ryu-manager's (here os-ken's) AppManager finds an app class in
every apps/ module, loads what it requires, and the shared context is the registry of what
was instantiated."""
from __future__ import annotations

import logging

import pytest

from controller import capabilities, core
from controller.capabilities import CapabilityError, resolve
from controller.core import Controller
from controller.inventory.model import Binding
from controller.pipeline import cookies
from controller.pipeline.incremental import ALL
from controller.policy.model import Policy
from tests.unit.builders import LEAF1, FakeSwitch, make_tenant
from tests.unit.test_core import MAC_WEB1, WEB1, acme, connect, leaf1_up
from apps import topology

OVERLAY_NIC = 'initech/ov1/nic0'


def tenants():
    return [acme(), make_tenant('initech', {'apps': {'vni': 5020}},
                                {'ov1': [('apps', '02:00:50:00:00:01')], 'ov2': [('apps', '02:00:50:00:00:02')]})]


def scene(fabric, apps=None):
    """leaf1 and hv1 (port 3 of leaf1) with a port-group VM and an overlay VM bound on hv1,
    and another member of that overlay network on hv3."""
    ctl = Controller(Policy(fabric).with_tenants(tenants()), apps=apps)
    leaf1_up(ctl)
    hv, hv3 = fabric.hypervisors['hv1'].dpid, fabric.hypervisors['hv3'].dpid
    for d in (hv, hv3):
        connect(ctl, d, [(1, 'int-to-phy', True), (2, 'tap-a', True), (3, 'tap-b', True), (4, 'vxlan0', True)])
    ctl.packet_in(LEAF1, 3, 0, topology.lldp_frame(hv, 1))
    ctl.bindings_changed(hv, {2: Binding('tap-a', WEB1, MAC_WEB1),
                              3: Binding('tap-b', OVERLAY_NIC, '02:00:50:00:00:01')}, '02:00:00:00:01:11')
    ctl.bindings_changed(hv3, {3: Binding('tap-b', 'initech/ov2/nic0', '02:00:50:00:00:02')}, '02:00:00:00:01:13')
    return ctl, hv


def apps_of(flows) -> set:
    return {cookies.app_of(f.cookie) for f in flows}


def test_resolve_adds_dependencies_logs_them_and_refuses_unknown_apps(caplog):
    assert resolve(None) == tuple(m.APP for m in core.APPS)
    assert set(resolve(None)) == {'learning_switch', 'topology', 'vlan_portgroups', 'vxlan_overlay',
                                  'anycast_gateway', 'microseg', 'underlay_routing', 'port_security'}
    assert resolve(['learning_switch', 'topology']) == ('learning_switch', 'topology')
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with caplog.at_level(logging.WARNING, 'opendvs.capabilities'):
        assert resolve(['apps.vlan_portgroups']) == ('learning_switch', 'topology', 'vlan_portgroups')
    assert 'app vlan_portgroups needs learning_switch: running it too' in caplog.text
    assert resolve(['vxlan_overlay']) == ('learning_switch', 'topology', 'vxlan_overlay', 'underlay_routing')
    assert resolve(['topology']) == ('topology',)
    assert resolve(['port_security']) == ('learning_switch', 'topology', 'port_security')
    assert resolve(['anycast_gateway']) == ('learning_switch', 'topology', 'vlan_portgroups', 'vxlan_overlay',
                                            'anycast_gateway', 'underlay_routing')
    for bad in (['nope'], ['learning_switch', 'nope'], ['apps']):
        with pytest.raises(CapabilityError, match='unknown app.*the apps are learning_switch'):
            resolve(bad)


def test_a_controller_built_with_a_subset_compiles_only_those_apps_flows_and_the_misses(fabric):
    full, hv = scene(fabric)
    everything = {d: full.desired(d) for d in (LEAF1, hv)}
    # the scene is one where the other apps do have flows: else the test would prove nothing
    assert apps_of(everything[LEAF1]) >= {'learning_switch', 'topology', 'vlan_portgroups', 'underlay_routing',
                                          'pipeline'}
    assert 'vxlan_overlay' in apps_of(everything[hv]) and 'vlan_portgroups' in apps_of(everything[hv])

    ctl, hv = scene(fabric, apps=['learning_switch', 'topology'])
    assert [m.APP for m in ctl.apps] == ['learning_switch', 'topology']
    for d in (LEAF1, hv):
        flows = ctl.desired(d)
        assert apps_of(flows) == {'learning_switch', 'topology', 'pipeline'}
        # exactly the full controller's flows of those apps (and every pipeline miss)
        assert flows == {f for f in everything[d] if cookies.app_of(f.cookie) in apps_of(flows)}
        # the incremental compile the worker runs (with the Controller's apps, not the module's)
        conn = FakeSwitch(d)
        ctl.rec.load(conn)
        ctl._converge(conn, ctl.inv.snapshot(), ctl.policy, ALL, set(), False, True)
        assert apps_of(conn.flows) == {'learning_switch', 'topology', 'pipeline'}
        assert conn.flows == flows


def test_dependencies_of_a_named_app_are_compiled_too(fabric):
    ctl, hv = scene(fabric, apps=['vlan_portgroups'])
    assert [m.APP for m in ctl.apps] == ['learning_switch', 'topology', 'vlan_portgroups']
    assert apps_of(ctl.desired(hv)) == {'learning_switch', 'topology', 'vlan_portgroups', 'pipeline'}
    ctl, _ = scene(fabric, apps=['topology'])
    assert apps_of(ctl.desired(LEAF1)) == {'topology', 'pipeline'}
    with pytest.raises(CapabilityError):
        Controller(fabric, apps=['learning_switch', 'anycast'])


def test_the_framework_loads_the_named_apps_and_their_dependencies_into_one_context():
    """What ryu-manager does with `controller.ofp apps.learning_switch` (os-ken's AppManager
    is ryu's): every apps/ module holds an app class, its requirements are loaded, and the
    context the front end reads says what was instantiated."""
    from os_ken.base import app_manager
    from controller import ofp
    for m in core.APPS:
        cls, = (v for v in vars(m).values() if getattr(v, 'OPENDVS_APP', None) == m.APP)
        assert issubclass(cls, app_manager.OSKenApp) and cls.__module__ == m.__name__
    runs = {}
    for names in (['controller.ofp', 'apps.learning_switch'], ['apps.learning_switch', 'apps.topology'],
                  ['controller.ofp'], ['apps.vlan_portgroups', 'controller.ofp']):
        mgr = app_manager.AppManager()
        mgr.load_apps(names)
        assert 'controller.ofp' in mgr.applications_cls            # the front end always comes
        assert mgr.contexts_cls == {ofp.CONTEXT: capabilities.Capabilities}
        ctx = capabilities.Capabilities()
        for name, cls in mgr.applications_cls.items():
            if name.startswith('apps.'):
                cls(**{ofp.CONTEXT: ctx})                           # as instantiate_apps does
        runs[tuple(names)] = ctx.running()
    assert runs == {('controller.ofp', 'apps.learning_switch'): ('learning_switch', 'topology'),
                    ('apps.learning_switch', 'apps.topology'): ('learning_switch', 'topology'),
                    ('controller.ofp',): resolve(None),
                    ('apps.vlan_portgroups', 'controller.ofp'): ('learning_switch', 'topology', 'vlan_portgroups')}


def test_opendvs_controller_apps_option_refuses_an_unknown_app(capsys):
    from controller.cli import controller_main
    with pytest.raises(SystemExit) as e:
        controller_main.main(['--fabric', 'x.yaml', '--apps', 'learning_switch,firewall'])
    assert e.value.code == 2
    assert 'unknown app(s) firewall: the apps are learning_switch' in capsys.readouterr().err
