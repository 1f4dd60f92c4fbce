"""opendvs-lab: build the lab in the background, look at it, run things in it, remove it.

    opendvs-lab up --fabric FILE [--tenants FILE...] [--prefix P] [--ofp-port N] [--no-wait]
                   [--timeout S] [--vms-per-hypervisor N]
    opendvs-lab status [--json]
    opendvs-lab exec VM -- CMD...
    opendvs-lab move VM HYPERVISOR [--api URL] [--token T | --controller-state-dir DIR] [--no-check]
    opendvs-lab down

With --tenants every workload becomes a VM on its `hypervisor:` hint (round-robin over the
hypervisors without one), named after the workload, or <tenant>-<workload> when two tenants
have a workload of that name; then no default VMs are made unless --vms-per-hypervisor says so.

`up` starts a daemon that holds the Mininet object (a lab lives exactly as long as the
process that built it) and writes <state-dir>/<prefix>.json; the other commands read that
file; `move` asks the daemon over its socket, <state-dir>/<prefix>.sock, after asking the
controller (GET /v1/placement) whether the VM may run there.  --prefix picks a lab when several are up.  State dir: --state-dir, else
$OPENDVS_LAB_DIR, else /run/opendvs-lab.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from mininet_topos import osutil
from mininet_topos.errors import LabError

DEFAULT_STATE_DIR = '/run/opendvs-lab'
SERVE = '_serve'


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except LabError as e:
        print(f'opendvs-lab: {e}', file=sys.stderr)
        return 1


def _parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--state-dir', default=os.environ.get('OPENDVS_LAB_DIR', DEFAULT_STATE_DIR),
                        help='where lab state files live (default $OPENDVS_LAB_DIR or %(default)s)')
    common.add_argument('--prefix', help='which lab (needed only when several are up)')
    p = argparse.ArgumentParser(prog='opendvs-lab', description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='command', required=True)

    up = sub.add_parser('up', parents=[common], help='build the lab and keep it running')
    _build_options(up)
    up.set_defaults(func=cmd_up)

    st = sub.add_parser('status', parents=[common], help='switches, hypervisors, VMs, sessions')
    st.add_argument('--json', action='store_true', help='machine-readable output')
    st.set_defaults(func=cmd_status)

    ex = sub.add_parser('exec', parents=[common], help='run a command inside a VM (or hv)')
    ex.add_argument('node', help='VM (or hypervisor) name')
    ex.add_argument('cmd', nargs=argparse.REMAINDER, help='-- CMD ARGS...')
    ex.set_defaults(func=cmd_exec)

    mv = sub.add_parser('move', parents=[common], help='live-migrate a VM to another hypervisor')
    mv.add_argument('vm', help='VM name')
    mv.add_argument('hypervisor', help='where it goes')
    mv.add_argument('--api', default=os.environ.get('OPENDVS_API', 'http://127.0.0.1:8080'),
                    help="the controller's API, asked first (default $OPENDVS_API or %(default)s)")
    mv.add_argument('--token', default=os.environ.get('OPENDVS_TOKEN'), help='API token (default $OPENDVS_TOKEN)')
    mv.add_argument('--controller-state-dir', default=os.environ.get('OPENDVS_STATE_DIR', '/var/lib/opendvs'),
                    help="where the controller keeps api-token (default $OPENDVS_STATE_DIR or %(default)s)")
    mv.add_argument('--no-check', action='store_true', help='move without asking the controller')
    mv.set_defaults(func=cmd_move)

    dn = sub.add_parser('down', parents=[common], help='remove everything the lab built')
    dn.add_argument('--timeout', type=float, default=60, help='seconds to wait for the daemon')
    dn.set_defaults(func=cmd_down)

    sv = sub.add_parser(SERVE, parents=[common])     # the daemon `up` starts; not for humans
    _build_options(sv)
    sv.add_argument('--ready-fd', type=int, required=True)
    sv.set_defaults(func=cmd_serve)
    return p


def _build_options(p):
    p.add_argument('--fabric', required=True, help='fabric YAML file')
    p.add_argument('--ofp-port', type=int,
                   help="the controller's OpenFlow port (default: the fabric's)")
    p.add_argument('--tenants', nargs='+', action='extend', default=[], metavar='FILE',
                   help='tenant policy YAML files: one VM per workload')
    p.add_argument('--vms-per-hypervisor', type=int,
                   help='default VMs (hv1vm1, ...) per hypervisor (default 2, 0 with --tenants)')
    p.add_argument('--no-wait', action='store_true',
                   help='return once built, without waiting for controller connections')
    p.add_argument('--timeout', type=float, default=60,
                   help='seconds to wait for every switch to connect (default %(default)s)')


# --- up / serve --------------------------------------------------------------------------------

def cmd_up(args) -> int:
    osutil.ensure_root()
    for f in [args.fabric, *args.tenants]:
        if not Path(f).is_file():
            raise LabError(f'no such file: {f}')
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    prefix = args.prefix or osutil.default_prefix()
    path = state_dir / f'{prefix}.json'
    if path.exists():
        raise LabError(f'lab {prefix} already has a state file {path}; `opendvs-lab down '
                       f'--prefix {prefix}` first')
    read_fd, write_fd = os.pipe()
    child = _spawn_daemon(args, prefix, state_dir, write_fd)
    os.close(write_fd)
    try:
        report = _await_report(read_fd, child, args.timeout + 120)
    except KeyboardInterrupt:
        _stop_daemon(child.pid, 60)         # an interrupted `up` must not leave a lab behind
        raise
    if not report.get('ok'):
        log = state_dir / f'{prefix}.log'
        raise LabError(f'{report.get("error") or "the lab daemon died"} (log: {log})')
    state = json.loads(path.read_text())
    _print_status(state, connected=None)
    waited = 'not waiting for controller connections' if args.no_wait else \
        'every switch is connected'
    print(f'up in {state["timings"]["up"]:.2f} s, {waited}; state {path}')
    return 0


def _spawn_daemon(args, prefix, state_dir, write_fd) -> subprocess.Popen:
    argv = [sys.executable, '-m', 'mininet_topos.cli', SERVE, '--prefix', prefix,
            '--state-dir', str(state_dir.resolve()), '--fabric', str(Path(args.fabric).resolve()),
            '--timeout', str(args.timeout), '--ready-fd', str(write_fd)]
    if args.vms_per_hypervisor is not None:
        argv += ['--vms-per-hypervisor', str(args.vms_per_hypervisor)]
    if args.tenants:
        argv += ['--tenants', *(str(Path(t).resolve()) for t in args.tenants)]
    if args.ofp_port:
        argv += ['--ofp-port', str(args.ofp_port)]
    if args.no_wait:
        argv.append('--no-wait')
    log = open(state_dir / f'{prefix}.log', 'ab')
    try:
        # its own session: the lab must outlive this command and its terminal
        return subprocess.Popen(argv, pass_fds=(write_fd,), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def _await_report(fd, child, timeout) -> dict:
    """The daemon's one-line JSON verdict, or {} if it died or took too long."""
    data, deadline = b'', time.monotonic() + timeout
    with os.fdopen(fd, 'rb', buffering=0) as r:
        while b'\n' not in data and time.monotonic() < deadline:
            ready, _, _ = select.select([r], [], [], 1.0)
            if ready:
                chunk = r.read(4096)
                if not chunk:
                    break
                data += chunk
            elif child.poll() is not None:
                break
    try:
        return json.loads(data.split(b'\n')[0])
    except ValueError:
        if child.poll() is None:
            _stop_daemon(child.pid, 60)
        return {}


