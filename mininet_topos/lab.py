"""Lab: the whole lab (physical switches, hypervisors, VMs) in one Mininet object, and the
operations tests need on it.

    with Lab('examples/fabric.yaml', prefix='t1') as lab:     # up(): waits for the controller
        assert lab.ping('hv1vm1', 'hv3vm1')
        lab.move_vm('hv1vm1', 'hv3')

    with Lab(fabric, tenants=['examples/tenants/acme.yaml'], prefix='t2') as lab:
        web = lab.vm_of('acme', 'web1')    # 'web1' ('acme-web1' if two tenants have a web1)
        lab.send_frames(web, ['02:00:00:00:00:01'], vlan=10)     # a tagged frame from the VM

OVS tools talk to a hypervisor's daemons over the unix sockets in its run dir, which work
from the root namespace and from any thread; shell commands for a node run in its netns
through Mininet (node.cmd / node.popen).
"""
from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from mininet.net import Mininet

from mininet_topos import osutil
from mininet_topos.errors import LabError
from mininet_topos.nodes import sh, vm_port_args
from mininet_topos.plan import MAX_BACKOFF_MS, LabPlan, build_plan
from mininet_topos.teardown import fast_stop, sweep
from mininet_topos.topo import OpendvsTopo


@dataclasses.dataclass(frozen=True)
class NicInfo:
    index: int                       # nic<index> in the iface-id
    intf: str                        # the VM's interface: eth<index>
    ip: str | None                   # address only
    cidr: str | None                 # address/prefix as configured
    mac: str
    iface_id: str
    vlan: int | None                 # set only when the guest tags this nic itself
    port: str                        # its port on the hypervisor's br-int (vnet<j>)
    network: str | None              # the tenant network, for tenant VMs


@dataclasses.dataclass(frozen=True)
class VMInfo:
    """A VM as it is now.  ip/cidr/mac/iface_id/vlan/port are nic 0's (the only nic of
    default VMs); `nics` has every nic.  tenant/workload are None for non-tenant VMs."""
    name: str
    hypervisor: str                  # where it runs now (changes with move_vm)
    ip: str | None                   # address only, handy for ping
    cidr: str | None                 # address/prefix as configured
    mac: str
    iface_id: str
    vlan: int | None
    port: str                        # its port on the hypervisor's br-int
    tenant: str | None = None
    workload: str | None = None
    gateway: str | None = None       # its default route, if any
    nics: tuple[NicInfo, ...] = ()


