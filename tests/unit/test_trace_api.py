"""GET /v1/trace/TENANT and GET /v1/macs through the real API server (token, 4xx for a trace
that cannot be asked), with a fake ovs-appctl answering from text captured on the lab."""
from __future__ import annotations

import threading
import urllib.parse

import pytest

from controller.api import server
from controller.inventory.model import UPLINK, VM, Binding, Inventory, Port, SwitchState
from controller.trace import service, walk
from tests.unit.test_api_abuse import TOKEN, request
from tests.unit.test_trace import Registry, _policy, text


class Core:
    def __init__(self, policy):
        hv1 = policy.fabric.hypervisors['hv1'].dpid
        sw = SwitchState(hv1, 'hv1', 'hypervisor', {1: Port(1, 'vnet0', True, VM),
                                                     2: Port(2, 'int-to-phy', True, UPLINK)})
        self.lock, self.policy, self.cookies, self.switch_bonds = threading.Lock(), policy, Registry(), {}
        self.inv = Inventory(switches={hv1: sw})
        self.inv.bind(hv1, {1: Binding('vnet0', 'shop/web1/nic0', '02:00:00:00:00:01')})
        self.conns = {hv1: type('Conn', (), {'bridge': 'br-int'})()}
        self.rec = type('Rec', (), {'installed': lambda self, dpid: set()})()


class Service:
    def __init__(self):
        self.core, self.docs = Core(_policy()), {}


@pytest.fixture
def api():
    httpd = server.serve(Service(), TOKEN, '127.0.0.1', 0, io_timeout=1.0, deadline=2.0)
    httpd.port = httpd.server_address[1]
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def path(tenant='shop', **q):
    return '/v1/trace/%s?%s' % (tenant, urllib.parse.urlencode(q))


def test_a_trace_that_cannot_be_asked_is_a_4xx_naming_why(api, monkeypatch):
    monkeypatch.setitem(service.REACH, 'hypervisor', None)
    assert request(api, 'GET', path(src='web1', dst='app1'), token='x' * 32)[0] == 401
    code, reply = request(api, 'GET', path(src='web1'))
    assert code == 400 and 'needs dst' in reply['error']
    code, reply = request(api, 'GET', path('nobody', src='web1', dst='app1'))
    assert code == 404 and 'no such tenant: nobody' in reply['error']
    code, reply = request(api, 'GET', path(src='web1', dst='app1', service='tcp/99999'))
    assert code == 400 and 'expected tcp/PORT' in reply['error']
    code, reply = request(api, 'GET', path(src='app1', dst='web1'))
    assert code == 400 and 'not bound' in reply['error']
    code, reply = request(api, 'GET', path(src='web1', dst='app1'))
    assert code == 400 and '--vswitchd-ctl' in reply['error']
    assert request(api, 'GET', '/v1/trace')[0] == 404
    assert request(api, 'POST', path(src='web1', dst='app1'), body={})[0] == 405


def test_a_trace_runs_ovs_appctl_on_the_hypervisor_and_answers_the_verdict(api, monkeypatch):
    monkeypatch.setitem(service.REACH, 'hypervisor', '/tmp/lab/{hypervisor}/ovs-vswitchd.ctl')
    asked = []

    def run(argv):
        asked.append(argv)
        return text('denied_hv4_destination.txt') if 'ofproto/trace' in argv else text('dpif_hv4.txt')
    monkeypatch.setattr(walk, 'run', run)
    code, v = request(api, 'GET', path(src='web1', dst='app1', service='tcp/22'))
    assert code == 200, v
    assert asked[0][:4] == ['ovs-appctl', '--timeout=5', '-t', '/tmp/lab/hv1/ovs-vswitchd.ctl']
    assert asked[0][-2] == 'br-int' and asked[0][-1].startswith('in_port=1,dl_src=02:00:00:00:00:01,dl_dst=')
    assert 'tcp_dst=22' in asked[0][-1] and 'tcp_flags=0x002' in asked[0][-1]
    assert v['verdict']['result'] == 'dropped' and 'default deny of tenant shop' in v['verdict']['text']
    assert v['src'] == {'workload': 'web1', 'iface_id': 'shop/web1/nic0', 'ip': v['src']['ip'],
                        'mac': '02:00:00:00:00:01', 'hypervisor': 'hv1', 'port': 1}
    assert v['forwarding'] == 'routed' and v['ct_state'] == 'trk,new'
    assert v['hops'][0]['steps'][-1]['owner'] == 'default'
    assert v['verdict']['text'].endswith('(app1 is not bound on any hypervisor)'), v['verdict']


def test_show_macs_is_served(api):
    code, rows = request(api, 'GET', '/v1/macs')
    assert code == 200 and rows == []              # no physical switch in this inventory
