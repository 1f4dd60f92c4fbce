"""Incremental compile == full compile, whatever happens: random sequences of the events the
controller gets (bindings, moves, ports, links, learned and aged MACs, switches leaving and
coming back, policy pushes), each converged the way the worker does (parts recompiled from
stale marks, then only the change sent) and checked against a compile from scratch -- on
the desired set *and* on what the (fake) switches hold."""
import os
import random

import pytest

from apps import topology
from bench.fabricgen import fabric_yaml, tenants as gen_tenants
from controller import core
from controller.core import Controller
from controller.inventory.model import Binding
from controller.pipeline import incremental
from controller.pipeline.flow import Flow
from controller.policy.fabric import parse_fabric
from controller.policy.model import Policy
from tests.unit.builders import FakeSwitch

RACKS, PER_RACK, NETWORKS, WORKLOADS = 2, 3, 20, 60
SEEDS = int(os.environ.get('OPENDVS_FUZZ_SEEDS', '8'))      # more for a long local run


@pytest.fixture
def steady(monkeypatch):
    """No discovery window or restart gating: every converge is a normal one."""
    monkeypatch.setattr(core, 'PICTURE_WAIT', 0.0)
    monkeypatch.setattr(core, 'SETTLE', 0.0)
    monkeypatch.setattr(core, 'BINDINGS_WAIT', 0.0)
    monkeypatch.setattr(topology, 'DISCOVERY_WINDOW', 0.0)


