"""A minimal scratch hypervisor for issue 10's stale first-pass megaflow, without Mininet.

One netdev bridge on the root OVS (per-run prefix) and four namespaces:
  web2  (10.77.0.2)  on port 1   -- the pinging VM
  web1  (10.77.0.1)  on port 5   -- the VM that migrates away
  web3  (10.77.0.3)  on port 6   -- a VM that stays (its megaflow shapes the classifier)
  web1b (10.77.0.1, same MAC) behind the uplink, port 2 -- web1 after the migration

The flows copy the shape of opendvs's pipeline for web2's traffic: port_sec pushes VLAN 10,
classify sets reg13 (zone) and reg12=1, learn knows the source, l2_lookup sets reg15 from the
destination MAC, acl_out sends untracked IP through ct(table=70, zone=reg13) and after the
recirculation decides per reg15, with a `+trk,ip,reg12=1 -> drop` default; output pops the tag.
`migrate()` does what the controller does: port 5 leaves the bridge, and one OpenFlow bundle
rewrites the l2_lookup flow to the uplink and deletes the reg15=5 acl_out flows (other styles:
delete+add, two commits, the guard workarounds).  `overlap()` makes the condition OVS 3.1.0
mishandles: a second megaflow covering the ping's key, in an earlier classifier subtable.
"""
from __future__ import annotations

import random
import re
import string
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import sh

WEB1_MAC, WEB2_MAC = '02:00:00:77:00:01', '02:00:00:77:00:02'
WEB1_IP, WEB2_IP = '10.77.0.1', '10.77.0.2'
WEB3_MAC, WEB3_IP = '02:00:00:77:00:03', '10.77.0.3'
P_WEB2, P_UPLINK, P_WEB1, P_WEB3 = 1, 2, 5, 6
VID = 10
OF = '-O OpenFlow14'

ZONE = 'zone=NXM_NX_REG13[0..15]'
CT_IN = 'ct(table=70,%s)' % ZONE


