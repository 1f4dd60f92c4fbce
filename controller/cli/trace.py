"""dvsctl trace TENANT SRC DST [tcp/PORT|udp/PORT|icmp] [--json], and the lines of
`dvsctl show macs` (issue 14)."""
from __future__ import annotations

import json
import urllib.parse

from controller.cli.dvsctl import command
from controller.cli.remote import ApiError, _connection_arguments, _fail, call


def _trace_arguments(p) -> None:
    p.add_argument('tenant', metavar='TENANT')
    p.add_argument('src', metavar='SRC', help='a workload of TENANT (web1, web1/nic1) or its IP address')
    p.add_argument('dst', metavar='DST', help='a workload or IP of TENANT, or OTHER_TENANT/WORKLOAD')
    p.add_argument('service', nargs='?', default='icmp', metavar='SERVICE',
                   help='tcp/PORT, udp/PORT or icmp (default: icmp, an echo request)')
    p.add_argument('--json', action='store_true', help='print the raw JSON (every step, hop and the verdict)')
    _connection_arguments(p)


@command('trace', 'follow the packet SRC would send to DST through the real switches (ofproto/trace on each): '
         'every table it goes through, the app, tenant and YAML line of each flow, and the verdict',
         _trace_arguments)
def cmd_trace(args) -> int:
    query = urllib.parse.urlencode({'src': args.src, 'dst': args.dst, 'service': args.service})
    try:
        view = call(args, 'GET', '/v1/trace/%s?%s' % (urllib.parse.quote(args.tenant, safe=''), query))
    except ApiError as e:
        return _fail(e)
    print(json.dumps(view, indent=1) if args.json else '\n'.join(trace_lines(view)))
    return 0


def _owner(row: dict) -> str:
    if not row['app']:
        return '' if row['cookie'] in ('0x0', '0') else 'cookie %s' % row['cookie']
    if row['foreign']:
        return 'cookie %s: not made by this controller' % row['cookie']
    words = [row['app']] + [w for w in (row['tenant'], row['owner']) if w]
    return ' '.join(words) + (' @ %s' % row['where'] if row['where'] else '')


def trace_lines(view: dict) -> list[str]:
    """The packet, then each switch it went through with its table lookups as
    `switch  table  decision  [app tenant owner @ FILE:LINE]`, where it left each, and the verdict."""
    s, d = view['src'], view['dst']
    out = ['trace %s: %s (%s %s, %s port %s) -> %s (%s) %s, %s; a new connection (ct_state %s)' % (
        view['tenant'], s['workload'], s['ip'], s['mac'], s['hypervisor'], s['port'], d['name'], d['ip'],
        view['service'], view['forwarding'], view['ct_state'])]
    width = max((len(r['table_name']) for h in view['hops'] for r in h['steps']), default=8)
    for hop in view['hops']:
        out.append('%s %s in_port=%s (%s)' % (hop['switch'], hop['bridge'], hop['in_port'], hop['via']))
        for r in hop['steps']:
            owner = _owner(r)
            out.append('  %-8s %-3s%s%-*s %s%s' % (r['switch'], 'ct' if r['recirc'] else '', '  ' * r['depth'], width,
                                                  r['table_name'], r['decision'], '   [%s]' % owner if owner else ''))
        for note in hop.get('notes', ()):
            out.append('  (note: %s)' % note)
        if hop['error']:
            out.append('  !! %s' % hop['error'])
        for ex in hop['exits']:
            port = ('%s (%s)' % (ex['port'], ex['bridge']) if ex['bridge'] else ex['port']) if ex['port'] else \
                'datapath port %s' % ex['dp_port']
            if ex.get('encap'):
                port += ' (VNI %s to %s)' % (ex['encap'].get('vni'), ex['encap'].get('dst'))
            if 'next' in ex:
                out.append('  => out %s -> %s %s in_port=%s (%s)' % (port, ex['next']['switch'], ex['next']['bridge'],
                                                                 ex['next']['in_port'], ex['next']['via']))
            else:
                out.append('  => out %s: %s' % (port, ex['end']['text']))
        if hop['dropped']:
            out.append('  => dropped on %s' % hop['switch'])
    out.append('verdict: %s' % view['verdict']['text'])
    return out


def mac_lines(rows: list[dict]) -> list[str]:
    """Per physical switch: MACs held (learned + known nics) and by tenant."""
    table = [['switch', 'macs', 'learned', 'known nics', 'by tenant']]
    for r in rows:
        table.append([r['switch'] + ('' if r['connected'] else ' (not connected)'), str(r['macs']),
                      str(r['learned']), str(r['known_nics']),
                      ', '.join('%s %d' % kv for kv in r['tenants'].items()) or '-'])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ['  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