def cmd_serve(args) -> int:
    from mininet.log import setLogLevel

    from mininet_topos.lab import Lab
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    setLogLevel('info')
    path = Path(args.state_dir) / f'{args.prefix}.json'
    lab = None
    try:
        lab = Lab(args.fabric, prefix=args.prefix, ofp_port=args.ofp_port,
                  vms_per_hypervisor=args.vms_per_hypervisor, tenants=args.tenants)
        lab.up(wait_connected=not args.no_wait, timeout=args.timeout)
        state = {**lab.describe(), 'daemon_pid': os.getpid(), 'fabric': args.fabric,
                 'tenant_files': args.tenants, 'log': str(path.with_suffix('.log')),
                 'timings': lab.timings}
        _write_json(path, state)
        channel = _serve_commands(lab, path, state)
        _report(args.ready_fd, ok=True)
        while not stop.wait(1.0):
            pass
        channel.close()
        return 0
    except Exception as e:          # noqa: BLE001 - every failure must reach `up` as text
        _report(args.ready_fd, ok=False, error=str(e))
        raise
    finally:
        if lab is not None:
            lab.down()
        path.unlink(missing_ok=True)


def _report(fd, **verdict):
    try:
        os.write(fd, (json.dumps(verdict) + '\n').encode())
        os.close(fd)
    except OSError:
        pass                        # `up` gave up waiting; the log has the story


def _write_json(path: Path, data: dict):
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.rename(path)               # readers never see half a file


# --- the daemon's command channel ---------------------------------------------------------------

def _socket_path(state_path: Path) -> Path:
    return state_path.with_suffix('.sock')