def _flows(vlan: bool = True) -> list[str]:
    """The hypervisor's flows while web1 is local (port 5).  vlan=True walks the whole pipeline
    as opendvs does (push_vlan at port_sec, learn/classify by in_port+vlan+src, pop at output; the
    uplink stands for the remote hypervisor and is untagged here: no 8021q in this kernel);
    vlan=False is the bare l2_lookup -> acl_out -> output shape."""
    V = ',dl_vlan=%d' % VID if vlan else ''
    push = 'push_vlan:0x8100,set_field:%d->vlan_vid,' % (0x1000 | VID) if vlan else ''
    pop = 'pop_vlan,' if vlan else ''
    nxt = 10 if vlan else 60
    f = [
        # port_sec: untagged from the VMs, tagged from the uplink trunk
        'table=0,priority=100,in_port=%d,vlan_tci=0x0000/0x1fff,actions=%sgoto_table:%d' % (P_WEB2, push, nxt),
        'table=0,priority=100,in_port=%d,vlan_tci=0x0000/0x1fff,actions=%sgoto_table:%d' % (P_WEB1, push, nxt),
        'table=0,priority=100,in_port=%d,vlan_tci=0x0000/0x1fff,actions=%sgoto_table:%d' % (P_UPLINK, push, nxt),
        'table=0,priority=0,actions=drop',
        # classify: the port's zone (reg13) and "has a security policy" flag (reg12)
        'table=10,priority=100,in_port=%d%s,actions=load:1->NXM_NX_REG13[],load:1->NXM_NX_REG12[],'
        'load:%d->NXM_NX_REG14[],goto_table:20' % (P_WEB2, V, P_WEB2),
        'table=10,priority=100,in_port=%d%s,actions=load:1->NXM_NX_REG13[],load:%d->NXM_NX_REG14[],'
        'goto_table:20' % (P_WEB1, V, P_WEB1),
        'table=10,priority=100,in_port=%d%s,actions=load:1->NXM_NX_REG13[],load:%d->NXM_NX_REG14[],'
        'goto_table:20' % (P_UPLINK, V, P_UPLINK),
        # learn: known source MACs per port
        'table=20,priority=100,in_port=%d%s,dl_src=%s,actions=goto_table:30' % (P_WEB2, V, WEB2_MAC),
        'table=20,priority=100,in_port=%d%s,dl_src=%s,actions=goto_table:30' % (P_WEB1, V, WEB1_MAC),
        'table=20,priority=90,in_port=%d,actions=goto_table:30' % P_UPLINK,
        'table=30,priority=0,actions=goto_table:40',
        'table=40,priority=0,actions=goto_table:50',
        'table=50,priority=0,actions=goto_table:60',
        # l2_lookup
        'table=60,priority=100%s,dl_dst=%s,actions=set_field:%d->reg15,goto_table:70' % (V, WEB1_MAC, P_WEB1),
        'table=60,priority=100%s,dl_dst=%s,actions=set_field:%d->reg15,goto_table:70' % (V, WEB2_MAC, P_WEB2),
        'table=60,priority=0,actions=drop',
        # acl_out for web1 (local, port 5)
        'table=70,priority=300,ct_state=-trk,ip,reg15=%d,actions=%s' % (P_WEB1, CT_IN),
        'table=70,priority=290,ct_state=+rpl-inv+trk,ip,reg15=%d,actions=goto_table:80' % P_WEB1,
        'table=70,priority=280,ct_state=+new-inv+trk,icmp,reg15=%d,actions=ct(commit,%s),goto_table:80'
        % (P_WEB1, ZONE),
        'table=70,priority=280,ct_state=-new+est-inv+trk,ip,reg15=%d,actions=goto_table:80' % P_WEB1,
        # egress to the uplink (already there before the migration)
        'table=70,priority=300,ct_state=-trk,ip,reg12=1,reg15=%d,actions=%s' % (P_UPLINK, CT_IN),
        'table=70,priority=290,ct_state=+new+trk,ip,reg12=1,reg15=%d,actions=ct(commit,%s),goto_table:80'
        % (P_UPLINK, ZONE),
        'table=70,priority=290,ct_state=-new+trk,ip,reg12=1,reg15=%d,actions=goto_table:80' % P_UPLINK,
        # default for ports with a policy, and everything else
        'table=70,priority=100,ct_state=+trk,ip,reg12=0x1,actions=drop',
        'table=70,priority=0,actions=goto_table:80',
        # output
        'table=80,priority=100,reg15=%d%s,actions=%soutput:%d' % (P_WEB2, V, pop, P_WEB2),
        'table=80,priority=100,reg15=%d%s,actions=%soutput:%d' % (P_UPLINK, V, pop, P_UPLINK),
        'table=80,priority=100,reg15=%d%s,actions=%soutput:%d' % (P_WEB1, V, pop, P_WEB1),
        'table=80,priority=0,actions=drop',
    ]
    # web3: a second local VM with web1's flows (port 6), which stays
    web1 = [x for x in f if WEB1_MAC in x or re.search(r'(in_port|reg15)=%d,|output:%d$' % (P_WEB1, P_WEB1), x)]
    subs = [('in_port=%d,' % P_WEB1, 'in_port=%d,' % P_WEB3), ('reg15=%d,' % P_WEB1, 'reg15=%d,' % P_WEB3),
            ('set_field:%d->reg15' % P_WEB1, 'set_field:%d->reg15' % P_WEB3),
            ('output:%d' % P_WEB1, 'output:%d' % P_WEB3), ('load:%d->' % P_WEB1, 'load:%d->' % P_WEB3),
            (WEB1_MAC, WEB3_MAC)]
    for x in web1:
        for a, b in subs:
            x = x.replace(a, b)
        f.insert(-1, x)
    # web1's own DSCP table (only until overlap() removes its rule), visited only on the way to web1
    i = f.index('%s,actions=set_field:%d->reg15,goto_table:70' % (L2_WEB1, P_WEB1))
    f[i] = f[i].replace('goto_table:70', 'goto_table:65')
    f += [TOS_RULE + ',actions=drop', 'table=65,priority=0,actions=goto_table:70']
    return f


