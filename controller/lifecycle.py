"""What the controller does on signals (issue 7, part 3), kept out of the OpenFlow shim:

- SIGHUP: re-read the fabric file and apply what changed hitlessly, or refuse it with a
  logged reason and keep running (controller/policy/reload.py says which changes are live);
- SIGTERM/SIGINT: stop accepting API requests, answer the ones in flight (an apply waits for
  its switches), then exit; a second signal exits at once.

controller/ofp.py run() calls reload_in_background() from its SIGHUP handler and drain()
before closing the apps.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

LOG = logging.getLogger('opendvs')
DRAIN_TIMEOUT = 75.0         # s: an apply waits up to 60 s for its switches (core.apply_policy)


def reload_in_background(app) -> threading.Thread | None:
    """Never run the reload in the signal handler itself: it takes locks and waits on switches."""
    if app is None:
        LOG.warning('SIGHUP during start-up: ignored (the fabric was just read)')
        return None
    t = threading.Thread(target=reload_now, args=(app.service,), name='reload', daemon=True)
    t.start()
    return t


def reload_now(service) -> dict | None:
    """The reload itself (also what tests call); the result of PolicyService.reload_fabric."""
    try:
        return service.reload_fabric()
    except Exception:
        LOG.exception('fabric reload failed; the running fabric is kept')
        return None


def drain(app, timeout: float = DRAIN_TIMEOUT) -> None:
    def now(signum, frame):
        os._exit(1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, now)
    api = getattr(app, 'api', None)
    if api is None:
        return
    LOG.info('stopping: answering the API requests in flight first')
    if not api.drain(timeout):
        LOG.warning('API requests still running after %.0f s; exiting anyway', timeout)