class World:
    def __init__(self, seed):
        self.rnd = random.Random(seed)
        fabric = parse_fabric(fabric_yaml(RACKS, PER_RACK, NETWORKS // 2), '<generated>')
        self.all_tenants = gen_tenants(NETWORKS, WORKLOADS, per_tenant=5, rules=True)   # every app: microseg too
        self.ctl = Controller(Policy(fabric).with_tenants(self.all_tenants))
        self.fabric = fabric
        self.conns: dict[int, FakeSwitch] = {}
        self.ports: dict[int, list] = {}
        self.cables = []                       # (a dpid, a port, b dpid, b port)
        self.hvs = sorted(h.dpid for h in fabric.hypervisors.values())
        self.nics = sorted(self.ctl.policy.nics)
        self.bound: dict[int, dict[int, Binding]] = {hv: {} for hv in self.hvs}
        self._plan()

    def _plan(self):
        f = self.fabric
        spines = [f.switches['spine1'].dpid, f.switches['spine2'].dpid]
        for s in spines:
            self.ports[s] = [(r + 1, 's%d' % (r + 1), True) for r in range(RACKS)]
        hvs = sorted(f.hypervisors.values(), key=lambda h: h.dpid)
        for r in range(RACKS):
            leaf = f.switches['leaf%d' % (r + 1)].dpid
            self.ports[leaf] = [(1, 'up1', True), (2, 'up2', True), (9, 'edge', True)]
            for k, s in enumerate(spines):
                self.cables.append((leaf, k + 1, s, r + 1))
            for h in range(PER_RACK):
                hv = hvs[r * PER_RACK + h].dpid
                self.ports[leaf].append((10 + h, 'hv%d' % h, True))
                self.cables.append((leaf, 10 + h, hv, 1))
        for hv in self.hvs:
            self.ports[hv] = [(1, 'int-to-phy', True), (2, 'vxlan0', True)] + \
                             [(p, 'vnet%d' % p, True) for p in range(3, 3 + 12)]

    def connect(self, dpid):
        conn = self.conns[dpid] = FakeSwitch(dpid, self.conns[dpid].flows if dpid in self.conns else ())
        self.ctl.switch_up(conn, self.ports[dpid])
        if dpid in self.hvs:
            self.ctl.bindings_changed(dpid, dict(self.bound[dpid]), '02:dd:00:00:00:%02x' % (dpid & 0xff))

    def lldp(self):
        for a, pa, b, pb in self.cables:
            if a in self.ctl.inv.switches and b in self.ctl.inv.switches:
                self.ctl.packet_in(a, pa, 0, topology.lldp_frame(b, pb))
                if self.ctl.inv.switches[b].kind == 'physical':
                    self.ctl.packet_in(b, pb, 0, topology.lldp_frame(a, pa))
        topology.classify_ports(self.fabric, self.ctl.inv, 1e12)
        with self.ctl.lock:
            self.ctl._topology_changed()

    def up(self):
        for d in sorted(self.ports):
            self.connect(d)
        for i, nic in enumerate(self.nics[:40]):
            hv = self.hvs[i % len(self.hvs)]
            self.bind(nic, hv)
        self.lldp()

    def free_port(self, hv):
        used = set(self.bound[hv])
        return next(p for p, _, _ in self.ports[hv][2:] if p not in used)

    def bind(self, nic, hv):
        port = self.free_port(hv)
        mac = self.ctl.policy.nics[nic].nic.mac if nic in self.ctl.policy.nics else '02:ee:00:00:00:01'
        self.bound[hv][port] = Binding('vnet%d' % port, nic, mac)
        if hv in self.ctl.conns:
            self.ctl.bindings_changed(hv, dict(self.bound[hv]))

    def unbind(self, hv, port):
        del self.bound[hv][port]
        if hv in self.ctl.conns:
            self.ctl.bindings_changed(hv, dict(self.bound[hv]))

    # ---- one random event -------------------------------------------------------------

    def event(self):
        r, ctl = self.rnd, self.ctl
        kind = r.choice(['bind', 'bind', 'unbind', 'move', 'double', 'port', 'learn', 'age', 'cable',
                         'switch', 'apply', 'vtep', 'garp', 'inflight'])
        hv = r.choice(self.hvs)
        if kind == 'bind' and len(self.bound[hv]) < 12:
            self.bind(r.choice(self.nics), hv)
        elif kind == 'unbind' and self.bound[hv]:
            self.unbind(hv, r.choice(sorted(self.bound[hv])))
        elif kind in ('move', 'double'):
            here = [(h, p) for h in self.hvs for p, b in self.bound[h].items()]
            other = r.choice(self.hvs)
            if here and len(self.bound[other]) < 12:
                h, p = r.choice(here)
                nic = self.bound[h][p].iface_id
                self.bind(nic, other)                  # bound twice for a moment (live migration)
                if kind == 'move':
                    self.unbind(h, p)
        elif kind == 'port':
            d = r.choice(sorted(ctl.inv.switches))
            no, name, _ = r.choice(self.ports[d])
            up = r.random() < 0.5
            ctl.port_status(d, 'modify', no, name, up)
            if up:
                self.lldp()
        elif kind == 'learn':
            d = r.choice(sorted(ctl.inv.switches))
            ports = sorted(ctl.inv.switches[d].ports)
            vlan = r.choice(sorted(ctl.policy.vlans_in_use()))
            frame = bytes.fromhex('ffffffffffff' + '02aa%08x' % r.randrange(1 << 16) + '8100%04x0800' % vlan) + bytes(46)
            ctl.packet_in(d, r.choice(ports), 20, frame)
        elif kind == 'age':
            d = r.choice(sorted(ctl.inv.switches))
            learned = [(k, p) for k, p in ctl.inv.macs.get(d, {}).items()]
            if learned:
                (vlan, mac), port = r.choice(learned)
                flow = Flow.make('learn', 100, {'in_port': port, 'vlan_vid': 0x1000 | vlan, 'eth_src': mac},
                                 cookie=(0x01 << 56) | (1 << 48))
                conn = self.conns[d]                   # the switch idled it out and says so
                conn.flows = {f for f in conn.flows if f.key != flow.key}
                ctl.flow_removed(d, flow)
        elif kind == 'cable':
            a, pa, b, pb = r.choice(self.cables)
            ctl.port_status(a, 'modify', pa, 'x', False)
            ctl.port_status(a, 'modify', pa, 'x', True)
            self.lldp()
        elif kind == 'switch':
            d = r.choice(sorted(self.ports))
            if d in ctl.conns:
                ctl.switch_down(self.conns[d])
            self.connect(d)
            self.lldp()
        elif kind == 'apply':
            keep = [t for t in self.all_tenants if r.random() < 0.75]
            ctl_policy = ctl.policy.with_tenants(keep)
            with ctl.lock:                      # what apply_policy does, without waiting for a worker
                from controller.pipeline import ids as idstore
                ctl.policy = ctl_policy.with_ids(idstore.bind(ctl.ids, ctl_policy))
                for d in ctl.inv.switches:
                    ctl._invalidate(d)
        elif kind == 'garp':                           # a VM announces itself on a port waiting for it
            waiting = [(h, p, b) for h in self.hvs for p, b in self.bound[h].items()
                       if b.iface_id in ctl.policy.nics and ctl.inv.locations.get(b.iface_id) != (h, p)]
            if waiting:
                h, p, b = r.choice(waiting)
                bn = ctl.policy.nics[b.iface_id]
                ctl.packet_in(h, p, 0, garp(bn.nic.mac, str(bn.nic.ip)))
        elif kind == 'inflight':                       # a located VM's device leaves; its row stays
            here = [(h, p, b) for h in self.hvs for p, b in self.bound[h].items()
                    if ctl.inv.locations.get(b.iface_id) == (h, p)]
            if here:
                h, p, b = r.choice(here)
                del self.bound[h][p]
                if h in ctl.conns:
                    ctl.bindings_changed(h, dict(self.bound[h]), claims={b.iface_id})
        elif kind == 'vtep':
            ctl.bindings_changed(hv, dict(self.bound[hv]), '02:dd:01:00:00:%02x' % r.randrange(256))
        return kind

    def converge_all(self):
        """What the worker does: loads first, then every dirty switch from one snapshot."""
        ctl = self.ctl
        for d in list(ctl._loads):
            ctl._loads.remove(d)
            ctl._load(d)
        with ctl.lock:
            batch = sorted(ctl._dirty)
            ctl._dirty.clear()
        ctl._converge_batch(batch)


def garp(mac: str, ip: str) -> bytes:
    from mininet_topos.lab import _garp
    return _garp(mac, ip)


@pytest.mark.parametrize('seed', range(SEEDS))
def test_incremental_compile_equals_full_compile_after_every_event(steady, seed):
    w = World(seed)
    w.up()
    w.converge_all()
    for step in range(60):
        kind = w.event()
        w.converge_all()
        for d in sorted(w.ctl.inv.switches):
            full = w.ctl.desired(d)
            got = w.ctl._compiled[d].flows()
            assert got == full, 'seed %d step %d (%s) switch %x: +%s -%s' % (
                seed, step, kind, d, sorted(map(str, got - full))[:3], sorted(map(str, full - got))[:3])
            held = {f.key: f for f in w.conns[d].flows}
            assert held == {f.key: f for f in full}, 'seed %d step %d (%s): switch %x holds other flows' % (
                seed, step, kind, d)


def test_one_binding_recompiles_only_that_nics_parts(steady):
    w = World(99)
    w.up()
    w.converge_all()
    calls = []
    real = incremental.Compiled.put

    def counting(self, pkey, flows):
        calls.append(pkey)
        return real(self, pkey, flows)
    incremental.Compiled.put = counting
    try:
        nic = next(n for n in w.nics[40:] if w.ctl.policy.nics[n].network.vlan is not None)
        w.bind(nic, w.hvs[0])
        w.converge_all()
    finally:
        incremental.Compiled.put = real
    whole = [k for k in calls if k[1] is incremental.SWITCH]
    units = [k for k in calls if k[1] is not incremental.SWITCH]
    # the hypervisor itself and its leaf are compiled whole; everywhere else just the nic
    assert len(whole) <= 2 * (len(core.APPS) + 1)
    assert {k for k in units if k[0] == 'vlan_portgroups'} >= {('vlan_portgroups', nic)}
    sent = sum(len(d.add) + len(d.delete) for d in w.ctl.last_diff.values())
    assert sent <= 50