TOS = 0x10
TOS_RULE = 'table=65,priority=200,ip,nw_tos=%d' % TOS
L2_WEB1 = 'table=60,priority=100,dl_vlan=%d,dl_dst=%s' % (VID, WEB1_MAC)
TTL_GUARD = 'table=60,priority=101,ip,dl_vlan=%d,dl_dst=%s,nw_ttl=0' % (VID, WEB1_MAC)
ACL_WEB1 = [
    'table=70,priority=300,ct_state=-trk,ip,reg15=%d' % P_WEB1,
    'table=70,priority=290,ct_state=+rpl-inv+trk,ip,reg15=%d' % P_WEB1,
    'table=70,priority=280,ct_state=+new-inv+trk,icmp,reg15=%d' % P_WEB1,
    'table=70,priority=280,ct_state=-new+est-inv+trk,ip,reg15=%d' % P_WEB1,
]


def migration_mods(style: str = 'overwrite') -> list[str]:
    """The controller's bundle for web1 leaving: l2_lookup to the uplink, acl_out reg15=5 gone.

    style 'overwrite': OFPFC_ADD over the existing l2_lookup flow (what the controller does);
    'delete-add': delete_strict then add of that flow, in the same bundle;
    'acl-only': only the acl_out deletes and the overwrite, without reg15=5 deletes (control)."""
    new_l2 = '%s,actions=set_field:%d->reg15,goto_table:70' % (L2_WEB1, P_UPLINK)
    mods = []
    if style == 'overwrite':
        mods.append('add ' + new_l2)
    elif style == 'modify':
        mods.append('modify_strict ' + new_l2)
    elif style == 'delete-add':
        mods += ['delete_strict ' + L2_WEB1, 'add ' + new_l2]
    elif style == 'ttl-guard':
        # the workaround: a guard flow above the moved MAC's l2_lookup flow that matches a field
        # no megaflow through l2_lookup has matched yet (nw_ttl=0: never forwarded anyway).  Every
        # translation for that MAC now needs nw_ttl exact, so the revalidator DELETES the old
        # megaflows (a mask too wide for the new translation) instead of modifying them in place.
        # Same actions as the new flow: a packet with TTL 0 is treated exactly as any other.
        mods += ['add ' + new_l2, 'add ' + TTL_GUARD + new_l2[len(L2_WEB1):]]
    elif style == 'move-guard':
        # the same, as the proposal module controller/pipeline/move_guard.py computes it
        from controller.pipeline import ofctl_text
        from controller.pipeline.flow import Flow
        from controller.pipeline.move_guard import move_guards

        def l2(port):
            return Flow.make('l2_lookup', 100, {'vlan_vid': 0x1000 | VID, 'eth_dst': WEB1_MAC},
                             [('set_field', 'reg15', port)], goto='acl_out')
        mods += ['add ' + new_l2] + ['add ' + ofctl_text.flow(g) for g in move_guards([], [l2(P_UPLINK)], [l2(P_WEB1)])]
    else:
        raise ValueError(style)
    mods += ['delete_strict ' + m for m in ACL_WEB1]
    return mods


def _prefix() -> str:
    return 'mf' + ''.join(random.choice(string.ascii_lowercase) for _ in range(3))


