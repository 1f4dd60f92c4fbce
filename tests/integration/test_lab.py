"""The lab, checked like an operator would: it builds what the fabric says (bridges, dpids,
controllers, bindings, MTUs), carries traffic once switches forward, survives link flaps and
VM moves, and leaves the machine exactly as it found it.

No controller runs here: every lab points at a free port nobody listens on, so OVS never
connects and never flushes the flows the tests put in by hand.
"""
import dataclasses
import ipaddress
import json
import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FABRIC = REPO / 'examples' / 'fabric.yaml'
LAB_CLI = REPO / '.venv' / 'bin' / 'opendvs-lab'


def _ovs_answers():
    try:
        return subprocess.run(['ovs-vsctl', '--timeout=3', 'show'], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0
    except FileNotFoundError:
        return False


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason='needs root: network namespaces, veths, root OVS'),
    pytest.mark.skipif(os.geteuid() == 0 and not _ovs_answers(),
                       reason='the root Open vSwitch is not running (scripts/setup.sh starts it)'),
]

if os.geteuid() == 0:
    from apps.topology import lldp_frame
    from controller.policy.model import Network, Nic, Tenant, Workload
    from mininet_topos import Lab, LabError, VMSpec, free_tcp_port, wait_until


# --- what the machine looks like -----------------------------------------------------------------

def snapshot(prefix, workdir):
    """Everything a lab with this prefix could leave behind (other labs' objects excluded)."""
    links = re.findall(r'^\d+: ([^:@]+)', subprocess.run(['ip', '-o', 'link'], capture_output=True,
                                                         text=True).stdout, re.M)
    bridges = subprocess.run(['ovs-vsctl', 'list-br'], capture_output=True,
                             text=True).stdout.split()
    procs = [pid for pid in os.listdir('/proc') if pid.isdigit() and workdir in _cmdline(pid)]
    return {
        'links': sorted(n for n in links if n.startswith(prefix)),
        'bridges': sorted(b for b in bridges if b.startswith(prefix)),
        'ovs_run_files': sorted(f for f in os.listdir('/var/run/openvswitch') if prefix in f),
        'procs_in_workdir': sorted(procs),
        'workdir_exists': os.path.exists(workdir),
    }


def net_namespaces():
    out = subprocess.run(['lsns', '-t', 'net', '-n', '-o', 'NS'], capture_output=True, text=True)
    return set(out.stdout.split())


def netns_of(pid):
    return os.readlink(f'/proc/{pid}/ns/net').strip('net:[]')


def ticks_now():
    """Now, in the clock of /proc/<pid>/stat start times (ticks since boot)."""
    return float(Path('/proc/uptime').read_text().split()[0]) * os.sysconf('SC_CLK_TCK')


def processes_started_before(ticks, namespaces):
    """PIDs living in one of `namespaces` that were started before `ticks`.

    Net namespace inode numbers are recycled: a concurrent lab may get one of ours the moment
    ours is gone, so "inode still listed" is no proof of a leak.  A leak is a process from
    our lab's life (started before down()) still holding one of our namespaces.
    """
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            if netns_of(pid) not in namespaces:
                continue
            start = int(Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19])
        except (OSError, IndexError, ValueError):
            continue
        if start < ticks:
            found.append(f'{pid} {_cmdline(pid)}')
    return found


def _cmdline(pid):
    try:
        return Path(f'/proc/{pid}/cmdline').read_bytes().replace(b'\0', b' ').decode()
    except OSError:
        return ''


def unique_prefix(tag):
    return f'{tag}{secrets.token_hex(2)}'


@dataclasses.dataclass
class World:
    lab: 'Lab'
    before: dict
    namespaces: set            # the netns of every lab node, to prove they are gone


def _build_world(**lab_args):
    """A lab up without a controller, with the machine's state snapshotted before it."""
    prefix = unique_prefix('lt')
    workdir = f'/tmp/opendvs-lab-{prefix}'
    before = snapshot(prefix, workdir)
    lab = Lab(FABRIC, prefix=prefix, ofp_port=free_tcp_port(), **lab_args)
    lab.up(wait_connected=False)
    root = netns_of(os.getpid())
    namespaces = {netns_of(pid) for pid in lab.describe()['node_pids'].values()} - {root}
    yield World(lab, before, namespaces)
    lab.down()


@pytest.fixture(scope='module')
def world():
    yield from _build_world()


@pytest.fixture(scope='module')
def lab(world):
    return world.lab


