"""opendvs-controller: load and validate the fabric, check the OpenFlow port, serve."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys

from controller.policy.errors import PolicyError
from controller.policy.fabric import load_fabric


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


def _exit_cleanly(signum, frame):
    raise SystemExit(0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='opendvs-controller', description=__doc__)
    ap.add_argument('--fabric', required=True, help='fabric YAML file')
    ap.add_argument('--ofp', type=parse_hostport, default=None,
                    help='OpenFlow listen HOST:PORT (default: from the fabric, 127.0.0.1:6653)')
    ap.add_argument('--state-dir', default='/var/lib/opendvs', help='where accepted state is kept')
    ap.add_argument('--log-level', default=os.environ.get('OPENDVS_LOG', 'INFO'))
    args = ap.parse_args(argv)
    # From here on SIGINT/SIGTERM mean a clean exit 0, even before the OpenFlow loop runs.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        fabric = load_fabric(args.fabric)
    except PolicyError as e:
        print(e, file=sys.stderr)
        return 1
    host, port = args.ofp or (fabric.controller.ofp_host, fabric.controller.ofp_port)
    why = port_free(host, port)
    if why:
        print('opendvs-controller: cannot listen for OpenFlow on %s:%d: %s' % (host, port, why),
              file=sys.stderr)
        return errno.EADDRINUSE if 'in use' in why else 2
    os.makedirs(args.state_dir, exist_ok=True)
    from controller import ofp           # imports os-ken: only once the arguments are good
    logging.getLogger('opendvs').info('serving OpenFlow on %s:%d for %s', host, port, fabric.source)
    ofp.run(fabric, host, port)
    return 0


if __name__ == '__main__':
    sys.exit(main())
