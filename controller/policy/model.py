"""The frozen fabric model: what controller, apps and lab read.  Built only by fabric.load_fabric()."""
from __future__ import annotations

import dataclasses
import functools
import ipaddress
import zlib
from types import MappingProxyType
from typing import Mapping

DEFAULT_OPENFLOW = 'tcp:127.0.0.1:6653'
DEFAULT_API = 'http://127.0.0.1:8080'
VIOLATIONS = ('shutdown', 'restrict')        # learning.violation; the first is the default
BOND_MODES = ('lacp', 'active-backup')     # a hypervisor's bonded uplinks; the first is the default
MAX_UPLINKS = 8
# The anycast gateway's router MAC: one for the whole fabric, like an EVPN fabric's
# anycast-gateway MAC, so a VM keeps its gateway's ARP entry wherever it moves, and every
# network's gateway answers with it (tenants are kept apart by their VRF, not by the MAC).
DEFAULT_GATEWAY_MAC = '02:d5:00:00:00:01'


@dataclasses.dataclass(frozen=True)
class ControllerSettings:
    openflow: str = DEFAULT_OPENFLOW      # "tcp:HOST:PORT": where the physical switches connect
    api: str = DEFAULT_API                # "http://HOST:PORT": the REST API dvsctl talks to

    @property
    def ofp_host(self) -> str:
        return self.openflow.split(':')[1]

    @property
    def ofp_port(self) -> int:
        return int(self.openflow.rsplit(':', 1)[1])


@dataclasses.dataclass(frozen=True)
class Learning:
    mac_age: int = 300               # seconds a learned MAC lives without traffic from it
    max_macs_per_port: int = 256     # learning stops (and new sources are dropped) past this
    # what a VM/edge port that sends one more new source gets (Cisco port-security's words):
    # 'shutdown' -- the whole port dropped for errdisable_recovery seconds, one flow the
    # datapath matches without an upcall per forged MAC; 'restrict' -- only the new sources
    violation: str = VIOLATIONS[0]
    errdisable_recovery: int = 30


@dataclasses.dataclass(frozen=True)
class Switch:
    """A physical (leaf/spine) switch: an OVS bridge on the root OVS in the lab."""
    name: str
    dpid: int
    role: str                                   # 'leaf' (has hypervisors or a rack_subnet) or 'spine'
    rack_subnet: ipaddress.IPv4Network | None = None


@dataclasses.dataclass(frozen=True)
class Hypervisor:
    """A hypervisor: its own OVS with br-int (VM ports) and br-phy (uplink to its leaf)."""
    name: str
    leaf: str
    vtep: ipaddress.IPv4Address
    trunk_vlans: tuple[int, ...]
    dpid: int                                   # datapath id of its br-int
    uplinks: int = 1                            # cables to its leaf; 2+ are one bond
    bond: str = BOND_MODES[0]                   # 'lacp' (802.3ad, both ends negotiate) or 'active-backup'

    @property
    def bonded(self) -> bool:
        return self.uplinks > 1


@dataclasses.dataclass(frozen=True)
class Fabric:
    source: str                                  # the file it was loaded from
    controller: ControllerSettings
    underlay_mtu: int
    native_vlan: int                             # VLAN of untagged frames (ports with no binding)
    learning: Learning
    switches: Mapping[str, Switch]
    links: tuple[tuple[str, str], ...]           # physical switch pairs, each sorted by name
    hypervisors: Mapping[str, Hypervisor]
    gateway_mac: str = DEFAULT_GATEWAY_MAC      # the anycast gateway's MAC (apps/anycast_gateway.py)
    # (a, b) of `links` -> (port on a, port on b), for the cables whose ports the file names:
    # they carry traffic as soon as both ports are up; LLDP only verifies them (apps/topology.py)
    link_ports: Mapping[tuple[str, str], tuple[int, int]] = dataclasses.field(default_factory=lambda: frozen_map({}))

    def switch_by_dpid(self, dpid: int):
        """The Switch or Hypervisor whose (br-int) datapath id is dpid, or None."""
        return self._by_dpid.get(dpid)

    @functools.cached_property
    def _by_dpid(self) -> Mapping:
        out = {h.dpid: h for h in self.hypervisors.values()}
        out.update((s.dpid, s) for s in self.switches.values())      # a switch wins, as before
        return frozen_map(out)

    def all_vlans(self) -> tuple[int, ...]:
        """Every VLAN the fabric carries: the native VLAN plus every hypervisor trunk VLAN."""
        vl = {self.native_vlan}
        for h in self.hypervisors.values():
            vl.update(h.trunk_vlans)
        return tuple(sorted(vl))


def default_hypervisor_dpid(name: str) -> int:
    """A stable br-int datapath id for a hypervisor with no explicit `dpid:` (0xd5 prefix + crc32)."""
    return 0xd5 << 48 | zlib.crc32(name.encode())


def frozen_map(d: dict) -> Mapping:
    return MappingProxyType(dict(d))


# ---- tenant policy (built only by controller.policy.tenant) ------------------------------

@dataclasses.dataclass(frozen=True)
class Network:
    """A port-group: VLAN-backed (`vlan`) or, later, a VXLAN overlay (`vni`)."""
    name: str
    subnet: ipaddress.IPv4Network
    vlan: int | None = None
    vni: int | None = None
    gateway: ipaddress.IPv4Address | None = None
    line: int = dataclasses.field(default=0, compare=False)   # where it is in its file (cookies)


