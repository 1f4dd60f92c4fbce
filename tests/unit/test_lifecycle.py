"""Issue 7, parts 3 and 4 without processes: the fabric reload (SIGHUP) applies what it can
live and refuses the rest changing nothing; OpenFlow admission takes only fabric dpids from
the expected addresses and never lets a second connection for a live dpid in -- so applies
keep succeeding; dvsctl reports a lost connection in one line."""
from __future__ import annotations

import logging
import socket
import threading

import pytest

from controller import admission, lifecycle
from controller.api.service import PolicyService
from controller.cli import controller_main, dvsctl
from controller.core import Controller
from controller.policy import reload
from controller.policy.fabric import load_fabric, parse_fabric
from controller.policy.model import Policy
from controller.policy.store import PolicyStore
from controller.policy.tenant import load_tenant
from tests.unit.builders import FakeSwitch
from tests.unit.test_fuzz_policy import FABRIC

TEXT = FABRIC.read_text()
ACME = FABRIC.parent / 'tenants' / 'acme.yaml'
LEAF1, SPINE1 = 0x201, 0x101


def running(text=TEXT):
    return Policy(parse_fabric(text, 'fabric.yaml')).with_tenants([load_tenant(ACME)])


# ---- the reload plan -------------------------------------------------------------------------

def test_a_fabric_change_that_fits_is_planned_with_the_same_tenants():
    new = parse_fabric(TEXT.replace('mac_age: 300', 'mac_age: 600') + '  hv5: {leaf: leaf2, vtep: 172.16.2.13}\n')
    candidate, reasons = reload.plan(running(), new, {LEAF1: ('leaf1', 'physical')})
    assert reasons == [] and candidate.fabric is new
    assert sorted(candidate.tenants) == ['acme'] and 'hv5' in candidate.fabric.hypervisors


@pytest.mark.parametrize('edit, connected, why', [
    (('127.0.0.1:6653', '127.0.0.1:6654'), {}, 'controller.openflow/api changed'),
    (('  leaf1:  {dpid: 0x201, rack_subnet: 172.16.1.0/24}\n', '  leaf1:  {dpid: 0x209, rack_subnet: 172.16.1.0/24}\n'),
     {LEAF1: ('leaf1', 'physical')}, 'leaf1 (0000000000000201) is connected but not in the new fabric'),
    (('spine1: {dpid: 0x101}', 'spine1: {dpid: 0x301}\n  spineX: {dpid: 0x101}'),
     {SPINE1: ('spine1', 'physical')}, 'the new fabric makes its dpid switch spineX'),
    (('hv1: {leaf: leaf1, vtep: 172.16.1.11, trunk_vlans: [10, 20, 30, 40]',
      'hv1: {leaf: leaf1, vtep: 172.16.1.11, trunk_vlans: [20, 30, 40]'), {},
     "the running tenants do not fit the new fabric: "),
    (('native_vlan: 1', 'native_vlan: 10'), {}, "VLAN 10 is the fabric's native VLAN"),
])
def test_a_fabric_change_that_cannot_be_applied_live_is_refused_with_its_reason(edit, connected, why):
    assert edit[0] in TEXT
    candidate, reasons = reload.plan(running(), parse_fabric(TEXT.replace(*edit), 'fabric.yaml'), connected)
    assert candidate is None and any(why in r for r in reasons), reasons


class Core:
    def __init__(self, fabric_path):
        self.policy = Policy(load_fabric(fabric_path)).with_tenants([load_tenant(ACME)])
        self.applied, self.lock = [], threading.RLock()
        self.inv = type('Inv', (), {'switches': {}})()

    @property
    def fabric(self):
        return self.policy.fabric

    def apply_policy(self, candidate, dry_run=False):
        self.policy = candidate
        self.applied.append(candidate)
        return {}


def test_sighup_reload_applies_a_valid_change_and_refuses_a_broken_file(tmp_path, caplog):
    f = tmp_path / 'fabric.yaml'
    f.write_text(TEXT)
    core = Core(f)
    svc = PolicyService(core, PolicyStore(tmp_path / 'state'))
    before = core.policy
    assert lifecycle.reload_now(svc) == {} and core.applied == []           # unchanged: nothing to do
    f.write_text(TEXT.replace('mac_age: 300', 'mac_age: 600'))
    assert lifecycle.reload_now(svc) == {}
    assert core.policy.fabric.learning.mac_age == 600 and sorted(core.policy.tenants) == ['acme']
    applied = core.policy
    f.write_text(TEXT.replace('mac_age: 300', 'mac_age: ['))
    with caplog.at_level(logging.ERROR):
        assert lifecycle.reload_now(svc) is None
    assert core.policy is applied and len(core.applied) == 1                # nothing changed
    assert 'fabric reload refused' in caplog.text and '%s:' % f in caplog.text
    f.write_text(TEXT.replace('native_vlan: 1', 'native_vlan: 10'))
    assert lifecycle.reload_now(svc) is None and core.policy is applied
    assert before is not applied


def test_a_reload_that_raises_is_logged_and_the_controller_keeps_running(caplog):
    class Broken:
        def reload_fabric(self):
            raise RuntimeError('disk on fire')
    with caplog.at_level(logging.ERROR):
        assert lifecycle.reload_now(Broken()) is None
    assert 'the running fabric is kept' in caplog.text


def test_sighup_before_start_up_is_ignored():
    assert lifecycle.reload_in_background(None) is None


# ---- OpenFlow admission ---------------------------------------------------------------------

