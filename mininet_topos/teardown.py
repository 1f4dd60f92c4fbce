"""Taking a lab apart: quickly when Mininet still holds it, by exact name when it does not."""
from mininet_topos import osutil
from mininet_topos.nodes import OVSHypervisor


def fast_stop(net):
    """net.stop(), minus its slowest part.

    Mininet deletes veths one `ip link del` at a time (~13 ms each, ~40 in a small lab).
    When a netns goes away the kernel deletes every veth with an end in it, in one batch,
    so: stop the hv daemons (all at once), end every host's shell (its netns goes), delete
    the few veths that have both ends in the root ns, and let net.stop() do the rest.
    """
    hvs = [h for h in net.switches if isinstance(h, OVSHypervisor)]
    osutil.stop_pids([p for h in hvs for p in h.daemon_pids if p])
    for h in hvs:
        h.daemon_pids = []
    # Anything else still running in a lab namespace (say `iperf3 -D` run through exec)
    # would keep that netns, and its veths, alive after the shells are gone.
    nodes = net.hosts + hvs
    shells = {h.pid for h in nodes}
    namespaces = {osutil.netns_id(h.pid) for h in nodes if h.shell}
    namespaces -= {None, osutil.netns_id('self')}          # never the root namespace
    osutil.stop_pids([p for p in osutil.pids_in_netns(namespaces) if p not in shells])
    for h in nodes:
        h.terminate()
    for link in net.links:
        if not (link.intf1.node.inNamespace or link.intf2.node.inNamespace):
            link.intf1.node.cmd(f'ip link del {link.intf1.name}')
    net.links = []
    net.stop()


def sweep(rundirs=(), bridges=(), links=(), node_pids=None) -> list[str]:
    """Remove what is left of a lab, by the exact names and PIDs it planned; return what was.

    Used after Mininet's own stop (which normally leaves nothing) and by `opendvs-lab down`
    when the lab's daemon died without cleaning up.  A PID is only killed if its command
    line still proves it is ours (a hv's run dir, or `mininet:<node>`).
    """
    removed = []
    for rundir in rundirs:
        for daemon in ('ovs-vswitchd', 'ovsdb-server'):
            pid = osutil.read_pidfile(f'{rundir}/{daemon}.pid')
            if pid and f'{rundir}/' in osutil.cmdline(pid) and osutil.alive(pid):
                osutil.stop_pid(pid)
                removed.append(f'{daemon} {pid} of {rundir}')
    for name, pid in (node_pids or {}).items():
        if f'mininet:{name}' in osutil.cmdline(pid).split():
            osutil.stop_pid(pid)
            removed.append(f'{name} shell ({pid})')
    for br in sorted(set(bridges) & osutil.root_bridges()):
        osutil.run(['ovs-vsctl', '--timeout=10', '--if-exists', 'del-br', br], check=False)
        removed.append(f'bridge {br}')
    for name in links:
        if osutil.link_exists(name):
            osutil.run(['ip', 'link', 'del', name], check=False)
            removed.append(f'link {name}')
    return removed
