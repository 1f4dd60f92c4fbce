"""The web view (issue 14, part 2): a read-only page the API server serves at /view, drawn in
the browser with vis-network, fed by GET /v1/view -- the whole picture in one JSON object,
read under the core's lock, which the page polls every second.

The picture: the fabric (spines, leaves, the cables between them and whether LLDP sees them;
hypervisors with their uplinks and their status), each switch's connection state, flow count
and, for physical switches, the MACs in its l2_lookup table by tenant (the ToR MAC-table
footprint); the workloads on the hypervisors where their nics are bound; the tunnels in use
(hypervisor pairs that share an overlay network with a nic bound on each side, with the
VNIs); each tenant's networks; the last events.

vis-network comes from the PyPI package pyvis, which ships its standalone build
(pyvis/lib/vis-9.1.2/): nothing is fetched from the network at install time or page load.
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from controller.pipeline.flow import OFPVID_PRESENT

WEB = Path(__file__).resolve().parent / 'web'
VIS_VERSION = '9.1.2'
PAGES = {'/view': ('view.html', 'text/html; charset=utf-8'),
         '/view/view.js': ('view.js', 'text/javascript; charset=utf-8'),
         '/view/view.css': ('view.css', 'text/css; charset=utf-8')}
LIBS = {'/view/vis-network.min.js': ('vis-network.min.js', 'text/javascript; charset=utf-8'),
        '/view/vis-network.css': ('vis-network.css', 'text/css; charset=utf-8')}
EVENTS = 12                       # the last events shown
MACS_EVERY = 5.0                  # s: a physical switch's MACs are counted again at most this often
_macs: dict[tuple[int, int], tuple[float, dict]] = {}     # (id(core), dpid) -> (when, counts)


def vis_dir() -> Path | None:
    """Where the installed pyvis keeps vis-network's standalone build (None: not installed);
    found without importing pyvis (it would pull in networkx and jinja2 for nothing)."""
    spec = importlib.util.find_spec('pyvis')
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / 'lib' / ('vis-' + VIS_VERSION)
    return d if d.is_dir() else None


def static(path: str) -> tuple[bytes, str] | None:
    """(content, content type) of one of the page's files, or None."""
    if path in PAGES:
        name, ctype = PAGES[path]
        return (WEB / name).read_bytes(), ctype
    if path in LIBS:
        d = vis_dir()
        if d is None:
            return None
        name, ctype = LIBS[path]
        return (d / name).read_bytes(), ctype
    return None


def picture(core) -> dict:
    """Everything the page draws, consistent with itself: the core's state is copied under its
    lock (an inventory snapshot, the sessions), everything else is computed outside it."""
    uplinks = {u['hypervisor']: u for u in (getattr(core, 'uplinks', None) or (lambda: []))()}
    with core.lock:
        pol, inv = core.policy, core.inv.snapshot()
        sessions = {d: {'connected': d in core.conns, 'settling': d in inv.switches and core.settling(d)}
                    for d in [s.dpid for s in pol.fabric.switches.values()] +
                    [h.dpid for h in pol.fabric.hypervisors.values()]}
    fabric = pol.fabric
    out = {'fabric': fabric.source,
           'switches': [_physical(core, pol, inv, s, sessions[s.dpid]) for s in fabric.switches.values()],
           'links': [_link(inv, fabric, a, b) for a, b in fabric.links],
           'hypervisors': [_hypervisor(core, inv, h, sessions[h.dpid], uplinks.get(h.name))
                           for h in fabric.hypervisors.values()],
           'workloads': _workloads(pol, inv),
           'tunnels': _tunnels(pol, inv),
           'tenants': [{'name': t.name, 'source': t.source, 'default': t.security.default,
                        'networks': [{'name': n.name, 'vlan': n.vlan, 'vni': n.vni, 'subnet': str(n.subnet),
                                      'gateway': str(n.gateway) if n.gateway else None,
                                      'bound': sum(1 for i in pol.network_nics.get((t.name, n.name), ())
                                                   if i in inv.locations),
                                      'nics': len(pol.network_nics.get((t.name, n.name), ()))}
                                     for n in sorted(t.networks.values(), key=lambda n: n.name)]}
                       for t in sorted(pol.tenants.values(), key=lambda t: t.name)]}
    events = core.events.view()
    out['events'] = events['events'][-EVENTS:]
    out['last_event'] = events['last']
    return out


def _state(core, dpid: int, session: dict) -> dict:
    count = getattr(core.rec, 'count', None)          # the reconciler's own lock, not the core's
    flows = count(dpid) if count is not None else len(core.rec.installed(dpid) or ())
    return {**session, 'flows': flows, 'dpid': '%016x' % dpid}


