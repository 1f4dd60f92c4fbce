// The opendvs web view: polls GET /v1/view every second (the token is a cookie set by
// /view?token=...) and draws the fabric with vis-network (controller/api/view.py).
'use strict';

const POLL_MS = 1000;          // between polls; at least 4x what the last one took (a big fabric)
const LEVEL = {spine: 0, leaf: 1, hypervisor: 2, workload: 3};
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#edc948', '#ff9da7', '#9c755f',
                 '#e15759', '#bab0ac'];

const nodes = new vis.DataSet();
const edges = new vis.DataSet();
const state = {data: null, updates: 0, failures: 0, lastOk: null};
window.opendvs = {nodes, edges, state};      // for tests and the curious

function tenantColor(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

function sessionWord(s) {
  return s.connected ? (s.settling ? 'settling' : 'connected') : 'disconnected';
}

function switchNode(s) {
  const up = s.connected;
  return {id: 'sw:' + s.name, level: LEVEL[s.role] ?? 1, shape: 'box', kind: s.role,
          label: `${s.name}\n${sessionWord(s)} · ${s.flows} flows\n${s.macs} MACs`,
          title: `${s.role} ${s.name} (dpid ${s.dpid})\nsession: ${sessionWord(s)}\nflows: ${s.flows}\n` +
                 `MACs in l2_lookup: ${s.macs} ` + JSON.stringify(s.macs_by_tenant),
          color: {background: up ? '#e8f0fb' : '#fdecea', border: up ? '#2e6bc6' : '#c62828'},
          borderWidth: up ? 1 : 3, shapeProperties: {borderDashes: up ? false : [6, 4]}};
}

function hypervisorNode(h) {
  const up = h.connected;
  return {id: 'hv:' + h.name, level: LEVEL.hypervisor, shape: 'box', kind: 'hypervisor',
          label: `${h.name}\n${h.vtep}\n${sessionWord(h)} · ${h.flows} flows`,
          title: `hypervisor ${h.name} (dpid ${h.dpid})\nVTEP ${h.vtep}, on ${h.leaf}\nsession: ${sessionWord(h)}\n` +
                 `uplinks: ${h.uplinks}${h.bond ? ' (' + h.bond + ')' : ''}, ${h.uplink_status}`,
          color: {background: up ? '#eef7ee' : '#fdecea', border: up ? '#2e7d32' : '#c62828'},
          borderWidth: up ? 1 : 3, shapeProperties: {borderDashes: up ? false : [6, 4]}};
}

function workloadNode(w) {
  const nics = w.nics.map(n => `nic${n.nic} ${n.network} ${n.ip} ${n.mac} ${n.hypervisor ? 'on ' + n.hypervisor +
                                ' port ' + n.port : 'not bound'}`);
  return {id: 'vm:' + w.id, level: LEVEL.workload, shape: 'ellipse', kind: 'workload',
          label: `${w.workload}\n${w.tenant} ${w.nics[0] ? w.nics[0].ip : ''}`,
          title: `workload ${w.id}\n` + nics.join('\n'),
          color: {background: tenantColor(w.tenant), border: '#333'}, font: {color: '#fff'}};
}

function graph(d) {
  const ns = [], es = [];
  for (const s of d.switches) ns.push(switchNode(s));
  for (const h of d.hypervisors) ns.push(hypervisorNode(h));
  // workloads grouped by hypervisor, in the hypervisors' order: the layout keeps them under it
  const order = new Map(d.hypervisors.map((h, i) => [h.name, i]));
  const placed = d.workloads.filter(w => w.hypervisor)
    .sort((a, b) => (order.get(a.hypervisor) ?? 1e9) - (order.get(b.hypervisor) ?? 1e9) || a.id.localeCompare(b.id));
  for (const w of placed) ns.push(workloadNode(w));
  for (const l of d.links) {
    es.push({id: `link:${l.a}-${l.b}`, from: 'sw:' + l.a, to: 'sw:' + l.b, width: 2,
             color: {color: l.up ? '#2e6bc6' : '#c62828'}, dashes: !l.up,
             title: `${l.a} - ${l.b}: ${l.up ? 'seen by LLDP' : 'not seen'}`});
  }
  for (const h of d.hypervisors) {
    const ok = h.uplink_status === 'ok';
    es.push({id: 'uplink:' + h.name, from: 'sw:' + h.leaf, to: 'hv:' + h.name, width: h.uplinks > 1 ? 4 : 2,
             label: h.uplinks > 1 ? `${h.bond} x${h.uplinks}` : undefined, font: {size: 10, align: 'middle'},
             color: {color: ok ? '#2e7d32' : '#c62828'}, dashes: !ok,
             title: `uplink ${h.leaf} - ${h.name}: ${h.uplink_status}` +
                    (h.leaf_ports.length ? ` (leaf port ${h.leaf_ports.join(',')})` : '') +
                    h.uplink_problems.map(p => '\n' + p).join('')});
  }
  for (const w of placed) {
    es.push({id: 'place:' + w.id, from: 'hv:' + w.hypervisor, to: 'vm:' + w.id,
                               color: {color: tenantColor(w.tenant)}});
  }
  for (const t of d.tunnels) {
    // arcs above the hypervisors' row: higher for neighbours, whose boxes would hide a flat one
    const apart = Math.max(1, Math.abs((order.get(t.b) ?? 0) - (order.get(t.a) ?? 0)));
    es.push({id: `tunnel:${t.a}-${t.b}`, from: 'hv:' + t.a, to: 'hv:' + t.b, dashes: [4, 4],
             color: {color: '#8e44ad'}, smooth: {type: 'curvedCW', roundness: Math.min(0.8, 0.8 / (apart * apart))},
             label: 'VNI ' + t.vnis.map(v => v.vni).join(','),
             font: {size: 11, color: '#8e44ad', background: 'rgba(255,255,255,0.85)'},
             title: `tunnel ${t.a} (${t.vtep_a}) - ${t.b} (${t.vtep_b})\n` +
                    t.vnis.map(v => `VNI ${v.vni}: ${v.tenant}/${v.network}`).join('\n')});
  }
  return [ns, es];
}

function sync(set, items) {
  const want = new Map(items.map(i => [i.id, i]));
  const gone = set.getIds().filter(id => !want.has(id));
  if (gone.length) set.remove(gone);
  const changed = items.filter(i => {
    const have = set.get(i.id);
    return !have || JSON.stringify(have) !== JSON.stringify(Object.assign({}, have, i));
  });
  if (changed.length) set.update(changed);
  return gone.length + changed.length;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : c === null || c === undefined ? '' : String(c));
  return e;
}

