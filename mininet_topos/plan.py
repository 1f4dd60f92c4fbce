"""The lab plan: every name, address, MAC and port number a lab will create, from a Fabric.

Pure (no I/O), so the naming rules live in one place and the Topo, the Lab, the CLI's state
file and the leftover sweep all agree on what "ours" means.

Naming (root namespace objects all start with the prefix, so two labs never collide and
teardown can be checked by name; Linux interface names are at most 15 characters):

    <P><switch>        OVS bridge of a physical switch (<P>s<i> if that is too long)
    <P>l<i>a, <P>l<i>b  veth ends of fabric link i (a on the first switch of the pair)
    <P>u<k>            leaf end of hypervisor k's uplink        (hv end: phy0, in the hv)
    <P>m<k>            root end of hypervisor k's mgmt veth     (hv end: mgmt0, 169.254.N.10+k)
    <P>mgmt            Linux bridge of the management LAN       (169.254.N.1/24)

Inside namespaces names need no prefix: a hv has phy0, mgmt0, br-int, br-phy and vnet<j>
(the hv end of VM j, numbered over the whole lab so it can move between hvs); a VM has eth0.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
from types import MappingProxyType
from typing import Iterable, Mapping

from mininet_topos.errors import LabError

PREFIX_RE = re.compile(r'^[a-z][a-z0-9]{0,7}$')
IFNAMSIZ = 15                 # Linux interface names: 15 characters + NUL
OVSDB_PORT = 6640
VM_MTU = 1500
HV_UPLINK = 'phy0'
HV_MGMT = 'mgmt0'
INT_PATCH = 'int-to-phy'      # the controller recognises a hv's uplink by this name
PHY_PATCH = 'phy-to-int'
OF_PROTOCOLS = 'OpenFlow13,OpenFlow14'
MAX_BACKOFF_MS = 1000


@dataclasses.dataclass(frozen=True)
class VMSpec:
    """What a VM is: tenants' workloads become these.  `ip` carries its prefix length."""
    name: str
    hypervisor: str
    mac: str
    ip: str
    iface_id: str
    vlan: int | None = None          # the guest tags its traffic (eth0.<vlan>) when set

    @property
    def address(self) -> str:
        return self.ip.split('/')[0]


@dataclasses.dataclass(frozen=True)
class SwitchPlan:
    name: str
    bridge: str
    dpid: int
    role: str
    controller: str                  # OpenFlow target, e.g. tcp:127.0.0.1:6653


@dataclasses.dataclass(frozen=True)
class LinkPlan:
    """One veth pair of the underlay: a fabric cable or a hypervisor uplink."""
    kind: str                        # 'fabric' | 'uplink'
    a: str                           # switch name (the leaf, for an uplink)
    b: str                           # switch name, or the hypervisor name for an uplink
    intf_a: str
    intf_b: str
    port_a: int                      # OpenFlow port number on a's bridge
    port_b: int | None               # on b's bridge (None: the hv's br-phy numbers it)

    def joins(self, x: str, y: str) -> bool:
        return {x, y} == {self.a, self.b}


@dataclasses.dataclass(frozen=True)
class HypervisorPlan:
    name: str
    index: int                       # 1-based position in the fabric
    leaf: str
    dpid: int                        # of br-int
    vtep: ipaddress.IPv4Interface    # on br-phy, with the rack's prefix length
    gateway: ipaddress.IPv4Address   # the rack's first address: its leaf, as routers go
    routes: tuple[ipaddress.IPv4Network, ...]   # the other racks, via gateway
    mgmt_ip: str
    mgmt_root_intf: str
    uplink_mac: str
    rundir: str
    controller: str

    @property
    def ovsdb(self) -> str:
        return f'tcp:{self.mgmt_ip}:{OVSDB_PORT}'


@dataclasses.dataclass(frozen=True)
class VMPlan:
    spec: VMSpec
    port: str                        # hv end of the VM's veth (vnet<j>)


