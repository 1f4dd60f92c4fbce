"""Mininet node classes of the lab: hypervisors with their own OVS, VMs, leaf/spine
switches on the root OVS, the management LAN bridge, and a veth end that configures itself.

Every command for a node runs in that node's shell (its netns) through node.cmd().
"""
import shlex

from mininet.link import Intf
from mininet.node import Host, OVSSwitch, Switch
from mininet.util import errRun

from mininet_topos import osutil
from mininet_topos.errors import LabError
from mininet_topos.plan import (HV_BOND, HV_UPLINK, INT_PATCH, OF_PROTOCOLS, OVSDB_PORT, PHY_PATCH,
                                TUNNEL_PORT)

SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema'


def sh(node, *commands) -> str:
    """Run commands in node's shell, stopping at the first failure; raise LabError on failure.

    Joined with && on one line: a multi-line script would make the interactive shell print
    continuation prompts, and `set -e` would kill the node's shell itself.
    """
    out = node.cmd(' && '.join(commands) + '; echo "__rc=$?"')
    body, _, rc = out.rpartition('__rc=')
    if rc.strip() != '0':
        raise LabError(f'{node.name}: `{" && ".join(commands)}` failed: {body.strip()}')
    return body


class LabIntf(Intf):
    """A veth end configured the way the userspace datapath needs it.

    txoff: veth TX checksum offload must be off, or TCP through af_packet ports fails.
    mtu: the underlay's jumbo MTU, or 1500 for VMs.  IPv6 stays off so nodes do not chatter
    (router solicitations, MLD) into the switches.  master: enslave to a Linux bridge.
    """

    def config(self, mtu=None, txoff=True, master=None, up=True, **params):
        # One shell round trip per interface instead of Mininet's ifconfig calls: a lab has
        # dozens of veth ends and each round trip costs milliseconds.
        result = super().config(up=None, **params)
        cmds = [f'sysctl -qw net.ipv6.conf.{self.name}.disable_ipv6=1']
        if txoff:
            cmds.append(f'ethtool -K {self.name} tx off >/dev/null')
        link = ['ip link set', self.name] + ([f'mtu {mtu}'] if mtu else []) \
            + ([f'master {master}'] if master else []) + (['up'] if up else [])
        cmds.append(' '.join(link))
        sh(self.node, *cmds)
        return result


class VMHost(Host):
    """A VM: a host whose eth<i> (MAC set at creation) plugs into a hypervisor's br-int, one
    per nic, each with its address; the default route via spec.gateway when there is one.

    With a nic's vlan the guest itself tags that nic's traffic (eth<i>.<vlan>), for
    trunk-to-VM cases; ordinary workloads send untagged frames and the controller tags by
    their network.
    """

    def __init__(self, name, vm=None, **params):
        self.vm = vm                  # plan.VMPlan
        super().__init__(name, **params)

    def config(self, **params):
        result = super().config(**params)
        spec = self.vm.spec
        cmds = ['sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1']
        for i, nic in enumerate(spec.nics):
            dev = f'eth{i}'
            if nic.vlan:
                dev = f'eth{i}.{nic.vlan}'
                self._add_vlan_dev(f'eth{i}', dev, nic.vlan)
            if nic.ip:
                cmds.append(f'ip addr add {nic.ip} dev {dev}')
            cmds.append(f'ip link set {dev} up')
        if spec.gateway:
            cmds.append(f'ip route add default via {spec.gateway}')
        sh(self, *cmds)
        for i, nic in enumerate(spec.nics):      # Mininet's model too: IP(), pingall, iperf, dump
            intf = self.nameToIntf.get(f'eth{i}')
            if intf is not None and nic.ip:
                intf.ip, intf.prefixLen = nic.address, int(nic.ip.split('/')[1])
        return result

    def _add_vlan_dev(self, parent, dev, vlan):
        try:
            sh(self, f'ip link add link {parent} name {dev} type vlan id {vlan}')
        except LabError as e:
            if 'Unknown device type' not in str(e):
                raise
            raise LabError(f'VM {self.name}: this kernel has no 802.1Q support '
                           '(CONFIG_VLAN_8021Q), so a VM cannot tag its own traffic; leave '
                           'its vlan unset (the controller tags by network), or send crafted '
                           'tagged frames with Lab.send_frames') from None


