"""Fabric YAML loader: every check, with the exact FILE:LINE:COL it reports, plus dvsctl validate."""
import ipaddress
import pathlib
import subprocess
import sys

import pytest

from controller.cli import dvsctl
from controller.policy import model
from controller.policy.errors import Diag, PolicyError
from controller.policy.fabric import load_fabric, parse_fabric
from controller.policy.yamlsource import parse_yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / 'examples' / 'fabric.yaml'
DVSCTL = pathlib.Path(sys.executable).parent / 'dvsctl'

# Lines 1-3 of most cases; leaf1's dpid value is at 3:17, its rack_subnet value at 3:37.
BASE = ('switches:\n'
        '  spine1: {dpid: 0x101}\n'
        '  leaf1: {dpid: 0x201, rack_subnet: 172.16.1.0/24}\n')
HV = 'hypervisors:\n  hv1: {leaf: leaf1, vtep: 172.16.1.11'      # line 5; vtep value at 5:28
HV_DPID = model.default_hypervisor_dpid('hv1')

# (yaml text, "LINE:COL: message substring"); each case must produce exactly that one error.
CASES = [
    # YAML level
    ('switches: [a, b\n', '2:1: YAML syntax error: expected \',\' or \']\''),
    ('switches:\n  s: {dpid: 1}\n  s: {dpid: 2}\n', "3:3: duplicate key 's' (first defined at 2:3)"),
    ('switches:\n  s: {dpid: 1, dpid: 2}\n', "2:16: duplicate key 'dpid'"),
    ('- switches\n', '1:1: a fabric file is a mapping with keys'),
    ('', "1:1: missing required key 'switches'"),
    # unknown keys and wrong types, at every level
    (BASE + 'switchs: {}\n', "4:1: unknown key 'switchs' (allowed: controller, gateway_mac, hypervisors, learning, "
                             "links, native_vlan, switches, underlay); did you mean 'switches'?"),
    ('switches:\n  s: {dpid: 1, dpdi: 2}\n', "2:16: switches.s: unknown key 'dpdi' (allowed: dpid, rack_subnet)"),
    (BASE + 'underlay: {mtu: 9000, vxlan: true}\n', "4:23: underlay: unknown key 'vxlan' (allowed: mtu)"),
    (BASE + 'controller: {ofp: "tcp:1.2.3.4:6653"}\n', "4:14: controller: unknown key 'ofp' (allowed: api, openflow)"),
    (BASE + HV + ', vlans: [10]}\n', "5:41: hypervisors.hv1: unknown key 'vlans' (allowed: bond, dpid, leaf, trunk_vlans, uplinks, vtep)"),
    (BASE + 'underlay: {mtu: 9k}\n', "4:17: underlay.mtu: expected an integer in 1280..9216, got string '9k'"),
    (BASE + 'underlay: [9000]\n', '4:11: underlay: expected a mapping, got list'),
    ('switches: [spine1]\n', '1:11: switches: expected a mapping of NAME: {...}, got list'),
    ('switches:\n  s: 0x101\n', '2:6: switches.s: expected a mapping, got integer 257'),
    (BASE + 'links: {spine1: leaf1}\n', '4:8: links: expected a list, got mapping'),
    # controller
    (BASE + 'controller: {openflow: "127.0.0.1:6653"}\n',
     "4:24: controller.openflow: expected tcp:HOST:PORT (e.g. tcp:127.0.0.1:6653), got string '127.0.0.1:6653'"),
    (BASE + 'controller: {openflow: "tcp:10.0.0.1:0"}\n', '4:24: controller.openflow: port 0 is out of range 1..65535'),
    (BASE + 'controller: {api: "https://127.0.0.1:8080"}\n', '4:19: controller.api: expected http://HOST:PORT'),
    (BASE + 'controller: {api: "http://10.0.0.300:8080"}\n', "4:19: controller.api: '10.0.0.300' is not a valid IPv4"),
    (BASE + 'controller: {api: 8080}\n', '4:19: controller.api: expected http://HOST:PORT (e.g. http://127.0.0.1:8080), got integer 8080'),
    # underlay, native_vlan, learning ranges
    (BASE + 'underlay: {mtu: 1279}\n', '4:17: underlay.mtu: 1279 is out of range 1280..9216'),
    (BASE + 'underlay: {mtu: 9217}\n', '4:17: underlay.mtu: 9217 is out of range 1280..9216'),
    (BASE + 'native_vlan: 0\n', '4:14: native_vlan: 0 is out of range 1..4094'),
    (BASE + 'native_vlan: 4095\n', '4:14: native_vlan: 4095 is out of range 1..4094'),
    (BASE + 'native_vlan: true\n', '4:14: native_vlan: expected an integer in 1..4094, got boolean true'),
    (BASE + 'learning: {mac_age: 9}\n', '4:21: learning.mac_age: 9 is out of range 10..86400'),
    (BASE + 'learning: {mac_age: 86401}\n', '4:21: learning.mac_age: 86401 is out of range 10..86400'),
    (BASE + 'learning: {max_macs_per_port: 0}\n', '4:31: learning.max_macs_per_port: 0 is out of range 1..65535'),
    (BASE + 'learning: {max_macs_per_port: 65536}\n', '4:31: learning.max_macs_per_port: 65536 is out of range'),
    (BASE + 'learning: {violation: shutdwn}\n', "4:23: learning.violation: expected one of shutdown, restrict, "
                                                 "got string 'shutdwn'; did you mean 'shutdown'?"),
    (BASE + 'learning: {violation: [shutdown]}\n', "4:23: learning.violation: expected one of shutdown, restrict, got list; "
                                                    "did you mean 'shutdown'?"),
    # a hold time is an OpenFlow hard_timeout: 16 bits
    (BASE + 'learning: {errdisable_recovery: 0}\n', '4:33: learning.errdisable_recovery: 0 is out of range 1..65535'),
    (BASE + 'learning: {errdisable_recovery: 65536}\n', '4:33: learning.errdisable_recovery: 65536 is out of range'),
    # switches
    ('switches:\n', '1:1: switches: define at least one switch'),
    ('switches: {}\n', '1:1: switches: define at least one switch'),
    ('switches:\n  1leaf: {dpid: 1}\n', "2:3: switches: invalid name '1leaf': a name starts with a letter"),
    ('switches:\n  ' + 'a' * 33 + ': {dpid: 1}\n', "2:3: switches: invalid name 'aaaa"),
    ('switches:\n  leaf.1: {dpid: 1}\n', "2:3: switches: invalid name 'leaf.1'"),
    ('switches:\n  s: {rack_subnet: 10.0.0.0/24}\n', "2:3: switches.s: missing required key 'dpid'"),
    ('switches:\n  s: {dpid: 0}\n', '2:13: switches.s.dpid: 0x0 is out of range 0x1..0xffffffffffffffff'),
    ('switches:\n  s: {dpid: 0x10000000000000000}\n', '2:13: switches.s.dpid: 0x10000000000000000 is out of range'),
    ('switches:\n  s: {dpid: true}\n', '2:13: switches.s.dpid: expected an integer in 0x1..0xffffffffffffffff, got boolean true'),
    ('switches:\n  s: {dpid: "0x101"}\n', "2:13: switches.s.dpid: expected an integer in 0x1..0xffffffffffffffff, got string '0x101'"),
    ('switches:\n  s: {dpid: 1.5}\n', '2:13: switches.s.dpid: expected an integer'),
    (BASE + '  leaf2: {dpid: 0x201}\n', "4:17: switches.leaf2.dpid: dpid 0x201 of switch 'leaf2' is already used by switch 'leaf1' (3:17)"),
    ('switches:\n  s: {dpid: 1, rack_subnet: 10.0.0.1/24}\n', "2:29: switches.s.rack_subnet: '10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?"),
    ('switches:\n  s: {dpid: 1, rack_subnet: 10.0.0.0/33}\n', "2:29: switches.s.rack_subnet: '10.0.0.0/33' is not a valid IPv4 network"),
    ('switches:\n  s: {dpid: 1, rack_subnet: fd00::/64}\n', "2:29: switches.s.rack_subnet: 'fd00::/64' is not a valid IPv4 network"),
    ('switches:\n  s: {dpid: 1, rack_subnet: 10.0.0.0}\n', "2:29: switches.s.rack_subnet: '10.0.0.0' has no prefix length"),
    ('switches:\n  s: {dpid: 1, rack_subnet: 24}\n', '2:29: switches.s.rack_subnet: expected an IPv4 network like 172.16.1.0/24, got integer 24'),
    # links
    (BASE + 'links:\n  - [spine1, leaf1]\n  - [spine1, leaf3]\n',
     "6:14: links[1]: switch 'leaf3' is not defined in switches (known: leaf1, spine1)"),
    (BASE + 'links: [[spine1, leaf1, leaf1]]\n', '4:9: links[0]: a link has exactly two ends [SWITCH, SWITCH], got 3'),
    (BASE + 'links: [[spine1]]\n', '4:9: links[0]: a link has exactly two ends'),
    (BASE + 'links: [spine1-leaf1]\n', "4:9: links[0]: expected a pair [SWITCH, SWITCH] or [SWITCH:PORT, SWITCH:PORT], got string 'spine1-leaf1'"),
    (BASE + 'links: [[spine1, 7]]\n', '4:18: links[0]: expected a switch name, got integer 7'),
    (BASE + 'links: [[leaf1, leaf1]]\n', "4:9: links[0]: link from 'leaf1' to itself"),
    (BASE + 'links: [[spine1, leaf1], [leaf1, spine1]]\n', '4:26: links[1]: duplicate link leaf1 -- spine1 (same as links[0] at 4:9)'),
    (BASE + HV + '}\nlinks: [[spine1, hv1]]\n',
     "6:18: links[0]: 'hv1' is a hypervisor; hypervisors attach to their leaf via `leaf:`"),
    # hypervisors: names, leaf, dpid
    (BASE + 'hypervisors:\n  hv_1!: {leaf: leaf1, vtep: 172.16.1.11}\n', "5:3: hypervisors: invalid name 'hv_1!'"),
    (BASE + 'hypervisors:\n  leaf1: {leaf: leaf1, vtep: 172.16.1.11}\n',
     "5:3: hypervisors.leaf1: name 'leaf1' is already used by a switch (switches.leaf1 at 3:3)"),
    (BASE + 'hypervisors:\n  hv1: {leaf: leaf9, vtep: 172.16.1.11}\n',
     "5:15: hypervisors.hv1.leaf: switch 'leaf9' is not defined in switches (known: leaf1, spine1)"),
    (BASE + 'hypervisors:\n  hv1: {leaf: hv2, vtep: 10.0.0.1}\n  hv2: {leaf: leaf1, vtep: 172.16.1.12}\n',
     "5:15: hypervisors.hv1.leaf: 'hv2' is a hypervisor; `leaf:` must name a switch"),
    (BASE + 'hypervisors:\n  hv1: {vtep: 172.16.1.11}\n', "5:3: hypervisors.hv1: missing required key 'leaf'"),
    (BASE + 'hypervisors:\n  hv1: {leaf: leaf1}\n', "5:3: hypervisors.hv1: missing required key 'vtep'"),
    (BASE + HV + ', dpid: 0x201}\n',
     "5:47: hypervisors.hv1.dpid: dpid 0x201 of hypervisor 'hv1' is already used by switch 'leaf1' (3:17)"),
    (BASE + HV + ', dpid: 0}\n', '5:47: hypervisors.hv1.dpid: 0x0 is out of range'),
    (BASE + HV + '}\n  hv2: {leaf: leaf1, vtep: 172.16.1.12, dpid: %d}\n' % HV_DPID,
     "6:47: hypervisors.hv2.dpid: dpid %#x of hypervisor 'hv2' is already used by hypervisor 'hv1' (its name-derived default) (5:3)" % HV_DPID),
    ('switches:\n  leaf1: {dpid: %d}\n' % HV_DPID + HV + '}\n',
     "4:3: hypervisors.hv1: default dpid %#x of hypervisor 'hv1' (derived from its name) is already used by "
     "switch 'leaf1' (2:17); give it an explicit `dpid:`" % HV_DPID),
    (HV + '}\nswitches:\n  leaf1: {dpid: %d}\n' % HV_DPID,
     "4:17: switches.leaf1.dpid: dpid %#x of switch 'leaf1' is already used by hypervisor 'hv1' (its name-derived default) (2:3)" % HV_DPID),
    # hypervisors: vtep
    (BASE + 'hypervisors:\n  hv1: {leaf: leaf1, vtep: 172.16.1.256}\n', "5:28: hypervisors.hv1.vtep: '172.16.1.256' is not a valid IPv4 address"),
    (BASE + 'hypervisors:\n  hv1: {leaf: leaf1, vtep: 172.16.1.11/24}\n', "5:28: hypervisors.hv1.vtep: '172.16.1.11/24' is not a valid IPv4 address; write the address without a prefix length"),
    (BASE + 'hypervisors:\n  hv1: {leaf: leaf1, vtep: 224.0.0.1}\n', '5:28: hypervisors.hv1.vtep: 224.0.0.1 is not a usable unicast'),
    (BASE + 'hypervisors:\n  hv1: {leaf: leaf1, vtep: 2886795531}\n', '5:28: hypervisors.hv1.vtep: expected an IPv4 address'),
    (BASE + 'hypervisors:\n  hv1: {leaf: leaf1, vtep: 172.16.2.11}\n',
     "5:28: hypervisors.hv1.vtep: 172.16.2.11 is not inside its leaf's rack_subnet 172.16.1.0/24"),
    (BASE + 'hypervisors:\n  hv1: {leaf: leaf1, vtep: 172.16.1.0}\n', '5:28: hypervisors.hv1.vtep: 172.16.1.0 is the network or broadcast'),
    (BASE + HV + '}\n  hv2: {leaf: spine1, vtep: 172.16.1.11}\n',
     "6:29: hypervisors.hv2.vtep: vtep 172.16.1.11 is already used by hypervisor 'hv1' (5:28)"),
    # hypervisors: trunk_vlans
    (BASE + HV + ', trunk_vlans: [10, 0]}\n', '5:59: hypervisors.hv1.trunk_vlans[1]: 0 is out of range 1..4094'),
    (BASE + HV + ', trunk_vlans: [4095]}\n', '5:55: hypervisors.hv1.trunk_vlans[0]: 4095 is out of range 1..4094'),
    (BASE + HV + ', trunk_vlans: [10, 20, 10]}\n', '5:63: hypervisors.hv1.trunk_vlans[2]: VLAN 10 is listed twice (first at trunk_vlans[0])'),
    (BASE + HV + ', trunk_vlans: [on]}\n', '5:55: hypervisors.hv1.trunk_vlans[0]: expected an integer in 1..4094, got boolean true'),
    (BASE + HV + ', trunk_vlans: 10}\n', '5:54: hypervisors.hv1.trunk_vlans: expected a list, got integer 10'),
    # hypervisors: bonded uplinks
    (BASE + HV + ', uplinks: 0}\n', '5:50: hypervisors.hv1.uplinks: 0 is out of range 1..8'),
    (BASE + HV + ', uplinks: 9}\n', '5:50: hypervisors.hv1.uplinks: 9 is out of range 1..8'),
    (BASE + HV + ', uplinks: "2"}\n', "5:50: hypervisors.hv1.uplinks: expected an integer in 1..8, got string '2'"),
    (BASE + HV + ', uplinks: [a, b]}\n', '5:50: hypervisors.hv1.uplinks: expected an integer in 1..8, got list'),
    (BASE + HV + ', uplinks: 2, bond: lacpp}\n',
     "5:59: hypervisors.hv1.bond: expected one of lacp, active-backup, got string 'lacpp'; did you mean 'lacp'?"),
    (BASE + HV + ', uplinks: 2, bond: balance-tcp}\n',
     "5:59: hypervisors.hv1.bond: expected one of lacp, active-backup, got string 'balance-tcp'"),
    (BASE + HV + ', bond: lacp}\n',
     '5:47: hypervisors.hv1.bond: a bond needs at least two uplinks; add `uplinks: 2` (or drop `bond:`)'),
    (BASE + HV + ', uplinks: 1, bond: active-backup}\n', '5:59: hypervisors.hv1.bond: a bond needs at least two uplinks'),
]