def _serve_commands(lab, state_path: Path, state: dict):
    """Answer commands on <state-dir>/<prefix>.sock (root only: 0600), one JSON line each way:
    {"op": "move", "vm": ..., "hypervisor": ...} -> {"ok": true, "from": ...} or {"ok": false,
    "error": ...}.  One command at a time: the Mininet object is not thread-safe."""
    import socket
    sock_path = _socket_path(state_path)
    sock_path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(sock_path))
    os.chmod(sock_path, 0o600)
    srv.listen(8)
    lock = threading.Lock()

    def handle(conn):
        with conn, conn.makefile('rwb') as f:
            try:
                req = json.loads(f.readline() or b'{}')
                with lock:
                    reply = _command(lab, req)
                    if reply.get('ok'):
                        _write_json(state_path, {**state, **lab.describe()})
            except Exception as e:      # noqa: BLE001 - the client gets every failure as text
                reply = {'ok': False, 'error': str(e)}
            f.write((json.dumps(reply) + '\n').encode())
            f.flush()

    def accept():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return                  # closed: the lab is going down
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, name='lab-commands', daemon=True).start()

    class Channel:
        def close(self):
            srv.close()
            sock_path.unlink(missing_ok=True)
    return Channel()


def _command(lab, req: dict) -> dict:
    if req.get('op') == 'move':
        done = lab.move_vm(str(req['vm']), str(req['hypervisor']))
        return {'ok': True, **done}
    return {'ok': False, 'error': f'unknown command {req.get("op")!r}'}


def _ask_daemon(state_path: Path, req: dict, timeout: float = 120) -> dict:
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(_socket_path(state_path)))
        except OSError as e:
            raise LabError(f'cannot reach the lab daemon at {_socket_path(state_path)}: {e}') from None
        s.sendall((json.dumps(req) + '\n').encode())
        with s.makefile('rb') as f:
            line = f.readline()
    if not line:
        raise LabError('the lab daemon closed the connection without an answer')
    return json.loads(line)


# --- move --------------------------------------------------------------------------------------

def cmd_move(args) -> int:
    path, state = _find_state(args)
    vm = state['vms'].get(args.vm)
    if vm is None:
        raise LabError(f'no VM {args.vm!r} in lab {state["prefix"]} (VMs: {", ".join(state["vms"])})')
    if args.hypervisor not in state['hypervisors']:
        raise LabError(f'no hypervisor {args.hypervisor!r} in lab {state["prefix"]} '
                       f'(hypervisors: {", ".join(state["hypervisors"])})')
    if vm['hypervisor'] == args.hypervisor:
        print(f'{args.vm} is on {args.hypervisor} already')
        return 0
    if not _daemon_alive(state):
        raise LabError(f'the lab daemon {state["daemon_pid"]} is not running')
    if vm.get('tenant') and not args.no_check:
        from mininet_topos.placement import controller_check
        ask = controller_check(args.api, args.token, args.controller_state_dir)
        reasons = ask(vm['tenant'], vm['workload'], args.hypervisor)
        if reasons:
            raise LabError(f'the controller refuses to move {args.vm} to {args.hypervisor}: ' + '; '.join(reasons))
    started = time.monotonic()
    reply = _ask_daemon(path, {'op': 'move', 'vm': args.vm, 'hypervisor': args.hypervisor})
    if not reply.get('ok'):
        raise LabError(reply.get('error') or 'the move failed')
    print(f'{args.vm} moved {reply["from"]} -> {args.hypervisor} in {time.monotonic() - started:.2f} s '
          f'(announced with a gratuitous ARP)')
    return 0


# --- status ------------------------------------------------------------------------------------

def cmd_status(args) -> int:
    state = _load_state(args)
    alive = _daemon_alive(state)
    connected = _connections(state) if alive else None
    if args.json:
        print(json.dumps({**state, 'daemon_alive': alive, 'connected': connected}, indent=1))
    else:
        _print_status(state, connected)
        if not alive:
            print(f'daemon {state["daemon_pid"]} is not running: stale lab, '
                  f'`opendvs-lab down --prefix {state["prefix"]}` cleans up')
    return 0 if alive else 1


def _connections(state) -> dict:
    out = {name: osutil.is_connected(sw['bridge']) for name, sw in state['switches'].items()}
    for name, hv in state['hypervisors'].items():
        out[name] = osutil.is_connected('br-int', db=f'unix:{hv["rundir"]}/db.sock')
    return out


