"""`make demo`'s matrix: every column header is a VM's full name, so data1/data2 and db1/db2
are told apart, and each cell sits under its own header."""
import importlib.util
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _demo():
    spec = importlib.util.spec_from_file_location('demo', ROOT / 'scripts' / 'demo.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_headers_are_unambiguous_and_cells_line_up():
    vms = ['data1', 'data2', 'db1', 'db2', 'ov1']
    tenants = {'data1': 'globex', 'data2': 'globex', 'db1': 'acme', 'db2': 'acme', 'ov1': None}
    expected = {(a, b): tenants[a] == tenants[b] for a, b in itertools.permutations(vms, 2)}
    actual = dict(expected)
    actual[('db1', 'data1')] = True                       # one wrong answer: shown as '!'
    lines = _demo().matrix_lines(tenants, vms, expected, actual)
    head = lines[0].split()
    assert head[-len(vms):] == vms and len(set(head[-len(vms):])) == len(vms)
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {'globex/data1', 'globex/data2', 'acme/db1', 'acme/db2', '-/ov1'}
    cols = {v: lines[0].index(v) for v in vms}           # each header's column
    cell = lambda a, b: rows[a][cols[b]]                   # noqa: E731
    assert cell('globex/data1', 'data2') == '+' and cell('globex/data1', 'db1') == '.'
    assert cell('acme/db1', 'data1') == '!' and cell('acme/db1', 'db1') == '-'
    assert cell('-/ov1', 'db2') == '.'


def _vm(tenant, network, hv='hv1'):
    from types import SimpleNamespace as NS
    return NS(tenant=tenant, hypervisor=hv, nics=(NS(network=network),))


def test_networks_with_a_gateway_route_inside_their_tenant_only():
    demo = _demo()
    routed = {('acme', 'users'), ('acme', 'servers'), ('globex', 'apps'), ('globex', 'data')}
    web, db, lab_ = _vm('acme', 'users'), _vm('acme', 'servers'), _vm('acme', 'lab')
    app, plain = _vm('globex', 'apps'), _vm(None, None)
    assert demo.expect_reach(web, _vm('acme', 'users'), routed)          # bridged
    assert demo.expect_reach(web, db, routed) and demo.expect_reach(db, web, routed)   # routed
    assert not demo.expect_reach(web, lab_, routed)     # a network without a gateway is not routed
    assert not demo.expect_reach(web, app, routed)      # never into another tenant
    assert not demo.expect_reach(web, plain, routed) and demo.expect_reach(plain, _vm(None, None), routed)


def test_the_routed_pair_shown_crosses_racks_and_routed_cells_say_r():
    demo = _demo()
    vms = {'web1': _vm('acme', 'users', 'hv1'), 'db1': _vm('acme', 'servers', 'hv2'),
           'db2': _vm('acme', 'servers', 'hv4')}
    leaf = {'hv1': 'leaf1', 'hv2': 'leaf1', 'hv4': 'leaf2'}
    routed = {('web1', 'db1'), ('web1', 'db2'), ('db1', 'web1'), ('db2', 'web1')}
    assert demo.routed_pair(vms, routed, leaf) == ('db2', 'web1')
    assert demo.routed_pair(vms, set(), leaf) is None
    names = sorted(vms)
    expected = {(a, b): True for a, b in itertools.permutations(names, 2)}
    lines = demo.matrix_lines({v: 'acme' for v in names}, names, expected, dict(expected), routed)
    cols = {v: lines[0].index(v) for v in names}
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows['acme/web1'][cols['db2']] == 'r' and rows['acme/db1'][cols['db2']] == '+'
