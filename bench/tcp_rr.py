"""TCP request/response latency, netperf TCP_RR / TCP_CRR style, for bench/dataplane.py (no
netperf on this machine).  Run inside the VMs (they share the file system):

    python bench/tcp_rr.py server PORT
    python bench/tcp_rr.py client HOST PORT [--rr N] [--crr N]

The server echoes whatever it reads, one thread per connection, until killed.  The client
prints one JSON line (`error` and exit status 1 when it cannot connect): `rr`, N one-byte transactions on one connection (TCP_NODELAY), and `crr`,
N times connect + one-byte echo + close; each the distribution of the per-transaction times in
microseconds (after `warmup` untimed ones).  Python adds the same few microseconds to both
sides of a comparison.
"""
from __future__ import annotations

import argparse
import json
import math
import socket
import socketserver
import statistics
import sys
import time


def summary(us: list[float]) -> dict:
    """min / median / p90 / p99 / max / mean of latencies in microseconds (nearest rank)."""
    if not us:
        raise ValueError('no samples')
    s = sorted(us)

    def rank(p: float) -> float:
        return s[max(0, math.ceil(p / 100 * len(s)) - 1)]
    return {'n': len(s), 'min_us': round(s[0], 1), 'median_us': round(statistics.median(s), 1),
            'p90_us': round(rank(90), 1), 'p99_us': round(rank(99), 1), 'max_us': round(s[-1], 1),
            'mean_us': round(statistics.fmean(s), 1)}


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = self.request.recv(64)
            if not data:
                return
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def serve(port: int) -> None:
    with _Server(('0.0.0.0', port), _Echo) as srv:
        srv.serve_forever()


def _echo_once(s: socket.socket) -> None:
    s.sendall(b'x')
    if s.recv(1) != b'x':
        raise RuntimeError('no echo')


def rr(host: str, port: int, n: int, warmup: int = 20) -> list[float]:
    out = []
    with socket.create_connection((host, port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(warmup + n):
            t = time.perf_counter_ns()
            _echo_once(s)
            if i >= warmup:
                out.append((time.perf_counter_ns() - t) / 1000)
    return out


def crr(host: str, port: int, n: int, warmup: int = 5) -> list[float]:
    out = []
    for i in range(warmup + n):
        t = time.perf_counter_ns()
        with socket.create_connection((host, port), timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _echo_once(s)
        if i >= warmup:
            out.append((time.perf_counter_ns() - t) / 1000)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('server')
    s.add_argument('port', type=int)
    c = sub.add_parser('client')
    c.add_argument('host')
    c.add_argument('port', type=int)
    c.add_argument('--rr', type=int, default=2000)
    c.add_argument('--crr', type=int, default=300)
    args = ap.parse_args(argv)
    if args.cmd == 'server':
        serve(args.port)
        return 0
    out = {}
    try:
        if args.rr:
            out['rr'] = summary(rr(args.host, args.port, args.rr))
        if args.crr:
            out['crr'] = summary(crr(args.host, args.port, args.crr))
    except OSError as e:            # refused, timed out, reset: say so, exit 1
        print(json.dumps({'error': str(e)}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