class Lab:
    """A running (or not yet running) lab built from a fabric; see the module docstring."""

    def __init__(self, fabric, prefix=None, ofp_port=None, vms_per_hypervisor=None, vms=None,
                 workdir=None, tenants=()):
        """fabric: a Fabric or a fabric YAML path.  tenants: Tenant objects (used as they are)
        or tenant YAML paths (validated together against the fabric); each workload becomes
        a VM (see plan.tenant_vms for placement and naming).
        VMs: `vms` (VMSpecs) if given, else vms_per_hypervisor default VMs per hv (default
        2 without tenants, 0 with), plus the tenants' VMs."""
        if isinstance(fabric, (str, os.PathLike)):
            from controller.policy.fabric import load_fabric
            fabric = load_fabric(fabric)
        self.fabric = fabric
        self.tenants = _load_tenants(fabric, tenants)
        prefix = prefix or osutil.default_prefix()
        self.plan: LabPlan = build_plan(fabric, prefix, osutil.pick_mgmt_octet(prefix), ofp_port,
                                        vms, vms_per_hypervisor, workdir, self.tenants)
        self.net: Mininet | None = None
        self.timings: dict[str, float] = {}
        self._where = {name: vm.spec.hypervisor for name, vm in self.plan.vms.items()}
        self._procs: list[subprocess.Popen] = []
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._pids: dict[str, int] = {}

    # --- life cycle -------------------------------------------------------------------------

    def up(self, wait_connected=True, timeout=60):
        """Build and start everything; with wait_connected, return once every bridge (each
        physical switch, each hv's br-int) has an established OpenFlow session.  On any
        failure the partial lab is torn down before the error propagates."""
        if self.net is not None:
            return self
        osutil.ensure_root()
        osutil.ensure_ovs()
        self._check_free()
        if wait_connected:
            self._check_controller_reachable()
        t0 = time.monotonic()
        atexit.register(self.down)
        try:
            self.net = Mininet(topo=OpendvsTopo(plan=self.plan, hv_autosetup=False),
                               controller=None, build=False, autoSetMacs=False,
                               waitConnected=False)
            self.net.build()
            with ThreadPoolExecutor(len(self.plan.hypervisors) or 1) as pool:
                # Each hv's OVS start-up mostly waits on its own vswitchd: do them all at once,
                # while this thread creates the physical switches (other nodes, other shells).
                setups = [pool.submit(self.net[hv].setup_ovs) for hv in self.plan.hypervisors]
                self.net.start()
                for f in setups:
                    f.result()
            self._pids = {n.name: n.pid for n in self.net.hosts + self.net.switches}
            if wait_connected:
                self.wait_connected(timeout)
                self._set_backoff(physical=True, hvs=list(self.plan.hypervisors))
            else:
                self._start_backoff_watcher()
        except BaseException:
            self.down()
            raise
        self.timings['up'] = time.monotonic() - t0
        return self

    def down(self, keep_workdir=False):
        """Remove everything this lab made, and nothing else.  Idempotent."""
        net, self.net = self.net, None
        if net is None:
            return
        t0 = time.monotonic()
        atexit.unregister(self.down)
        self._watch_stop.set()
        if self._watcher:
            self._watcher.join()
        osutil.stop_pids([p.pid for p in self._procs if p.poll() is None])
        for p in self._procs:
            p.wait()
        try:
            fast_stop(net)
        finally:
            # a netns is cleaned up asynchronously: give the veth peers a moment to go
            osutil.wait_until(lambda: not any(map(osutil.link_exists, self.plan.root_links())), 5)
            # whatever a failed build or stop left behind, by exact name
            sweep([h.rundir for h in self.plan.hypervisors.values()], self.plan.bridges(),
                  self.plan.root_links())
            if not keep_workdir:
                shutil.rmtree(self.plan.workdir, ignore_errors=True)
        self.timings['down'] = time.monotonic() - t0

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    def _check_free(self):
        plan = self.plan
        busy = [n for n in plan.root_links() + plan.bridges() if osutil.link_exists(n)]
        busy += sorted((set(plan.bridges()) & osutil.root_bridges()) - set(busy))
        if busy:
            raise LabError(f'lab prefix {plan.prefix!r} is in use: {", ".join(busy)} already '
                           f'exist (another lab, or leftovers: `opendvs-lab down --prefix '
                           f'{plan.prefix}`)')

    # --- controller connections -------------------------------------------------------------

    def _check_controller_reachable(self):
        """Fail at once, with the command to run, when a controller listens on loopback only:
        the hypervisors live in their own namespaces and connect over the management LAN
        (to its gateway address), so they could never reach it."""
        port = self.plan.ofp_port
        where = osutil.listeners(port)
        if osutil.only_loopback(where):
            raise LabError(
                f'the controller listens on {", ".join(sorted(where))} port {port} only, but the '
                f'hypervisors reach it over the lab\'s management LAN ({self.plan.mgmt_gateway}); '
                f'restart it listening there too:  opendvs-controller --fabric '
                f'{self.plan.fabric_source} --ofp 0.0.0.0:{port}')

    def unconnected(self) -> list[str]:
        """Bridges without an established OpenFlow session, judged by TCP sockets.

        A hv's session is its only socket to the controller port in its netns.  The physical
        switches all live in the root OVS, so they are counted (sockets from the root ns to
        the controller address), which is exact unless another lab shares the port.
        """
        plan, missing = self.plan, []
        phys = self._physical_sessions()
        if phys < len(plan.switches):
            missing.append(f'{len(plan.switches) - phys} of {len(plan.switches)} physical '
                           f'switches (-> {next(iter(plan.switches.values())).controller})')
        missing += [f'{hv} br-int (-> {plan.hypervisors[hv].controller})'
                    for hv in plan.hypervisors if not self._hv_session(hv)]
        return missing

    def wait_connected(self, timeout=60):
        if not osutil.wait_until(lambda: not self.unconnected(), timeout):
            raise LabError(f'not connected to the controller after {timeout:g} s: '
                           f'{"; ".join(self.unconnected())}. Is the controller running? Start '
                           f'it with:  opendvs-controller --fabric {self.plan.fabric_source} '
                           f'--ofp 0.0.0.0:{self.plan.ofp_port}')

    def _physical_sessions(self) -> int:
        if not self.plan.switches:
            return 0
        host = osutil.resolve(self.fabric.controller.ofp_host)
        return sum(1 for _, remote in osutil.established('self', self.plan.ofp_port)
                   if remote == host)

    def _hv_session(self, hv) -> bool:
        gw = self.plan.mgmt_gateway
        return any(remote == gw for _, remote in osutil.established(self._pids[hv],
                                                                     self.plan.ofp_port))

    def _set_backoff(self, physical, hvs):
        # OVS 3.1.0 ignores max_backoff set before a controller's first connection, so it is
        # set now; it then stays for later reconnects (reconnect after ~1 s, not up to 8 s).
        if physical and self.plan.switches:
            args = []
            for sw in self.plan.switches.values():
                args += ['--', 'set', 'controller', sw.bridge, f'max_backoff={MAX_BACKOFF_MS}']
            osutil.run(['ovs-vsctl', '--timeout=10', *args])
        for hv in hvs:
            self.vsctl(hv, 'set', 'controller', 'br-int', f'max_backoff={MAX_BACKOFF_MS}')

    def _start_backoff_watcher(self):
        def watch():
            phys_done, hvs = False, set(self.plan.hypervisors)
            while not self._watch_stop.wait(0.25) and (not phys_done or hvs):
                try:
                    if not phys_done and self._physical_sessions() >= len(self.plan.switches):
                        self._set_backoff(physical=True, hvs=[])
                        phys_done = True
                    ready = [hv for hv in hvs if self._hv_session(hv)]
                    self._set_backoff(physical=False, hvs=ready)
                    hvs -= set(ready)
                except (LabError, OSError, subprocess.SubprocessError):
                    pass       # a bridge going away under us (teardown); try again or stop
        self._watch_stop.clear()
        self._watcher = threading.Thread(target=watch, name=f'{self.prefix}-backoff', daemon=True)
        self._watcher.start()

    # --- names and addresses ----------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.plan.prefix

    @property
    def ofp_port(self) -> int:
        return self.plan.ofp_port

    @property
    def vms(self) -> dict[str, VMInfo]:
        out = {}
        for name, vm in self.plan.vms.items():
            s = vm.spec
            nics = tuple(NicInfo(i, f'eth{i}', n.address, n.ip, n.mac, n.iface_id, n.vlan, port,
                                 n.network)
                         for i, (port, n) in enumerate(zip(vm.ports, s.nics)))
            out[name] = VMInfo(name, self._where[name], s.address, s.ip, s.mac, s.iface_id,
                               s.vlan, vm.port, s.tenant, s.workload, s.gateway, nics)
        return out

    def vm_of(self, tenant, workload) -> str:
        """The VM name of a tenant's workload (tenant: a name or a Tenant)."""
        tenant = getattr(tenant, 'name', tenant)
        for name, vm in self.plan.vms.items():
            if (vm.spec.tenant, vm.spec.workload) == (tenant, workload):
                return name
        raise LabError(f'no workload {workload!r} of tenant {tenant!r} in lab {self.prefix}')

    def vm_ofport(self, vm, nic=0) -> int:
        """OpenFlow port number of the VM's nic on its (current) hypervisor's br-int."""
        port = self._vm_port(vm, nic)
        no = self.vsctl(self._where[vm], 'get', 'interface', port, 'ofport').strip()
        if not no.lstrip('-').isdigit() or int(no) <= 0:
            raise LabError(f'{vm} nic{nic} ({port}) has no OpenFlow port on '
                           f'{self._where[vm]} br-int (ofport {no})')
        return int(no)

    def leaf_port(self, hv) -> int:
        """OpenFlow port number of hv's uplink on its leaf's bridge."""
        self._hv(hv)
        for link in self.plan.links:
            if link.kind == 'uplink' and link.b == hv:
                return link.port_a
        raise LabError(f'hypervisor {hv} has no uplink')            # unreachable: plan has one

    def leaf_ports(self, hv) -> list[int]:
        """OpenFlow port numbers of each of hv's uplinks on its leaf, member 0 first (a
        bonded hv's members are separate OpenFlow ports there; leaf_port() is member 0's)."""
        self._hv(hv)
        return [link.port_a for link in self._uplinks(hv)]

    def uplink_members(self, hv) -> list[tuple[str, str]]:
        """(leaf end, hv end) interface names of each of hv's uplinks, member 0 first."""
        self._hv(hv)
        return [(link.intf_a, link.intf_b) for link in self._uplinks(hv)]

    def leaf_bond(self, hv) -> str | None:
        """The leaf-side bond Port of a bonded hv (on the root OVS), else None."""
        return self._hv(hv).leaf_bond

    def _uplinks(self, hv):
        return sorted((link for link in self.plan.links if link.kind == 'uplink' and link.b == hv),
                      key=lambda link: link.member)

    def bridge(self, switch) -> str:
        return self._switch(switch).bridge

    def mgmt_ip(self, hv) -> str:
        return self._hv(hv).mgmt_ip

    def ovsdb(self, hv) -> str:
        """The hv's OVSDB as the controller reaches it: tcp:<mgmt ip>:6640."""
        return self._hv(hv).ovsdb

    def pid(self, node) -> int:
        """PID of a node's shell: its netns handle (`ip link set X netns PID`, mnexec -a)."""
        self._require_up()
        return self._pids[node]

    def describe(self) -> dict:
        """Everything a tool needs to find and clean up this lab (JSON-friendly)."""
        p = self.plan
        return {
            'prefix': p.prefix, 'fabric': p.fabric_source, 'ofp_port': p.ofp_port,
            'workdir': p.workdir, 'mgmt_gateway': p.mgmt_gateway, 'mgmt_bridge': p.mgmt_bridge,
            'switches': {s.name: {'bridge': s.bridge, 'dpid': f'{s.dpid:#x}', 'role': s.role,
                                  'controller': s.controller} for s in p.switches.values()},
            'hypervisors': {h.name: {'pid': self._pids.get(h.name), 'leaf': h.leaf,
                                     'mgmt_ip': h.mgmt_ip, 'ovsdb': h.ovsdb,
                                     'vtep': str(h.vtep), 'dpid': f'{h.dpid:#x}',
                                     'rundir': h.rundir, 'controller': h.controller}
                            for h in p.hypervisors.values()},
            'vms': {v.name: {**dataclasses.asdict(v), 'pid': self._pids.get(v.name)}
                    for v in self.vms.values()},
            'bridges': list(p.bridges()), 'root_links': list(p.root_links()),
            'node_pids': dict(self._pids),
        }

    # --- running things ---------------------------------------------------------------------

    def exec(self, node, cmd, timeout=60) -> tuple[int, str]:
        """Run cmd (a shell string, or an argv list) in a VM or hypervisor; (rc, stdout+stderr)."""
        p = self.popen(node, cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, track=False)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise LabError(f'{node}: {cmd!r} still running after {timeout} s') from None
        return p.returncode, out.decode(errors='replace')

    def popen(self, node, args, track=True, **kw) -> subprocess.Popen:
        """Start args in a VM or hypervisor in the background (stop it by PID).  With an argv
        list the PID is the program's own; a string runs under bash -c.  Anything still
        running at down() is stopped then, since it would keep the netns alive."""
        argv = ['bash', '-c', args] if isinstance(args, str) else [str(a) for a in args]
        p = self._node(node).popen(argv, **kw)
        if track:
            self._procs = [q for q in self._procs if q.poll() is None] + [p]
        return p

    def ping(self, src_vm, dst, count=1, timeout=1) -> bool:
        """True if src_vm gets at least one echo reply from dst (a VM name or an IP)."""
        ip = self.vms[dst].ip if dst in self.plan.vms else dst
        argv = ['ping', '-n', '-q', '-c', str(count), '-W', str(timeout), ip]
        if count > 1:
            argv[1:1] = ['-i', '0.2']
        return self.exec(src_vm, argv, timeout=count + timeout + 10)[0] == 0

    def send_frames(self, vm, srcs, dst='ff:ff:ff:ff:ff:ff', vlan=None, nic=0,
                    ethertype=0x88b5) -> int:
        """Send one raw Ethernet frame per source MAC in srcs (a MAC or a list) out of the VM's
        eth<nic>, through an AF_PACKET socket inside the VM: dst, an 802.1Q tag when vlan is
        set (the only way to tag here: this kernel has no 8021q module), ethertype, padded to
        60 bytes.  Returns how many were sent."""
        srcs = [srcs] if isinstance(srcs, str) else list(srcs)
        self._vm_port(vm, nic)
        frames = [_frame(dst, src, vlan, ethertype).hex() for src in srcs]
        rc, out = self.exec(vm, [sys.executable, '-c', _SEND_FRAMES, f'eth{nic}', *frames])
        if rc != 0:
            raise LabError(f'{vm}: sending frames on eth{nic} failed: {out.strip()}')
        return len(frames)

    # --- changing the lab -------------------------------------------------------------------

    def set_link(self, a, b, up: bool, member: int | None = None):
        """Take a fabric cable (two switches) or a hv uplink (hv, leaf) down or up, on both
        ends, so both OVS instances see their port go down.  A bonded hv has several uplinks:
        all of them, or only member `member` (0 is phy0)."""
        links = [link for link in self.plan.find_links(a, b) if member in (None, link.member)]
        if not links:
            raise LabError(f'no link between {a} and {b}' + (f' (member {member})' if member is not None else ''))
        for link in links:
            node_a = self.plan.switches[link.a].bridge
            node_b = (self.plan.switches[link.b].bridge if link.kind == 'fabric' else link.b)
            for node, intf in ((node_a, link.intf_a), (node_b, link.intf_b)):
                sh(self._node(node), f'ip link set {intf} {"up" if up else "down"}')

    def move_vm(self, vm, hv, ask=None, announce=True, detach=True) -> dict:
        """Live-migrate vm to hv, as a hypervisor pair does during a vMotion:

        1. ask(tenant, workload, hv) -> reasons: the controller's placement check (the CLI
           asks its API); any reason refuses the move and nothing changes (LabError);
        2. the hv end of each veth moves into hv's netns (the VM keeps its eth<i>, addresses,
           neighbours and open connections) and is plugged into hv's br-int with the same
           iface-id -- while the old hypervisor's OVSDB row still claims it: both bound;
        3. with announce, the VM sends a gratuitous ARP from each nic with an address (the
           guest's announcement after a migration, which activates its new port);
        4. with detach, the old row is deleted, and both hypervisors' br-phy forget the VM's
           MACs (their NORMAL learning saw them on the other side of the uplink).
        Returns {'garp': time.time() when the announcement left (or None), 'from': old hv}."""
        if vm not in self.plan.vms:
            raise LabError(f'no VM {vm!r} in lab {self.prefix}')
        plan_vm, old_hv = self.plan.vms[vm], self._where[vm]
        self._hv(hv)
        out = {'from': old_hv, 'garp': None}
        if old_hv == hv:
            return out
        spec = plan_vm.spec
        if ask is not None and spec.tenant:
            reasons = ask(spec.tenant, spec.workload, hv)
            if reasons:
                raise LabError(f'the controller refuses to move {vm} to {hv}: ' + '; '.join(reasons))
        old, new = self._node(old_hv), self._node(hv)
        announcer = self._announcer(vm) if announce else None
        try:
            # the row first (no device yet: ofport -1), so hv's OVS opens the port as soon as
            # the device arrives; then the device
            self.vsctl(hv, *vm_port_args(plan_vm))
            sh(old, *[f'ip link set {port} netns {new.pid}' for port in plan_vm.ports])
            sh(new, *[f'ip link set {port} up' for port in plan_vm.ports])
            for port in plan_vm.ports:            # keep Mininet's books right for teardown
                intf = old.nameToIntf[port]
                old.delIntf(intf)
                intf.node = new
                new.addIntf(intf, moveIntfFn=lambda *a, **k: None)
            self._where[vm] = hv
            self._wait_ofports(hv, plan_vm.ports)
            if announcer is not None:
                out['garp'] = self._announce_now(vm, announcer)
                announcer = None
        finally:
            if announcer is not None:
                announcer.kill()
                announcer.wait()
        self._forget_macs(hv, spec)
        if detach:
            self.detach(vm, old_hv)
        return out

    def _wait_ofports(self, hv, ports, timeout=10):
        def opened(port):
            value = self.vsctl(hv, 'get', 'interface', port, 'ofport').strip()
            return value.lstrip('-').isdigit() and int(value) > 0
        if not osutil.wait_until(lambda: all(opened(p) for p in ports), timeout, 0.005):
            raise LabError(f'{hv}: OVS did not open {", ".join(ports)} within {timeout} s')

    def _announcer(self, vm):
        """A process in the VM, ready to send its announcement the moment it is told to (no
        start-up time between the VM arriving and the first GARP): rounds at 0, 20, 50, 100,
        200 and 400 ms, as QEMU announces a migrated guest (a first one can arrive before the
        controller has readied the new port)."""
        frames = [(f'eth{i}', _garp(n.mac, n.address).hex()) for i, n in enumerate(self.plan.vms[vm].spec.nics)
                  if n.address]
        script = _ANNOUNCER + ''.join(f'frames.append(({intf!r}, {f!r}))\n' for intf, f in frames) + _ANNOUNCE
        p = self.popen(vm, [sys.executable, '-c', script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
        if p.stdout.readline().strip() != b'ready':
            p.kill()
            raise LabError(f'{vm}: the announcer did not start: {p.communicate()[0].decode(errors="replace")}')
        return p

    def _announce_now(self, vm, p) -> float | None:
        p.stdin.write(b'go\n')
        p.stdin.close()
        line = p.stdout.readline().strip()
        try:
            return float(line) if line != b'none' else None
        except ValueError:
            raise LabError(f'{vm}: announcing failed: {line.decode(errors="replace")}') from None

    def announce(self, vm) -> float | None:
        """The VM announces itself (gratuitous ARPs from each nic with an address, in rounds);
        returns when the first left (time.time()), or None if it has no address."""
        return self._announce_now(vm, self._announcer(vm))

    def detach(self, vm, hv):
        """Delete a migrated VM's old rows from hv's OVSDB (the source side of a move)."""
        plan_vm = self.plan.vms[vm]
        args = []
        for port in plan_vm.ports:
            args += ['--', '--if-exists', 'del-port', 'br-int', port]
        self.vsctl(hv, *args)
        self._forget_macs(hv, plan_vm.spec)

    def _forget_macs(self, hv, spec):
        """br-phy is a NORMAL bridge: it learned the VM's MACs on whichever side it last saw
        them, and would drop frames toward the VM that arrive from that side ("learned port
        is the input port") until the entry ages out (300 s).  The hypervisor flushes what
        br-phy learned when a VM with a VLAN nic comes or goes (fdb/del removes only static
        entries; br-phy relearns the rest -- its VTEP, the rack gateway -- from the next frame)."""
        if any(self._network_vlan(spec.tenant, nic.network) is not None for nic in spec.nics):
            subprocess.run(['ovs-appctl', '-t', f'{self._hv(hv).rundir}/ovs-vswitchd.ctl', 'fdb/flush', 'br-phy'],
                           capture_output=True, timeout=10)

    def _network_vlan(self, tenant, network) -> int | None:
        for t in self.tenants:
            if t.name == tenant and network in t.networks:
                return t.networks[network].vlan
        return None

    def restart_daemon(self, hv, which, timeout=10) -> int:
        """Restart a hypervisor's ovsdb-server or ovs-vswitchd as a crash and a restart by its
        init system would: SIGTERM its PID (from its pidfile: a daemon this lab started), wait
        until it is gone, then start it with the very command the lab started it with
        (OVSHypervisor.daemon_cmd: the same conf.db, sockets and run dir, so it comes back
        with its OVSDB config).  Returns the new PID; down() stops that one."""
        self._hv(hv)
        node = self._node(hv)
        cmd = node.daemon_cmd(which)                 # refuses an unknown daemon first
        pidfile = f'{node.rundir}/{which}.pid'
        pid = osutil.read_pidfile(pidfile)
        if pid is None or pid not in node.daemon_pids:
            raise LabError(f'{hv}: {which} is not running (pidfile {pidfile}: {pid})')
        osutil.stop_pids([pid], timeout=timeout)
        try:
            sh(node, cmd)
        finally:              # whatever runs now must be stoppable by down()
            node.daemon_pids = [osutil.read_pidfile(f'{node.rundir}/{p}.pid')
                                for p in ('ovs-vswitchd', 'ovsdb-server')]
        new = osutil.read_pidfile(pidfile)
        if new is None or new == pid:
            raise LabError(f'{hv}: {which} did not come back (pidfile {pidfile}: {new})')
        return new

    # --- OVS tools ----------------------------------------------------------------------------

    def ofctl(self, node, *args, bridge='br-int') -> str:
        """ovs-ofctl COMMAND on a physical switch's bridge or on a hv's bridge (br-int unless
        bridge= says otherwise): ofctl('leaf1', 'dump-flows'), ofctl('hv1', 'add-flow', F)."""
        opts = list(_leading_options(args))
        rest = list(args[len(opts):])
        if not rest:
            raise LabError('ofctl needs a command, e.g. ofctl("leaf1", "dump-flows")')
        if node in self.plan.switches:
            target = self.bridge(node)
        else:
            target = f'unix:{self._hv(node).rundir}/{bridge}.mgmt'
        if not any(o.startswith(('-O', '--protocols')) for o in opts):
            opts = ['-O', 'OpenFlow14'] + opts
        return osutil.run(['ovs-ofctl', *opts, rest[0], target, *rest[1:]])

    def vsctl(self, node, *args) -> str:
        """ovs-vsctl on a hv's own OVSDB, or on the root OVS for a physical switch name."""
        db = [] if node in self.plan.switches else [f'--db=unix:{self._hv(node).rundir}/db.sock']
        return osutil.run(['ovs-vsctl', '--timeout=20', *db, *args])

    def appctl(self, node, *args) -> str:
        """ovs-appctl to a hv's ovs-vswitchd (or the root one for a physical switch name)."""
        target = ([] if node in self.plan.switches
                  else ['-t', f'{self._hv(node).rundir}/ovs-vswitchd.ctl'])
        return osutil.run(['ovs-appctl', *target, *args])

    # --- lookups --------------------------------------------------------------------------------

    def _require_up(self):
        if self.net is None:
            raise LabError(f'lab {self.prefix} is not up')

    def _node(self, name):
        self._require_up()
        if name in self.plan.switches:
            name = self.bridge(name)
        try:
            return self.net[name]
        except KeyError:
            raise LabError(f'no node {name!r} in lab {self.prefix}') from None

    def _vm_port(self, vm, nic) -> str:
        if vm not in self.plan.vms:
            raise LabError(f'no VM {vm!r} in lab {self.prefix}')
        ports = self.plan.vms[vm].ports
        if not 0 <= nic < len(ports):
            raise LabError(f'VM {vm} has no nic{nic} (it has {len(ports)})')
        return ports[nic]

    def _hv(self, name):
        try:
            return self.plan.hypervisors[name]
        except KeyError:
            raise LabError(f'no hypervisor {name!r} in lab {self.prefix}') from None

    def _switch(self, name):
        try:
            return self.plan.switches[name]
        except KeyError:
            raise LabError(f'no physical switch {name!r} in lab {self.prefix}') from None

    def __repr__(self):
        state = 'up' if self.net else 'down'
        return f'<Lab {self.prefix} {state}: {len(self.plan.switches)} switches, ' \
               f'{len(self.plan.hypervisors)} hypervisors, {len(self.plan.vms)} VMs>'


def _load_tenants(fabric, tenants) -> tuple:
    """Tenant objects as given; tenant files loaded and checked together against the fabric
    (controller.policy.tenant.load_policy), in the order given."""
    tenants = list(tenants)
    paths = [t for t in tenants if not hasattr(t, 'workloads')]
    loaded = iter(())
    if paths:
        from controller.policy.errors import PolicyError
        from controller.policy.tenant import load_policy
        try:
            loaded = iter(load_policy(fabric, paths))
        except PolicyError as e:
            raise LabError(f'the tenant policy is not valid:\n{e}') from None
    return tuple(t if hasattr(t, 'workloads') else next(loaded) for t in tenants)


def _frame(dst, src, vlan, ethertype) -> bytes:
    def mac(m):
        try:
            b = bytes.fromhex(m.replace(':', ''))
        except ValueError:
            b = b''
        if len(b) != 6:
            raise LabError(f'bad MAC {m!r}')
        return b
    if vlan is not None and not 0 <= vlan <= 4095:
        raise LabError(f'VLAN {vlan} is not in 0..4095')
    tag = struct.pack('!HH', 0x8100, vlan) if vlan is not None else b''
    frame = mac(dst) + mac(src) + tag + struct.pack('!H', ethertype)
    return frame + b'x' * max(0, 60 - len(frame))


# Runs inside the VM: argv = iface, frames as hex.
_SEND_FRAMES = (
    'import socket, sys\n'
    's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n'
    's.bind((sys.argv[1], 0))\n'
    'for f in sys.argv[2:]:\n'
    '    s.send(bytes.fromhex(f))\n')


def _garp(mac, ip) -> bytes:
    """A gratuitous ARP request: broadcast, sender = target = ip (RFC 5227 announcement)."""
    hw = bytes.fromhex(mac.replace(':', ''))
    addr = bytes(int(x) for x in ip.split('.'))
    arp = struct.pack('!HHBBH', 1, 0x0800, 6, 4, 1) + hw + addr + b'\0' * 6 + addr
    return _frame('ff:ff:ff:ff:ff:ff', mac, None, 0x0806)[:14] + arp + b'\0' * 18


# Runs inside the VM: waits for a line on stdin, then sends each (iface, frame) in rounds;
# prints the time the first round left ('none' if there is nothing to send).
_ANNOUNCER = (
    'import socket, sys, time\n'
    'frames = []\n')
_ANNOUNCE = (
    'socks = {}\n'
    'for intf, _ in frames:\n'
    '    socks[intf] = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n'
    '    socks[intf].bind((intf, 0))\n'
    'print("ready", flush=True)\n'
    'sys.stdin.readline()\n'
    'start = time.time()\n'
    'for i, delay in enumerate((0, 0.02, 0.05, 0.1, 0.2, 0.4)):\n'
    '    time.sleep(max(0, start + delay - time.time()))\n'
    '    for intf, f in frames:\n'
    '        socks[intf].send(bytes.fromhex(f))\n'
    '    if i == 0:\n'
    '        print(start if frames else "none", flush=True)\n')


def _leading_options(args):
    for a in args:
        if not str(a).startswith('-'):
            return
        yield str(a)