@dataclasses.dataclass(frozen=True)
class LabPlan:
    prefix: str
    fabric_source: str
    ofp_port: int
    mgmt_octet: int
    underlay_mtu: int
    workdir: str
    switches: Mapping[str, SwitchPlan]
    links: tuple[LinkPlan, ...]
    hypervisors: Mapping[str, HypervisorPlan]
    vms: Mapping[str, VMPlan]

    @property
    def mgmt_bridge(self) -> str:
        return f'{self.prefix}mgmt'

    @property
    def mgmt_gateway(self) -> str:
        return f'169.254.{self.mgmt_octet}.1'

    def root_links(self) -> tuple[str, ...]:
        """Every interface the lab creates in the root namespace (bridges' own taps excluded)."""
        names = [self.mgmt_bridge]
        for link in self.links:
            names.append(link.intf_a)
            if link.kind == 'fabric':
                names.append(link.intf_b)
        names += [h.mgmt_root_intf for h in self.hypervisors.values()]
        return tuple(names)

    def bridges(self) -> tuple[str, ...]:
        return tuple(s.bridge for s in self.switches.values())

    def find_links(self, x: str, y: str) -> list[LinkPlan]:
        return [link for link in self.links if link.joins(x, y)]


def build_plan(fabric, prefix: str, mgmt_octet: int, ofp_port: int | None = None,
               vms: Iterable | None = None, vms_per_hypervisor: int = 2,
               workdir: str | None = None) -> LabPlan:
    """Compute the whole lab layout; raise LabError for anything that cannot be built."""
    check_prefix(prefix)
    if not 1 <= mgmt_octet <= 254:
        raise LabError(f'management subnet octet {mgmt_octet} is not in 1..254')
    port = ofp_port or fabric.controller.ofp_port
    workdir = workdir or f'/tmp/opendvs-lab-{prefix}'
    _check_socket_paths(workdir, fabric)
    switches = _switches(fabric, prefix, port)
    links = _links(fabric, prefix)
    hvs = _hypervisors(fabric, prefix, mgmt_octet, port, links, workdir)
    specs = default_vms(fabric, vms_per_hypervisor) if vms is None else [_as_spec(v) for v in vms]
    vm_plans = _vms(specs, fabric, switches)
    return LabPlan(prefix, str(fabric.source), port, mgmt_octet, fabric.underlay_mtu, workdir,
                   MappingProxyType(switches), links, MappingProxyType(hvs),
                   MappingProxyType(vm_plans))


def check_prefix(prefix: str) -> None:
    if not PREFIX_RE.match(prefix or ''):
        raise LabError(f'lab prefix {prefix!r} must be 1-8 characters [a-z0-9], starting with a '
                       'letter (it starts every interface name, and those are limited to 15)')


def default_vms(fabric, per_hypervisor: int = 2) -> list[VMSpec]:
    """`per_hypervisor` VMs on every hv in one flat 10.0.0.0/16: hv k's VM i is 10.0.k.i."""
    specs = []
    for k, hv in enumerate(fabric.hypervisors, start=1):
        for i in range(1, per_hypervisor + 1):
            name = f'{hv}vm{i}'
            specs.append(VMSpec(name, hv, f'02:00:0a:00:{k:02x}:{i:02x}', f'10.0.{k}.{i}/16',
                                f'default/{name}/nic0'))
    return specs


def _as_spec(v) -> VMSpec:
    return v if isinstance(v, VMSpec) else VMSpec(**dict(v))


def _switches(fabric, prefix, port) -> dict[str, SwitchPlan]:
    target = f'tcp:{fabric.controller.ofp_host}:{port}'
    out = {}
    for i, sw in enumerate(fabric.switches.values(), start=1):
        bridge = prefix + sw.name
        if len(bridge) > IFNAMSIZ or not re.match(r'^[A-Za-z0-9_-]+$', sw.name):
            bridge = f'{prefix}s{i}'          # still ours, still unique; bridge() tells which
        out[sw.name] = SwitchPlan(sw.name, bridge, sw.dpid, sw.role, target)
    return out


def _links(fabric, prefix) -> tuple[LinkPlan, ...]:
    # OpenFlow port numbers are handed out per switch in fabric order: cables first, then
    # uplinks, so the same fabric file always gives the same port numbers.
    next_port = {name: 1 for name in fabric.switches}

    def take(sw):
        next_port[sw] += 1
        return next_port[sw] - 1

    links = [LinkPlan('fabric', a, b, f'{prefix}l{i}a', f'{prefix}l{i}b', take(a), take(b))
             for i, (a, b) in enumerate(fabric.links)]
    for k, hv in enumerate(fabric.hypervisors.values(), start=1):
        links.append(LinkPlan('uplink', hv.leaf, hv.name, f'{prefix}u{k}', HV_UPLINK,
                              take(hv.leaf), None))
    for link in links:
        for name in (link.intf_a, link.intf_b):
            if len(name) > IFNAMSIZ:
                raise LabError(f'interface name {name} is longer than {IFNAMSIZ} characters; '
                               'use a shorter lab prefix')
    return tuple(links)


