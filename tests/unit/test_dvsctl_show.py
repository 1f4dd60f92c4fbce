"""`dvsctl show flows` prints one flow per line like ovs-ofctl, its owner at the end, never padded
to the longest flow; `--json` stays the raw rows for machines."""
import json

import pytest

from controller.cli import dvsctl, remote

ROWS = [
    {'switch': 'leaf1', 'table': 'classify', 'priority': 100, 'cookie': '0x200000000000000',
     'owner': 'topology kind=1 owner=-', 'flow': 'table=classify priority=100 cookie=0x200000000000000 '
                                                 'eth_type=0x88cc actions=output:controller'},
    {'switch': 'leaf1', 'table': 'l2', 'priority': 150, 'cookie': '0x3000001abcdef000001',
     'owner': 'port-groups kind=2 tenant=acme owner=web1',
     'flow': 'table=l2 priority=150 cookie=0x3000001abcdef000001 vlan_vid=0x100a,eth_dst=02:00:0a:0a:00:0b '
             'actions=pop_vlan,output:3' + ',output:4' * 40},
    {'switch': 'spine10', 'table': 'flood', 'priority': 1, 'cookie': '0x0', 'owner': 'unknown-app-0 kind=0 owner=-',
     'flow': 'table=flood priority=1 cookie=0x0 * actions=drop'},
]


@pytest.fixture
def shown(monkeypatch, capsys):
    calls = []

    def fake_call(args, method, path, body=None):
        calls.append((method, path))
        return ROWS
    monkeypatch.setattr(remote, 'call', fake_call)

    def run(*argv):
        assert dvsctl.main(['show', *argv, '--token', 't']) == 0
        return capsys.readouterr().out, calls
    return run


def test_one_flow_per_line_with_its_owner_at_the_end(shown):
    out, calls = shown('flows')
    lines = out.splitlines()
    assert calls == [('GET', '/v1/flows')]
    assert len(lines) == len(ROWS)                  # no header, no wrapping
    for line, row in zip(lines, ROWS):
        assert line.split()[0] == row['switch']
        assert line.endswith('  # ' + row['owner'])
        assert row['flow'] in line
        assert line == line.rstrip()
    # the short flows are not padded out to the long one
    assert len(lines[0]) < 150 < len(lines[1])
    assert len(lines[2]) == len('spine10  ') + len(ROWS[2]['flow']) + len('  # ') + len(ROWS[2]['owner'])
    # switch names are aligned, so the flows start in one column
    assert lines[0].index('table=') == lines[2].index('table=')


def test_switch_filter_and_json_for_machines(shown):
    out, calls = shown('flows', '--switch', 'leaf1', '--json')
    assert calls == [('GET', '/v1/flows?switch=leaf1')]
    assert json.loads(out) == ROWS


def test_other_views_stay_tables(shown, monkeypatch):
    monkeypatch.setattr(remote, 'call', lambda *a, **k: [{'name': 'acme', 'networks': ['users'],
                                                          'workloads': ['web1', 'web2'], 'source': 'a.yaml'}])
    out, _ = shown('tenants')
    assert out.splitlines()[0].split() == ['name', 'networks', 'workloads', 'source']
    assert out.splitlines()[1].split() == ['acme', 'users', 'web1,web2', 'a.yaml']
