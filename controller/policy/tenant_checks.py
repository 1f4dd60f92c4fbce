"""Checks across tenant policy files and against the fabric: what no single file can know.

Each problem is reported in the file (and at the line) of the tenant that comes later in the
list, naming where the earlier claim is, so the operator sees both places.
"""
from __future__ import annotations

from typing import Sequence

VM_MTU = 1500             # what a VM's nic sends on every network
VXLAN_OVERHEAD = 50       # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8

from controller.policy import model
from controller.policy.errors import Diag, PolicyError
from controller.policy.tenant_parse import tenant_doc
from controller.policy.values import known
from controller.policy.yamlsource import YamlDoc, path_str


class _Where:
    """Positions inside each tenant's own file; a Tenant with no YamlDoc points at SOURCE:1:1."""

    def __init__(self, tenants, docs):
        self.tenants, self.docs, self.diags = tenants, docs, []

    def pos(self, i: int, path) -> tuple[str, int, int]:
        doc = self.docs[i]
        if doc is None:
            return self.tenants[i].source, 1, 1
        return (doc.file, *doc.mark(path))

    def ref(self, i: int, path) -> str:
        return '%s:%d:%d' % self.pos(i, path)

    def error(self, i: int, path, message: str) -> None:
        self.diags.append(Diag(*self.pos(i, path), f'{path_str(path)}: {message}'))


def check_tenants(fabric: model.Fabric | None, tenants: Sequence[model.Tenant],
                  docs: Sequence[YamlDoc | None] | None = None) -> None:
    """Raise PolicyError if the tenants clash with each other or (when given) the fabric.

    docs: the YamlDoc of each tenant, in the same order; by default the one each Tenant was
    parsed from (see tenant_parse.tenant_doc).
    """
    tenants = list(tenants)
    docs = [tenant_doc(t) for t in tenants] if docs is None else list(docs)
    if len(docs) != len(tenants):
        raise ValueError('check_tenants: docs must match tenants one to one')
    w = _Where(tenants, docs)
    names: dict[str, int] = {}
    claims: dict[tuple, tuple[int, tuple]] = {}     # ('vlan', 10) -> (tenant index, path)
    for i, t in enumerate(tenants):
        if t.name in names:
            w.error(i, ('tenant',), f"tenant '{t.name}' is already defined in {w.ref(names[t.name], ('tenant',))}")
            continue        # its networks and MACs would only repeat the clash
        names[t.name] = i
        _networks(w, i, t, fabric, claims)
        _workloads(w, i, t, fabric, claims)
    if w.diags:
        raise PolicyError(w.diags)


def _claim(w, i, path, what: str, key, claims) -> None:
    """A VLAN, VNI or MAC belongs to one tenant."""
    if key in claims:
        j, other = claims[key]
        w.error(i, path, f"{what} is already used by tenant '{w.tenants[j].name}' ({w.ref(j, other)})")
    else:
        claims[key] = (i, path)


def _networks(w, i, t, fabric, claims) -> None:
    for net in t.networks.values():
        if net.vlan is not None:
            path = ('networks', net.name, 'vlan')
            if fabric is not None and net.vlan == fabric.native_vlan:
                w.error(i, path, f"VLAN {net.vlan} is the fabric's native VLAN (untagged frames; "
                                 f'native_vlan in {fabric.source})')
            else:
                _claim(w, i, path, f'VLAN {net.vlan}', ('vlan', net.vlan), claims)
        if net.vni is not None:
            _claim(w, i, ('networks', net.name, 'vni'), f'VNI {net.vni}', ('vni', net.vni), claims)
            if fabric is not None and fabric.underlay_mtu < VM_MTU + VXLAN_OVERHEAD:
                w.error(i, ('networks', net.name, 'vni'),
                        f'overlay network {net.name!r} cannot carry {VM_MTU}-byte frames: VXLAN adds '
                        f'{VXLAN_OVERHEAD} bytes and the underlay MTU is {fabric.underlay_mtu} '
                        f'(underlay.mtu in {fabric.source}; needs at least {VM_MTU + VXLAN_OVERHEAD})')


def _workloads(w, i, t, fabric, claims) -> None:
    for wl in t.workloads.values():
        hv = None
        if fabric is not None and wl.hypervisor is not None:
            hv = fabric.hypervisors.get(wl.hypervisor)
            if hv is None:
                w.error(i, ('workloads', wl.name, 'hypervisor'),
                        f"hypervisor '{wl.hypervisor}' is not in the fabric {fabric.source} "
                        f'(known: {known(fabric.hypervisors)})')
        for nic in wl.nics:
            p = ('workloads', wl.name, 'nics', nic.index)
            _claim(w, i, p + ('mac',), f'MAC {nic.mac}', ('mac', nic.mac), claims)
            if fabric is not None and nic.mac == fabric.gateway_mac:
                w.error(i, p + ('mac',), f'{nic.mac} is the anycast gateway MAC of the fabric '
                                         f'(gateway_mac in {fabric.source}): a VM cannot use it')
            vlan = t.networks[nic.network].vlan
            if hv is not None and vlan is not None and vlan not in hv.trunk_vlans:
                allowed = ', '.join(map(str, hv.trunk_vlans)) or 'none'
                w.error(i, p + ('network',),
                        f"network '{nic.network}' is VLAN {vlan}, but hypervisor '{hv.name}' "
                        f'(its hint) only trunks VLANs {allowed}')
