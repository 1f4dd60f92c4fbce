"""A minimal scratch hypervisor for issue 10's stale first-pass megaflow, without Mininet.

One netdev bridge on the root OVS (per-run prefix) and three namespaces:
  web2  (10.77.0.2)  on port 1   -- the pinging VM
  web1  (10.77.0.1)  on port 5   -- the VM that migrates away
  web1b (10.77.0.1, same MAC) behind the uplink, port 2 -- web1 after the migration

The flows copy the shape of opendvs's pipeline for the web2 -> web1 path: classify sets
reg13 (zone) and reg12=1, l2_lookup sets reg15 from the destination MAC, acl_out sends
untracked IP through ct(table=70, zone=reg13) and after the recirculation decides per reg15,
with a `+trk,ip,reg12=1 -> drop` default.  `migrate()` then does what the controller does:
port 5 leaves the bridge, and one OpenFlow bundle rewrites the l2_lookup flow to the uplink
and deletes the reg15=5 acl_out flows.
"""
from __future__ import annotations

import os
import random
import signal
import re
import string
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support import sh

WEB1_MAC, WEB2_MAC = '02:00:00:77:00:01', '02:00:00:77:00:02'
WEB1_IP, WEB2_IP = '10.77.0.1', '10.77.0.2'
P_WEB2, P_UPLINK, P_WEB1 = 1, 2, 5
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
        # acl_in: a DSCP rule that exists only until overlap() removes it
        TOS_RULE + ',actions=drop',
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
    return f


TOS = 0x10
TOS_RULE = 'table=40,priority=200,ip,nw_tos=%d' % TOS
L2_WEB1 = 'table=60,priority=100,dl_vlan=%d,dl_dst=%s' % (VID, WEB1_MAC)
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
        self.ns = {n: self.p + n for n in ('web2', 'web1', 'web1b')}
        self.ports = {'web2': self.p + 'w2', 'web1': self.p + 'w1', 'web1b': self.p + 'up'}
        self.ofport = {'web2': P_WEB2, 'web1': P_WEB1, 'web1b': P_UPLINK}
        self.made_ns: list[str] = []
        self.made_links: list[str] = []
        self.ping: subprocess.Popen | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix='opendvs-mf-'))

    # -- set-up / tear-down -------------------------------------------------------------
    def up(self, flows: list[str] | None = None) -> 'StaleMegaflowLab':
        try:
            sh('ovs-vsctl add-br {b} -- set bridge {b} datapath_type=netdev fail_mode=secure '
               'protocols=OpenFlow13,OpenFlow14'.format(b=self.br))
            macs = {'web2': WEB2_MAC, 'web1': WEB1_MAC, 'web1b': WEB1_MAC}
            ips = {'web2': WEB2_IP, 'web1': WEB1_IP, 'web1b': WEB1_IP}
            for vm in ('web2', 'web1', 'web1b'):
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
            sh('ip -n %s neigh replace %s lladdr %s dev eth0 nud permanent' % (self.ns['web2'], WEB1_IP, WEB1_MAC))
            for vm, dev in (('web1', 'eth0'), ('web1b', 'eth0')):
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
    def start_ping(self, interval: float = 0.02) -> None:
        self.ping = subprocess.Popen(
            ['ip', 'netns', 'exec', self.ns['web2'], 'ping', '-n', '-i', str(interval), WEB1_IP],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_ping(self) -> None:
        marked, self.marked = getattr(self, 'marked', None), None
        if marked is not None and marked.poll() is None:
            os.killpg(marked.pid, signal.SIGTERM)      # the loop's own session: it and its pings
            marked.wait(5)
        if self.ping is not None and self.ping.poll() is None:
            self.ping.terminate()
            self.ping.wait(5)
        self.ping = None

    def overlap(self) -> None:
        """Give the web2 -> web1 megaflow an overlapping twin, as policy churn does: while the
        acl_in DSCP rule exists the ping's megaflow matches the IP TOS exactly; once the rule is
        gone the revalidator keeps that megaflow (its actions still hold, its mask is only
        narrower), and TOS-marked pings (a new TOS value every few packets, so they always
        reach the classifier rather than the exact-match cache) make a second, broader
        megaflow (TOS wildcarded) that covers the plain ping's key too and leads the
        classifier's subtable order."""
        sh('ovs-ofctl %s --strict del-flows %s "%s"' % (OF, self.br, TOS_RULE))
        loop = ('while true; do for q in $(seq 4 4 252); do ping -n -q -Q $q -c 2 -i 0.002 -W 0.2 %s '
                '>/dev/null 2>&1; done; done' % WEB1_IP)
        self.marked = subprocess.Popen(['ip', 'netns', 'exec', self.ns['web2'], 'sh', '-c', loop],
                                       start_new_session=True)

    def migrate(self, style: str = 'overwrite', delete_port: bool = True, bundle: bool = True) -> None:
        if delete_port:
            sh('ovs-vsctl del-port %s %s' % (self.br, self.ports['web1']))
        (self.bundle if bundle else self.mods)(migration_mods(style))
