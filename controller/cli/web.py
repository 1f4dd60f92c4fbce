"""dvsctl view: the address of the controller's web view, with the token that opens it."""
from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path

from controller.cli.dvsctl import command
from controller.cli.remote import _connection_arguments


@command('view', "print the web view's address (/view?token=...): open it in a browser; it reads the "
         'API token from --token, $OPENDVS_TOKEN or <state-dir>/api-token', _connection_arguments)
def cmd_view(args) -> int:
    token = args.token
    if not token:
        try:
            token = (Path(args.state_dir) / 'api-token').read_text().strip()
        except OSError as e:
            print('dvsctl: no API token: pass --token or --state-dir (%s)' % e, file=sys.stderr)
            return 1
    print('%s/view?token=%s' % (args.api.rstrip('/'), urllib.parse.quote(token, safe='')))
    return 0
