"""Small host helpers shared by the lab and its CLI: commands, sockets, processes, polling.

Everything here is safe to call from any thread: no Mininet shell is involved.
"""
from __future__ import annotations

import os
import random
import re
import signal
import socket
import struct
import subprocess
import time
import zlib

from mininet_topos.errors import LabError

TCP_ESTABLISHED = '01'


def run(argv, check=True, timeout=30) -> str:
    """Run argv (no shell); return stdout; raise LabError with stderr if it fails."""
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise LabError(f'{" ".join(map(str, argv))} failed ({p.returncode}): '
                       f'{(p.stderr or p.stdout).strip()}')
    return p.stdout


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll predicate() until it is true or timeout seconds pass; return its last verdict."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --- sockets ------------------------------------------------------------------------------------

def established(pid, remote_port: int) -> list[tuple[str, str]]:
    """(local ip, remote ip) of ESTABLISHED IPv4 TCP sockets to remote_port in pid's netns.

    /proc/<pid>/net/tcp shows the network namespace of that process, so a hypervisor's
    own OpenFlow session can be told apart from every other one without entering it.
    """
    out = []
    try:
        with open(f'/proc/{pid}/net/tcp') as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote, state = fields[1], fields[2], fields[3]
                rip, rport = remote.split(':')
                if state == TCP_ESTABLISHED and int(rport, 16) == remote_port:
                    out.append((_ip(local.split(':')[0]), _ip(rip)))
    except FileNotFoundError:
        pass
    return out


TCP_LISTEN = '0A'


def listeners(port: int, pid='self') -> set[str]:
    """Local addresses with a TCP socket listening on `port` in pid's netns ('0.0.0.0' and
    '::' are the wildcards; v4-mapped IPv6 addresses are given as IPv4)."""
    out = set()
    for table, parse in (('tcp', _ip), ('tcp6', _ip6)):
        try:
            with open(f'/proc/{pid}/net/{table}') as f:
                out |= parse_listeners(f.read(), port, parse)
        except FileNotFoundError:
            pass
    return out


def parse_listeners(text: str, port: int, parse=None) -> set[str]:
    """The listening addresses on `port` in the text of /proc/net/tcp (or tcp6, with _ip6)."""
    parse = parse or _ip
    out = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != TCP_LISTEN:
            continue
        addr, _, lport = fields[1].partition(':')
        if int(lport, 16) == port:
            out.add(parse(addr))
    return out


def _ip6(hexaddr: str) -> str:
    # four 32-bit words, each in host (little-endian) byte order
    raw = b''.join(struct.pack('<I', int(hexaddr[i:i + 8], 16)) for i in range(0, 32, 8))
    if raw[:12] == b'\0' * 10 + b'\xff\xff':
        return socket.inet_ntoa(raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def only_loopback(addresses) -> bool:
    """True if something listens, but on loopback addresses only (unreachable from a netns)."""
    import ipaddress
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def _ip(hexaddr: str) -> str:
    return socket.inet_ntoa(struct.pack('<I', int(hexaddr, 16)))


def resolve(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def free_tcp_port() -> int:
    """A TCP port nobody listens on right now (for labs that must not meet a controller)."""
    with socket.socket() as s:
        s.bind(('0.0.0.0', 0))
        return s.getsockname()[1]


# --- processes ----------------------------------------------------------------------------------

def cmdline(pid) -> str:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def alive(pid) -> bool:
    """True while pid exists and is not a zombie (detached daemons are not our children)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


def stop_pid(pid: int, timeout: float = 5.0) -> None:
    stop_pids([pid], timeout)


def stop_pids(pids, timeout: float = 5.0) -> None:
    """SIGTERM all pids at once, wait for them to go, SIGKILL stragglers.  Only for pids we
    started (or proved ours by their command line)."""
    left = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        wait_until(lambda: not any(alive(p) for p in left), timeout, 0.01)
        left = [p for p in left if alive(p)]
        if not left:
            return
    raise LabError(f'processes survived SIGKILL: {left}')


def netns_id(pid) -> str | None:
    try:
        return os.readlink(f'/proc/{pid}/ns/net')
    except OSError:
        return None


def pids_in_netns(namespaces) -> list[int]:
    """Every process whose network namespace is one of `namespaces` (netns_id values)."""
    return [int(p) for p in os.listdir('/proc') if p.isdigit() and netns_id(p) in namespaces]


def read_pidfile(path) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


# --- the root namespace ------------------------------------------------------------------------

def link_exists(name: str) -> bool:
    return os.path.exists(f'/sys/class/net/{name}')


def root_bridges() -> set[str]:
    return set(run(['ovs-vsctl', '--timeout=10', 'list-br']).split())


def used_mgmt_octets() -> set[int]:
    """Third octets of 169.254.X.0/24 networks already addressed or routed in the root ns."""
    text = run(['ip', '-4', '-o', 'addr', 'show']) + \
        run(['ip', '-4', 'route', 'show', 'table', 'all'])
    return {int(m) for m in re.findall(r'169\.254\.(\d+)\.', text)}


def pick_mgmt_octet(prefix: str) -> int:
    """169.254.N.0/24 for a lab: N follows from the prefix, skipping subnets in use."""
    used = used_mgmt_octets()
    start = zlib.crc32(prefix.encode()) % 254
    for i in range(254):
        n = (start + i) % 254 + 1
        if n not in used:
            return n
    raise LabError('no free 169.254.N.0/24 management subnet in the root namespace')


def default_prefix() -> str:
    for _ in range(100):
        prefix = f'lab{random.randrange(16 ** 3):03x}'
        if not link_exists(f'{prefix}mgmt'):
            return prefix
    raise LabError('could not find a free lab prefix; pass one')


def is_connected(bridge, db=None) -> bool:
    """OVS's own verdict (Controller.is_connected); it lags a real connection by up to ~5 s."""
    args = ['ovs-vsctl', '--timeout=5'] + ([f'--db={db}'] if db else [])
    try:
        return run(args + ['get', 'controller', bridge, 'is_connected']).strip() == 'true'
    except LabError:
        return False


def ensure_root() -> None:
    if os.geteuid() != 0:
        raise LabError('the lab needs root (network namespaces, veths, OVS)')


def ensure_ovs() -> None:
    try:
        run(['ovs-vsctl', '--timeout=5', 'show'])
    except (LabError, FileNotFoundError) as e:
        raise LabError(f'the root Open vSwitch is not answering ({e}); run scripts/setup.sh') from e