def _print_status(state, connected):
    def conn(name):
        return '' if connected is None else ('connected' if connected[name] else 'NOT connected')

    print(f'lab {state["prefix"]}: daemon {state["daemon_pid"]}, fabric {state["fabric"]}, '
          f'OpenFlow port {state["ofp_port"]}, mgmt {state["mgmt_gateway"]}/24')
    print('switches:')
    for name, sw in state['switches'].items():
        print(f'  {name:<10} {sw["role"]:<6} bridge {sw["bridge"]:<15} dpid {sw["dpid"]:<8} '
              f'{sw["controller"]:<24} {conn(name)}')
    print('hypervisors:')
    for name, hv in state['hypervisors'].items():
        print(f'  {name:<10} leaf {hv["leaf"]:<8} vtep {hv["vtep"]:<17} mgmt {hv["mgmt_ip"]:<15} '
              f'br-int dpid {hv["dpid"]} {conn(name)}')
    if state.get('tenant_files'):
        print(f'tenants: {", ".join(state["tenant_files"])}')
    print('vms:')
    for name, vm in state['vms'].items():
        owner = f'  tenant {vm["tenant"]} workload {vm["workload"]}' if vm.get('tenant') else ''
        gw = f'  gw {vm["gateway"]}' if vm.get('gateway') else ''
        nics = vm.get('nics') or [vm]
        for i, nic in enumerate(nics):
            head = f'  {name:<10} on {vm["hypervisor"]:<8}' if i == 0 else ' ' * 25
            vlan = f' vlan {nic["vlan"]}' if nic.get('vlan') else ''
            tail = owner + gw if i == 0 else ''
            print(f'{head} {nic["cidr"] or "-":<18} {nic["mac"]}  {nic["iface_id"]}{vlan}{tail}')


# --- exec --------------------------------------------------------------------------------------

def cmd_exec(args) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ['--'] else args.cmd
    if not cmd:
        raise LabError('usage: opendvs-lab exec VM -- CMD...')
    state = _load_state(args)
    nodes = {**state['vms'], **state['hypervisors']}
    if args.node not in nodes:
        raise LabError(f'no VM or hypervisor {args.node!r} in lab {state["prefix"]} '
                       f'(VMs: {", ".join(state["vms"])})')
    pid = nodes[args.node]['pid']
    if f'mininet:{args.node}' not in osutil.cmdline(pid):
        raise LabError(f'{args.node} is not running (pid {pid}); is the lab up?')
    # mnexec -a enters the node's namespaces; output and exit code pass straight through
    return subprocess.call(['mnexec', '-a', str(pid), *cmd])


# --- down --------------------------------------------------------------------------------------

def cmd_down(args) -> int:
    from mininet_topos.teardown import sweep
    path, state = _find_state(args)
    if _daemon_alive(state):
        _stop_daemon(state['daemon_pid'], args.timeout)
    leftovers = []
    if path.exists():               # the daemon died before it could clean up: do it by name
        leftovers = sweep([h['rundir'] for h in state['hypervisors'].values()],
                          state['bridges'], state['root_links'], state['node_pids'])
        shutil.rmtree(state['workdir'], ignore_errors=True)
        _socket_path(path).unlink(missing_ok=True)
        path.unlink()
    if not leftovers:
        path.with_suffix('.log').unlink(missing_ok=True)   # kept only if something went wrong
    swept = f' (swept: {", ".join(leftovers)})' if leftovers else ''
    print(f'lab {state["prefix"]} down{swept}')
    return 0


def _stop_daemon(pid, timeout):
    os.kill(pid, signal.SIGTERM)
    if not osutil.wait_until(lambda: not osutil.alive(pid), timeout, 0.05):
        raise LabError(f'lab daemon {pid} did not stop within {timeout:g} s')


def _daemon_alive(state) -> bool:
    pid = state.get('daemon_pid')
    line = osutil.cmdline(pid) if pid else ''
    return osutil.alive(pid) and SERVE in line and state['prefix'] in line


# --- state files -------------------------------------------------------------------------------

def _load_state(args) -> dict:
    return _find_state(args)[1]


def _find_state(args) -> tuple[Path, dict]:
    state_dir = Path(args.state_dir)
    if args.prefix:
        path = state_dir / f'{args.prefix}.json'
        if not path.exists():
            raise LabError(f'no lab {args.prefix!r} in {state_dir}')
    else:
        paths = sorted(state_dir.glob('*.json'))
        if not paths:
            raise LabError(f'no lab is up (no state file in {state_dir})')
        if len(paths) > 1:
            raise LabError(f'several labs are up ({", ".join(p.stem for p in paths)}); '
                           'pick one with --prefix')
        path = paths[0]
    return path, json.loads(path.read_text())


if __name__ == '__main__':
    sys.exit(main())
