"""The root OVS is restarted only under the lab lock (mininet_topos/rootovs.py)."""
import subprocess
import sys

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