def _errors(text):
    with pytest.raises(PolicyError) as exc:
        parse_fabric(text, 'fabric.yaml')
    return exc.value.diags


@pytest.mark.parametrize('text,expected', CASES, ids=[c[1][:60] for c in CASES])
def test_fabric_errors(text, expected):
    diags = _errors(text)
    got = [f'{d.line}:{d.col}: {d.message}' for d in diags]
    assert len(diags) == 1, got
    assert got[0].startswith(expected), got
    assert str(diags[0]).startswith('fabric.yaml:')


def test_all_problems_reported_in_file_order():
    text = (BASE + 'native_vlan: 0\n'
            'links: [[spine1, leaf9]]\n'
            + HV + ', trunk_vlans: [5000]}\n')
    diags = _errors(text)
    assert [(d.line, d.col) for d in diags] == [(4, 14), (5, 18), (7, 55)]
    assert str(PolicyError(diags)).splitlines()[0] == 'fabric.yaml:4:14: native_vlan: 0 is out of range 1..4094'


def test_defaults_and_hex_dpid():
    f = parse_fabric('switches:\n  s1: {dpid: 0x101}\n')
    assert f.switches['s1'].dpid == 0x101 and f.switches['s1'].role == 'spine'
    assert (f.underlay_mtu, f.native_vlan, f.links, dict(f.hypervisors)) == (9000, 1, (), {})
    assert f.learning == model.Learning() and f.controller == model.ControllerSettings()
    assert f.source == '<fabric>'


