"""dvsctl subcommands that talk to the running controller's REST API: apply, delete, show."""
from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from controller.cli.dvsctl import command
from controller.policy.errors import PolicyError
from controller.policy.tenant import parse_tenant

DEFAULT_API = 'http://127.0.0.1:8080'
DEFAULT_STATE_DIR = '/var/lib/opendvs'


def _connection_arguments(p) -> None:
    p.add_argument('--api', default=os.environ.get('OPENDVS_API', DEFAULT_API),
                   help='controller API URL (default: $OPENDVS_API or %s)' % DEFAULT_API)
    p.add_argument('--token', default=os.environ.get('OPENDVS_TOKEN'),
                   help='API token (default: $OPENDVS_TOKEN, else <state-dir>/api-token)')
    p.add_argument('--state-dir', default=os.environ.get('OPENDVS_STATE_DIR', DEFAULT_STATE_DIR),
                   help='where the controller keeps its token (default %s)' % DEFAULT_STATE_DIR)


class ApiError(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(body.get('error', 'HTTP %d' % status))
        self.status, self.body = status, body


def call(args, method: str, path: str, body=None):
    token = args.token
    if not token:
        try:
            token = (Path(args.state_dir) / 'api-token').read_text().strip()
        except OSError as e:
            raise ApiError(401, {'error': 'no API token: pass --token or --state-dir (%s)' % e})
    req = urllib.request.Request(args.api.rstrip('/') + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            payload = json.loads(e.read())
        except ValueError:
            payload = {'error': str(e)}
        raise ApiError(e.code, payload)
    except urllib.error.URLError as e:
        raise ApiError(0, {'error': 'cannot reach the controller at %s: %s' % (args.api, e.reason)})
    except (OSError, http.client.HTTPException) as e:     # reset, closed mid-reply, timed out
        raise ApiError(0, {'error': 'lost the connection to the controller at %s (%s); whether the change '
                                    'was applied is unknown: check with `dvsctl show tenants`'
                                    % (args.api, str(e) or type(e).__name__)})
    except ValueError:
        raise ApiError(0, {'error': 'the controller at %s sent a reply that is not JSON' % args.api})


def _fail(e: ApiError) -> int:
    print('dvsctl: %s' % e, file=sys.stderr)
    for d in e.body.get('diags', []):
        print(d, file=sys.stderr)
    return 1


def _print_changes(result: dict) -> None:
    verb = 'would change' if result['dry_run'] else 'changed'
    total_add = sum(c['add'] for c in result['switches'].values())
    total_del = sum(c['delete'] for c in result['switches'].values())
    for name, c in result['switches'].items():
        print('%-12s +%d -%d flows' % (name, c['add'], c['delete']))
    print('%s: +%d -%d flows on %d switches; tenants now: %s' % (
        verb, total_add, total_del, len(result['switches']), ', '.join(result['tenants']) or '-'))


def _apply_arguments(p) -> None:
    p.add_argument('files', nargs='+', metavar='FILE')
    p.add_argument('--dry-run', action='store_true', help='show what would change; change nothing')
    _connection_arguments(p)


@command('apply', 'push tenant policy files to the controller (atomic); print flows changed per switch',
         _apply_arguments)
def cmd_apply(args) -> int:
    docs, diags = [], []
    for f in args.files:                       # validate locally first: errors point at the user's file
        try:
            text = Path(f).read_text()
            parse_tenant(text, f)
            docs.append({'source': f, 'text': text})
        except OSError as e:
            print('%s:1:1: cannot read: %s' % (f, e.strerror), file=sys.stderr)
            diags.append(f)
        except PolicyError as e:
            print(e, file=sys.stderr)
            diags.append(f)
    if diags:
        return 1
    try:
        _print_changes(call(args, 'POST', '/v1/apply', {'tenants': docs, 'dry_run': args.dry_run}))
    except ApiError as e:
        return _fail(e)
    return 0


def _delete_arguments(p) -> None:
    p.add_argument('tenant')
    p.add_argument('--dry-run', action='store_true')
    _connection_arguments(p)


@command('delete', 'remove a tenant and all its flows', _delete_arguments)
def cmd_delete(args) -> int:
    try:
        _print_changes(call(args, 'DELETE', '/v1/tenants/%s%s' % (args.tenant, '?dry_run=1' if args.dry_run else '')))
    except ApiError as e:
        return _fail(e)
    return 0


SHOW = {
    'tenants': ('/v1/tenants', ['name', 'networks', 'workloads', 'source']),
    'networks': ('/v1/networks', ['tenant', 'name', 'vlan', 'vni', 'subnet', 'gateway']),
    'workloads': ('/v1/workloads', ['tenant', 'workload', 'nic', 'network', 'mac', 'ip', 'hypervisor', 'port',
                                    'interface', 'status']),
    'switches': ('/v1/switches', ['name', 'dpid', 'kind', 'connected', 'flows', 'ports']),
    'flows': ('/v1/flows', ['switch', 'flow', 'owner']),
    'tunnels': ('/v1/tunnels', ['hypervisor', 'vtep', 'vnis', 'remote_macs']),
    'uplinks': ('/v1/uplinks', ['hypervisor', 'leaf', 'uplinks', 'bond', 'status', 'leaf_port', 'members',
                                'problems']),
    'routes': ('/v1/routes', None),           # of one TENANT: route_lines
    'rules': ('/v1/rules', None),             # of one TENANT: rule_lines
    'macs': ('/v1/macs', None),               # mac_lines (issue 14)
}
TENANT_VIEWS = ('routes', 'rules')


def _show_arguments(p) -> None:
    p.add_argument('what', choices=sorted(SHOW))
    p.add_argument('tenant', nargs='?', metavar='TENANT',
                   help='routes, rules: the tenant whose subnets, or rules and their hits, to show')
    p.add_argument('--switch', help='flows: only this switch')
    p.add_argument('--json', action='store_true', help='print the raw JSON')
    _connection_arguments(p)
    p.set_defaults(usage_error=p.error)


def _cell(value) -> str:
    if isinstance(value, list):
        if value and isinstance(value[0], dict):        # ports
            return ' '.join('%s:%s%s%s' % (p['no'], p['role'], '' if p['up'] else '(down)',
                                           '(shut)' if p.get('shut') else '') for p in value)
        return ','.join(map(str, value))
    return '-' if value is None else str(value)


@command('show', 'show what runs: tenants, networks, workloads (and where bound), switches, flows, tunnels, '
         'uplinks (bonds and LACP), routes TENANT (its subnets and where their workloads are), rules TENANT '
         '(its rules with their hits and the drops, from the switches\' counters), macs (MACs per physical '
         'switch, by tenant)',
         _show_arguments)
def cmd_show(args) -> int:
    path, columns = SHOW[args.what]
    if (args.what in TENANT_VIEWS) != (args.tenant is not None):
        args.usage_error('name a tenant: dvsctl show %s TENANT' % args.what if args.what in TENANT_VIEWS else
                         'only `show routes` and `show rules` take a TENANT (got %r after %s)'
                         % (args.tenant, args.what))
    if args.what in TENANT_VIEWS:
        path += '/' + urllib.parse.quote(args.tenant, safe='')
    if args.what == 'flows' and args.switch:
        path += '?switch=' + args.switch
    try:
        rows = call(args, 'GET', path)
    except ApiError as e:
        return _fail(e)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if args.what in ('flows', 'routes', 'rules', 'macs'):
        from controller.cli.trace import mac_lines
        print('\n'.join({'flows': flow_lines, 'routes': route_lines, 'rules': rule_lines,
                          'macs': mac_lines}[args.what](rows)))
        return 0
    table = [columns] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print('  '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def flow_lines(rows) -> list[str]:
    """One flow per line, as ovs-ofctl dump-flows prints them, its owner at the end:
    `leaf1  table=l2 priority=100 cookie=0x... vlan_vid=...,eth_dst=... actions=...  # owner`.
    Only the switch names are padded (to the longest name), never the flows."""
    width = max((len(r['switch']) for r in rows), default=0)
    return ['%-*s  %s  # %s' % (width, r['switch'], r['flow'], r['owner']) for r in rows]


def route_lines(view) -> list[str]:
    """A tenant's gateway MAC, then a block per subnet -- `10.10.0.0/24 via 10.10.0.1 (users, vlan 10)`
    or `... : not routed (no gateway)` -- with a line per nic in it: `ip  mac  workload  on hv1`
    (or `not bound`); a nic other than a workload's first is shown as `workload/nic<i>`."""
    def name(w):
        return w['workload'] if w['nic'] == 0 else '%s/nic%d' % (w['workload'], w['nic'])
    nics = [w for n in view['networks'] for w in n['workloads']]
    ip_w = max((len(w['ip']) for w in nics), default=0)
    name_w = max((len(name(w)) for w in nics), default=0)
    out = ['tenant %s: gateway MAC %s on every hypervisor' % (view['tenant'], view['gateway_mac'])]
    for n in view['networks']:
        what = '(%s, %s)' % (n['network'], n['transport'])
        out.append('%s via %s %s' % (n['subnet'], n['gateway'], what) if n['routed'] else
                   '%s %s: not routed (no gateway)' % (n['subnet'], what))
        out += ['  %-*s  %s  %-*s  %s' % (ip_w, w['ip'], w['mac'], name_w, name(w),
                                          'on ' + w['hypervisor'] if w['hypervisor'] else 'not bound')
                for w in n['workloads']] or ['  (no workloads)']
    return out


def _side(ep: dict) -> str:
    return ' '.join('%s %s' % kv for kv in ep.items())


def _service(a: dict) -> str:
    port = a.get('port', a.get('ports'))
    return a['proto'] if port is None else '%s/%s' % (a['proto'], port)


def rule_lines(view) -> list[str]:
    """The tenant's rules in file order -- rule, `label web -> label db`, allow, hits
    (connections), bytes, file:line -- then its drops and the hypervisors counted; a tenant
    with `default: allow` says it is open inside (its rules are not enforced, nothing counts)."""
    out = ['tenant %s (%s): default %s' % (view['tenant'], view['source'], view['default']), view['note']]
    table = [['rule', 'from -> to', 'allow', 'hits (connections)', 'bytes', 'file:line']]
    table += [[r['name'], '%s -> %s' % (_side(r['from']), _side(r['to'])), ','.join(map(_service, r['allow'])),
               _cell(r['packets']), _cell(r['bytes']), r['where']] for r in view['rules']]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    out += ['  '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    if len(table) == 1:
        out.append('(no rules)')
    if not view['enforced']:
        return out
    for key, what in (('default_drops', 'default deny'), ('invalid_drops', 'invalid'),
                      ('unknown_unicast_drops', 'unknown unicast')):
        out.append('%s: %d packets dropped (%d bytes)' % (what, view[key]['packets'], view[key]['bytes']))
    out.append('counted on: %s' % (', '.join(view['answered']) or 'no hypervisor'))
    out += ['no answer from %s: %s' % kv for kv in view['no_answer'].items()]
    if view['not_connected']:
        out.append('not connected: %s' % ', '.join(view['not_connected']))
    return out
