"""The lab as a Mininet Topo, for the Lab API and for `mn`:

    mn --custom mininet_topos/topo.py \\
       --topo opendvs,fabric=examples/fabric.yaml[,tenants=A.yaml:B.yaml,prefix=P,vms=2,
              ofp_port=6653] [--test pingall]   (one argument, no spaces; tenants ':'-separated)

mn execs this file without a package context and copies every top-level name into its own
globals, so the imports below are absolute and the module keeps few top-level names; one of
them, `cleanup`, replaces Mininet's machine-wide clean-up on purpose (see mnrun.py).
"""
import inspect
import os
import sys

if __name__ != 'mininet_topos.topo':      # exec'd by mn: make the repository importable
    _repo = os.path.dirname(os.path.dirname(os.path.abspath(inspect.getframeinfo(
        inspect.currentframe()).filename)))
    sys.path.insert(0, _repo)

try:         # under mn an exception here would start its machine-wide clean-up: exit instead
    from mininet.link import Link
    from mininet.topo import Topo

    from mininet_topos import osutil
    from mininet_topos.nodes import LabIntf, MgmtBridge, OVSHypervisor, PhysicalSwitch, VMHost
    from mininet_topos.plan import HV_MGMT, VM_MTU, build_plan, member_mac
except Exception as _e:                               # noqa: BLE001
    raise SystemExit(f'opendvs topo: cannot load the lab: {type(_e).__name__}: {_e}') from None


class OpendvsTopo(Topo):
    """Nodes and veths of a LabPlan; the node classes configure themselves."""

    def build(self, plan=None, hv_autosetup=True):
        for hv in plan.hypervisors.values():
            self.addSwitch(hv.name, cls=OVSHypervisor, plan=plan, autosetup=hv_autosetup)
        for vm in plan.vms.values():
            self.addHost(vm.spec.name, cls=VMHost, vm=vm, ip=None)
        self.addSwitch(plan.mgmt_bridge, cls=MgmtBridge, gateway=f'{plan.mgmt_gateway}/24')
        for sw in plan.switches.values():
            self.addSwitch(sw.bridge, cls=PhysicalSwitch, dpid=f'{sw.dpid:016x}',
                           target=sw.controller, mtu=plan.underlay_mtu, desc=sw.name,
                           bonds=leaf_bonds(plan, sw.name))
        for link in plan.links:
            self._underlay(plan, link)
        for hv in plan.hypervisors.values():
            self._veth(hv.name, plan.mgmt_bridge, HV_MGMT, hv.mgmt_root_intf,
                       params1={'ip': f'{hv.mgmt_ip}/24'},
                       params2={'master': plan.mgmt_bridge})
        mtu = {'mtu': VM_MTU}
        for vm in plan.vms.values():
            for i, (port, nic) in enumerate(zip(vm.ports, vm.spec.nics)):
                self._veth(vm.spec.name, vm.spec.hypervisor, f'eth{i}', port, addr1=nic.mac,
                           params1=mtu, params2=mtu)

    def _underlay(self, plan, link):
        mtu = {'mtu': plan.underlay_mtu}
        a = plan.switches[link.a].bridge
        if link.kind == 'fabric':
            self._veth(a, plan.switches[link.b].bridge, link.intf_a, link.intf_b,
                       port1=link.port_a, port2=link.port_b, params1=mtu, params2=mtu)
        else:
            hv = plan.hypervisors[link.b]
            self._veth(a, hv.name, link.intf_a, link.intf_b, port1=link.port_a,
                       addr2=member_mac(hv.uplink_mac, link.member), params1=mtu, params2=mtu)

    def _veth(self, node1, node2, name1, name2, **opts):
        self.addLink(node1, node2, intfName1=name1, intfName2=name2, cls=Link, intf=LabIntf,
                     **opts)


def leaf_bonds(plan, switch) -> dict:
    """The bonds on one leaf's bridge: <P>b<k> -> (its member intfs, the fabric's bond kind)."""
    out = {}
    for hv in plan.hypervisors.values():
        if hv.leaf == switch and hv.leaf_bond:
            members = [link.intf_a for link in plan.links if link.kind == 'uplink' and link.b == hv.name]
            out[hv.leaf_bond] = (members, hv.bond)
    return out


def make_topo(fabric=None, prefix=None, vms=None, ofp_port=None, workdir=None, tenants=None):
    """Topo for `mn --topo opendvs,fabric=FILE[,tenants=A.yaml:B.yaml]`: loads the fabric (and
    tenant files, ':'-separated), sweeps what earlier runs that died left behind, picks per-run
    names (prefix mn<xxx> unless given) and a free mgmt subnet, and records what it will build
    (mininet_topos/mnrun.py).  Every failure exits with its message (SystemExit), never with
    an exception, which would send mn into its machine-wide clean-up."""
    import atexit

    from mininet.log import info

    from mininet_topos import mnrun
    if fabric is None:
        raise SystemExit('usage: --topo opendvs,fabric=FILE[,tenants=FILE:FILE,prefix=P,vms=N,'
                         'ofp_port=PORT]')
    try:
        from controller.policy.errors import PolicyError
        from controller.policy.fabric import load_fabric
        from controller.policy.tenant import load_policy
        try:
            fab = load_fabric(fabric)
            loaded = load_policy(fab, str(tenants).split(':')) if tenants else []
        except PolicyError as e:
            raise SystemExit(str(e)) from None
        for old, gone in mnrun.sweep_dead_runs().items():
            info(f'*** opendvs: removed what an earlier run ({old}) left: {", ".join(gone) or "nothing"}\n')
        prefix = str(prefix) if prefix else mnrun.fresh_prefix()
        plan = build_plan(fab, prefix, osutil.pick_mgmt_octet(prefix), ofp_port=ofp_port,
                          vms_per_hypervisor=None if vms is None else int(vms), workdir=workdir,
                          tenants=loaded)
        busy = mnrun.in_use(plan)
        if busy:
            raise SystemExit(f'opendvs topo: lab prefix {prefix} is in use ({", ".join(busy)}); '
                             'pick another prefix= (or `opendvs-lab down --prefix` it)')
        mnrun.record(plan)
        atexit.register(mnrun.cleanup)
        info(f'*** opendvs: lab {plan.prefix}, management {plan.mgmt_gateway}/24, controller '
             f'port {plan.ofp_port}, run dir {plan.workdir}\n')
        return OpendvsTopo(plan=plan)
    except SystemExit as e:
        mnrun.cleanup()
        raise SystemExit(e.code if isinstance(e.code, int) else f'opendvs topo: {e.code}') from None
    except BaseException as e:     # noqa: BLE001 - an exception would reach mn's global clean-up
        mnrun.cleanup()
        raise SystemExit(f'opendvs topo: {type(e).__name__}: {e}') from None


def cleanup():
    """Stands in for Mininet's global clean-up under `mn --custom` (mn copies this file's
    top-level names into its own): when a run fails or is interrupted, remove what this run
    built, by the names it recorded, and nothing else on the machine.  (`mn --custom this -c`
    lands here too: it removes what dead opendvs runs left, by their records.)"""
    from mininet.log import info

    from mininet_topos import mnrun
    info('*** opendvs: removing what this run built (and nothing else)\n')
    mnrun.cleanup()
    for old, gone in mnrun.sweep_dead_runs().items():
        info(f'*** opendvs: removed what an earlier run ({old}) left: {", ".join(gone) or "nothing"}\n')


topos = {'opendvs': make_topo}
