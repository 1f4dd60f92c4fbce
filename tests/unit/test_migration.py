"""Live migration in the core (no OVS): where a nic is while it is bound twice, what activates
its new port, what may never be its location, and what the operator sees (issue 10)."""
import pytest

from apps import port_security
from controller.api.service import PolicyService
from controller.core import Controller
from controller.inventory.model import Binding
from controller.pipeline import tables
from controller.policy.fabric import parse_fabric
from controller.policy.model import Policy
from controller.policy.store import PolicyStore
from controller.policy.tenant import parse_tenant
from mininet_topos.lab import _garp
from tests.support import fabric_without_vlan
from tests.unit.builders import FakeSwitch

TENANT = '''tenant: mv
networks:
  web: {vlan: 10, subnet: 10.71.0.0/24, gateway: 10.71.0.1}
  app: {vni: 5301, subnet: 10.72.0.0/24, gateway: 10.72.0.1}
workloads:
  web1: {nics: [{network: web, mac: "02:00:47:00:00:01", ip: 10.71.0.11}]}
  app1: {nics: [{network: app, mac: "02:00:48:00:00:01", ip: 10.72.0.21}]}
'''
WEB, APP = 'mv/web1/nic0', 'mv/app1/nic0'
PORT_SEC = tables.table_id('port_sec')


@pytest.fixture
def ctl(tmp_path):
    fabric = parse_fabric(fabric_without_vlan('hv4', 10), 'fabric.yaml')
    c = Controller(Policy(fabric).with_tenants([parse_tenant(TENANT, 'mv.yaml')]), state_dir=str(tmp_path))
    for name, h in fabric.hypervisors.items():
        c.switch_up(FakeSwitch(h.dpid), [(1, 'int-to-phy', True), (2, 'vxlan0', True)]
                    + [(p, 'vnet%d' % p, True) for p in range(3, 9)])
    c.dpid = lambda name: fabric.hypervisors[name].dpid
    c.state_dir_for_tests = tmp_path
    yield c
    c.stop()


def bind(ctl, hv, ports: dict, claims=()):
    ctl.bindings_changed(ctl.dpid(hv), {p: Binding('vnet%d' % p, i, ctl.policy.nics[i].nic.mac)
                                        for p, i in ports.items()}, claims=frozenset(claims))


def where(ctl, iface_id):
    d = ctl.inv.locations.get(iface_id)
    return (ctl.inv.switches[d[0]].name, d[1]) if d else None


def announce(ctl, hv, port, iface_id, rarp=False):
    bn = ctl.policy.nics[iface_id]
    frame = _garp(bn.nic.mac, str(bn.nic.ip))
    if rarp:
        frame = frame[:12] + b'\x80\x35' + frame[14:]
    ctl.packet_in(ctl.dpid(hv), port, PORT_SEC, frame)


def status(ctl, name):
    return next(w for w in PolicyService(ctl, PolicyStore(str(ctl.state_dir_for_tests))).workloads() if w['workload'] == name)['status']


def test_a_second_binding_waits_for_the_vms_announcement(ctl):
    bind(ctl, 'hv1', {3: APP})
    assert where(ctl, APP) == ('hv1', 3)
    bind(ctl, 'hv3', {4: APP})                           # both bound: it stays where it is
    assert where(ctl, APP) == ('hv1', 3)
    assert status(ctl, 'app1') == 'active; pending on hv3 port 4: waiting for a GARP/RARP from the VM'
    # only its own announcement counts: another frame, or from a port it is not bound to, does nothing
    ctl.packet_in(ctl.dpid('hv3'), 4, PORT_SEC, _garp('02:00:48:00:00:99', '10.72.0.21'))
    announce(ctl, 'hv3', 5, APP)
    assert where(ctl, APP) == ('hv1', 3)
    announce(ctl, 'hv3', 4, APP)
    assert where(ctl, APP) == ('hv3', 4)
    assert status(ctl, 'app1') == 'active; pending on hv1 port 3: waiting for a GARP/RARP from the VM'
    events = [(e['event'], e.get('hypervisor'), e.get('by'), e.get('from'), e.get('to')) for e in ctl.events.since(0)]
    assert ('activate', 'hv3', 'garp', None, None) in events and ('move', None, None, 'hv1', 'hv3') in events
    bind(ctl, 'hv1', {})                                 # the old row goes: nothing more changes
    assert where(ctl, APP) == ('hv3', 4) and status(ctl, 'app1') == 'active'


