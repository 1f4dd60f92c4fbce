"""Asking the controller before a live migration: may this workload run on that hypervisor?

The controller answers GET /v1/placement/<tenant>/<workload>?hypervisor=<name> with
{"ok": bool, "reasons": [...]}: a VLAN nic needs its VLAN on the destination's trunk.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mininet_topos.errors import LabError


def controller_check(api: str, token: str | None = None, state_dir: str | None = None):
    """ask(tenant, workload, hypervisor) -> the controller's reasons to refuse (empty: go),
    for Lab.move_vm.  The token is given, or read from <state_dir>/api-token."""
    if token is None:
        try:
            token = (Path(state_dir or '/var/lib/opendvs') / 'api-token').read_text().strip()
        except OSError as e:
            raise LabError(f'no API token to ask the controller with: pass --token or --controller-state-dir ({e})')

    def ask(tenant: str, workload: str, hypervisor: str) -> list[str]:
        q = urllib.parse.quote
        url = '%s/v1/placement/%s/%s?hypervisor=%s' % (api.rstrip('/'), q(tenant, safe=''), q(workload, safe=''),
                                                       q(hypervisor, safe=''))
        req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + token})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                why = json.loads(e.read()).get('error', str(e))
            except ValueError:
                why = str(e)
            return [f'the controller says: {why}']
        except (urllib.error.URLError, OSError) as e:
            raise LabError(f'cannot ask the controller at {api} whether the move is allowed: '
                           f'{getattr(e, "reason", e)}') from None
        return [] if answer.get('ok') else list(answer.get('reasons') or ['refused'])
    return ask