class OVSHypervisor(Switch):
    """A hypervisor: its own netns running its own ovsdb-server + ovs-vswitchd.

    br-phy (standalone, NORMAL) holds the uplink and the VTEP address; br-int (secure,
    controller over the management LAN) holds the VM ports; a patch pair joins them.
    The OVSDB also listens on the management address so the controller can read bindings.

    A switch in Mininet's model (net.switches), so `pingall`, `iperf` and `dump` see the VMs
    as the hosts; its IP() is its management address.
    """

    def __init__(self, name, plan=None, autosetup=True, **params):
        self.lab = plan               # plan.LabPlan
        self.hv = plan.hypervisors[name]
        self.rundir = self.hv.rundir
        self.autosetup = autosetup
        self.daemon_pids = []
        params.update(inNamespace=True, dpid=f'{self.hv.dpid:016x}')
        super().__init__(name, **params)
        self.controlIntf = None       # Switch sets it only for switches in the root namespace

    def defaultIntf(self):
        return self.nameToIntf.get(HV_MGMT) or super().defaultIntf()

    def start(self, controllers):
        # Mininet starts switches once the links exist, so the uplink and mgmt0 are in place.
        # The Lab sets autosetup=False and runs setup_ovs() of all hvs in parallel instead.
        if self.autosetup:
            self.setup_ovs()

    def connected(self) -> bool:
        """Ready for traffic, as `mn` waits for it: br-int has its controller session and the
        controller has programmed every VM port here (they have admission flows)."""
        db = f'unix:{self.rundir}/db.sock'
        if not osutil.is_connected('br-int', db=db):
            return False
        get = []
        for vm in self.lab.vms.values():
            if vm.spec.hypervisor == self.name:
                for port in vm.ports:
                    get += ['--', 'get', 'interface', port, 'ofport']
        try:
            nos = osutil.run(['ovs-vsctl', '--timeout=5', f'--db={db}', *get]).split() if get else []
            flows = osutil.run(['ovs-ofctl', '-O', 'OpenFlow14', 'dump-flows', '--no-stats', '--no-names',
                                f'unix:{self.rundir}/br-int.mgmt', 'table=0'])
        except LabError:
            return False
        if not all(f'in_port={no},' in flows or f'in_port={no} ' in flows for no in nos):
            return False
        # overlay traffic also needs the routed underlay: its rack gateway (the leaf, once
        # LLDP has found this hypervisor there) answers ARP.  Without this, the first packet of
        # an overlay ping whose ARP the gateway answers locally could leave before the
        # underlay routes exist, and `mn --test pingall` pings only once.
        out = self.cmd(f'arping -c 1 -w 1 -I br-phy {self.hv.gateway} >/dev/null 2>&1; echo rc=$?')
        return 'rc=0' in out

    def setup_ovs(self):
        self.start_ovs()
        self.make_bridges()
        self.add_vtep()

    def start_ovs(self):
        try:
            self._start_daemons(self.rundir)
        finally:      # whatever did start must be stoppable by terminate()
            self.daemon_pids = [osutil.read_pidfile(f'{self.rundir}/{p}.pid')
                                for p in ('ovs-vswitchd', 'ovsdb-server')]

    def _start_daemons(self, d):
        sh(self,
           'sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1',
           # af_packet does not steal frames from the hv kernel: keep its IP stack off the uplink
           'sysctl -qw net.ipv4.conf.all.rp_filter=1 ' + ' '.join(
               f'net.ipv4.conf.{i}.rp_filter=1 net.ipv4.conf.{i}.arp_ignore=1'
               for i in self.hv.uplink_intfs),
           f'rm -rf {d}', f'mkdir -p {d}',
           f'ovsdb-tool create {d}/conf.db {SCHEMA}',
           self.daemon_cmd('ovsdb-server'),
           f'ovs-vsctl --db=unix:{d}/db.sock --no-wait init',
           self.daemon_cmd('ovs-vswitchd'))

    def daemon_cmd(self, which) -> str:
        """The shell command (run in this hv's netns) that starts its ovsdb-server or its
        ovs-vswitchd: at lab start and again after a restart (Lab.restart_daemon)."""
        d = self.rundir
        if which == 'ovsdb-server':
            return (f'ovsdb-server {d}/conf.db --remote=punix:{d}/db.sock'
                    f' --remote=ptcp:{OVSDB_PORT}:{self.hv.mgmt_ip} --pidfile={d}/ovsdb-server.pid'
                    f' --unixctl={d}/ovsdb-server.ctl --log-file={d}/ovsdb-server.log'
                    ' --detach --no-chdir -vconsole:off')
        if which == 'ovs-vswitchd':
            # OVS_RUNDIR keeps br-*.mgmt sockets in our run dir, not /var/run/openvswitch
            return (f'OVS_RUNDIR={d} OVS_LOGDIR={d} OVS_DBDIR={d} ovs-vswitchd unix:{d}/db.sock'
                    f' --disable-system --pidfile={d}/ovs-vswitchd.pid --unixctl={d}/ovs-vswitchd.ctl'
                    f' --log-file={d}/ovs-vswitchd.log --detach --no-chdir -vconsole:off')
        raise LabError(f'no daemon {which!r}: ovsdb-server or ovs-vswitchd')

    def make_bridges(self):
        hv, mtu = self.hv, self.lab.underlay_mtu
        args = ['--timeout=20',
                '--', 'set', 'Open_vSwitch', '.', f'external_ids:system-id={hv.name}',
                f'external_ids:hostname={hv.name}',
                '--', 'add-br', 'br-phy', '--', 'set', 'bridge', 'br-phy', 'datapath_type=netdev',
                'fail_mode=standalone', f'other_config:hwaddr="{hv.uplink_mac}"',
                'other_config:disable-in-band=true',
                # NORMAL drops 01:80:c2:00:00:0x frames unless told otherwise; the controller's
                # LLDP out of int-to-phy must reach the leaf (and the leaf's reach br-int) so
                # it learns which leaf port each hypervisor hangs off
                'other_config:forward-bpdu=true',
                '--', 'set', 'interface', 'br-phy', f'mtu_request={mtu}',
                *_uplink_args(hv, mtu),
                *_patch('br-phy', PHY_PATCH, INT_PATCH),
                '--', 'add-br', 'br-int', '--', 'set', 'bridge', 'br-int', 'datapath_type=netdev',
                'fail_mode=secure', f'protocols={OF_PROTOCOLS}',
                f'other_config:datapath-id={hv.dpid:016x}', 'other_config:disable-in-band=true',
                # the first primary controller flushes flows: set it before anyone adds any
                '--', 'set-controller', 'br-int', hv.controller,
                *_patch('br-int', INT_PATCH, PHY_PATCH),
                # the VTEP: one VXLAN port whose VNI and remote VTEP every flow sets itself
                '--', 'add-port', 'br-int', TUNNEL_PORT, '--', 'set', 'interface', TUNNEL_PORT,
                'type=vxlan', 'options:remote_ip=flow', 'options:key=flow']
        for vm in self.lab.vms.values():
            if vm.spec.hypervisor == hv.name:
                args += vm_port_args(vm)
        self.vsctl(*args)

    def add_vtep(self):
        cmds = [f'ip addr add {self.hv.vtep} dev br-phy', 'ip link set br-phy up']
        # nothing but a default route: the leaf is the rack's gateway (apps/underlay_routing.py)
        cmds += [f'ip route add default via {self.hv.gateway} dev br-phy']
        sh(self, *cmds)

    def vsctl(self, *args) -> str:
        return sh(self, shlex.join(['ovs-vsctl', f'--db=unix:{self.rundir}/db.sock', *args]))

    def stop(self, deleteIntfs=True):
        # its interfaces go with its namespace (Mininet would only delete names holding 'hv1')
        self.terminate()

    def terminate(self):
        osutil.stop_pids([p for p in self.daemon_pids if p])
        self.daemon_pids = []
        super().terminate()