def test_a_rarp_activates_too_and_the_vm_in_flight_keeps_its_place(ctl):
    bind(ctl, 'hv1', {3: APP})
    bind(ctl, 'hv1', {}, claims={APP})                   # its device left; its row is still there
    assert where(ctl, APP) == ('hv1', 3)
    bind(ctl, 'hv2', {6: APP})
    assert where(ctl, APP) == ('hv1', 3)                 # waits for the VM
    announce(ctl, 'hv2', 6, APP, rarp=True)
    assert where(ctl, APP) == ('hv2', 6)
    assert [e['by'] for e in ctl.events.since(0) if e['event'] == 'activate'] == ['rarp']


def test_without_an_announcement_the_new_port_takes_over_when_the_old_row_goes(ctl):
    bind(ctl, 'hv1', {3: APP})
    bind(ctl, 'hv3', {4: APP})
    bind(ctl, 'hv1', {})
    assert where(ctl, APP) == ('hv3', 4)
    assert [e['by'] for e in ctl.events.since(0) if e['event'] == 'activate'] == ['old-place-gone']


def test_a_claim_holds_a_place_only_while_no_other_nic_took_its_port(ctl):
    bind(ctl, 'hv1', {3: APP})
    bind(ctl, 'hv1', {}, claims={APP})
    bind(ctl, 'hv1', {3: WEB}, claims={APP})             # OVS gave port 3 to another VM
    assert where(ctl, APP) is None and where(ctl, WEB) == ('hv1', 3)


def test_a_vlan_nic_is_never_located_where_the_trunk_lacks_its_vlan(ctl):
    bind(ctl, 'hv1', {3: WEB})
    bind(ctl, 'hv4', {5: WEB})
    assert where(ctl, WEB) == ('hv1', 3)
    assert status(ctl, 'web1') == ("active; refused on hv4 port 5: hv4's trunk does not carry VLAN 10 of "
                                   "network mv/web (trunk_vlans: 20, 30, 40 in fabric.yaml)")
    announce(ctl, 'hv4', 5, WEB)                         # even its announcement
    bind(ctl, 'hv1', {})                                 # even when its only other place goes
    assert where(ctl, WEB) is None
    flows = {f for f in ctl.desired(ctl.dpid('hv4')) if f.table == 'port_sec' and f.match_dict().get('in_port') == 5}
    top = max(flows, key=lambda f: f.priority)          # above the VLAN admission it would have had
    assert (top.priority, top.actions) == (port_security.P_BLOCK, ())
    assert [f for f in flows if f.priority >= port_security.P_BLOCK] == [top]
    assert [e['event'] for e in ctl.events.since(0)].count('refused') == 1
    # an overlay nic goes anywhere
    bind(ctl, 'hv4', {5: WEB, 6: APP})
    assert where(ctl, APP) == ('hv4', 6)


def test_the_placement_check_names_the_reason(ctl):
    svc = PolicyService(ctl, PolicyStore(str(ctl.state_dir_for_tests)))
    assert svc.placement('mv', 'app1', 'hv4') == {'ok': True, 'reasons': []}
    assert svc.placement('mv', 'web1', 'hv3') == {'ok': True, 'reasons': []}
    no = svc.placement('mv', 'web1', 'hv4')
    assert not no['ok'] and no['reasons'] == ["hv4's trunk does not carry VLAN 10 of network mv/web "
                                              "(trunk_vlans: 20, 30, 40 in fabric.yaml)"]
    assert svc.placement('mv', 'web9', 'hv1')['reasons'] == ['tenant mv has no workload web9']
    assert 'no hypervisor hv9' in svc.placement('mv', 'web1', 'hv9')['reasons'][0]