class StaleMegaflowLab:
    def __init__(self):
        self.p = _prefix()
        self.br = self.p + 'br'
        self.ns = {n: self.p + n for n in ('web2', 'web1', 'web1b', 'web3')}
        self.ports = {'web2': self.p + 'w2', 'web1': self.p + 'w1', 'web1b': self.p + 'up', 'web3': self.p + 'w3'}
        self.ofport = {'web2': P_WEB2, 'web1': P_WEB1, 'web1b': P_UPLINK, 'web3': P_WEB3}
        self.made_ns: list[str] = []
        self.made_links: list[str] = []
        self.pings: list[subprocess.Popen] = []
        self.tmp = Path(tempfile.mkdtemp(prefix='opendvs-mf-'))

    # -- set-up / tear-down -------------------------------------------------------------
    def up(self, flows: list[str] | None = None) -> 'StaleMegaflowLab':
        try:
            sh('ovs-vsctl add-br {b} -- set bridge {b} datapath_type=netdev fail_mode=secure '
               'protocols=OpenFlow13,OpenFlow14'.format(b=self.br))
            macs = {'web2': WEB2_MAC, 'web1': WEB1_MAC, 'web1b': WEB1_MAC, 'web3': WEB3_MAC}
            ips = {'web2': WEB2_IP, 'web1': WEB1_IP, 'web1b': WEB1_IP, 'web3': WEB3_IP}
            for vm in ('web2', 'web1', 'web1b', 'web3'):
                ns, port = self.ns[vm], self.ports[vm]
                sh('ip netns add %s' % ns)
                self.made_ns.append(ns)
                sh('ip link add %s type veth peer name eth0 netns %s' % (port, ns))
                self.made_links.append(port)
                dev = 'eth0'
                sh('ip -n {ns} link set {dev} address {mac} && ip -n {ns} addr add {ip}/24 dev {dev} && '
                   'ip -n {ns} link set {dev} up && ip -n {ns} link set lo up && '
                   'ip netns exec {ns} ethtool -K eth0 tx off >/dev/null && '
                   'ip link set {p} up && ethtool -K {p} tx off >/dev/null'
                   .format(ns=ns, mac=macs[vm], ip=ips[vm], p=port, dev=dev))
                sh('ovs-vsctl add-port %s %s -- set interface %s ofport_request=%d'
                   % (self.br, port, port, self.ofport[vm]))
            # no ARP in this reproducer: static neighbours both ways
            for ip, mac in ((WEB1_IP, WEB1_MAC), (WEB3_IP, WEB3_MAC)):
                sh('ip -n %s neigh replace %s lladdr %s dev eth0 nud permanent' % (self.ns['web2'], ip, mac))
            for vm, dev in (('web1', 'eth0'), ('web1b', 'eth0'), ('web3', 'eth0')):
                sh('ip -n %s neigh replace %s lladdr %s dev %s nud permanent' % (self.ns[vm], WEB2_IP, WEB2_MAC, dev))
            self.replace_flows(flows if flows is not None else _flows())
        except Exception:
            self.down()
            raise
        return self

    def down(self) -> None:
        self.stop_ping()
        sh('ovs-vsctl --if-exists del-br %s' % self.br, check=False)
        for link in self.made_links:
            sh('ip link del %s 2>/dev/null' % link, check=False)
        for ns in self.made_ns:
            sh('ip netns del %s' % ns, check=False)

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    # -- OpenFlow -----------------------------------------------------------------------
    def replace_flows(self, flows: list[str]) -> None:
        f = self.tmp / 'flows'
        f.write_text('\n'.join(flows) + '\n')
        sh('ovs-ofctl %s --bundle replace-flows %s %s' % (OF, self.br, f))

    def bundle(self, mods: list[str]) -> None:
        f = self.tmp / 'mods'
        f.write_text('\n'.join(mods) + '\n')
        sh('ovs-ofctl %s --bundle add-flows %s %s' % (OF, self.br, f))

    def mods(self, mods: list[str]) -> None:
        """The same flow mods, one at a time (no bundle)."""
        f = self.tmp / 'mods'
        f.write_text('\n'.join(mods) + '\n')
        sh('ovs-ofctl %s add-flows %s %s' % (OF, self.br, f))

    def n_packets(self, table: int, match: str) -> int:
        out = sh('ovs-ofctl %s dump-flows %s "table=%d,%s"' % (OF, self.br, table, match))
        return sum(int(m) for m in re.findall(r'n_packets=(\d+)', out))

    def dropped(self) -> int:
        """Packets the acl_out default (+trk, reg12=1 -> drop) dropped."""
        out = sh('ovs-ofctl %s dump-flows %s table=70' % (OF, self.br))
        return sum(int(m.group(1)) for m in re.finditer(r'n_packets=(\d+).*priority=100,ct_state=\+trk', out))

    def to_uplink(self) -> int:
        return self.n_packets(80, 'reg15=%d' % P_UPLINK)

    def dp_flows(self) -> str:
        """This bridge's datapath flows (every netdev bridge of the root OVS shares one datapath)."""
        text = sh('ovs-appctl dpctl/dump-flows -m netdev@ovs-netdev', check=False)
        return '\n'.join(l for l in text.splitlines() if 'in_port(%s' % self.p in l)

    def first_pass(self) -> dict[str, str]:
        """web2 -> web1 first-pass megaflows: their IPv4 match -> the recirc id they go to."""
        out = {}
        for line in self.dp_flows().splitlines():
            if 'recirc_id(0)' in line and 'in_port(%s)' % self.ports['web2'] in line \
                    and 'dst=%s)' % WEB1_MAC in line:
                rid = re.search(r'recirc\((0x[0-9a-f]+)\)', line)
                out[re.search(r'ipv4\(([^)]*)\)', line).group(1)] = rid.group(1) if rid else None
        return out

    def second_pass(self, rid: str) -> str | None:
        """The actions of the megaflow for recirc id `rid` from web2, if there is one."""
        for line in self.dp_flows().splitlines():
            if 'recirc_id(%s)' % rid in line and 'in_port(%s)' % self.ports['web2'] in line:
                return line[line.index('actions:') + 8:].split(', dp-extra')[0]
        return None

    def stale_first_pass(self) -> list[str]:
        """First-pass megaflows whose recirculation no longer ends at the uplink."""
        return ['%s -> %s (%s)' % (m, rid, self.second_pass(rid)) for m, rid in self.first_pass().items()
                if not (self.second_pass(rid) or '').endswith(self.ports['web1b'])]

    # -- traffic ------------------------------------------------------------------------
    def start_ping(self, interval: float = 0.02, dst: str = WEB1_IP) -> None:
        """A continuous ping from web2 (stopped by stop_ping / down)."""
        self.pings.append(subprocess.Popen(
            ['ip', 'netns', 'exec', self.ns['web2'], 'ping', '-n', '-i', str(interval), dst],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop_ping(self) -> None:
        for ping in self.pings:
            if ping.poll() is None:
                ping.terminate()
                ping.wait(5)
        self.pings = []

    def overlap(self) -> None:
        """Give the web2 -> web1 megaflow an overlapping twin that the classifier finds first.

        Call with web2 already pinging web3 (its megaflow made the 'broad' subtable, TOS
        wildcarded) and web1 (while the acl_in DSCP rule for web1 exists, that megaflow matches the
        IP TOS exactly: a 'narrow' subtable, made later, so searched after the broad one).  The rule
        goes (the revalidator keeps the narrow megaflow: its actions hold and a narrower mask is
        fine), then a few TOS-marked pings to web1 miss it and make a broad megaflow that covers
        the plain ping's key too.  The plain ping keeps hitting the narrow one through the
        exact-match cache."""
        sh('ovs-ofctl %s --strict del-flows %s "%s"' % (OF, self.br, TOS_RULE))
        sh('ip netns exec %s ping -n -q -Q %d -c 20 -i 0.01 -W 1 %s' % (self.ns['web2'], TOS, WEB1_IP), check=False)

    def migrate(self, style: str = 'overwrite', delete_port: bool = True, bundle: bool = True) -> None:
        """style 'two-commits': the l2_lookup flow deleted in one bundle, re-added in a second."""
        if delete_port:
            sh('ovs-vsctl del-port %s %s' % (self.br, self.ports['web1']))
        send = self.bundle if bundle else self.mods
        if style == 'two-commits':
            mods = migration_mods('delete-add')
            send(mods[:1])
            send(mods[1:])
        else:
            send(migration_mods(style))
