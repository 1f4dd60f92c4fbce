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
"""
from __future__ import annotations

import collections
import datetime
import itertools
import json
import logging
import logging.handlers
import threading
from pathlib import Path

FILE = 'events.jsonl'
MAX_BYTES = 4 << 20           # a file; with BACKUPS, at most 16 MiB of history on disk
BACKUPS = 3
RECENT = 500                  # kept in memory for GET /v1/events


class EventLog:
    def __init__(self, state_dir: str | None = None):
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self.recent: collections.deque = collections.deque(maxlen=RECENT)
        self._log = None
        if state_dir:
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
            entry = {'ts': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='milliseconds'),
                     'seq': next(self._seq), 'event': event, **fields}
            self.recent.append(entry)
            if self._log is not None:
                self._log.info(json.dumps(entry, default=str, sort_keys=False))
            return entry

    def since(self, seq: int = 0) -> list[dict]:
        with self._lock:
            return [e for e in self.recent if e['seq'] > seq]

    def close(self) -> None:
        if self._log is not None:
            for h in list(self._log.handlers):
                h.close()
                self._log.removeHandler(h)
