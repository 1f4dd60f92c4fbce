"""Port security (apps/port_security.py): the flows each bound VM port gets, where they go,
what they leave alone, and that they stay right under bindings changes.

The world is tests/unit/builders.routing_world: hv1 with acme/web1 (VLAN 10) on port 2,
acme/app1 (an overlay nic) on port 3 and zeta/zweb (VLAN 30) on port 5; hv3 with three more."""
import pytest

from apps import learning_switch, port_security as ps
from controller import core
from controller.core import Controller
from controller.inventory.model import Binding, Port, VM
from controller.pipeline import cookies, tables
from controller.pipeline.flow import CONTROLLER, UNTAGGED
from tests.unit.builders import (APP1, HV_UPLINK, HV_VM2, HV_VM3, HV_VM5, WEB1, WEB2, FakeSwitch, by_table,
                                 routing_world, switch_flows)

HV_VM6 = 6              # an unbound VM port (native VLAN)


@pytest.fixture
def world():
    fabric, policy, inv, hv1 = routing_world()
    inv.switches[hv1].ports[HV_VM6] = Port(HV_VM6, 'tap-hv1-d', True, VM)
    return fabric, policy, inv, hv1


def mine(flows, port=None):
    return {f for f in flows if cookies.app_of(f.cookie) == ps.APP
            and (port is None or f.match_dict()['in_port'] == port)}


def admission(flows, port):
    """learning_switch's admission of untagged frames on a port."""
    f, = (f for f in by_table(flows, 'port_sec') if cookies.app_of(f.cookie) == learning_switch.APP
          and f.match_dict() == {'in_port': port, 'vlan_vid': UNTAGGED})
    return f


def test_each_bound_port_gets_its_nics_own_mac_and_ip_and_the_rest_is_dropped(world):
    _, policy, inv, hv1 = world
    flows = switch_flows(policy, inv, hv1)                 # checked against tables, no clash
    web1 = policy.nics['acme/web1/nic0']
    ip = str(web1.nic.ip)
    got = {(f.priority, tuple(sorted((k, v) for k, v in f.match_dict().items() if k != 'in_port')),
            cookies.kind_of(f.cookie)) for f in mine(flows, HV_VM2)}
    own = (('eth_src', WEB1), ('vlan_vid', UNTAGGED))
    assert got == {
        (130, tuple(sorted(own + (('eth_type', 0x800), ('ipv4_src', ip)))), ps.K_ALLOW),
        (130, tuple(sorted(own + (('eth_type', 0x806), ('arp_sha', WEB1), ('arp_spa', ip)))), ps.K_ALLOW),
        (130, tuple(sorted(own + (('eth_type', 0x806), ('arp_op', 1), ('arp_sha', WEB1), ('arp_spa', '0.0.0.0')))),
         ps.K_ALLOW),
        (130, tuple(sorted(own + (('eth_type', 0x800), ('ipv4_src', '0.0.0.0'), ('ipv4_dst', '255.255.255.255'),
                                  ('ip_proto', 17), ('udp_src', 68), ('udp_dst', 67)))), ps.K_ALLOW),
        (125, (('eth_type', 0x800),), ps.K_DROP), (125, (('eth_type', 0x806),), ps.K_DROP),
        (125, (('eth_type', 0x86dd),), ps.K_DROP),
        (122, tuple(sorted(own)), ps.K_ALLOW),
        (120, (), ps.K_DROP)}
    # allowed frames go on exactly as learning_switch's admission sends them; drops go nowhere
    adm = admission(flows, HV_VM2)
    for f in mine(flows, HV_VM2):
        if cookies.kind_of(f.cookie) == ps.K_ALLOW:
            assert (f.actions, f.goto) == (adm.actions, adm.goto), f
        else:
            assert f.actions == () and f.goto is None, f
        # every one traced to web1's YAML line, owned by its nic
        assert (f.cookie.tenant, f.cookie.owner) == ('acme', 'web1/nic0')
        assert f.cookie.where == web1.tenant.where(web1.workload.line)
        assert tables.BY_NAME['port_sec'].bands[ps.APP][0] <= f.priority > adm.priority
    # an overlay nic: its network's local VLAN, as learning_switch pushes it
    app1 = {f for f in mine(flows, HV_VM3) if f.actions}
    assert app1 and {f.actions for f in app1} == {admission(flows, HV_VM3).actions}
    assert {f.match_dict().get('eth_src') for f in app1} == {APP1}
    # zweb (another tenant, its own port) is guarded too, with its own address
    assert {f.match_dict().get('ipv4_src') for f in mine(flows, HV_VM5)} >= {str(policy.nics['zeta/zweb/nic0'].nic.ip)}