def test_example_fabric():
    f = load_fabric(EXAMPLE)
    roles = {n: s.role for n, s in f.switches.items()}
    assert roles == {'spine1': 'spine', 'spine2': 'spine', 'leaf1': 'leaf', 'leaf2': 'leaf'}
    assert f.switches['leaf1'].rack_subnet == ipaddress.IPv4Network('172.16.1.0/24')
    assert set(f.links) == {('leaf1', 'spine1'), ('leaf2', 'spine1'), ('leaf1', 'spine2'), ('leaf2', 'spine2')}
    assert all(a < b for a, b in f.links)
    assert sorted(f.hypervisors) == ['hv1', 'hv2', 'hv3', 'hv4']
    for name, hv in f.hypervisors.items():
        assert hv.dpid == model.default_hypervisor_dpid(name)
        assert hv.trunk_vlans == (10, 20, 30, 40)
        assert hv.vtep in f.switches[hv.leaf].rack_subnet
    assert [f.hypervisors[h].leaf for h in ('hv1', 'hv2', 'hv3', 'hv4')] == ['leaf1', 'leaf1', 'leaf2', 'leaf2']
    assert f.switch_by_dpid(0x202).name == 'leaf2'
    assert f.all_vlans() == (1, 10, 20, 30, 40)
    assert f.controller.ofp_port == 6653 and f.underlay_mtu == 9000


