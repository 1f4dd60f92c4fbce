"""Restarting the root OVS's ovs-vswitchd (every physical switch of every lab), or its
ovsdb-server, safely.

The root ovsdb-server and ovs-vswitchd are shared by everything on this machine.  A restart
is done only when all of this holds, and refused (RootRestartRefused, with the reason)
otherwise:
  - this process runs under `flock /tmp/opendvs-lab.lock` (an ancestor holds the lock), so
    no other lab or scratch bridge is in use;
  - the running ovs-vswitchd is exactly what scripts/setup.sh starts
    (`ovs-vswitchd --pidfile --detach --log-file --disable-system`), so starting that command
    again restores it as it was;
  - every bridge on the root OVS is one the caller owns (its lab's).
The restart is SIGTERM to the pidfile's PID, then the same command; afterwards `ovs-vsctl show`
answers and every bridge is back (ovs-ofctl reaches each).  ovsdb-server likewise: it must be
the one `ovs-ctl start --no-ovs-vswitchd` (scripts/setup.sh) runs, on /etc/openvswitch/conf.db
under its --monitor process; SIGTERM ends both (the monitor restarts only a crash), and the
same ovs-ctl command starts it again on the same database file, so nothing is lost.  The
bridges, ports and controller settings live in the root OVSDB, which a vswitchd restart does
not touch; the flows are lost (OVS does not keep them across a restart unless `ovs-ctl
restart` saves them) and the controller puts them back.
"""
from __future__ import annotations

import os
import subprocess
import time

from mininet_topos import osutil
from mininet_topos.errors import LabError

LOCK = '/tmp/opendvs-lab.lock'
PIDFILE = '/var/run/openvswitch/ovs-vswitchd.pid'
START = ['ovs-vswitchd', '--pidfile', '--detach', '--log-file', '--disable-system']   # scripts/setup.sh
OVSDB_PIDFILE = '/var/run/openvswitch/ovsdb-server.pid'
OVSDB_START = ['/usr/share/openvswitch/scripts/ovs-ctl', 'start', '--no-ovs-vswitchd', '--system-id=random']
OVSDB_ARGS = ('/etc/openvswitch/conf.db', '--remote=punix:/var/run/openvswitch/db.sock', '--monitor')


class RootRestartRefused(LabError):
    """The root ovs-vswitchd may not be restarted here (why: the message)."""


def _parent(pid: int) -> int | None:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return int(f.read().rsplit(')', 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid is not None and pid > 1:
        out.add(pid)
        pid = _parent(pid)
    return out


def holding_lab_lock(path: str = LOCK) -> bool:
    """True if this process or an ancestor holds the flock on `path` (flock(1) keeps it in its
    own process while the command runs as its child)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    inode = '%02x:%02x:%d' % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    mine = _ancestors()
    with open('/proc/locks') as f:
        for line in f:
            parts = line.split()
            if '->' in parts:                    # a waiter, not a holder
                continue
            if len(parts) >= 6 and parts[1] == 'FLOCK' and parts[5] == inode and int(parts[4]) in mine:
                return True
    return False


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return [a.decode() for a in f.read().split(b'\0') if a]
    except OSError:
        return []


def bridges() -> set[str]:
    return set(osutil.run(['ovs-vsctl', '--timeout=10', 'list-br']).split())


def _safe(own_bridges, pidfile: str) -> int:
    """The running daemon's PID if the lock is ours and every root bridge is the caller's."""
    if not holding_lab_lock(LOCK):
        raise RootRestartRefused(f'not running under `flock {LOCK}`: other labs may be using the root OVS')
    pid = osutil.read_pidfile(pidfile)
    if pid is None or not osutil.alive(pid):
        raise RootRestartRefused(f'no running root daemon (pidfile {pidfile}: {pid})')
    foreign = sorted(bridges() - set(own_bridges))
    if foreign:
        raise RootRestartRefused(f'the root OVS holds bridges of someone else: {", ".join(foreign)}')
    return pid


def check(own_bridges) -> int:
    """The ovs-vswitchd PID to restart, or RootRestartRefused saying why not."""
    pid = _safe(own_bridges, PIDFILE)
    argv = _cmdline(pid)
    if not argv or [os.path.basename(argv[0])] + argv[1:] != START:
        raise RootRestartRefused(f'the root ovs-vswitchd ({pid}) runs as {" ".join(argv)!r}, not as '
                                 f'scripts/setup.sh starts it ({" ".join(START)!r}): it could not be '
                                 'restarted as it was')
    return pid


def check_ovsdb(own_bridges) -> int:
    """The ovsdb-server PID to restart, or RootRestartRefused saying why not."""
    pid = _safe(own_bridges, OVSDB_PIDFILE)
    argv = _cmdline(pid)
    if not argv or os.path.basename(argv[0]) != 'ovsdb-server' or not all(a in argv for a in OVSDB_ARGS):
        raise RootRestartRefused(f'the root ovsdb-server ({pid}) runs as {" ".join(argv)!r}, not as '
                                 f'`{" ".join(OVSDB_START)}` starts it: it could not be restarted as it was')
    return pid


def restart_ovsdb(own_bridges, timeout: float = 30) -> int:
    """Restart the root ovsdb-server (see the module docstring); returns the new PID once
    ovs-vswitchd has reconnected to it (it applies a transaction) and every bridge is back."""
    pid = check_ovsdb(own_bridges)
    monitor = _parent(pid)
    monitor = monitor if monitor and 'monitoring' in ' '.join(_cmdline(monitor)) else None
    before = bridges()

    def back() -> bool:
        # a read-write transaction waits until ovs-vswitchd has applied it: reconnected
        osutil.run(['ovs-vsctl', '--timeout=5', 'remove', 'Open_vSwitch', '.', 'external_ids', 'opendvs-probe'])
        return bridges() == before
    return _restart([pid] + ([monitor] if monitor else []), OVSDB_PIDFILE, OVSDB_START, back, 'ovsdb-server',
                    timeout, lambda: '')


def restart_vswitchd(own_bridges, timeout: float = 30) -> int:
    """Restart the root ovs-vswitchd (see the module docstring); returns the new PID.  Raises
    RootRestartRefused before touching anything if it is not safe."""
    pid = check(own_bridges)
    before = bridges()

    def back() -> bool:
        osutil.run(['ovs-vsctl', '--timeout=5', 'show'])
        if bridges() != before:
            return False
        for br in before:
            osutil.run(['ovs-ofctl', '-O', 'OpenFlow14', 'show', br], timeout=10)
        return True
    return _restart([pid], PIDFILE, START, back, 'OVS', timeout,
                    lambda: f': bridges {sorted(before)} before, `ovs-vsctl list-br` now: {sorted(bridges())}')


def _restart(pids, pidfile: str, start: list[str], back, what: str, timeout: float, detail) -> int:
    """Stop `pids` (the daemon first), start it again as setup.sh does -- whatever happened:
    the machine's switch must run again -- and wait until back() says so; the new PID."""
    try:
        osutil.stop_pids(pids, timeout=10)
    finally:
        pid_now = osutil.read_pidfile(pidfile)
        if pid_now is None or pid_now == pids[0] or not osutil.alive(pid_now):
            subprocess.run(start, cwd='/', check=True, timeout=60, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if back():
                return osutil.read_pidfile(pidfile)
        except LabError:
            pass
        if time.monotonic() > deadline:
            raise LabError(f'the root {what} is not back {timeout:g} s after its restart{detail()}')
        time.sleep(0.1)
