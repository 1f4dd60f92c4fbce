"""The root OVS is restarted only under the lab lock (mininet_topos/rootovs.py)."""
import os
import subprocess
import sys

import pytest

from mininet_topos import rootovs

ASK = 'from mininet_topos import rootovs; import sys; print(rootovs.holding_lab_lock(sys.argv[1]))'


def test_the_lab_lock_is_seen_only_when_an_ancestor_holds_it(tmp_path):
    lock = tmp_path / 'lab.lock'
    lock.touch()
    held = subprocess.run(['flock', str(lock), sys.executable, '-c', ASK, str(lock)],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert held == 'True'
    assert not rootovs.holding_lab_lock(str(lock))            # nobody holds it
    # held by a process that is not an ancestor: not ours
    holder = subprocess.Popen(['flock', str(lock), 'sleep', '30'])
    try:
        other = subprocess.run(['flock', '-n', str(tmp_path / 'other.lock'), sys.executable, '-c', ASK, str(lock)],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert other == 'False'
    finally:
        holder.kill()
        holder.wait()
    assert not rootovs.holding_lab_lock(str(tmp_path / 'missing.lock'))


def test_a_restart_is_refused_outside_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(rootovs, 'LOCK', str(tmp_path / 'lab.lock'))
    (tmp_path / 'lab.lock').touch()
    try:
        rootovs.check(set())
    except rootovs.RootRestartRefused as e:
        assert 'flock' in str(e)
    else:
        raise AssertionError('a restart outside the lab lock must be refused')


def test_an_ovsdb_server_restart_is_refused_outside_the_lock_and_for_another_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(rootovs, 'LOCK', str(tmp_path / 'lab.lock'))
    (tmp_path / 'lab.lock').touch()
    with pytest.raises(rootovs.RootRestartRefused, match='flock'):
        rootovs.restart_ovsdb(set())
    # under the lock, a daemon that is not ovs-ctl's ovsdb-server (here: this very process)
    monkeypatch.setattr(rootovs, 'holding_lab_lock', lambda path: True)
    monkeypatch.setattr(rootovs, 'bridges', lambda: set())
    (tmp_path / 'db.pid').write_text(str(os.getpid()))
    monkeypatch.setattr(rootovs, 'OVSDB_PIDFILE', str(tmp_path / 'db.pid'))
    with pytest.raises(rootovs.RootRestartRefused, match='not as'):
        rootovs.restart_ovsdb(set())
    monkeypatch.setattr(rootovs, 'bridges', lambda: {'someone-elses-br'})
    with pytest.raises(rootovs.RootRestartRefused, match='someone else'):
        rootovs.restart_ovsdb(set())