def test_bonded_uplinks():
    f = parse_fabric(BASE + HV + ', uplinks: 2}\n  hv2: {leaf: leaf1, vtep: 172.16.1.12, uplinks: 3, '
                     'bond: active-backup}\n  hv3: {leaf: leaf1, vtep: 172.16.1.13}\n')
    hv1, hv2, hv3 = (f.hypervisors[h] for h in ('hv1', 'hv2', 'hv3'))
    assert (hv1.uplinks, hv1.bond, hv1.bonded) == (2, 'lacp', True)          # LACP unless told
    assert (hv2.uplinks, hv2.bond, hv2.bonded) == (3, 'active-backup', True)
    assert (hv3.uplinks, hv3.bond, hv3.bonded) == (1, 'lacp', False)         # one cable: no bond


def test_bond_errors_are_all_reported():
    diags = _errors(BASE + HV + ', uplinks: 0, bond: x}\n  hv2: {leaf: leaf1, vtep: 172.16.1.12, bond: lacp}\n')
    assert [(d.line, d.col) for d in diags] == [(5, 50), (5, 59), (6, 47)]


def test_role_from_hypervisor_without_rack_subnet():
    f = parse_fabric('switches: {tor: {dpid: 1}, core: {dpid: 2}}\n'
                     'hypervisors: {hv: {leaf: tor, vtep: 10.0.0.5, dpid: 3, trunk_vlans: [30, 10]}}\n')
    assert f.switches['tor'].role == 'leaf' and f.switches['core'].role == 'spine'
    assert f.hypervisors['hv'].dpid == 3 and f.hypervisors['hv'].trunk_vlans == (10, 30)