class Conn(FakeSwitch):
    def __init__(self, dpid, address='127.0.0.1', alive=True):
        super().__init__(dpid)
        self.address, self.alive, self.closed = address, alive, False

    def barrier(self):
        if not self.alive:
            raise RuntimeError('no reply to barrier within 10s')


@pytest.fixture
def ctl():
    c = Controller(load_fabric(FABRIC))
    c.start()
    yield c
    c.stop()


def admit(ctl, conn, sources=admission.Sources(physical=admission.LOOPBACK)):
    def close(c):
        c.closed = True
    t = admission.admit(ctl, conn, [(1, 'p1', True)], close=close, accept=ctl.switch_up, sources=sources)
    if t is not None:
        t.join(10)
    return conn


def test_a_dpid_not_in_the_fabric_is_refused(ctl, caplog):
    with caplog.at_level(logging.WARNING):
        assert admit(ctl, Conn(0x999)).closed
    assert 'datapath 0000000000000999 (from 127.0.0.1) is not in the fabric' in caplog.text
    assert ctl.conns == {}


def test_a_physical_switch_must_come_from_the_expected_address(ctl, caplog):
    with caplog.at_level(logging.WARNING):
        assert admit(ctl, Conn(LEAF1, '10.1.2.3')).closed
    assert 'physical switch leaf1 (0000000000000201) connected from 10.1.2.3' in caplog.text
    assert '--physical-from' in caplog.text
    assert not admit(ctl, Conn(LEAF1, '127.0.0.1')).closed and LEAF1 in ctl.conns


def test_hypervisors_from_the_management_lan_only_when_asked(ctl):
    hv1 = ctl.fabric.hypervisors['hv1'].dpid
    lan = admission.Sources(hypervisor=admission.parse_sources('169.254.77.0/24'))
    assert admit(ctl, Conn(hv1, '127.0.0.1'), lan).closed
    assert not admit(ctl, Conn(hv1, '169.254.77.11'), lan).closed
    hv2 = ctl.fabric.hypervisors['hv2'].dpid
    assert not admit(ctl, Conn(hv2, '10.9.9.9'), admission.Sources()).closed       # default: any


def test_a_second_connection_for_a_live_dpid_is_refused_and_applies_keep_succeeding(ctl, caplog):
    real = admit(ctl, Conn(LEAF1))
    assert not real.closed and ctl.conns[LEAF1] is real
    impostor = Conn(LEAF1, alive=False)              # it would never answer a flow-mod or barrier
    with caplog.at_level(logging.WARNING):
        assert admit(ctl, impostor).closed
    assert 'already connected from 127.0.0.1 and answering' in caplog.text
    assert ctl.conns[LEAF1] is real
    # today an impostor made this report failure after 60 s
    diffs = ctl.apply_policy(Policy(ctl.fabric).with_tenants([load_tenant(ACME)]), timeout=30)
    assert set(diffs) == {'leaf1'} and impostor.applied == []


def test_a_reconnect_while_the_old_session_is_dead_takes_over(ctl, caplog):
    old = admit(ctl, Conn(LEAF1))
    old.alive = False                                  # e.g. the management link was down: no FIN seen
    new = Conn(LEAF1)
    with caplog.at_level(logging.WARNING):
        assert not admit(ctl, new).closed
    assert old.closed and ctl.conns[LEAF1] is new
    assert 'does not answer; the new one from 127.0.0.1 takes over' in caplog.text


def test_refusals_are_logged_once_per_interval(ctl, caplog):
    from controller import admission
    # the rate limit is per process: test_events_api refuses the same dpid, maybe < LOG_EVERY ago
    admission._logged.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(50):
            admit(ctl, Conn(0x998))
    assert caplog.text.count('0000000000000998') == 1


@pytest.mark.parametrize('text, nets', [('any', None), ('loopback', admission.LOOPBACK),
                                        ('10.0.0.0/8, 192.168.1.5', ('10.0.0.0/8', '192.168.1.5/32'))])
def test_sources_option(text, nets):
    got = admission.parse_sources(text)
    assert (got if got is None or nets is admission.LOOPBACK else tuple(map(str, got))) == nets


def test_a_bad_sources_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        controller_main.main(['--fabric', str(FABRIC), '--physical-from', 'nowhere'])
    assert 'nowhere' in capsys.readouterr().err


# ---- exposure warnings -----------------------------------------------------------------------

def test_listening_beyond_loopback_warns(caplog):
    with caplog.at_level(logging.WARNING):
        controller_main._warn_if_exposed(('127.0.0.1', 6653), ('localhost', 8080))
        assert caplog.text == ''
        controller_main._warn_if_exposed(('0.0.0.0', 6653), ('10.0.0.5', 8080))
    assert 'OpenFlow listens on 0.0.0.0:6653, not loopback' in caplog.text
    assert 'the API listens on 10.0.0.5:8080, not loopback' in caplog.text


# ---- dvsctl and a lost connection ------------------------------------------------------------

@pytest.mark.parametrize('answer', [b'', b'HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n{"trunc',
                                    b'HTTP/1.0 200 OK\r\n\r\nnot json'])
def test_dvsctl_reports_a_lost_connection_in_one_line(answer, capsys):
    srv = socket.socket()
    srv.bind(('127.0.0.1', 0))
    srv.listen(1)

    def serve_once():
        c, _ = srv.accept()
        c.recv(65536)
        c.sendall(answer)
        c.close()
    t = threading.Thread(target=serve_once)
    t.start()
    rc = dvsctl.main(['show', 'tenants', '--api', 'http://127.0.0.1:%d' % srv.getsockname()[1], '--token', 'x'])
    t.join(10)
    srv.close()
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
    assert err.startswith('dvsctl: ') and ('lost the connection' in err or 'not JSON' in err), err
