"""The lab plan: every name, address, MAC and port number a lab will create, from a Fabric.

Pure (no I/O), so the naming rules live in one place and the Topo, the Lab, the CLI's state
file and the leftover sweep all agree on what "ours" means.

Naming (root namespace objects all start with the prefix, so two labs never collide and
teardown can be checked by name; Linux interface names are at most 15 characters):

    <P><switch>        OVS bridge of a physical switch (<P>s<i> if that is too long)
    <P>l<i>a, <P>l<i>b  veth ends of fabric link i (a on the first switch of the pair)
    <P>u<k>            leaf end of hypervisor k's uplink        (hv end: phy0, in the hv)
    <P>u<k>m<j>        leaf end of its j-th extra uplink (j>=1)  (hv end: phy<j>); with
                       `uplinks: 2+` they form the bond <P>b<k> on the leaf and bond0 on br-phy
    <P>m<k>            root end of hypervisor k's mgmt veth     (hv end: mgmt0, 169.254.N.10+k)
    <P>mgmt            Linux bridge of the management LAN       (169.254.N.1/24)

Inside namespaces names need no prefix: a hv has phy0, mgmt0, br-int, br-phy and vnet<j>
(the hv end of the lab's j-th VM nic, numbered over the whole lab so it can move between
hvs); a VM has eth0, eth1, ... (one per nic, in nic order).

VMs of tenant workloads (tenant_vms) are named after the workload when that name is unique
in the lab, else <tenant>-<workload>.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
from types import MappingProxyType
from typing import Iterable, Mapping

from mininet_topos.errors import LabError

PREFIX_RE = re.compile(r'[a-z][a-z0-9]{0,7}\Z')
IFNAMSIZ = 15                 # Linux interface names: 15 characters + NUL
OVSDB_PORT = 6640
VM_MTU = 1500
HV_UPLINK = 'phy0'
HV_BOND = 'bond0'             # br-phy's bond of phy0..phy<n-1> when a hv has several uplinks
HV_MGMT = 'mgmt0'
INT_PATCH = 'int-to-phy'      # the controller recognises a hv's uplink by this name
TUNNEL_PORT = 'vxlan0'        # br-int's VXLAN port (remote_ip=flow, key=flow); 'vxlan*' is a tunnel
PHY_PATCH = 'phy-to-int'
OF_PROTOCOLS = 'OpenFlow13,OpenFlow14'
MAX_BACKOFF_MS = 1000


@dataclasses.dataclass(frozen=True)
class NicSpec:
    """One VM interface (eth<i> for the i-th nic).  `ip` carries its prefix length; None
    leaves the interface without an address."""
    mac: str
    ip: str | None
    iface_id: str
    vlan: int | None = None          # the guest tags its traffic (eth<i>.<vlan>) when set
    network: str | None = None       # the tenant network it is on (for people reading status)

    @property
    def address(self) -> str | None:
        return self.ip.split('/')[0] if self.ip else None


@dataclasses.dataclass(frozen=True)
class VMSpec:
    """What a VM is: tenants' workloads become these.

    A one-nic VM is VMSpec(name, hv, mac, ip, iface_id[, vlan]); a VM with several nics
    passes nics=(NicSpec, ...) instead, and mac/ip/iface_id/vlan then read as nic 0's.
    gateway: the default route (via the nic whose subnet holds it).
    """
    name: str
    hypervisor: str
    mac: str | None = None
    ip: str | None = None
    iface_id: str | None = None
    vlan: int | None = None
    nics: tuple[NicSpec, ...] = ()
    gateway: str | None = None
    tenant: str | None = None
    workload: str | None = None

    def __post_init__(self):
        if not self.nics:
            if self.mac is None or self.iface_id is None:
                raise LabError(f'VM {self.name!r}: give mac, ip and iface_id, or nics')
            nic0 = NicSpec(self.mac, self.ip, self.iface_id, self.vlan)
            object.__setattr__(self, 'nics', (nic0,))
        else:
            nics = tuple(n if isinstance(n, NicSpec) else NicSpec(**dict(n)) for n in self.nics)
            given = (self.mac, self.ip, self.iface_id, self.vlan)
            first = (nics[0].mac, nics[0].ip, nics[0].iface_id, nics[0].vlan)
            if any(g is not None and g != f for g, f in zip(given, first)):
                raise LabError(f'VM {self.name!r}: mac/ip/iface_id/vlan contradict nics[0]')
            object.__setattr__(self, 'nics', nics)
            for field, value in zip(('mac', 'ip', 'iface_id', 'vlan'), first):
                object.__setattr__(self, field, value)

    @property
    def address(self) -> str | None:
        return self.nics[0].address


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
    member: int = 0                  # an uplink's index among its hv's uplinks (phy<member>)

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
    mgmt_ip: str
    mgmt_root_intf: str
    uplink_mac: str
    rundir: str
    controller: str
    uplinks: int = 1                 # cables to the leaf; 2+ are one bond on both ends
    bond: str = 'lacp'               # 'lacp' | 'active-backup' (fabric `bond:`)
    leaf_bond: str | None = None     # the leaf-side bond's Port name (<P>b<k>), when bonded

    @property
    def uplink_intfs(self) -> tuple[str, ...]:
        """The hv ends of its uplinks, inside the hv: phy0, phy1, ..."""
        return tuple(hv_uplink(j) for j in range(self.uplinks))

    @property
    def ovsdb(self) -> str:
        return f'tcp:{self.mgmt_ip}:{OVSDB_PORT}'


@dataclasses.dataclass(frozen=True)
class VMPlan:
    spec: VMSpec
    ports: tuple[str, ...]           # hv end of each nic's veth (vnet<j>), in nic order

    @property
    def port(self) -> str:
        return self.ports[0]

    @property
    def name(self) -> str:
        return self.spec.name


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
               vms: Iterable | None = None, vms_per_hypervisor: int | None = None,
               workdir: str | None = None, tenants: Iterable = ()) -> LabPlan:
    """Compute the whole lab layout; raise LabError for anything that cannot be built.

    VMs: `vms` (VMSpecs) if given, else `vms_per_hypervisor` default VMs per hv (2 unless
    tenants are given, then 0), then one VM per workload of `tenants` (model.Tenant objects).
    """
    check_prefix(prefix)
    if not 1 <= mgmt_octet <= 254:
        raise LabError(f'management subnet octet {mgmt_octet} is not in 1..254')
    port = ofp_port or fabric.controller.ofp_port
    workdir = workdir or f'/tmp/opendvs-lab-{prefix}'
    _check_socket_paths(workdir, fabric)
    switches = _switches(fabric, prefix, port)
    links = _links(fabric, prefix)
    hvs = _hypervisors(fabric, prefix, mgmt_octet, port, links, workdir)
    tenants = tuple(tenants)
    if vms is not None:
        specs = [_as_spec(v) for v in vms]
    else:
        per_hv = vms_per_hypervisor if vms_per_hypervisor is not None else (0 if tenants else 2)
        specs = default_vms(fabric, per_hv)
    nodes = set(fabric.hypervisors) | {s.bridge for s in switches.values()} | {f'{prefix}mgmt'}
    specs += tenant_vms(fabric, tenants, nodes | {s.name for s in specs})
    vm_plans = _vms(specs, fabric, nodes)
    return LabPlan(prefix, str(fabric.source), port, mgmt_octet, fabric.underlay_mtu, workdir,
                   MappingProxyType(switches), links, MappingProxyType(hvs),
                   MappingProxyType(vm_plans))


def check_prefix(prefix: str) -> None:
    if not PREFIX_RE.fullmatch(prefix or ''):
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


VM_NAME_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]*\Z')


def tenant_vms(fabric, tenants, reserved=frozenset()) -> list[VMSpec]:
    """One VMSpec per workload of each tenant (controller.policy.model.Tenant), in order.

    Placement: the workload's `hypervisor:` hint; workloads without one go round-robin over
    the fabric's hypervisors in fabric order, counted over all tenants in the order given,
    so the same files always give the same placement.
    Naming: the workload's name when no other tenant has a workload of that name (and no
    hypervisor or other node is called that), else <tenant>-<workload>.
    Nics: eth<i> gets nic i's MAC and IP with its network's prefix length; the default route
    goes via the network gateway when exactly one nic's network has a gateway.
    """
    tenants = list(tenants)
    names = [t.name for t in tenants]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LabError(f'tenant {dup[0]!r} is given twice')
    count: dict[str, int] = {}
    for t in tenants:
        for w in t.workloads.values():
            count[w.name] = count.get(w.name, 0) + 1
    hvs = list(fabric.hypervisors)
    rr, taken, specs = 0, set(reserved), []
    for t in tenants:
        for w in t.workloads.values():
            where = f'tenant {t.name} ({t.source}), workload {w.name}'
            if w.hypervisor is not None:
                if w.hypervisor not in fabric.hypervisors:
                    raise LabError(f'{where}: hypervisor {w.hypervisor!r} is not in the fabric '
                                   f'({", ".join(hvs)})')
                hv = w.hypervisor
            else:
                if not hvs:
                    raise LabError(f'{where}: the fabric has no hypervisors')
                hv, rr = hvs[rr % len(hvs)], rr + 1
            name = w.name if count[w.name] == 1 and w.name not in taken else f'{t.name}-{w.name}'
            if name in taken or not VM_NAME_RE.fullmatch(name):
                raise LabError(f'{where}: cannot name its VM {name!r} (taken, or not a plain '
                               'name); rename the workload')
            taken.add(name)
            specs.append(_workload_spec(t, w, name, hv, where))
    return specs


def _workload_spec(tenant, workload, name, hv, where) -> VMSpec:
    if not workload.nics:
        raise LabError(f'{where}: a VM needs at least one nic')
    nics, gateways = [], []
    for nic in sorted(workload.nics, key=lambda n: n.index):
        net = tenant.networks.get(nic.network)
        if net is None:
            raise LabError(f'{where}: nic{nic.index} is on unknown network {nic.network!r}')
        ip = f'{nic.ip}/{net.subnet.prefixlen}' if nic.ip is not None else None
        nics.append(NicSpec(str(nic.mac).lower(), ip, tenant.iface_id(workload.name, nic.index),
                            network=net.name))
        if net.gateway is not None:
            gateways.append(str(net.gateway))
    if [n.index for n in sorted(workload.nics, key=lambda n: n.index)] != list(range(len(nics))):
        raise LabError(f'{where}: nic indexes must be 0..{len(nics) - 1}')
    return VMSpec(name, hv, nics=tuple(nics), gateway=gateways[0] if len(gateways) == 1 else None,
                  tenant=tenant.name, workload=workload.name)


def _as_spec(v) -> VMSpec:
    return v if isinstance(v, VMSpec) else VMSpec(**dict(v))


def _switches(fabric, prefix, port) -> dict[str, SwitchPlan]:
    target = f'tcp:{fabric.controller.ofp_host}:{port}'
    out = {}
    for i, sw in enumerate(fabric.switches.values(), start=1):
        bridge = prefix + sw.name
        if len(bridge) > IFNAMSIZ or not re.fullmatch(r'[A-Za-z0-9_-]+', sw.name):
            bridge = f'{prefix}s{i}'          # still ours, still unique; bridge() tells which
        out[sw.name] = SwitchPlan(sw.name, bridge, sw.dpid, sw.role, target)
    return out


def _links(fabric, prefix) -> tuple[LinkPlan, ...]:
    # OpenFlow port numbers are handed out per switch in fabric order: cables first, then
    # uplinks, so the same fabric file always gives the same port numbers.  A cable whose
    # ports the file names is cabled on those; the others skip them.
    next_port = {name: 1 for name in fabric.switches}
    named = {(sw, no) for (a, b), ports in fabric.link_ports.items() for sw, no in zip((a, b), ports)}

    def take(sw):
        while (sw, next_port[sw]) in named:
            next_port[sw] += 1
        next_port[sw] += 1
        return next_port[sw] - 1

    links = [LinkPlan('fabric', a, b, f'{prefix}l{i}a', f'{prefix}l{i}b',
                      *(fabric.link_ports.get((a, b)) or (take(a), take(b))))
             for i, (a, b) in enumerate(fabric.links)]
    for k, hv in enumerate(fabric.hypervisors.values(), start=1):
        for j in range(hv.uplinks):
            leaf_end = f'{prefix}u{k}' + (f'm{j}' if j else '')
            links.append(LinkPlan('uplink', hv.leaf, hv.name, leaf_end, hv_uplink(j),
                                  take(hv.leaf), None, j))
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
        out[hv.name] = HypervisorPlan(
            name=hv.name, index=k, leaf=hv.leaf, dpid=hv.dpid,
            vtep=ipaddress.IPv4Interface(f'{hv.vtep}/{own.prefixlen}'),
            gateway=next(own.hosts()),
            mgmt_ip=f'169.254.{octet}.{10 + k}', mgmt_root_intf=f'{prefix}m{k}',
            uplink_mac=f'0e:00:00:00:{k >> 8:02x}:{k & 0xff:02x}',
            rundir=f'{workdir}/{hv.name}', controller=f'tcp:169.254.{octet}.1:{port}',
            uplinks=hv.uplinks, bond=hv.bond,
            leaf_bond=f'{prefix}b{k}' if hv.uplinks > 1 else None)
    return out


def hv_uplink(j: int) -> str:
    return f'phy{j}'


def member_mac(base: str, j: int) -> str:
    """The MAC of a hv's j-th uplink: member 0 keeps the hv's uplink_mac."""
    parts = base.split(':')
    parts[3] = f'{j:02x}'
    return ':'.join(parts)


def _rack_networks(fabric) -> dict[str, ipaddress.IPv4Network]:
    """Each hv's VTEP network: its leaf's rack_subnet, or the VTEP's /24 when the leaf has none.

    The hv's only route off the rack is a default route via the rack's first address, as in a
    routed leaf-spine underlay (its leaf answers for it: apps/underlay_routing.py).  On-link
    routes to other racks would not do: OVS 3.1 drops a route from its tunnel routing table
    unless its gateway (or destination) lies in a subnet of the output device.
    """
    out = {}
    for hv in fabric.hypervisors.values():
        rack = fabric.switches[hv.leaf].rack_subnet
        if rack is None or hv.vtep not in rack:
            rack = ipaddress.IPv4Network(f'{hv.vtep}/24', strict=False)
        out[hv.name] = rack
    return out


def _vms(specs, fabric, taken) -> dict[str, VMPlan]:
    taken, macs, ids = set(taken), set(), set()
    out, j = {}, 0
    for spec in specs:
        problem = _vm_problem(spec, fabric, taken) or next(
            filter(None, (_nic_problem(i, nic, macs, ids) for i, nic in enumerate(spec.nics))),
            None)
        if problem:
            raise LabError(f'VM {spec.name!r}: {problem}')
        taken.add(spec.name)
        out[spec.name] = VMPlan(spec, tuple(f'vnet{j + i}' for i in range(len(spec.nics))))
        j += len(spec.nics)
    return out


def _vm_problem(spec, fabric, taken) -> str | None:
    if spec.name in taken:
        return 'the name is already used by another node'
    if not VM_NAME_RE.fullmatch(spec.name):
        return 'a VM name is letters, digits, ".", "_" and "-"'
    if spec.hypervisor not in fabric.hypervisors:
        return f'unknown hypervisor {spec.hypervisor!r}'
    if spec.gateway is not None:
        try:
            gw = ipaddress.IPv4Address(spec.gateway)
        except ValueError:
            return f'bad gateway {spec.gateway!r}'
        if not any(gw in ipaddress.IPv4Interface(n.ip).network for n in spec.nics
                   if n.ip and _is_cidr(n.ip)):
            return f'gateway {gw} is in none of its nics\' subnets'
    return None


def _nic_problem(i, nic, macs, ids) -> str | None:
    mac = (nic.mac or '').lower()
    if not re.fullmatch(r'([0-9a-f]{2}:){5}[0-9a-f]{2}', mac):
        return f'nic{i}: bad MAC {nic.mac!r}'
    if mac in macs:
        return f'nic{i}: MAC {nic.mac} is used twice in the lab'
    if not nic.iface_id or nic.iface_id in ids:
        return f'nic{i}: iface-id {nic.iface_id!r} is empty or used twice'
    macs.add(mac)
    ids.add(nic.iface_id)
    if nic.ip is not None:
        if not _is_cidr(nic.ip):
            return f'nic{i}: bad IPv4 address/prefix {nic.ip!r}'
        if '/' not in nic.ip:
            return f'nic{i}: {nic.ip!r} needs a prefix length, e.g. {nic.ip}/24'
    if nic.vlan is not None and not 1 <= nic.vlan <= 4094:
        return f'nic{i}: VLAN {nic.vlan} is not in 1..4094'
    return None


def _is_cidr(ip) -> bool:
    try:
        ipaddress.IPv4Interface(ip)
    except ValueError:
        return False
    return True


def _check_socket_paths(workdir, fabric) -> None:
    # AF_UNIX paths are limited to 107 bytes; the longest one is <rundir>/ovs-vswitchd.ctl.
    longest = max((len(h) for h in fabric.hypervisors), default=0)
    if len(workdir) + longest + len('//ovs-vswitchd.ctl') > 107:
        raise LabError(f'work directory {workdir} is too long for OVS unix sockets')
