"""The obvious sequence: start the controller with its defaults, then `opendvs-lab up`.

The default OpenFlow address is loopback, which the lab's hypervisors (in their own
namespaces, on the management LAN) can never reach: `up` must say so at once, with the exact
command to run, and that command must then work."""
from __future__ import annotations

import re
import secrets
import shlex
import subprocess

from tests.support import BIN, ROOT, ControllerProcess, free_port

FABRIC = ROOT / 'examples' / 'fabric.yaml'


def lab_cli(*args, state_dir):
    return subprocess.run([str(BIN / 'opendvs-lab'), args[0], '--state-dir', str(state_dir), *args[1:]],
                          capture_output=True, text=True, timeout=240)


def test_lab_up_against_a_loopback_controller_fails_at_once_with_the_command(tmp_path):
    port = free_port()
    fabric = tmp_path / 'fabric.yaml'                     # the example, on a port of this run
    fabric.write_text(FABRIC.read_text().replace('tcp:127.0.0.1:6653', 'tcp:127.0.0.1:%d' % port))
    prefix, state = 'ct' + secrets.token_hex(2), tmp_path / 'lab'
    ctl = ControllerProcess(fabric, tmp_path).start()    # no --ofp: the fabric's 127.0.0.1:PORT
    try:
        assert 'OpenFlow on loopback only' in ctl.text()
        # a long connect timeout: had `up` waited for connections, it would not return in time
        up = lab_cli('up', '--fabric', str(fabric), '--prefix', prefix, '--timeout', '600', state_dir=state)
        assert up.returncode == 1
        command = 'opendvs-controller --fabric %s --ofp 0.0.0.0:%d' % (fabric, port)
        assert command in up.stderr and '127.0.0.1 port %d only' % port in up.stderr, up.stderr
        assert not list(state.glob('*.json'))             # nothing was built
        ctl.stop()

        # the command it printed works: the same lab comes up and every switch connects
        argv = shlex.split(re.search(r'opendvs-controller (.*)$', up.stderr, re.M).group(1))
        ofp = argv[argv.index('--ofp') + 1]
        ctl = ControllerProcess(argv[argv.index('--fabric') + 1], tmp_path, ofp=ofp).start()
        up = lab_cli('up', '--fabric', str(fabric), '--prefix', prefix, '--timeout', '60', state_dir=state)
        try:
            assert up.returncode == 0, up.stderr
            assert 'every switch is connected' in up.stdout
            ctl.wait_connected(8)
        finally:
            down = lab_cli('down', state_dir=state)
        assert down.returncode == 0 and 'swept' not in down.stdout, down.stdout + down.stderr
    finally:
        ctl.stop()
