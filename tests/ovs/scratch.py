"""A scratch physical fabric on the root OVS, without Mininet: leaf/spine bridges joined by
veths, and hosts as named network namespaces on leaf edge ports.  Every object carries a
per-run prefix and only those objects are removed."""
from __future__ import annotations

import random
import string
import subprocess
from pathlib import Path

from tests.support import sh


def _prefix() -> str:
    return 'os' + ''.join(random.choice(string.ascii_lowercase) for _ in range(3))


FABRIC = '''\
controller: {{openflow: "tcp:127.0.0.1:{port}"}}
learning: {{mac_age: {mac_age}, max_macs_per_port: {max_macs}, violation: {violation}}}
switches:
  spine1: {{dpid: 0x101}}
  spine2: {{dpid: 0x102}}
  leaf1:  {{dpid: 0x201, rack_subnet: 172.16.1.0/24}}
  leaf2:  {{dpid: 0x202, rack_subnet: 172.16.2.0/24}}
links: [[spine1, leaf1], [spine1, leaf2], [spine2, leaf1], [spine2, leaf2]]
hypervisors:
  hv1: {{leaf: leaf1, vtep: 172.16.1.11, trunk_vlans: [10, 20]}}
'''
DPIDS = {'spine1': 0x101, 'spine2': 0x102, 'leaf1': 0x201, 'leaf2': 0x202}
LINKS = [('spine1', 'leaf1'), ('spine1', 'leaf2'), ('spine2', 'leaf1'), ('spine2', 'leaf2')]


class ScratchFabric:
    """2 spines x 2 leaves; host h1 on leaf1 and h2 on leaf2 (10.99.0.1, .2)."""

    def __init__(self, workdir: Path, port: int, mac_age: int = 300, max_macs: int = 256,
                 violation: str = 'shutdown'):
        self.p = _prefix()
        self.port = port
        self.fabric = Path(workdir) / 'fabric.yaml'
        self.fabric.write_text(FABRIC.format(port=port, mac_age=mac_age, max_macs=max_macs, violation=violation))
        self.links: list[str] = []
        self.hosts: dict[str, str] = {}

    def br(self, name: str) -> str:
        return self.p + name

    def up(self) -> 'ScratchFabric':
        try:
            for name, dpid in DPIDS.items():
                sh('ovs-vsctl add-br {b} -- set bridge {b} datapath_type=netdev fail_mode=secure '
                   'protocols=OpenFlow13,OpenFlow14 other-config:datapath-id={d:016x}'
                   .format(b=self.br(name), d=dpid))
            for a, b in LINKS:
                self.link(a, b)
            for i, leaf in ((1, 'leaf1'), (2, 'leaf2')):
                self.host('h%d' % i, leaf, '10.99.0.%d/24' % i, '02:00:00:99:00:%02x' % i)
            for name in DPIDS:
                sh('ovs-vsctl set-controller %s tcp:127.0.0.1:%d' % (self.br(name), self.port))
        except Exception:
            self.down()
            raise
        return self

    def _veth(self, a: str, b: str) -> None:
        sh('ip link add %s type veth peer name %s' % (a, b))
        self.links.append(a)
        for i in (a, b):
            sh('ip link set %s up && ethtool -K %s tx off >/dev/null' % (i, i))

    def link_name(self, a: str, b: str) -> str:
        return '%s%s%s' % (self.p, a[0] + a[-1], b[0] + b[-1])       # e.g. osabcs1l1

    def link(self, a: str, b: str) -> None:
        ab, ba = self.link_name(a, b), self.link_name(b, a)
        self._veth(ab, ba)
        sh('ovs-vsctl add-port %s %s -- add-port %s %s' % (self.br(a), ab, self.br(b), ba))

    def host(self, name: str, leaf: str, ip: str, mac: str) -> None:
        ns, port = self.p + name, self.p + name
        sh('ip netns add %s' % ns)
        self.hosts[name] = ns
        sh('ip link add %s type veth peer name eth0 netns %s' % (port, ns))
        self.links.append(port)
        sh('ip -n {ns} link set eth0 address {mac} && ip -n {ns} addr add {ip} dev eth0 && '
           'ip -n {ns} link set eth0 up && ip -n {ns} link set lo up && '
           'ip netns exec {ns} ethtool -K eth0 tx off >/dev/null && '
           'ip link set {p} up && ethtool -K {p} tx off >/dev/null'.format(ns=ns, mac=mac, ip=ip, p=port))
        sh('ovs-vsctl add-port %s %s' % (self.br(leaf), port))

    def exec(self, host: str, cmd: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run('ip netns exec %s %s' % (self.hosts[host], cmd), shell=True,
                              capture_output=True, text=True, check=check)

    def ping(self, host: str, ip: str, count: int = 1, wait: float = 1) -> bool:
        return self.exec(host, 'ping -c%d -W%s -q %s' % (count, wait, ip)).returncode == 0

    def ofport(self, iface: str) -> int:
        return int(sh('ovs-vsctl get interface %s ofport' % iface).strip())

    def trace(self, switch: str, flow: str) -> str:
        return sh('ovs-appctl ofproto/trace %s %s' % (self.br(switch), flow))

    def down(self) -> None:
        for name in DPIDS:
            sh('ovs-vsctl --if-exists del-br %s' % self.br(name), check=False)
        for link in self.links:
            sh('ip link del %s 2>/dev/null' % link, check=False)
        for ns in self.hosts.values():
            sh('ip netns del %s' % ns, check=False)

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()