@dataclasses.dataclass(frozen=True)
class Nic:
    index: int                        # position in the workload's nics list: iface-id .../nic<index>
    network: str
    mac: str                          # lower-case aa:bb:cc:dd:ee:ff
    ip: ipaddress.IPv4Address


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    labels: tuple[str, ...]
    nics: tuple[Nic, ...]
    hypervisor: str | None = None     # placement hint for the lab only; the controller follows bindings
    line: int = dataclasses.field(default=0, compare=False)   # where it is in its file (cookies)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One side of a rule: exactly one of label / workload / network / cidr is set."""
    label: str | None = None
    workload: str | None = None
    network: str | None = None
    cidr: ipaddress.IPv4Network | None = None


@dataclasses.dataclass(frozen=True)
class Allow:
    proto: str                        # 'tcp' | 'udp' | 'icmp' | 'any'
    ports: tuple[int, int] | None = None   # inclusive range for tcp/udp; None = every port
    icmp_type: int | None = None      # icmp only: one ICMP type (8 = echo request); None = every type


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    src: Endpoint
    dst: Endpoint
    allow: tuple[Allow, ...]
    line: int = 0                     # where the rule is in its file: flows trace back to it


@dataclasses.dataclass(frozen=True)
class Security:
    default: str = 'deny'             # inside the tenant; other tenants are always unreachable
    rules: tuple[Rule, ...] = ()


@dataclasses.dataclass(frozen=True)
class Tenant:
    name: str
    source: str
    networks: Mapping[str, Network]
    workloads: Mapping[str, Workload]
    security: Security = Security()

    def where(self, line: int) -> str:
        """FILE:LINE of something in this tenant's policy file (for cookies and traces)."""
        return '%s:%d' % (self.source, line) if line else self.source

    def iface_id(self, workload: str, nic: int) -> str:
        """The OVS Interface external_ids:iface-id that binds this nic (OVN/libvirt style)."""
        return '%s/%s/nic%d' % (self.name, workload, nic)


@dataclasses.dataclass(frozen=True)
class BoundNic:
    """What an iface-id stands for under the running policy."""
    tenant: Tenant
    workload: Workload
    nic: Nic
    network: Network


@dataclasses.dataclass(frozen=True)
class Policy:
    """Everything the apps compile from: the fabric and the accepted tenant policies."""
    fabric: Fabric
    tenants: Mapping[str, Tenant] = dataclasses.field(default_factory=lambda: frozen_map({}))
    # the stable ids (controller.pipeline.ids.PolicyIds) the core bound to this policy; None:
    # the ids a fresh store would give (tests, tools)
    assigned: object = dataclasses.field(default=None, compare=False, repr=False)

    def with_tenants(self, tenants) -> 'Policy':
        return Policy(self.fabric, frozen_map({t.name: t for t in tenants}))

    def with_ids(self, ids) -> 'Policy':
        return dataclasses.replace(self, assigned=ids)

    @functools.cached_property
    def ids(self):
        """Tenant, network, zone and overlay-VLAN ids: stable across policy changes."""
        if self.assigned is not None:
            return self.assigned
        from controller.pipeline.ids import fresh
        return fresh(self)

    @functools.cached_property
    def nics(self) -> Mapping[str, BoundNic]:
        """iface-id -> BoundNic for every nic of every tenant."""
        out = {}
        for t in self.tenants.values():
            for w in t.workloads.values():
                for n in w.nics:
                    out[t.iface_id(w.name, n.index)] = BoundNic(t, w, n, t.networks[n.network])
        return frozen_map(out)

    @functools.cached_property
    def network_nics(self) -> Mapping[tuple[str, str], tuple[str, ...]]:
        """(tenant, network) -> the iface-ids of its nics."""
        out: dict = {}
        for iface_id, bn in self.nics.items():
            out.setdefault((bn.tenant.name, bn.network.name), []).append(iface_id)
        return frozen_map({k: tuple(sorted(v)) for k, v in out.items()})

    @functools.cached_property
    def vlan_owners(self) -> Mapping[int, str]:
        """VLAN -> tenant, for every VLAN-backed tenant network."""
        return frozen_map({n.vlan: t.name for t in self.tenants.values()
                           for n in t.networks.values() if n.vlan is not None})

    @property
    def overlay_vlans(self) -> Mapping[tuple[str, str], int]:
        """(tenant, network) -> the local VLAN that carries a VXLAN network inside br-int (as
        Neutron's local VLANs): allocated from 4094 down, skipping every VLAN the fabric
        carries, and stable (controller.pipeline.ids).  Never seen outside a hypervisor."""
        return self.ids.overlay_vlan

    @functools.cached_property
    def vlan_networks(self) -> Mapping[int, tuple[str, str]]:
        """VLAN -> (tenant, network) for every VLAN-backed tenant network."""
        return frozen_map({n.vlan: (t.name, n.name) for t in self.tenants.values()
                           for n in t.networks.values() if n.vlan is not None})

    def vlans_in_use(self) -> frozenset[int]:
        """The VLANs physical switches and trunks carry: the native VLAN and tenant VLANs."""
        return frozenset(self.vlan_owners) | {self.fabric.native_vlan}
