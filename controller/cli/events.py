"""dvsctl events: the controller's event log (controller/eventlog.py) through the API,
`--follow` to keep printing new events as they come (it polls GET /v1/events?since=SEQ)."""
from __future__ import annotations

import argparse
import json
import sys
import time

from controller.cli.dvsctl import command
from controller.cli import remote
from controller.cli.remote import ApiError, _connection_arguments, _fail

POLL = 1.0           # s between two polls with --follow


def _arguments(p) -> None:
    p.add_argument('--follow', '-f', action='store_true', help='keep printing new events (Ctrl-C stops)')
    p.add_argument('--since', type=int, default=0, metavar='SEQ', help='only the events after this seq')
    p.add_argument('--json', action='store_true', help='one JSON object a line, as in events.jsonl')
    p.add_argument('--interval', type=float, default=POLL, help=argparse.SUPPRESS)     # tests
    _connection_arguments(p)


def line(e: dict) -> str:
    """`2026-12-01T22:24:04.123+00:00  #12  reconnect  switch=leaf1 kind=physical ... down_s=3.2`:
    every field but ts, seq and event as key=value, empty ones left out, lists and objects as
    compact JSON."""
    def value(v):
        return v if isinstance(v, str) and v and ' ' not in v else json.dumps(v, separators=(',', ':'))
    rest = ' '.join('%s=%s' % (k, value(v)) for k, v in e.items()
                    if k not in ('ts', 'seq', 'event') and v not in (None, [], {}, ''))
    return '%s  #%-5d %-10s %s' % (e.get('ts', '-'), e.get('seq', 0), e.get('event', '?'), rest)


def _print(events, as_json: bool) -> None:
    for e in events:
        print(json.dumps(e) if as_json else line(e), flush=True)


@command('events', "the controller's event log: switch (re)connects, binds and moves, applies (who, what "
         'changed), refused inputs; --follow for new ones as they come', _arguments)
def cmd_events(args) -> int:
    try:
        return _events(args)
    except KeyboardInterrupt:
        return 0


def _events(args) -> int:
    since, started, lost = args.since, None, False
    while True:
        try:
            view = remote.call(args, 'GET', '/v1/events?since=%d' % since)
        except ApiError as e:
            if not args.follow:
                return _fail(e)
            if not lost:                       # a restarting controller: say so once, keep trying
                print('dvsctl: %s (still trying)' % e, file=sys.stderr, flush=True)
            lost = True
        else:
            if lost:
                print('dvsctl: the controller answers again', file=sys.stderr, flush=True)
            lost = False
            if started is not None and view['started'] != started:
                print('dvsctl: the controller restarted: its event log starts again', file=sys.stderr, flush=True)
                since = 0
                view = remote.call(args, 'GET', '/v1/events?since=0')
            started = view['started']
            if since and view['oldest'] > since + 1:
                print('dvsctl: %d events were not kept in memory; see events.jsonl in the state dir'
                      % (view['oldest'] - since - 1), file=sys.stderr, flush=True)
            _print(view['events'], args.json)
            since = max([since] + [e['seq'] for e in view['events']])
        if not args.follow:
            return 0
        time.sleep(args.interval)