def _physical(core, pol, inv, s, session) -> dict:
    """A leaf or spine: its state and the MACs its l2_lookup table holds, by tenant (counted
    at most every MACS_EVERY seconds: it reads every flow of the switch)."""
    key, now = (id(core), s.dpid), time.monotonic()
    when, macs = _macs.get(key, (None, None))
    if when is None or now - when >= MACS_EVERY:
        macs = _mac_counts(core, pol, inv, s.dpid)
        if len(_macs) > 4096:
            _macs.clear()
        _macs[key] = (now, macs)
    return {'name': s.name, 'role': s.role, **_state(core, s.dpid, session),
            'macs': sum(macs.values()), 'macs_by_tenant': macs}


def _mac_counts(core, pol, inv, dpid: int) -> dict:
    """{tenant: MACs} in a physical switch's l2_lookup flows and learned table (a VLAN no
    tenant owns counts as the fabric's own, e.g. the native VLAN)."""
    macs: dict[str, set] = {}
    owners = pol.vlan_owners
    for f in core.rec.installed(dpid) or ():
        if f.table != 'l2_lookup':
            continue
        m = f.match_dict()
        mac, vlan = m.get('eth_dst'), m.get('vlan_vid')
        if isinstance(mac, str) and isinstance(vlan, int) and not int(mac[:2], 16) & 1:
            vlan &= ~OFPVID_PRESENT
            macs.setdefault(owners.get(vlan, 'fabric'), set()).add((vlan, mac))
    for vlan, mac in inv.macs.get(dpid) or {}:            # learned, not yet a flow
        macs.setdefault(owners.get(vlan, 'fabric'), set()).add((vlan, mac))
    return {t: len(v) for t, v in sorted(macs.items())}


def _link(inv, fabric, a: str, b: str) -> dict:
    """A declared cable and whether LLDP sees it now (either way)."""
    da, db = fabric.switches[a].dpid, fabric.switches[b].dpid
    seen = any(end.dpid == da and peer.dpid == db for end, (peer, _) in inv.links.items())
    return {'a': a, 'b': b, 'up': seen}


def _hypervisor(core, inv, h, session, uplink) -> dict:
    """A hypervisor: its state, and its uplink's -- a bond's status from both ends' OVSDB
    (controller/bonds.py), a single cable's from LLDP: seen on a leaf port or not."""
    found = sorted(end.port for end, d in inv.hv_ports.items() if d == h.dpid)
    status = uplink['status'] if uplink and uplink['status'] != 'single' else ('ok' if found else 'not seen')
    return {'name': h.name, 'leaf': h.leaf, 'vtep': str(h.vtep), **_state(core, h.dpid, session),
            'uplinks': h.uplinks, 'bond': h.bond if h.bonded else None, 'uplink_status': status,
            'uplink_problems': uplink['problems'] if uplink else [], 'leaf_ports': found}


def _workloads(pol, inv) -> list[dict]:
    """One row a workload: where its nics are bound (the hypervisor of its first bound nic)."""
    names = {h.dpid: h.name for h in pol.fabric.hypervisors.values()}
    out = []
    for t in sorted(pol.tenants.values(), key=lambda t: t.name):
        for w in sorted(t.workloads.values(), key=lambda w: w.name):
            nics = []
            for n in w.nics:
                where = inv.locations.get(t.iface_id(w.name, n.index))
                nics.append({'nic': n.index, 'network': n.network, 'ip': str(n.ip), 'mac': n.mac,
                             'hypervisor': names.get(where[0], '%016x' % where[0]) if where else None,
                             'port': where[1] if where else None})
            bound = [n['hypervisor'] for n in nics if n['hypervisor']]
            out.append({'id': '%s/%s' % (t.name, w.name), 'tenant': t.name, 'workload': w.name,
                        'hypervisor': bound[0] if bound else None, 'nics': nics})
    return out


def _tunnels(pol, inv) -> list[dict]:
    """Hypervisor pairs that tunnel to each other now: an overlay network with a nic bound on
    both; with the VNIs (and their tenant/network) they carry."""
    from apps import vxlan_overlay
    names = {h.dpid: h.name for h in pol.fabric.hypervisors.values()}
    pairs: dict[tuple[str, str], list] = {}
    for (tenant, net), by_hv in sorted(vxlan_overlay.members(pol, inv).items()):
        hvs = sorted(names.get(d, '%016x' % d) for d in by_hv)
        vni = pol.tenants[tenant].networks[net].vni
        for i, a in enumerate(hvs):
            for b in hvs[i + 1:]:
                pairs.setdefault((a, b), []).append({'vni': vni, 'tenant': tenant, 'network': net})
    vtep = {h.name: str(h.vtep) for h in pol.fabric.hypervisors.values()}
    return [{'a': a, 'b': b, 'vtep_a': vtep.get(a), 'vtep_b': vtep.get(b), 'vnis': v}
            for (a, b), v in sorted(pairs.items())]