function fill(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows);
}

function tables(d) {
  const sws = d.switches.map(s => ({...s, kind: s.role})).concat(d.hypervisors.map(h => ({...h, kind: 'hypervisor'})));
  fill('switches', sws.map(s => {
    const word = sessionWord(s);
    const macs = s.kind === 'hypervisor' ? '' : `${s.macs} ` +
      Object.entries(s.macs_by_tenant).map(([t, n]) => `${t}:${n}`).join(' ');
    return el('tr', {'data-name': s.name, 'data-connected': String(s.connected)},
              el('td', {}, s.name), el('td', {}, s.kind),
              el('td', {class: 'session ' + (word === 'connected' ? 'up' : word === 'settling' ? 'settling' : 'down')}, word),
              el('td', {class: 'flows'}, s.flows), el('td', {class: 'macs'}, macs));
  }));
  fill('workloads', d.workloads.map(w => el('tr', {'data-id': w.id, class: w.hypervisor ? '' : 'unbound'},
    el('td', {}, w.workload), el('td', {}, w.tenant), el('td', {class: 'hv'}, w.hypervisor || 'not bound'),
    el('td', {}, w.nics.map(n => `${n.network} ${n.ip}${n.hypervisor && n.hypervisor !== w.hypervisor ?
                                   ' (on ' + n.hypervisor + ')' : ''}`).join(', ')))));
  fill('tunnels', d.tunnels.map(t => el('tr', {'data-pair': `${t.a}-${t.b}`},
    el('td', {}, `${t.a} ⇄ ${t.b}`), el('td', {class: 'vnis'}, t.vnis.map(v => `${v.vni} (${v.tenant}/${v.network})`).join(', ')))));
  fill('networks', d.tenants.flatMap(t => t.networks.map(n => el('tr', {'data-id': `${t.name}/${n.name}`},
    el('td', {}, t.name), el('td', {}, n.name), el('td', {}, n.vlan !== null ? 'VLAN ' + n.vlan : 'VNI ' + n.vni),
    el('td', {}, n.subnet + (n.gateway ? ' via ' + n.gateway : ' (not routed)')),
    el('td', {class: 'bound'}, `${n.bound}/${n.nics}`)))));
  document.getElementById('events').replaceChildren(...d.events.slice().reverse().map(e => {
    const rest = Object.entries(e).filter(([k, v]) => !['ts', 'seq', 'event'].includes(k) && v !== null &&
                                          !(Array.isArray(v) && !v.length) && !(typeof v === 'object' && !Object.keys(v).length))
      .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ');
    return el('li', {value: e.seq, 'data-event': e.event, title: JSON.stringify(e)}, `${e.ts.slice(11, 19)} ${e.event} ${rest}`);
  }));
  document.getElementById('fabric').textContent = d.fabric;
}

