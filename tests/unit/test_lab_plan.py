"""The lab plan for tenant workloads (pure, no root): VM names, placement, nics, default
routes, and the mistakes it refuses before anything is built."""
import ipaddress

import pytest

from controller.policy.fabric import parse_fabric
from controller.policy.model import Network, Nic, Tenant, Workload
from mininet_topos.errors import LabError
from mininet_topos.plan import NicSpec, VMSpec, build_plan
from tests.support import ROOT


def net(name, subnet, vlan, gateway=None):
    return Network(name, ipaddress.IPv4Network(subnet), vlan=vlan,
                   gateway=ipaddress.IPv4Address(gateway) if gateway else None)


def wl(name, *nics, hv=None):
    return Workload(name, (), tuple(Nic(i, n, m, ipaddress.IPv4Address(ip))
                                    for i, (n, m, ip) in enumerate(nics)), hv)


def tenant(name, networks, *workloads):
    return Tenant(name, f'{name}.yaml', {n.name: n for n in networks},
                  {w.name: w for w in workloads})


USERS = net('users', '10.10.0.0/24', 10, '10.10.0.1')
STORAGE = net('storage', '10.40.0.0/23', 40)          # no gateway
ACME = tenant('acme', [USERS, STORAGE],
              wl('web1', ('users', '02:00:0a:0a:00:0b', '10.10.0.11'), hv='hv1'),
              wl('app1', ('storage', '02:00:0a:28:00:0c', '10.40.0.12'),
                 ('users', '02:00:0a:0a:00:0c', '10.10.0.12'), hv='hv2'),
              wl('db1', ('users', '02:00:0a:0a:00:15', '10.10.0.21')))
BETA = tenant('beta', [net('lan', '10.10.0.0/24', 30)],
              wl('web1', ('lan', '02:00:0b:0a:00:0b', '10.10.0.11'), hv='hv3'),
              wl('cache', ('lan', '02:00:0b:0a:00:0c', '10.10.0.12')),
              wl('queue', ('lan', '02:00:0b:0a:00:0d', '10.10.0.13')))


def plan(fabric, *tenants, **kw):
    return build_plan(fabric, 'u', 7, tenants=tenants, **kw)


def test_a_workload_keeps_its_name_unless_another_tenant_has_one_like_it(fabric):
    p = plan(fabric, ACME, BETA)
    assert list(p.vms) == ['acme-web1', 'app1', 'db1', 'beta-web1', 'cache', 'queue']
    assert [(v.spec.tenant, v.spec.workload) for v in p.vms.values()][:2] == \
        [('acme', 'web1'), ('acme', 'app1')]
    assert list(plan(fabric, ACME).vms) == ['web1', 'app1', 'db1']


def test_hints_place_and_the_rest_go_round_robin_over_all_tenants_in_order(fabric):
    where = {n: v.spec.hypervisor for n, v in plan(fabric, ACME, BETA).vms.items()}
    assert where == {'acme-web1': 'hv1', 'app1': 'hv2', 'beta-web1': 'hv3',
                     'db1': 'hv1', 'cache': 'hv2', 'queue': 'hv3'}
    assert where == {n: v.spec.hypervisor for n, v in plan(fabric, ACME, BETA).vms.items()}


def test_each_nic_is_an_interface_with_its_networks_prefix_and_binding(fabric):
    app = plan(fabric, ACME).vms['app1']
    assert app.spec.nics == (
        NicSpec('02:00:0a:28:00:0c', '10.40.0.12/23', 'acme/app1/nic0', network='storage'),
        NicSpec('02:00:0a:0a:00:0c', '10.10.0.12/24', 'acme/app1/nic1', network='users'))
    assert (app.spec.mac, app.spec.ip, app.spec.iface_id) == \
        ('02:00:0a:28:00:0c', '10.40.0.12/23', 'acme/app1/nic0')
    # hv-side ports are numbered over every nic of the lab, so they can move between hvs
    assert [v.ports for v in plan(fabric, ACME).vms.values()] == \
        [('vnet0',), ('vnet1', 'vnet2'), ('vnet3',)]