# Both ends of a bonded uplink: LACP (802.3ad) in active mode with fast (1 s) PDUs, so a
# partner that stops answering is noticed in 3 s, and no fallback: a partner that does not
# speak LACP leaves the bond down (and reported), never silently used as static ports.
# Rebalancing every second (OVS default: 10 s) moves hash buckets back onto a member that
# came back up, so a restored cable carries traffic again within about a second.
LACP_ARGS = ('lacp=active', 'other_config:lacp-time=fast', 'other_config:lacp-fallback-ab=false',
             'other_config:bond-rebalance-interval=1000')


def bond_args(bridge, bond, members, mode, lacp=True, extra=()) -> list:
    """ovs-vsctl args adding `members` to `bridge` as one bond Port `bond`."""
    args = ['--', 'add-bond', bridge, bond, *members, f'bond_mode={mode}']
    args += list(LACP_ARGS) if lacp else ['lacp=off']
    return args + list(extra)


def _uplink_args(hv, mtu) -> list:
    """br-phy's uplink: phy0, or with several cables the bond bond0 of phy0..phy<n-1>.

    balance-tcp on the hypervisor: it hashes L3/L4 (recirculation, which the userspace
    datapath supports), so VXLAN between two VTEPs -- one source MAC, one IP pair, but an
    outer UDP source port per inner flow -- spreads over the members.  balance-slb hashes
    the source MAC and VLAN only: every tunnel packet leaves br-phy with the VTEP's MAC, so
    all overlay traffic would ride one member."""
    intfs = hv.uplink_intfs
    if len(intfs) == 1:
        args = ['--', 'add-port', 'br-phy', HV_UPLINK]
    elif hv.bond == 'lacp':
        args = bond_args('br-phy', HV_BOND, intfs, 'balance-tcp')
    else:                           # active-backup: no LACP; phy0 is the active member when up
        args = bond_args('br-phy', HV_BOND, intfs, 'active-backup', lacp=False,
                         extra=[f'other_config:bond-primary={HV_UPLINK}'])
    for i in intfs:
        args += ['--', 'set', 'interface', i, f'mtu_request={mtu}']
    return args


