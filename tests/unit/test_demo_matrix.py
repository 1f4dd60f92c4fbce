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
