"""`dvsctl show routes TENANT` (issue 8, part 6): each subnet of one tenant's VRF, its gateway
and transport, and where each of its workloads is bound -- through the real PolicyService, the
real API on loopback and the real dvsctl.  acme as in examples/tenants/acme.yaml plus `lab`, an
overlay without a gateway (an isolated segment), and ci1 with a nic in lab and one in users;
globex uses the same subnets and IPs and must never show up in acme's view."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from controller.api import server
from controller.api.service import PolicyService
from controller.cli import dvsctl, remote
from controller.inventory.model import Binding, Inventory
from controller.policy.model import Policy
from controller.policy.store import PolicyStore
from controller.policy.tenant import parse_tenant
from tests.unit.builders import ROOT, example_fabric

TOKEN = 'r' * 32
TENANTS = ROOT / 'examples' / 'tenants'
ACME = (TENANTS / 'acme.yaml').read_text().replace(
    '  servers: {vlan: 20, subnet: 10.20.0.0/24, gateway: 10.20.0.1}\n',
    '  servers: {vlan: 20, subnet: 10.20.0.0/24, gateway: 10.20.0.1}\n'
    '  lab:     {vni: 5030, subnet: 10.30.0.0/24}\n').replace(
    '\n# Inside the tenant.',
    '  ci1:  {nics: [{network: lab, mac: "02:00:0a:1e:00:05", ip: 10.30.0.5},\n'
    '                {network: users, mac: "02:00:0a:0a:00:1e", ip: 10.10.0.30}]}\n'
    '\n# Inside the tenant.')


class Core:
    """What the service reads of the controller core: its lock, policy and inventory."""

    def __init__(self):
        fabric = example_fabric()
        self.policy = Policy(fabric).with_tenants([parse_tenant(ACME, 'acme.yaml'),
                                                   parse_tenant((TENANTS / 'globex.yaml').read_text(), 'globex.yaml')])
        self.lock = threading.Lock()
        self.inv = Inventory()
        hv = {name: h.dpid for name, h in fabric.hypervisors.items()}
        # web1 on hv1, ci1's users nic on hv2 (its lab nic is not bound), db2 on hv4,
        # globex/app1 (acme/web1's IP) on hv2; web2 and db1 are not bound anywhere
        self.inv.bind(hv['hv1'], {5: Binding('tap5', 'acme/web1/nic0', '02:00:0a:0a:00:0b')})
        self.inv.bind(hv['hv2'], {6: Binding('tap6', 'acme/ci1/nic1', '02:00:0a:0a:00:1e'),
                                  7: Binding('tap7', 'globex/app1/nic0', '02:00:1e:0a:00:0b')})
        self.inv.bind(hv['hv4'], {5: Binding('tap5', 'acme/db2/nic0', '02:00:0a:14:00:16')})

    @property
    def fabric(self):
        return self.policy.fabric


@pytest.fixture
def svc(tmp_path):
    return PolicyService(Core(), PolicyStore(tmp_path))


@pytest.fixture
def api(svc):
    httpd = server.serve(svc, TOKEN, '127.0.0.1', 0)
    yield 'http://127.0.0.1:%d' % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_each_network_of_the_tenant_with_where_its_workloads_are(svc):
    view = svc.routes('acme')
    assert view['tenant'] == 'acme' and view['gateway_mac'] == '02:d5:00:00:00:01'
    assert [n['network'] for n in view['networks']] == ['lab', 'servers', 'users']      # by name
    lab, servers, users = view['networks']
    assert users == {'network': 'users', 'subnet': '10.10.0.0/24', 'gateway': '10.10.0.1', 'transport': 'vlan 10',
                     'routed': True, 'workloads': [
                         {'workload': 'web1', 'nic': 0, 'ip': '10.10.0.11', 'mac': '02:00:0a:0a:00:0b',
                          'hypervisor': 'hv1'},
                         {'workload': 'web2', 'nic': 0, 'ip': '10.10.0.12', 'mac': '02:00:0a:0a:00:0c',
                          'hypervisor': None},
                         {'workload': 'ci1', 'nic': 1, 'ip': '10.10.0.30', 'mac': '02:00:0a:0a:00:1e',
                          'hypervisor': 'hv2'}]}
    assert [(w['workload'], w['ip'], w['hypervisor']) for w in servers['workloads']] == [
        ('db1', '10.20.0.21', None), ('db2', '10.20.0.22', 'hv4')]
    assert (servers['transport'], servers['gateway'], servers['routed']) == ('vlan 20', '10.20.0.1', True)
    # an overlay without a gateway: listed, but not part of the VRF
    assert lab == {'network': 'lab', 'subnet': '10.30.0.0/24', 'gateway': None, 'transport': 'vni 5030',
                   'routed': False, 'workloads': [{'workload': 'ci1', 'nic': 0, 'ip': '10.30.0.5',
                                                   'mac': '02:00:0a:1e:00:05', 'hypervisor': None}]}
    # globex has the same IPs, and app1 is bound: none of it is in acme's view
    assert '02:00:1e:0a:00:0b' not in json.dumps(view) and 'app1' not in json.dumps(view)
    assert [w['mac'] for n in svc.routes('globex')['networks'] for w in n['workloads'] if w['hypervisor']] == [
        '02:00:1e:0a:00:0b']


def test_a_nic_that_moves_is_shown_where_it_is_now(svc):
    core = svc.core
    core.inv.unbind(core.fabric.hypervisors['hv1'].dpid)
    core.inv.bind(core.fabric.hypervisors['hv3'].dpid, {4: Binding('tap4', 'acme/web1/nic0', '02:00:0a:0a:00:0b')})
    users = svc.routes('acme')['networks'][2]
    assert [(w['workload'], w['hypervisor']) for w in users['workloads']] == [('web1', 'hv3'), ('web2', None),
                                                                              ('ci1', 'hv2')]


def test_the_cli_prints_a_block_per_subnet(api, capsys):
    assert dvsctl.main(['show', 'routes', 'acme', '--api', api, '--token', TOKEN]) == 0
    assert capsys.readouterr().out.splitlines() == [
        'tenant acme: gateway MAC 02:d5:00:00:00:01 on every hypervisor',
        '10.30.0.0/24 (lab, vni 5030): not routed (no gateway)',
        '  10.30.0.5   02:00:0a:1e:00:05  ci1       not bound',
        '10.20.0.0/24 via 10.20.0.1 (servers, vlan 20)',
        '  10.20.0.21  02:00:0a:14:00:15  db1       not bound',
        '  10.20.0.22  02:00:0a:14:00:16  db2       on hv4',
        '10.10.0.0/24 via 10.10.0.1 (users, vlan 10)',
        '  10.10.0.11  02:00:0a:0a:00:0b  web1      on hv1',
        '  10.10.0.12  02:00:0a:0a:00:0c  web2      not bound',
        '  10.10.0.30  02:00:0a:0a:00:1e  ci1/nic1  on hv2']
    assert dvsctl.main(['show', 'routes', 'acme', '--json', '--api', api, '--token', TOKEN]) == 0
    assert json.loads(capsys.readouterr().out)['networks'][1]['workloads'][1]['hypervisor'] == 'hv4'


def test_a_subnet_with_no_workload_says_so():
    view = {'tenant': 'initech', 'gateway_mac': '02:d5:00:00:00:01', 'networks': [
        {'network': 'apps', 'subnet': '10.50.0.0/24', 'gateway': '10.50.0.1', 'transport': 'vni 5020',
         'routed': True, 'workloads': []}]}
    assert remote.route_lines(view) == ['tenant initech: gateway MAC 02:d5:00:00:00:01 on every hypervisor',
                                        '10.50.0.0/24 via 10.50.0.1 (apps, vni 5020)', '  (no workloads)']


def test_an_unknown_tenant_is_a_404_naming_the_known_ones(api, svc, capsys):
    assert dvsctl.main(['show', 'routes', 'initech', '--api', api, '--token', TOKEN]) == 1
    assert capsys.readouterr().err == 'dvsctl: no such tenant: initech (known: acme, globex)\n'
    # delete says the same, and neither changed anything
    assert dvsctl.main(['delete', 'initech', '--api', api, '--token', TOKEN]) == 1
    assert capsys.readouterr().err == 'dvsctl: no such tenant: initech (known: none)\n'  # none stored
    assert svc.routes('acme')['networks'][2]['workloads'][0]['hypervisor'] == 'hv1'


def test_routes_needs_one_tenant_and_only_routes_takes_one(capsys):
    with pytest.raises(SystemExit) as e:
        dvsctl.main(['show', 'routes', '--token', TOKEN])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'usage: dvsctl show' in err and 'name a tenant: dvsctl show routes TENANT' in err
    with pytest.raises(SystemExit) as e:
        dvsctl.main(['show', 'tenants', 'acme', '--token', TOKEN])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "only `show routes` and `show rules` take a TENANT (got 'acme' after tenants)" in err


def test_the_api_path(api):
    def get(path, method='GET'):
        req = urllib.request.Request(api + path, method=method, headers={'Authorization': 'Bearer ' + TOKEN})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
    code, body = get('/v1/routes/globex')
    assert code == 200 and [n['network'] for n in body['networks']] == ['apps', 'data']
    assert get('/v1/routes')[0] == 404 and get('/v1/routes/acme/x')[0] == 404
    code, body = get('/v1/routes/acme', 'DELETE')
    assert code == 405 and 'GET' in body['error']