def test_yamlsource_positions():
    doc = parse_yaml('a:\n  b: [1, 0x10]\n', 'x.yaml')
    assert doc.data == {'a': {'b': [1, 16]}}
    assert doc.key_mark(('a', 'b')) == (2, 3) and doc.mark(('a', 'b', 1)) == (2, 10)
    assert doc.mark(('a', 'missing', 3)) == doc.mark(('a',))
    assert str(Diag('x.yaml', 2, 3, 'boom')) == 'x.yaml:2:3: boom'


def test_unreadable_file(tmp_path):
    with pytest.raises(PolicyError) as exc:
        load_fabric(tmp_path / 'nope.yaml')
    assert str(exc.value).startswith(f'{tmp_path / "nope.yaml"}:1:1: cannot read: ')


# --- dvsctl validate ---------------------------------------------------------------------------

BAD = BASE + 'links: [[spine1, leaf3]]\nunderlay: {mtu: 100}\n'


def test_validate_ok(capsys):
    assert dvsctl.main(['validate', str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out == f'{EXAMPLE}: ok\n' and err == ''


def test_validate_errors(tmp_path, capsys):
    bad, tenant = tmp_path / 'bad.yaml', tmp_path / 'acme.yaml'
    bad.write_text(BAD)
    tenant.write_text('tenant: acme\nnetworks: {}\n')
    assert dvsctl.main(['validate', str(EXAMPLE), str(bad), str(tenant), str(tmp_path / 'missing.yaml')]) == 1
    out, err = capsys.readouterr()
    assert out == f'{EXAMPLE}: ok\n'
    lines = err.splitlines()
    assert lines[0] == f"{bad}:4:18: links[0]: switch 'leaf3' is not defined in switches (known: leaf1, spine1)"
    assert lines[1] == f'{bad}:5:17: underlay.mtu: 100 is out of range 1280..9216'
    assert lines[2] == f'{tenant}:2:1: networks: define at least one network, e.g. users: {{vlan: 10, subnet: 10.10.0.0/24}}'
    assert lines[3].startswith(f'{tmp_path / "missing.yaml"}:1:1: cannot read: ')
    assert len(lines) == 4


def test_validate_installed_script(tmp_path):
    assert DVSCTL.exists(), 'run: .venv/bin/pip install -e .'
    ok = subprocess.run([DVSCTL, 'validate', EXAMPLE], capture_output=True, text=True)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, f'{EXAMPLE}: ok\n', '')
    bad = tmp_path / 'bad.yaml'
    bad.write_text(BAD)
    r = subprocess.run([DVSCTL, 'validate', bad], capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ''
    assert r.stderr.splitlines()[0] == f"{bad}:4:18: links[0]: switch 'leaf3' is not defined in switches (known: leaf1, spine1)"
