"""opendvs-controller: load and validate the fabric, check the OpenFlow port, serve."""
from __future__ import annotations

import argparse
import errno
import faulthandler
import ipaddress
import logging
import os
import signal
import socket
import sys

from controller.policy.errors import PolicyError


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.removeprefix('tcp:').rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError('expected HOST:PORT, got %r' % text)
    return host, int(port)


def port_free(host: str, port: int) -> str | None:
    """None if we can listen on host:port, else the reason (os-ken would exit 0 silently)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(1)
        return None
    except OSError as e:
        return os.strerror(e.errno) if e.errno else str(e)
    finally:
        s.close()


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
HELD_SIGNALS = STOP_SIGNALS | {signal.SIGHUP}     # SIGHUP (reload the fabric) waits for start-up too


def _exit_cleanly(signum, frame):
    raise SystemExit(0)


def _sources(text: str):
    from controller.admission import parse_sources
    try:
        return parse_sources(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError('%s: %s' % (text, e))


def _is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn_if_exposed(ofp, api) -> None:
    log = logging.getLogger('opendvs')
    if not _is_loopback(ofp[0]):
        log.warning('OpenFlow listens on %s:%d, not loopback: any host that reaches it can claim a switch\'s '
                    'dpid; only fabric dpids from --physical-from / --hypervisors-from are accepted (no TLS)', *ofp)
    if api and not _is_loopback(api[0]):
        log.warning('the API listens on %s:%d, not loopback: anyone who reaches it with the token can change '
                    'every switch, in clear text; prefer 127.0.0.1 behind an SSH tunnel or a TLS proxy', *api)


def _app_names(text: str) -> tuple[str, ...]:
    """--apps: names of apps/ modules; an unknown one is a usage error naming the known."""
    from controller.capabilities import CapabilityError, resolve
    names = tuple(n.strip() for n in text.split(',') if n.strip())
    try:
        resolve(names)
    except CapabilityError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return names


DEFAULT_SWITCH_OVSDB = 'unix:/var/run/openvswitch/db.sock'


def _switch_ovsdb(given: str | None) -> str | None:
    if given is None:
        path = DEFAULT_SWITCH_OVSDB.removeprefix('unix:')
        return DEFAULT_SWITCH_OVSDB if os.path.exists(path) else None
    return None if given == 'none' else given


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='opendvs-controller', description=__doc__)
    ap.add_argument('--fabric', required=True, help='fabric YAML file')
    ap.add_argument('--ofp', type=parse_hostport, default=None,
                    help='OpenFlow listen HOST:PORT (default: from the fabric, 127.0.0.1:6653)')
    ap.add_argument('--api', type=parse_hostport, default=None,
                    help='REST API listen HOST:PORT (default: from the fabric, 127.0.0.1:8080)')
    ap.add_argument('--no-api', action='store_true', help='do not serve the REST API')
    ap.add_argument('--state-dir', default='/var/lib/opendvs',
                    help='where accepted tenant policies and the API token are kept')
    ap.add_argument('--switch-ovsdb', default=None, metavar='REMOTE',
                    help='OVSDB of the physical switches, for their bonds (bonded hypervisor uplinks); '
                         'default: %s when that socket exists; "none" to not read one' % DEFAULT_SWITCH_OVSDB)
    ap.add_argument('--log-level', default=os.environ.get('OPENDVS_LOG', 'INFO'))
    ap.add_argument('--physical-from', type=_sources, default='loopback', metavar='SOURCES',
                    help='where physical switches may connect from: loopback (default: the lab\'s root OVS '
                         'runs on this host), any, or CIDR[,CIDR...]')
    ap.add_argument('--hypervisors-from', type=_sources, default='any', metavar='SOURCES',
                    help='where hypervisors may connect from: any (default), loopback or CIDR[,CIDR...] '
                         '(the management LAN)')
    ap.add_argument('--apps', type=_app_names, default=(), metavar='APP[,APP...]',
                    help='the capabilities to run, as ryu-manager names them: apps.learning_switch or '
                         'learning_switch (default: all; an app\'s dependencies are added and logged)')
    # issue 14: where `dvsctl trace` reaches each switch's ovs-vswitchd (controller/trace/service.py)
    ap.add_argument('--vswitchd-ctl', default=None, metavar='TEMPLATE',
                    help='the hypervisors\' ovs-vswitchd control sockets, {hypervisor} replaced by the name '
                         '(e.g. /tmp/opendvs-lab-P/{hypervisor}/ovs-vswitchd.ctl), for dvsctl trace; '
                         'default $OPENDVS_VSWITCHD_CTL')
    ap.add_argument('--switch-vswitchd-ctl', default=None, metavar='PATH',
                    help='the physical switches\' ovs-vswitchd control socket, for dvsctl trace '
                         '(default $OPENDVS_SWITCH_VSWITCHD_CTL, else the local ovs-vswitchd)')
    args = ap.parse_args(argv)
    # SIGINT/SIGTERM mean a clean exit 0 at any time.  They are held back (blocked) while we
    # start up, because library code run then (python-ovs importing eventlet) has bare
    # `except:` clauses that would swallow the SystemExit; ofp.run() unblocks them.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    faulthandler.register(signal.SIGUSR1, all_threads=True)    # kill -USR1: dump every thread's stack

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    from controller.ofp import load_running_policy     # imports os-ken: only once arguments parse
    try:
        policy, _, _ = load_running_policy(args.fabric, args.state_dir, None)
    except PolicyError as e:
        print(e, file=sys.stderr)
        return 1
    fabric = policy.fabric
    ofp = args.ofp or (fabric.controller.ofp_host, fabric.controller.ofp_port)
    api = None if args.no_api else (args.api or parse_hostport(fabric.controller.api.removeprefix('http://')))
    for what, where in (('OpenFlow', ofp), ('the API', api)):
        why = where and port_free(*where)
        if why:
            print('opendvs-controller: cannot listen for %s on %s:%d: %s' % (what, where[0], where[1], why),
                  file=sys.stderr)
            return errno.EADDRINUSE if 'in use' in why else 2
    os.makedirs(args.state_dir, exist_ok=True)
    if api:
        from controller.policy.store import TokenError, ensure_token
        try:
            ensure_token(args.state_dir)
        except (TokenError, OSError) as e:
            print('opendvs-controller: API token: %s' % e, file=sys.stderr)
            return 1
    _warn_if_exposed(ofp, api)
    from controller.trace import service as trace_service
    trace_service.configure(args.vswitchd_ctl, args.switch_vswitchd_ctl)
    from controller import admission
    admission.configure(admission.Sources(physical=args.physical_from, hypervisor=args.hypervisors_from))
    from controller import ofp as ofp_shim
    logging.getLogger('opendvs').info('serving OpenFlow on %s:%d for %s with %d tenant(s)', ofp[0], ofp[1],
                                      fabric.source, len(policy.tenants))
    if ofp[0].startswith('127.') or ofp[0] in ('localhost', '::1'):
        logging.getLogger('opendvs').info(
            'OpenFlow on loopback only: switches in other namespaces (the lab\'s hypervisors) '
            'cannot connect; for them use --ofp 0.0.0.0:%d', ofp[1])
    ofp_shim.run(policy, args.state_dir, ofp, api, apps=args.apps, switch_ovsdb=_switch_ovsdb(args.switch_ovsdb))
    return 0


if __name__ == '__main__':
    sys.exit(main())