@pytest.fixture(scope='module')
def forwarding(lab):
    """Loop-free forwarding by hand: NORMAL on spine1 and both leaves, spine2 drops (the mesh
    would otherwise loop), NORMAL on every br-int (br-phy is standalone already)."""
    for sw in ('spine1', 'leaf1', 'leaf2'):
        lab.ofctl(sw, 'add-flow', 'priority=10,actions=NORMAL')
    lab.ofctl('spine2', 'add-flow', 'priority=10,actions=drop')
    for hv in lab.fabric.hypervisors:
        lab.ofctl(hv, 'add-flow', 'priority=10,actions=NORMAL')
    return lab


def reaches(lab, src, dst, timeout=10):
    """Ping until a reply arrives or the deadline passes (the first packets pay for ARP)."""
    return wait_until(lambda: lab.ping(src, dst), timeout, 0.1)


def vsctl_get(*args, db=None):
    cmd = ['ovs-vsctl'] + ([f'--db={db}'] if db else []) + ['get', *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


# --- structure -----------------------------------------------------------------------------

def test_physical_switches_are_secure_netdev_bridges_with_the_fabric_dpids(lab):
    for name, sw in lab.fabric.switches.items():
        br = lab.bridge(name)
        assert br == f'{lab.prefix}{name}' and len(br) <= 15
        assert vsctl_get('bridge', br, 'fail_mode') == 'secure'
        assert vsctl_get('bridge', br, 'datapath_type') == 'netdev'
        assert vsctl_get('bridge', br, 'protocols') == '[OpenFlow13, OpenFlow14]'
        assert vsctl_get('bridge', br, 'other_config:datapath-id') == f'"{sw.dpid:016x}"'
        assert lab.vsctl(name, 'get-controller', br).strip() == f'tcp:127.0.0.1:{lab.ofp_port}'


def test_fabric_cables_and_uplinks_have_fixed_port_numbers(lab):
    plan = lab.plan
    for link in plan.links:
        ends = [(link.a, link.intf_a, link.port_a)]
        if link.kind == 'fabric':
            ends.append((link.b, link.intf_b, link.port_b))
        for switch, intf, port in ends:
            assert lab.vsctl(switch, 'iface-to-br', intf).strip() == lab.bridge(switch)
            assert vsctl_get('interface', intf, 'ofport') == str(port)
    for spine in ('spine1', 'spine2'):
        for leaf in ('leaf1', 'leaf2'):
            assert len(plan.find_links(spine, leaf)) == 1
    # hv1 is dual-homed (examples/fabric.yaml): its two cables come first, as one bond
    ports = lab.ofctl('leaf1', 'dump-ports-desc')
    p = lab.prefix
    assert f'3({p}u1)' in ports and f'4({p}u1m1)' in ports and f'5({p}u2)' in ports
    assert lab.leaf_ports('hv1') == [3, 4] and lab.leaf_port('hv2') == 5
    assert lab.vsctl('leaf1', 'port-to-br', lab.leaf_bond('hv1')).strip() == lab.bridge('leaf1')
    assert lab.leaf_bond('hv2') is None


def test_each_hypervisor_runs_its_own_ovs_with_br_int_and_br_phy(lab):
    for name, hv in lab.fabric.hypervisors.items():
        db = f'unix:{lab.plan.hypervisors[name].rundir}/db.sock'
        assert vsctl_get('bridge', 'br-int', 'fail_mode', db=db) == 'secure'
        assert vsctl_get('bridge', 'br-int', 'datapath_type', db=db) == 'netdev'
        assert vsctl_get('bridge', 'br-int', 'other_config:datapath-id', db=db) == \
            f'"{hv.dpid:016x}"'
        assert lab.vsctl(name, 'get-controller', 'br-int').strip() == \
            f'tcp:{lab.plan.mgmt_gateway}:{lab.ofp_port}'
        assert vsctl_get('bridge', 'br-phy', 'fail_mode', db=db) == 'standalone'
        assert lab.vsctl(name, 'get-controller', 'br-phy').strip() == ''
        assert vsctl_get('interface', 'int-to-phy', 'options:peer', db=db) == 'phy-to-int'
        if hv.uplinks == 1:
            assert set(lab.vsctl(name, 'list-ports', 'br-phy').split()) == {'phy0', 'phy-to-int'}
        else:                                   # hv1: a bond of phy0 and phy1
            assert set(lab.vsctl(name, 'list-ports', 'br-phy').split()) == {'bond0', 'phy-to-int'}
            assert {'phy0', 'phy1', 'phy-to-int'} <= set(lab.vsctl(name, 'list-ifaces', 'br-phy').split())
            assert vsctl_get('port', 'bond0', 'bond_mode', db=db) == 'balance-tcp'
            assert vsctl_get('port', 'bond0', 'lacp', db=db) == 'active'
        rc, out = lab.exec(name, 'ip -4 -o addr show dev br-phy')
        assert rc == 0 and f'{hv.vtep}/24' in out


def test_the_other_rack_is_routed_via_the_rack_gateway_in_ovs_too(lab):
    # a hypervisor has nothing but a default route via its rack's gateway (its leaf), and
    # OVS's tunnel routing copies it (it needs the gateway form)
    assert '0.0.0.0/0 dev br-phy GW 172.16.1.1 SRC 172.16.1.11' in \
        lab.appctl('hv1', 'ovs/route/show')
    assert 'gateway 172.16.2.1' in lab.appctl('hv3', 'ovs/route/lookup', '172.16.1.12')


def test_controller_reads_each_hypervisor_ovsdb_over_the_management_lan(lab):
    for name in lab.fabric.hypervisors:
        ip = lab.mgmt_ip(name)
        assert ip.startswith(f'169.254.{lab.plan.mgmt_octet}.')
        ports = subprocess.run(['ovs-vsctl', f'--db=tcp:{ip}:6640', '--timeout=5', 'list-ports',
                                'br-int'], capture_output=True, text=True, check=True)
        ports = ports.stdout.split()
        expected = {vm.port for vm in lab.vms.values() if vm.hypervisor == name}
        assert expected and expected <= set(ports) and 'int-to-phy' in ports


def test_every_vm_port_carries_its_binding(lab):
    assert len(lab.vms) == 8
    for vm in lab.vms.values():
        ids = lab.vsctl(vm.hypervisor, 'get', 'interface', vm.port, 'external_ids')
        assert f'iface-id="{vm.iface_id}"' in ids
        assert f'attached-mac="{vm.mac}"' in ids
    vm = lab.vms['hv3vm2']
    assert (vm.ip, vm.mac, vm.iface_id) == ('10.0.3.2', '02:00:0a:00:03:02', 'default/hv3vm2/nic0')


def test_underlay_is_jumbo_and_vms_are_1500(lab):
    mtu = lab.fabric.underlay_mtu
    assert mtu == 9000
    for link in lab.plan.links:
        assert Path(f'/sys/class/net/{link.intf_a}/mtu').read_text().strip() == str(mtu)
        assert vsctl_get('interface', link.intf_a, 'mtu_request') == str(mtu)
    for hv in lab.fabric.hypervisors:
        assert lab.exec(hv, 'cat /sys/class/net/phy0/mtu /sys/class/net/br-phy/mtu')[1].split() \
            == [str(mtu)] * 2
    for vm in lab.vms.values():
        assert lab.exec(vm.name, 'cat /sys/class/net/eth0/mtu')[1].strip() == '1500'
        assert lab.exec(vm.hypervisor, f'cat /sys/class/net/{vm.port}/mtu')[1].strip() == '1500'


def test_tx_checksum_offload_is_off_on_both_ends(lab):
    vm = lab.vms['hv2vm1']
    assert 'tx-checksumming: off' in lab.exec(vm.name, 'ethtool -k eth0')[1]
    assert 'tx-checksumming: off' in lab.exec(vm.hypervisor, f'ethtool -k {vm.port}')[1]
    root_end = subprocess.run(['ethtool', '-k', f'{lab.prefix}u1'], capture_output=True, text=True)
    assert 'tx-checksumming: off' in root_end.stdout


# --- data plane ----------------------------------------------------------------------------------

def test_vms_on_different_leaves_reach_each_other(forwarding):
    lab = forwarding
    assert reaches(lab, 'hv1vm1', 'hv3vm1')
    assert reaches(lab, 'hv4vm2', 'hv2vm2')
    assert lab.ping('hv1vm1', 'hv4vm1', count=3)          # warm: no loss now
    rc, out = lab.exec('hv1vm1', 'ping -c2 -i0.2 -M do -s 1472 10.0.3.1')
    assert rc == 0, out                                   # a full 1500-byte frame fits


def test_nobody_answers_for_an_unused_address(forwarding):
    assert not forwarding.ping('hv1vm1', '10.0.9.9', count=2)


def test_uplink_down_cuts_the_hypervisor_off_and_up_restores_it(forwarding):
    lab = forwarding
    assert reaches(lab, 'hv2vm1', 'hv3vm1')
    lab.set_link('hv2', 'leaf1', up=False)
    try:
        assert 'LINK_DOWN' in _port_state(lab, 'leaf1', f'{lab.prefix}u2')
        assert not lab.ping('hv2vm1', 'hv3vm1', count=2)
    finally:
        lab.set_link('leaf1', 'hv2', up=True)
    assert reaches(lab, 'hv2vm1', 'hv3vm1')


def test_cable_down_between_spine_and_leaf(forwarding):
    lab = forwarding                      # spine2 drops, so spine1-leaf2 is the only path
    lab.set_link('spine1', 'leaf2', up=False)
    try:
        assert not lab.ping('hv1vm2', 'hv4vm1', count=2)
    finally:
        lab.set_link('spine1', 'leaf2', up=True)
    assert reaches(lab, 'hv1vm2', 'hv4vm1')


def _port_state(lab, switch, port):
    desc = lab.ofctl(switch, 'dump-ports-desc')
    block = desc.split(f'({port}):', 1)[1]
    return block.split('state:', 1)[1].split('\n', 1)[0]


def test_move_vm_rebinds_the_port_on_the_new_hypervisor(forwarding):
    lab = forwarding
    vm = lab.vms['hv1vm1']
    ifindex = lab.exec('hv1vm1', 'cat /sys/class/net/eth0/ifindex')[1]
    lab.move_vm('hv1vm1', 'hv3')
    assert lab.vms['hv1vm1'].hypervisor == 'hv3'
    assert vm.port in lab.vsctl('hv3', 'list-ports', 'br-int').split()
    assert vm.port not in lab.vsctl('hv1', 'list-ports', 'br-int').split()
    ids = lab.vsctl('hv3', 'get', 'interface', vm.port, 'external_ids')
    assert f'iface-id="{vm.iface_id}"' in ids and f'attached-mac="{vm.mac}"' in ids
    assert lab.exec('hv1vm1', 'cat /sys/class/net/eth0/ifindex')[1] == ifindex   # same NIC
    assert reaches(lab, 'hv1vm1', 'hv2vm1')        # back across the spine to its old rack
    assert reaches(lab, 'hv4vm2', 'hv1vm1')


# --- teardown ------------------------------------------------------------------------------------

def test_down_leaves_nothing_behind(world):
    lab = world.lab
    while_up = snapshot(lab.prefix, lab.plan.workdir)
    assert while_up['bridges'] and while_up['links'] and while_up['procs_in_workdir']
    assert world.namespaces <= net_namespaces()
    down_started = ticks_now()
    lab.down()
    assert snapshot(lab.prefix, lab.plan.workdir) == world.before
    # (not a count of `lsns -t net`: other agents' tests add and drop namespaces meanwhile)
    assert not processes_started_before(down_started, world.namespaces)
    lab.down()                                       # idempotent
    assert 0 < lab.timings['down'] < 30


def test_up_that_times_out_raises_and_cleans_up():
    prefix = unique_prefix('lw')
    workdir = f'/tmp/opendvs-lab-{prefix}'
    before = snapshot(prefix, workdir)
    lab = Lab(FABRIC, prefix=prefix, ofp_port=free_tcp_port(), vms_per_hypervisor=1)
    with pytest.raises(LabError, match=r'not connected to the controller after 1 s: '
                                       r'4 of 4 physical switches.*hv1 br-int'):
        lab.up(wait_connected=True, timeout=1)
    assert lab.net is None
    assert snapshot(prefix, workdir) == before


def test_explicit_vm_specs_as_tenant_workloads_come():
    vms = [VMSpec('web1', 'hv1', '02:00:0a:0a:00:0b', '10.10.0.11/24', 'acme/web1/nic0'),
           VMSpec('db1', 'hv4', '02:00:0a:0a:00:15', '10.10.0.21/24', 'acme/db1/nic0')]
    with Lab(FABRIC, prefix=unique_prefix('lv'), ofp_port=free_tcp_port(), vms=vms) \
            .up(wait_connected=False) as lab:
        assert set(lab.vms) == {'web1', 'db1'}
        assert 'iface-id="acme/web1/nic0"' in lab.vsctl('hv1', 'get', 'interface',
                                                       lab.vms['web1'].port, 'external_ids')
        assert lab.vsctl('hv2', 'list-ports', 'br-int').split() == ['int-to-phy', 'vxlan0']
        for sw in ('spine1', 'leaf1', 'leaf2', *lab.fabric.hypervisors):
            lab.ofctl(sw, 'add-flow', 'actions=NORMAL')
        lab.ofctl('spine2', 'add-flow', 'actions=drop')
        assert reaches(lab, 'web1', 'db1')
    assert lab.net is None


def test_a_guest_tagged_vm_needs_8021q_and_a_failed_build_cleans_up():
    """Also the failure path in the middle of a build: nothing may stay behind."""
    if Path('/proc/config.gz').exists() and b'CONFIG_VLAN_8021Q=' in \
            subprocess.run(['zcat', '/proc/config.gz'], capture_output=True).stdout:
        pytest.skip('this kernel has 802.1Q: guest tagging works here')
    prefix = unique_prefix('lg')
    before = snapshot(prefix, f'/tmp/opendvs-lab-{prefix}')
    vms = [VMSpec('trunk1', 'hv2', '02:00:0a:0a:00:0c', '10.20.0.12/24', 'acme/trunk1/nic0',
                  vlan=20)]
    lab = Lab(FABRIC, prefix=prefix, ofp_port=free_tcp_port(), vms=vms)
    with pytest.raises(LabError, match='no 802.1Q support'):
        lab.up(wait_connected=False)
    assert snapshot(prefix, f'/tmp/opendvs-lab-{prefix}') == before


# --- tenant workloads as VMs ------------------------------------------------------------------

def _net(name, subnet, vlan, gateway=None):
    return Network(name, ipaddress.IPv4Network(subnet), vlan=vlan,
                   gateway=ipaddress.IPv4Address(gateway) if gateway else None)


def _wl(name, *nics, hv=None):
    return Workload(name, (), tuple(Nic(i, n, m, ipaddress.IPv4Address(ip))
                                    for i, (n, m, ip) in enumerate(nics)), hv)


def hand_built_tenants():
    """acme: web1 (hv1), app1 with two nics (hv2; only its second nic's network has a
    gateway), db1 without a hint; beta: another web1 (hv3) and cache without a hint."""
    def tenant(name, networks, *workloads):
        return Tenant(name, f'{name}.yaml', {n.name: n for n in networks},
                      {w.name: w for w in workloads})
    users = _net('users', '10.10.0.0/24', 10, '10.10.0.1')
    storage = _net('storage', '10.40.0.0/23', 40)
    acme = tenant('acme', [users, storage],
                  _wl('web1', ('users', '02:00:0a:0a:00:0b', '10.10.0.11'), hv='hv1'),
                  _wl('app1', ('storage', '02:00:0a:28:00:0c', '10.40.0.12'),
                      ('users', '02:00:0a:0a:00:0c', '10.10.0.12'), hv='hv2'),
                  _wl('db1', ('users', '02:00:0a:0a:00:15', '10.10.0.21')))
    beta = tenant('beta', [_net('lan', '10.10.0.0/24', 30)],
                  _wl('web1', ('lan', '02:00:0b:0a:00:0b', '10.10.0.11'), hv='hv3'),
                  _wl('cache', ('lan', '02:00:0b:0a:00:0c', '10.10.0.12')))
    return acme, beta


@pytest.fixture(scope='module')
def tworld():
    yield from _build_world(tenants=hand_built_tenants())


@pytest.fixture(scope='module')
def tlab(tworld):
    return tworld.lab


def test_one_vm_per_workload_named_by_workload_or_tenant_and_workload(tlab):
    acme, beta = tlab.tenants
    assert {n: (v.tenant, v.workload, v.hypervisor) for n, v in tlab.vms.items()} == {
        'acme-web1': ('acme', 'web1', 'hv1'), 'app1': ('acme', 'app1', 'hv2'),
        'db1': ('acme', 'db1', 'hv1'),                  # no hint: round-robin starts at hv1
        'beta-web1': ('beta', 'web1', 'hv3'), 'cache': ('beta', 'cache', 'hv2')}
    assert tlab.vm_of('acme', 'web1') == 'acme-web1' and tlab.vm_of(beta, 'cache') == 'cache'
    with pytest.raises(LabError, match="no workload 'db1' of tenant 'beta'"):
        tlab.vm_of('beta', 'db1')
    assert tlab.vsctl('hv4', 'list-ports', 'br-int').split() == ['int-to-phy', 'vxlan0']   # no defaults


def test_every_nic_is_its_own_br_int_port_with_its_binding(tlab):
    app = tlab.vms['app1']
    assert [(n.intf, n.iface_id, n.mac, n.network) for n in app.nics] == [
        ('eth0', 'acme/app1/nic0', '02:00:0a:28:00:0c', 'storage'),
        ('eth1', 'acme/app1/nic1', '02:00:0a:0a:00:0c', 'users')]
    assert (app.ip, app.mac, app.iface_id, app.port) == \
        ('10.40.0.12', '02:00:0a:28:00:0c', 'acme/app1/nic0', app.nics[0].port)
    for hv in tlab.fabric.hypervisors:
        expected = {n.port for v in tlab.vms.values() if v.hypervisor == hv for n in v.nics}
        assert set(tlab.vsctl(hv, 'list-ports', 'br-int').split()) == expected | {'int-to-phy', 'vxlan0'}
    for vm in tlab.vms.values():
        for nic in vm.nics:
            ids = tlab.vsctl(vm.hypervisor, 'get', 'interface', nic.port, 'external_ids')
            assert f'iface-id="{nic.iface_id}"' in ids and f'attached-mac="{nic.mac}"' in ids
            assert nic.iface_id == f'{vm.tenant}/{vm.workload}/nic{nic.index}'


def test_vm_interfaces_carry_mac_ip_and_prefix_mtu_1500_and_tx_off(tlab):
    for vm in tlab.vms.values():
        for nic in vm.nics:
            rc, out = tlab.exec(vm.name, f'cat /sys/class/net/{nic.intf}/address '
                                         f'/sys/class/net/{nic.intf}/mtu; '
                                         f'ip -4 -o addr show dev {nic.intf}; '
                                         f'ethtool -k {nic.intf} | grep tx-checksumming')
            assert rc == 0, out
            assert out.split()[:2] == [nic.mac, '1500']
            assert f'inet {nic.cidr} ' in out and 'tx-checksumming: off' in out
            assert 'tx-checksumming: off' in tlab.exec(vm.hypervisor, f'ethtool -k {nic.port}')[1]
    assert tlab.vms['app1'].nics[0].cidr == '10.40.0.12/23'      # the network's prefix length


def test_default_route_via_the_one_nic_whose_network_has_a_gateway(tlab):
    assert tlab.exec('app1', 'ip route show default')[1].split()[:5] == \
        ['default', 'via', '10.10.0.1', 'dev', 'eth1']
    assert tlab.exec('db1', 'ip route show default')[1].split()[:5] == \
        ['default', 'via', '10.10.0.1', 'dev', 'eth0']
    assert tlab.exec('cache', 'ip route show default')[1].strip() == ''    # lan has none


def test_br_phy_forwards_lldp_between_the_leaf_and_br_int(tlab):
    """The controller learns which leaf port a hv is on from LLDP crossing br-phy (NORMAL),
    which drops 01:80:c2:00:00:0x unless forward-bpdu is on."""
    for hv in tlab.fabric.hypervisors:
        assert tlab.vsctl(hv, 'get', 'bridge', 'br-phy', 'other_config:forward-bpdu').strip() \
            == '"true"'
    trace = tlab.appctl('hv1', 'ofproto/trace', 'br-phy', 'in_port=phy-to-int,dl_type=0x88cc,'
                        'dl_src=02:00:00:00:dd:01,dl_dst=01:80:c2:00:00:0e')
    assert 'reserved destination MAC' not in trace and 'flooding' in trace
    # the real thing, both ways: the controller's LLDP frame, sent out of br-int's
    # int-to-phy, reaches the leaf on the hv's port; the leaf's reaches br-int
    frame = lldp_frame(tlab.fabric.hypervisors['hv2'].dpid, 1).hex()
    leaf_port = tlab.leaf_port('hv2')
    assert leaf_port == int(vsctl_get('interface', f'{tlab.prefix}u2', 'ofport'))
    match = 'dl_type=0x88cc,dl_dst=01:80:c2:00:00:0e'
    tlab.ofctl('leaf1', 'add-flow', f'priority=100,in_port={leaf_port},{match},actions=drop')
    tlab.ofctl('hv2', 'add-flow', f'priority=100,in_port=int-to-phy,{match},actions=drop')
    tlab.ofctl('hv2', 'packet-out', f'in_port=controller packet={frame} actions=output:int-to-phy')
    tlab.ofctl('leaf1', 'packet-out', f'in_port=controller packet={frame} '
                                      f'actions=output:{leaf_port}')
    for node in ('leaf1', 'hv2'):
        assert wait_until(lambda: 'n_packets=1,' in tlab.ofctl(node, 'dump-flows', match), 5), \
            tlab.ofctl(node, 'dump-flows')


def test_send_frames_puts_tagged_frames_onto_br_int(tlab):
    port = tlab.vm_ofport('app1', nic=1)
    assert f'{port}({tlab.vms["app1"].nics[1].port})' in tlab.ofctl('hv2', 'dump-ports-desc')
    rx_before = _rx_packets(tlab, 'hv2', port)
    tagged = f'priority=100,in_port={port},dl_vlan=10,dl_src=02:00:00:00:aa:01'
    untagged = f'priority=100,in_port={port},vlan_tci=0x0000/0x1fff,dl_src=02:00:00:00:aa:02'
    for flow in (tagged, untagged):
        tlab.ofctl('hv2', 'add-flow', f'{flow},actions=drop')
    assert tlab.send_frames('app1', ['02:00:00:00:aa:01'] * 3, vlan=10, nic=1) == 3
    assert tlab.send_frames('app1', '02:00:00:00:aa:02', nic=1) == 1
    assert wait_until(lambda: _n_packets(tlab, 'hv2', tagged) == 3 and
                      _n_packets(tlab, 'hv2', untagged) == 1, 5), tlab.ofctl('hv2', 'dump-flows')
    assert _rx_packets(tlab, 'hv2', port) - rx_before == 4
    with pytest.raises(LabError, match='has no nic2'):
        tlab.send_frames('app1', '02:00:00:00:aa:03', nic=2)


def _n_packets(lab, node, flow):
    match = flow.removeprefix('priority=100,')        # dump-flows takes no priority
    out = lab.ofctl(node, 'dump-flows', match)
    found = re.findall(r'n_packets=(\d+)', out)
    assert len(found) == 1, out
    return int(found[0])


def _rx_packets(lab, node, port):
    return int(re.search(r'rx pkts=(\d+)', lab.ofctl(node, 'dump-ports', str(port))).group(1))


def test_move_vm_moves_every_nic_with_its_binding(tlab):
    before = tlab.vms['app1']
    ifindexes = tlab.exec('app1', 'cat /sys/class/net/eth0/ifindex /sys/class/net/eth1/ifindex')
    tlab.move_vm('app1', 'hv4')
    moved = tlab.vms['app1']
    assert moved.hypervisor == 'hv4' and moved.nics == before.nics
    ports = [n.port for n in moved.nics]
    assert set(tlab.vsctl('hv4', 'list-ports', 'br-int').split()) == {'int-to-phy', 'vxlan0', *ports}
    assert not set(ports) & set(tlab.vsctl('hv2', 'list-ports', 'br-int').split())
    for nic in moved.nics:
        ids = tlab.vsctl('hv4', 'get', 'interface', nic.port, 'external_ids')
        assert f'iface-id="{nic.iface_id}"' in ids and f'attached-mac="{nic.mac}"' in ids
    assert tlab.exec('app1', 'cat /sys/class/net/eth0/ifindex /sys/class/net/eth1/ifindex') == \
        ifindexes                                                  # the same NICs
    assert tlab.exec('app1', 'ip route show default')[1].split()[:3] == \
        ['default', 'via', '10.10.0.1']
    port = tlab.vm_ofport('app1', nic=1)                          # now on hv4's br-int
    flow = f'priority=100,in_port={port},dl_vlan=20,dl_src=02:00:00:00:bb:01'
    tlab.ofctl('hv4', 'add-flow', f'{flow},actions=drop')
    tlab.send_frames('app1', '02:00:00:00:bb:01', vlan=20, nic=1)
    assert wait_until(lambda: _n_packets(tlab, 'hv4', flow) == 1, 5)
    tlab.move_vm('app1', 'hv2')                                    # and back
    assert set(ports) <= set(tlab.vsctl('hv2', 'list-ports', 'br-int').split())


def test_tenant_lab_down_leaves_nothing_behind(tworld):
    lab = tworld.lab
    assert snapshot(lab.prefix, lab.plan.workdir)['bridges']
    down_started = ticks_now()
    lab.down()
    assert snapshot(lab.prefix, lab.plan.workdir) == tworld.before
    assert not processes_started_before(down_started, tworld.namespaces)


# --- the CLI -------------------------------------------------------------------------------------

def lab_cli(command, *args, state_dir):
    return subprocess.run([str(LAB_CLI), command, '--state-dir', str(state_dir), *args],
                          capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(not LAB_CLI.exists(), reason='opendvs-lab is not installed in .venv')
def test_cli_up_status_exec_down(tmp_path):
    prefix = unique_prefix('lc')
    workdir = f'/tmp/opendvs-lab-{prefix}'
    before = snapshot(prefix, workdir)
    up = lab_cli('up', '--fabric', str(FABRIC), '--prefix', prefix, '--ofp-port',
                 str(free_tcp_port()), '--no-wait', state_dir=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        assert 'hv3vm2' in up.stdout and (tmp_path / f'{prefix}.json').exists()

        st = lab_cli('status', state_dir=tmp_path)
        assert st.returncode == 0, st.stderr
        assert re.search(r'hv1vm1\s+on hv1\s+10\.0\.1\.1/16\s+02:00:0a:00:01:01', st.stdout)
        assert re.search(rf'leaf1 .*bridge {prefix}leaf1 .*dpid 0x201 .*NOT connected', st.stdout)

        ex = lab_cli('exec', 'hv1vm1', '--', 'ip', '-4', '-o', 'addr', 'show', 'eth0',
                     state_dir=tmp_path)
        assert ex.returncode == 0 and '10.0.1.1/16' in ex.stdout
        exit7 = lab_cli('exec', 'hv2vm2', '--', 'sh', '-c', 'exit 7', state_dir=tmp_path)
        assert exit7.returncode == 7
        assert lab_cli('exec', 'nosuchvm', '--', 'true', state_dir=tmp_path).returncode == 1
    finally:
        down = lab_cli('down', state_dir=tmp_path)
    assert down.returncode == 0, down.stderr
    assert f'lab {prefix} down' in down.stdout and 'swept' not in down.stdout
    assert not list(tmp_path.glob(f'{prefix}.*'))
    assert snapshot(prefix, workdir) == before
    assert lab_cli('status', state_dir=tmp_path).returncode == 1


ACME_YAML = '''tenant: acme
networks:
  users:   {vlan: 10, subnet: 10.10.0.0/24, gateway: 10.10.0.1}
  servers: {vlan: 20, subnet: 10.20.0.0/24}
workloads:
  web1: {hypervisor: hv1, nics: [{network: users, mac: "02:00:0a:0a:00:0b", ip: 10.10.0.11}]}
  app1: {nics: [{network: servers, mac: "02:00:0a:14:00:0c", ip: 10.20.0.12},
                {network: users, mac: "02:00:0a:0a:00:0c", ip: 10.10.0.12}]}
'''
GLOBEX_YAML = '''tenant: globex
networks:
  apps: {vlan: 30, subnet: 10.10.0.0/24, gateway: 10.10.0.1}
workloads:
  web1: {hypervisor: hv4, nics: [{network: apps, mac: "02:00:1e:0a:00:0b", ip: 10.10.0.11}]}
'''


@pytest.mark.skipif(not LAB_CLI.exists(), reason='opendvs-lab is not installed in .venv')
def test_cli_up_with_tenants_status_exec_down(tmp_path):
    prefix = unique_prefix('lc')
    workdir = f'/tmp/opendvs-lab-{prefix}'
    before = snapshot(prefix, workdir)
    (tmp_path / 'acme.yaml').write_text(ACME_YAML)
    (tmp_path / 'globex.yaml').write_text(GLOBEX_YAML)
    (tmp_path / 'bad.yaml').write_text(GLOBEX_YAML.replace('hv4', 'hv9'))
    state = tmp_path / 'state'
    bad = lab_cli('up', '--fabric', str(FABRIC), '--tenants', str(tmp_path / 'bad.yaml'),
                  '--prefix', prefix, '--no-wait', state_dir=state)
    assert bad.returncode == 1 and "bad.yaml:5:22: workloads.web1.hypervisor: hypervisor 'hv9'" \
        in bad.stderr, bad.stderr
    assert snapshot(prefix, workdir) == before

    up = lab_cli('up', '--fabric', str(FABRIC), '--tenants', str(tmp_path / 'acme.yaml'),
                 str(tmp_path / 'globex.yaml'), '--prefix', prefix, '--ofp-port',
                 str(free_tcp_port()), '--no-wait', state_dir=state)
    try:
        assert up.returncode == 0, up.stderr
        st = lab_cli('status', state_dir=state)
        assert st.returncode == 0, st.stderr
        lines = st.stdout.split('vms:\n', 1)[1].splitlines()
        assert re.match(r'  acme-web1\s+on hv1\s+10\.10\.0\.11/24\s+02:00:0a:0a:00:0b\s+'
                        r'acme/web1/nic0\s+tenant acme workload web1\s+gw 10\.10\.0\.1$',
                        lines[0]), lines
        assert re.match(r'  app1\s+on hv1\s+10\.20\.0\.12/24 .*acme/app1/nic0\s+tenant acme '
                        r'workload app1\s+gw 10\.10\.0\.1$', lines[1]), lines      # no hint: hv1
        assert re.match(r'\s{20,}10\.10\.0\.12/24\s+02:00:0a:0a:00:0c\s+acme/app1/nic1$',
                        lines[2]), lines
        assert re.match(r'  globex-web1\s+on hv4 .*tenant globex workload web1', lines[3]), lines
        assert not [n for n in json.loads(lab_cli('status', '--json', state_dir=state).stdout)
                    ['vms'] if n.startswith('hv')]                   # no default VMs
        ex = lab_cli('exec', 'app1', '--', 'ip', '-4', '-o', 'addr', 'show', 'eth1',
                     state_dir=state)
        assert ex.returncode == 0 and 'inet 10.10.0.12/24' in ex.stdout, ex.stdout + ex.stderr
    finally:
        down = lab_cli('down', state_dir=state)
    assert down.returncode == 0, down.stderr
    assert snapshot(prefix, workdir) == before