const network = new vis.Network(document.getElementById('graph'), {nodes, edges}, {
  layout: {hierarchical: {enabled: true, direction: 'UD', sortMethod: 'directed', levelSeparation: 120,
                          nodeSpacing: 150, treeSpacing: 160, shakeTowards: 'roots'}},
  physics: false,
  interaction: {hover: true, tooltipDelay: 150},
  nodes: {font: {size: 12, multi: false}, margin: 8, widthConstraint: {maximum: 170}},
  edges: {smooth: {type: 'cubicBezier', forceDirection: 'vertical', roundness: 0.4}},
});
window.opendvs.network = network;

async function poll() {
  const status = document.getElementById('status');
  const started = performance.now();
  try {
    const r = await fetch('/v1/view', {credentials: 'same-origin', cache: 'no-store'});
    if (r.status === 401) {
      status.textContent = 'the token is missing or wrong: open /view?token=TOKEN';
      status.className = 'status lost';
      return;                                   // no point in asking again
    }
    if (!r.ok) throw new Error('HTTP ' + r.status);
    const d = await r.json();
    const [ns, es] = graph(d);
    // a node added or gone, or a workload placed elsewhere: lay the tree out again (the
    // hierarchical layout places nodes only when the data is set)
    const placed = new Map(edges.get({filter: e => e.id.startsWith('place:')}).map(e => [e.id, e.from]));
    const relayout = ns.length !== nodes.length || ns.some(n => !nodes.get(n.id)) ||
      es.some(e => e.id.startsWith('place:') && placed.get(e.id) !== e.from);
    let changes = 1;
    if (relayout) {          // from scratch, in the order of graph(): workloads by hypervisor
      nodes.clear();
      edges.clear();
      nodes.add(ns);
      edges.add(es);
    } else {
      changes = sync(nodes, ns) + sync(edges, es);
    }
    if (changes) network.fit({animation: false});
    tables(d);
    state.data = d;
    state.updates += 1;
    state.lastOk = new Date();
    status.textContent = `live · updated ${state.lastOk.toLocaleTimeString()} · event #${d.last_event}`;
    status.className = 'status';
  } catch (e) {
    state.failures += 1;
    status.textContent = `connection to the controller lost (${e.message}); retrying` +
                         (state.lastOk ? ` · last update ${state.lastOk.toLocaleTimeString()}` : '');
    status.className = 'status lost';
  }
  setTimeout(poll, Math.max(POLL_MS, 4 * (performance.now() - started)));
}

poll();
