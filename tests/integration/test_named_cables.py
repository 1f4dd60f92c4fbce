"""Named cables end to end: the example fabric with every spine-leaf cable's ports named
(on other port numbers than the lab would pick, so the lab must cable what the file says).
The cables carry traffic, LLDP agrees with them, and a file that names them wrongly is
caught by LLDP and the cables it names wrongly carry nothing (issue 11 part 1)."""
from __future__ import annotations

import json
import re
import signal

import pytest

from mininet_topos import Lab
from tests.support import ROOT, ControllerProcess, free_port, wait_until

NAMED = {'[spine1, leaf1]': '[spine1:11, leaf1:21]', '[spine1, leaf2]': '[spine1:12, leaf2:21]',
         '[spine2, leaf1]': '[spine2:11, leaf1:22]', '[spine2, leaf2]': '[spine2:12, leaf2:22]'}
# leaf1's two cables swapped in the file: LLDP on each names the other spine
SWAPPED = {'[spine1:11, leaf1:21]': '[spine1:11, leaf1:22]', '[spine2:11, leaf1:22]': '[spine2:11, leaf1:21]'}


def rewrite(text: str, changes: dict) -> str:
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp('named')
    fabric = work / 'fabric.yaml'
    fabric.write_text(rewrite((ROOT / 'examples' / 'fabric.yaml').read_text(), NAMED))
    port = free_port()
    ctl = ControllerProcess(fabric, work, ofp='0.0.0.0:%d' % port).start()
    lab = Lab(str(fabric), ofp_port=port)
    try:
        lab.up(timeout=60)
        yield lab, ctl, fabric
    finally:
        lab.down()
        ctl.stop()


def roles(ctl) -> dict[tuple[str, int], str]:
    r = ctl.dvsctl('show', 'switches', '--json')
    assert r.returncode == 0, r.stderr
    return {(s['name'], p['no']): p['role'] for s in json.loads(r.stdout) for p in s.get('ports', ())}


CABLE_ENDS = {('spine1', 11), ('spine1', 12), ('spine2', 11), ('spine2', 12),
              ('leaf1', 21), ('leaf1', 22), ('leaf2', 21), ('leaf2', 22)}


def test_named_cables_carry_traffic_on_the_ports_the_file_names(env):
    lab, ctl, _ = env
    for sw, no in CABLE_ENDS:                            # the lab cabled the named ports
        assert re.search(r'^\s*%d\(' % no, lab.ofctl(sw, 'show'), re.M), (sw, no)
    wait_until(lambda: lab.ping('hv1vm1', 'hv3vm1') and lab.ping('hv2vm1', 'hv4vm1'), 30,
               what='VMs in the two racks reach each other over the named cables')
    r = roles(ctl)
    assert {r.get(end) for end in CABLE_ENDS} == {'fabric'}, r
    assert 'undeclared-link' not in r.values(), r


def test_lldp_catches_cables_the_file_names_wrongly_and_they_carry_nothing(env):
    lab, ctl, fabric = env
    good = fabric.read_text()
    fabric.write_text(rewrite(good, SWAPPED))
    try:
        ctl.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: roles(ctl).get(('leaf1', 21)) == 'undeclared-link', 15,
                   what='leaf1 port 21 voided: %s' % roles(ctl))
        r = roles(ctl)
        assert r[('leaf1', 22)] == r[('spine1', 11)] == r[('spine2', 11)] == 'undeclared-link', r
        assert r[('leaf2', 21)] == r[('leaf2', 22)] == 'fabric', r      # leaf2's cables were named right
        # rack 1 has no cable left to the spines: hv1's VMs do not reach rack 2
        wait_until(lambda: not lab.ping('hv1vm1', 'hv3vm1', timeout=0.5), 15, what='rack 1 cut off')
        assert lab.ping('hv3vm1', 'hv4vm1')                              # inside rack 2: still fine
    finally:
        fabric.write_text(good)
        ctl.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: {roles(ctl).get(end) for end in CABLE_ENDS} == {'fabric'}, 15, what='cables back')
    wait_until(lambda: lab.ping('hv1vm1', 'hv3vm1'), 30, what='rack 1 back')