def test_unbound_ports_uplink_tunnel_and_physical_switches_are_left_alone(world):
    fabric, policy, inv, hv1 = world
    flows = switch_flows(policy, inv, hv1)
    assert {f.match_dict()['in_port'] for f in mine(flows)} == {HV_VM2, HV_VM3, HV_VM5}
    assert admission(flows, HV_VM6).actions == (('push_vlan', fabric.native_vlan),)       # unchanged
    for leaf in ('leaf1', 'spine1'):
        assert not mine(switch_flows(policy, inv, fabric.switches[leaf].dpid))
    # a port bound to an unknown nic of an accepted tenant admits nothing: nothing to guard
    inv.bind(hv1, {**inv.bindings[hv1], HV_VM6: Binding('vnet9', 'acme/nobody/nic0', '02:00:00:00:00:99')})
    flows = switch_flows(policy, inv, hv1)
    assert not mine(flows, HV_VM6) and not [f for f in by_table(flows, 'port_sec') if
                                             f.match_dict().get('in_port') == HV_VM6]
    # without the app, the port admits anything untagged again (the app is the only guard)
    without = Controller(policy, apps=['learning_switch', 'vlan_portgroups'])
    without.inv = inv
    assert not mine(without.desired(hv1))


def test_a_down_port_and_a_nic_bound_twice(world):
    _, policy, inv, hv1 = world
    guarded = mine(switch_flows(policy, inv, hv1), HV_VM2)
    # live migration: web1 bound on a second port as well.  The new port waits for activation:
    # only web1's RARP or gratuitous ARP goes (to the controller, metered); the rest is dropped
    inv.bind(hv1, {**inv.bindings[hv1], HV_VM6: Binding('vnet9', 'acme/web1/nic0', WEB1)})
    flows = switch_flows(policy, inv, hv1)
    assert mine(flows, HV_VM2) == guarded
    waiting = sorted((f.priority, f.match_dict().get('eth_type'), f.actions) for f in mine(flows, HV_VM6))
    punt = (('meter', 1), ('output', CONTROLLER))
    assert [(p, e) for p, e, _ in waiting] == [(135, None), (140, 0x0806), (140, 0x8035)]
    assert waiting[1][2] == waiting[2][2] == punt and waiting[0][2] == ()
    garp = [f for f in mine(flows, HV_VM6) if f.match_dict().get('eth_type') == 0x0806][0].match_dict()
    assert garp['arp_spa'] == garp['arp_tpa'] == str(policy.nics['acme/web1/nic0'].nic.ip) and garp['eth_src'] == WEB1
    # activated there: the new port is guarded as the old one was, the old one now waits
    assert inv.activate(hv1, HV_VM6) == 'acme/web1/nic0' and inv.activate(hv1, HV_VM6) is None
    flows = switch_flows(policy, inv, hv1)
    strip = lambda fs: {(f.priority, tuple((k, v) for k, v in f.match if k != 'in_port'), f.actions)  # noqa: E731
                        for f in fs}
    assert strip(mine(flows, HV_VM6)) == strip(guarded) and len(guarded) == 9
    assert len(mine(flows, HV_VM2)) == 3
    # a port that is down admits nothing and is guarded by nothing
    inv.switches[hv1].ports[HV_VM2] = Port(HV_VM2, 'tap-hv1-a', False, VM)
    flows = switch_flows(policy, inv, hv1)
    assert not mine(flows, HV_VM2) and not [f for f in by_table(flows, 'port_sec')
                                            if f.match_dict().get('in_port') == HV_VM2]


def converge(ctl, dpid):
    """What the worker does (tests/unit/test_incremental.py): loads first, then the switch."""
    for d in list(ctl._loads):
        ctl._loads.remove(d)
        ctl._load(d)
    ctl._dirty.discard(dpid)
    ctl._converge_batch([dpid])


def test_the_core_recompiles_only_the_nics_whose_ports_changed(world, monkeypatch):
    monkeypatch.setattr(core, 'PICTURE_WAIT', 0.0)
    fabric, policy, inv, hv1 = world
    ctl = Controller(policy)
    sw = inv.switches[hv1]
    conn = FakeSwitch(hv1)
    ctl.switch_up(conn, [(p.no, p.name, p.up) for p in sw.ports.values()])
    ctl.bindings_changed(hv1, dict(inv.bindings[hv1]))
    converge(ctl, hv1)
    assert mine(ctl._compiled[hv1].flows()) == mine(ctl.desired(hv1))
    before = inv.bindings[hv1]
    after = {k: v for k, v in before.items() if k != HV_VM3}
    after[HV_VM6] = Binding('vnet9', 'acme/web2/nic0', WEB2)
    assert ps.changed(before, after) == {'acme/app1/nic0', 'acme/web2/nic0'}
    ctl.bindings_changed(hv1, after)
    assert {k for a, k in ctl._stale_units[hv1] if a == ps.APP} == {'acme/app1/nic0', 'acme/web2/nic0'}
    converge(ctl, hv1)
    got = mine(ctl._compiled[hv1].flows())
    assert got == mine(ctl.desired(hv1))
    assert {f.match_dict()['in_port'] for f in got} == {HV_VM2, HV_VM5, HV_VM6}
    assert mine(conn.flows) == got                          # and the switch holds it
    assert HV_UPLINK not in {f.match_dict()['in_port'] for f in got}