def _hypervisors(fabric, prefix, octet, port, links, workdir) -> dict[str, HypervisorPlan]:
    racks = _rack_networks(fabric)
    out = {}
    for k, hv in enumerate(fabric.hypervisors.values(), start=1):
        if k > 244:
            raise LabError('the management /24 has room for 244 hypervisors')
        own = racks[hv.name]
        others = tuple(sorted({n for n in racks.values() if n != own}))
        out[hv.name] = HypervisorPlan(
            name=hv.name, index=k, leaf=hv.leaf, dpid=hv.dpid,
            vtep=ipaddress.IPv4Interface(f'{hv.vtep}/{own.prefixlen}'),
            gateway=next(own.hosts()), routes=others,
            mgmt_ip=f'169.254.{octet}.{10 + k}', mgmt_root_intf=f'{prefix}m{k}',
            uplink_mac=f'0e:00:00:00:{k >> 8:02x}:{k & 0xff:02x}',
            rundir=f'{workdir}/{hv.name}', controller=f'tcp:169.254.{octet}.1:{port}')
    return out


def _rack_networks(fabric) -> dict[str, ipaddress.IPv4Network]:
    """Each hv's VTEP network: its leaf's rack_subnet, or the VTEP's /24 when the leaf has none.

    The other racks are reached through the rack's first address, as in a routed leaf-spine
    underlay (the controller makes the leaf answer for it).  On-link routes to other racks
    would not do: OVS 3.1 drops a route from its tunnel routing table unless its gateway (or
    destination) lies in a subnet of the output device, whatever `src` the route has.
    """
    out = {}
    for hv in fabric.hypervisors.values():
        rack = fabric.switches[hv.leaf].rack_subnet
        if rack is None or hv.vtep not in rack:
            rack = ipaddress.IPv4Network(f'{hv.vtep}/24', strict=False)
        out[hv.name] = rack
    return out


def _vms(specs, fabric, switches) -> dict[str, VMPlan]:
    taken = set(fabric.hypervisors) | {s.bridge for s in switches.values()}
    macs = set()
    out = {}
    for j, spec in enumerate(specs):
        problem = _vm_problem(spec, fabric, taken, macs)
        if problem:
            raise LabError(f'VM {spec.name!r}: {problem}')
        taken.add(spec.name)
        macs.add(spec.mac.lower())
        out[spec.name] = VMPlan(spec, f'vnet{j}')
    return out


def _vm_problem(spec, fabric, taken, macs) -> str | None:
    if spec.name in taken:
        return 'the name is already used by another node'
    if spec.hypervisor not in fabric.hypervisors:
        return f'unknown hypervisor {spec.hypervisor!r}'
    if not re.match(r'^([0-9a-f]{2}:){5}[0-9a-f]{2}$', spec.mac.lower()):
        return f'bad MAC {spec.mac!r}'
    if spec.mac.lower() in macs:
        return f'MAC {spec.mac} is used twice'
    try:
        ipaddress.IPv4Interface(spec.ip)
    except ValueError:
        return f'bad IPv4 address/prefix {spec.ip!r}'
    if '/' not in spec.ip:
        return f'{spec.ip!r} needs a prefix length, e.g. {spec.ip}/24'
    if spec.vlan is not None and not 1 <= spec.vlan <= 4094:
        return f'VLAN {spec.vlan} is not in 1..4094'
    return None


def _check_socket_paths(workdir, fabric) -> None:
    # AF_UNIX paths are limited to 107 bytes; the longest one is <rundir>/ovs-vswitchd.ctl.
    longest = max((len(h) for h in fabric.hypervisors), default=0)
    if len(workdir) + longest + len('//ovs-vswitchd.ctl') > 107:
        raise LabError(f'work directory {workdir} is too long for OVS unix sockets')