def test_default_route_only_when_exactly_one_nic_has_a_gateway(fabric):
    vms = plan(fabric, ACME, BETA).vms
    assert vms['app1'].spec.gateway == '10.10.0.1'        # on its second nic
    assert vms['acme-web1'].spec.gateway == '10.10.0.1'
    assert vms['cache'].spec.gateway is None               # network without a gateway
    both = tenant('two', [USERS, net('dmz', '10.50.0.0/24', 50, '10.50.0.1')],
                  wl('fw', ('users', '02:00:0a:0a:00:fe', '10.10.0.254'),
                     ('dmz', '02:00:0a:32:00:fe', '10.50.0.254')))
    assert plan(fabric, both).vms['fw'].spec.gateway is None


def test_tenants_replace_the_default_vms_unless_asked_for(fabric):
    assert len(plan(fabric).vms) == 8
    assert not [n for n in plan(fabric, ACME).vms if n.startswith('hv')]
    assert list(plan(fabric, ACME, vms_per_hypervisor=1).vms)[:4] == \
        ['hv1vm1', 'hv2vm1', 'hv3vm1', 'hv4vm1']


def test_single_nic_vmspec_still_reads_as_before():
    s = VMSpec('web1', 'hv1', '02:00:0a:0a:00:0b', '10.10.0.11/24', 'acme/web1/nic0')
    assert s.nics == (NicSpec('02:00:0a:0a:00:0b', '10.10.0.11/24', 'acme/web1/nic0'),)
    assert s.address == '10.10.0.11'
    with pytest.raises(LabError, match='contradict'):
        VMSpec('x', 'hv1', '02:00:00:00:00:01', nics=(NicSpec('02:00:00:00:00:02', None, 'x'),))


@pytest.mark.parametrize('tenants, message', [
    ([tenant('t', [USERS], wl('a', ('users', '02:00:00:00:00:01', '10.10.0.2'), hv='hv9'))],
     r"tenant t \(t.yaml\), workload a: hypervisor 'hv9' is not in the fabric"),
    ([tenant('t', [USERS], wl('hv1', ('users', '02:00:00:00:00:01', '10.10.0.2')))], None),
    ([ACME, ACME], "tenant 'acme' is given twice"),
    ([tenant('t', [USERS], wl('a', ('users', '02:00:0a:0a:00:0b', '10.10.0.2'))), ACME],
     'MAC 02:00:0a:0a:00:0b is used twice'),
    ([tenant('t', [USERS], wl('a', ('nowhere', '02:00:00:00:00:01', '10.10.0.2')))],
     "unknown network 'nowhere'"),
])
def test_what_cannot_be_built_is_refused_up_front(fabric, tenants, message):
    if message is None:            # a workload named like a hypervisor gets the long name
        assert list(plan(fabric, *tenants).vms) == ['t-hv1']
        return
    with pytest.raises(LabError, match=message):
        plan(fabric, *tenants)


def test_a_long_name_that_is_taken_is_an_error_not_a_silent_rename(fabric):
    def one(t, w, k):
        return tenant(t, [USERS], wl(w, ('users', f'02:00:00:00:00:0{k}', f'10.10.0.{k}')))
    with pytest.raises(LabError, match="cannot name its VM 'acme-x-web1'"):
        plan(fabric, one('acme', 'x-web1', 1), one('b', 'x-web1', 2), one('acme-x', 'web1', 3),
             one('c', 'web1', 4))


def test_the_lab_cables_named_ports_where_the_fabric_names_them():
    text = (ROOT / 'examples' / 'fabric.yaml').read_text().replace(
        '  - [spine2, leaf2]\n', '  - [spine2:7, leaf2:9]\n').replace(
        '  - [spine2, leaf1]\n', '  - [leaf1:1, spine2:3]\n')
    fabric = parse_fabric(text)
    assert dict(fabric.link_ports) == {('leaf2', 'spine2'): (9, 7), ('leaf1', 'spine2'): (1, 3)}
    links = plan(fabric).links
    ports = {(link.a, link.b): (link.port_a, link.port_b) for link in links if link.kind == 'fabric'}
    assert ports[('leaf2', 'spine2')] == (9, 7) and ports[('leaf1', 'spine2')] == (1, 3)
    # the other cables and the uplinks skip the named ports: each switch port is one cable's
    ends = [(link.a, link.port_a) for link in links] + [(link.b, link.port_b) for link in links if link.kind == 'fabric']
    assert len(ends) == len(set(ends))