def _patch(bridge, name, peer):
    return ['--', 'add-port', bridge, name, '--', 'set', 'interface', name, 'type=patch',
            f'options:peer={peer}']


def vm_port_args(vm) -> list:
    """ovs-vsctl args that plug each of a VM's ports into br-int with its binding, as
    OVN/libvirt do: external_ids:iface-id=<tenant>/<workload>/nic<i> and attached-mac."""
    args = []
    for port, nic in zip(vm.ports, vm.spec.nics):
        args += ['--', 'add-port', 'br-int', port, '--', 'set', 'interface', port,
                 f'external_ids:iface-id="{nic.iface_id}"',
                 f'external_ids:attached-mac="{nic.mac}"']
    return args


class MgmtBridge(Switch):
    """The management LAN: a Linux bridge in the root ns holding the controller-side address.

    Made at construction (before links exist) so hypervisors reach the controller as soon as
    their OVS starts; the root ends of mgmt veths enslave themselves (LabIntf master=).
    brctl is not installed here, hence plain `ip link`.
    """

    def __init__(self, name, gateway=None, **params):
        params.update(inNamespace=False, dpid='1')    # a dpid only to please Switch
        super().__init__(name, **params)
        sh(self, f'ip link add name {name} type bridge',
           f'sysctl -qw net.ipv6.conf.{name}.disable_ipv6=1',
           f'ip addr add {gateway} dev {name}', f'ip link set {name} up')

    def start(self, controllers):
        pass

    def stop(self, deleteIntfs=True):
        self.cmd(f'ip link del {self.name}')
        super().stop(deleteIntfs)


class PhysicalSwitch(OVSSwitch):
    """A leaf or spine: a netdev bridge on the root OVS, secure, with the fabric's dpid,
    fixed OpenFlow port numbers and the underlay MTU on every port."""

    def __init__(self, name, target=None, mtu=None, desc=None, bonds=None, **params):
        params.update(failMode='secure', datapath='user', protocols=OF_PROTOCOLS,
                      inNamespace=False)
        self.target, self.mtu, self.desc = target, mtu, desc or name
        # bond Port name -> (member intf names, 'lacp' | 'active-backup'): a bonded hv's uplinks
        self.bonds = dict(bonds or {})
        super().__init__(name, **params)

    def start(self, controllers):
        br = self.name
        args = ['--', 'add-br', br, '--', 'set', 'bridge', br, 'datapath_type=netdev',
                'fail_mode=secure', f'protocols={OF_PROTOCOLS}',
                f'other_config:datapath-id={self.dpid}', 'other_config:disable-in-band=true',
                f'other_config:dp-desc={self.desc}',
                '--', 'set-controller', br, self.target]
        bonded = {m for members, _ in self.bonds.values() for m in members}
        for bond, (members, kind) in self.bonds.items():
            # The leaf's end of a bonded hv: OVS runs LACP for it, but in a secure bridge the
            # members stay separate OpenFlow ports; the controller treats them as one
            # (controller/bonds.py).  bond_mode only steers NORMAL, which this bridge never uses.
            args += bond_args(br, bond, members, 'balance-tcp' if kind == 'lacp' else 'active-backup',
                              lacp=kind == 'lacp')
        for intf in self.intfList():
            if self.ports[intf]:                       # port 0 is Mininet's 'lo' placeholder
                if intf.name not in bonded:
                    args += ['--', 'add-port', br, intf.name]
                args += ['--', 'set', 'interface', intf.name,
                         f'ofport_request={self.ports[intf]}', f'mtu_request={self.mtu}']
        self.vsctl(*args)     # queued: batchStartup runs every switch in one ovs-vsctl

    @classmethod
    def isOldOVS(cls):
        return False        # OVS 3.x; Mininet's check warns through deprecated distutils

    @classmethod
    def batchStartup(cls, switches, run=errRun):
        def checked(cmd, **kw):
            out, err, code = run(cmd, **kw)
            if code:
                raise LabError(f'creating the physical switches failed: {(err or out).strip()}')
            return out, err, code
        return super().batchStartup(switches, run=checked)
