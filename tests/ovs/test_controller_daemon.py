"""opendvs-controller as a process: refuses a taken port, stops on SIGINT/SIGTERM, survives
handler exceptions, and restarts (even after kill -9) without touching a single flow."""
from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest

from tests.ovs.scratch import ScratchFabric
from tests.support import BIN, ControllerProcess, dump_flows, flow_key, free_port, wait_until

SWITCHES = ('spine1', 'spine2', 'leaf1', 'leaf2')


def _fabric(tmp_path, port):
    f = tmp_path / 'fabric.yaml'
    f.write_text('controller: {openflow: "tcp:127.0.0.1:%d"}\nswitches:\n  s1: {dpid: 0x1}\n' % port)
    return f


def test_taken_port_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = subprocess.run([str(BIN / 'opendvs-controller'), '--fabric', str(_fabric(tmp_path, port)),
                            '--state-dir', str(tmp_path / 'st')], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert 'cannot listen for OpenFlow on 127.0.0.1:%d' % port in r.stderr
    assert 'in use' in r.stderr


def test_bad_fabric_is_refused_with_file_and_line(tmp_path):
    f = tmp_path / 'fabric.yaml'
    f.write_text('switches:\n  s1: {dpid: 0x1, colour: red}\n')
    r = subprocess.run([str(BIN / 'opendvs-controller'), '--fabric', str(f)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert '%s:2:' % f in r.stderr and 'colour' in r.stderr


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_stops_cleanly_on_signal(tmp_path, sig):
    port = free_port()
    ctl = ControllerProcess(_fabric(tmp_path, port), tmp_path).start()
    assert ctl.stop(sig, timeout=10) == 0
    with socket.socket() as s:                       # the port is released
        s.bind(('127.0.0.1', port))


@pytest.fixture
def fabric(tmp_path):
    with ScratchFabric(tmp_path, free_port()) as fab:
        yield fab


def _all_flows(fab):
    return {sw: {flow_key(f): f for f in dump_flows(fab.br(sw))} for sw in SWITCHES}


def test_handler_exception_is_logged_and_switches_keep_being_served(fabric, tmp_path):
    ctl = ControllerProcess(fabric.fabric, tmp_path,
                            env={'OPENDVS_INJECT_FAULT': 'packet_in,port_status'}).start()
    try:
        wait_until(lambda: fabric.ping('h1', '10.99.0.2'), 30, what='ping after injected faults')
        text = ctl.text()
        assert 'handler packet_in failed' in text and 'Traceback' in text
        assert 'RuntimeError: injected fault' in text
        # later events of the same kinds are still handled: a spine link cut is noticed and
        # flooding moves to the other spine
        cut = fabric.link_name('leaf2', 'spine1')
        subprocess.run(['ip', 'link', 'set', cut, 'down'], check=True)
        wait_until(lambda: '(%s) down' % cut in ctl.text(), 10, what='port status after the fault')
        subprocess.run(['ip', 'link', 'set', fabric.link_name('leaf1', 'spine1'), 'down'], check=True)
        wait_until(lambda: fabric.ping('h1', '10.99.0.2'), 30, what='ping over spine2')
    finally:
        ctl.stop()


def test_restart_after_kill9_touches_no_flow_and_loses_no_packet(fabric, tmp_path):
    ctl = ControllerProcess(fabric.fabric, tmp_path).start()
    wait_until(lambda: fabric.ping('h1', '10.99.0.2'), 30, what='first ping')
    ping = subprocess.Popen(['ip', 'netns', 'exec', fabric.hosts['h1'], 'ping', '-i', '0.1', '-c', '80',
                             '-W', '1', '10.99.0.2'], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)                                 # traffic is flowing before the kill
        before = _all_flows(fabric)
        ctl.kill9()
        ctl.start()
        ctl.wait_connected(4)
        out, _ = ping.communicate(timeout=30)
    finally:
        if ping.poll() is None:
            ping.kill()
        ctl.stop()
    assert ' 0% packet loss' in out, out
    after = _all_flows(fabric)
    for sw in SWITCHES:
        assert set(after[sw]) == set(before[sw]), sw
        for k, f in before[sw].items():
            # never re-added: the entry kept its age and its counters
            assert after[sw][k]['duration'] >= f['duration'], (sw, k)
            assert after[sw][k]['n_packets'] >= f['n_packets'], (sw, k)
    changes = [l for l in ctl.text().splitlines() if 'reconciler' in l]
    assert not changes, changes
