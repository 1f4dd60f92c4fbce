"""The event log: what happened to the network, one JSON object a line.

<state-dir>/events.jsonl, rotated by size (stdlib RotatingFileHandler: events.jsonl.1, .2 ...),
so it is bounded however long the controller runs.  Each line is
{"ts": ISO-8601 UTC, "seq": n, "event": name, ...fields}; `seq` grows by one a line within
one controller run.  The last few hundred events are also kept in memory for the API.

Event names (fields):
  bind       {hypervisor, iface_id, port}       a nic's port appeared in a hypervisor's OVSDB
  unbind     {hypervisor, iface_id, port}       ... and went away
  pending    {hypervisor, iface_id, reason}     bound where it is not (yet) its location
  activate   {hypervisor, iface_id, port, by}   a pending port became the nic's location
  move       {iface_id, from, to}               the nic's location changed hypervisor
  connect    {switch, kind, dpid, address, ports}   a fabric switch's first session of this run
  reconnect  {switch, kind, dpid, address, ports, down_s}   its next ones; down_s: seconds since
             it disconnected, null when the new session replaced an old one that never closed
  disconnect {switch, kind, dpid}               its session closed
  apply      {by, tenants_added, tenants_removed, tenants_changed, rules, fabric, switches[, error]}
             a policy change went live (controller/audit.py): by is the API client's address
             or "sighup"; rules: {tenant: {added, removed, changed: [rule names], default}}
             for changed tenants whose rule set changed; fabric: what a reload changed;
             switches: {name: {add, delete}} flows, the switches that changed only; error: a
             switch did not converge (it keeps retrying)
  port_shutdown {switch, port, name, mac, vlan, max_macs, recovery_s}   a VM/edge port that held its
             MAC limit sent one more source (mac, vlan) and is shut for recovery_s (floods)
  port_recovery {switch, port}                  ... and its errdisable recovery ended: open again
  refused    {input, reason, ...}               an input turned away: input "apply" (by, diags:
             the policy errors), "fabric reload" (by: "sighup"), "openflow" (dpid, address; as
             rate-limited as its log line)
"""
from __future__ import annotations

import collections
import datetime
import itertools
import json
import logging
import logging.handlers
import threading
import time
from pathlib import Path

FILE = 'events.jsonl'
MAX_BYTES = 4 << 20           # a file; with BACKUPS, at most 16 MiB of history on disk
BACKUPS = 3
RECENT = 500                  # kept in memory for GET /v1/events


class EventLog:
    def __init__(self, state_dir: str | None = None):
        self._seq = itertools.count(1)
        self.last = 0                 # the seq of the newest event (0: none yet)
        self.started = _now()         # this run's log: a follower that sees it change starts over
        self._lock = threading.Lock()
        self.recent: collections.deque = collections.deque(maxlen=RECENT)
        self._log = None
        if state_dir:
            Path(state_dir).mkdir(parents=True, exist_ok=True)     # ryu-manager starts us before anyone made it
            # a logger of our own: it must not reach the root logger's handlers
            self._log = logging.getLogger(f'opendvs.events.{id(self):x}')
            self._log.propagate = False
            self._log.setLevel(logging.INFO)
            handler = logging.handlers.RotatingFileHandler(
                Path(state_dir) / FILE, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding='utf-8')
            handler.setFormatter(logging.Formatter('%(message)s'))
            self._log.addHandler(handler)

    def record(self, event: str, **fields) -> dict:
        with self._lock:
            entry = {'ts': _now(), 'seq': next(self._seq), 'event': event, **fields}
            self.last = entry['seq']
            self.recent.append(entry)
            if self._log is not None:
                self._log.info(json.dumps(entry, default=str, sort_keys=False))
            return entry

    def since(self, seq: int = 0) -> list[dict]:
        with self._lock:
            return [e for e in self.recent if e['seq'] > seq]

    def view(self, since: int = 0) -> dict:
        """GET /v1/events: the events after `since` still kept in memory, the newest seq, when
        this log started, and the oldest seq kept (a follower further behind lost some)."""
        with self._lock:
            return {'started': self.started, 'last': self.last,
                    'oldest': self.recent[0]['seq'] if self.recent else self.last + 1,
                    'events': [e for e in self.recent if e['seq'] > since]}

    def close(self) -> None:
        if self._log is not None:
            for h in list(self._log.handlers):
                h.close()
                self._log.removeHandler(h)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='milliseconds')


# ---- switch sessions (called by controller/core.py under its lock) ------------------------

def connected(log: EventLog, went_down: dict, conn, name: str, kind: str, ports: int) -> None:
    """`connect`, or `reconnect` for a dpid seen before in this run; went_down: dpid -> when
    its last session closed (None while one is up), kept by the caller."""
    dpid = conn.dpid
    fields = {'switch': name, 'kind': kind, 'dpid': '%016x' % dpid,
              'address': getattr(conn, 'address', None), 'ports': ports}
    if dpid in went_down:
        since = went_down[dpid]
        fields['down_s'] = None if since is None else round(time.monotonic() - since, 3)
    went_down[dpid] = None
    log.record('reconnect' if 'down_s' in fields else 'connect', **fields)


def disconnected(log: EventLog, went_down: dict, conn, sw) -> None:
    went_down[conn.dpid] = time.monotonic()
    log.record('disconnect', switch=sw.name if sw is not None else None,
               kind=sw.kind if sw is not None else None, dpid='%016x' % conn.dpid)
