"""Property-based fuzzing of fabric and tenant files (issue 7, part 1).

Each example is one of the example files with a few tokens replaced by hostile snippets
(tags, aliases, trailing newlines, huge or deep values, odd scalars), lines dropped or
duplicated, or random text spliced in.  Whatever comes out:

- nothing raises but PolicyError (never a traceback), and nothing hangs (the deadline is a
  generous hang detector, not a timing assert);
- every error names this file and a line:col inside it;
- `dvsctl validate`, the API's parse path (PolicyService.apply) and the controller's start-up
  parse (load_running_policy from a state dir) report exactly the same errors.
"""
from __future__ import annotations

import datetime
import json
import pathlib
import re
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from controller.api.service import PolicyService
from controller.cli import dvsctl
from controller.policy.errors import PolicyError
from controller.policy.fabric import load_fabric
from controller.policy.model import Policy
from controller.policy.store import PolicyStore

ROOT = pathlib.Path(__file__).resolve().parents[2]
FABRIC = ROOT / 'examples' / 'fabric.yaml'
FABRIC_TEXT = FABRIC.read_text()
TENANT_TEXT = (ROOT / 'examples' / 'tenants' / 'acme.yaml').read_text()
TOKEN = re.compile(r'[^\s{}\[\],:#]+')

SNIPPETS = [
    '!!timestamp x', '!!bool x', '!!binary x', '!!binary aGk=', '!!set {a, b}', '!!omap [a: 1]',
    '!!map x', '!!set x', '!foo x', '!!python/object:os.system x', '!!str [1]', '!!int x', '!!float x',
    '"acme\\n"', '"02:00:0a:0a:00:0b\\n"', '"tcp:127.0.0.1:6653\\n"', '"http://127.0.0.1:8080\\n"',
    '"10.10.0.0/24\\n"', '"web\\n"', '"80-90\\n"', '&a [1, *a]', '*nope', '&x 1', '*x', '<<: {a: 1}',
    '[' * 60 + ']' * 60, '{' * 60 + '}' * 60, '"' + 'x' * 3000 + '"', 'x' * 2000, '2024-13-01',
    '2024-01-01', '0x1', '0o17', '1_000', '.inf', '-.nan', '~', 'null', 'yes', 'off', '1:30:00', '0b101',
    '10.10.0.0/33', '256.1.1.1', '01:02:03:04:05:06', '"01:00:5e:00:00:01"', '4095', '-1', '1e400',
    '18446744073709551616', '[]', '{}', '""', "''", '? complex', '- x', '|\n  block', '\t', '\x00', '\ufeff',
    '"\\u2028"', 'é', '%YAML 1.1', '---', '...', '@', '`', '&', '*', '!', '%',
]
_TEXT = st.text(st.characters(blacklist_categories=('Cs',)), max_size=12)


@st.composite
def mutated(draw, base: str) -> str:
    text = base
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(['token', 'token', 'token', 'drop', 'dup', 'splice']))
        lines = text.split('\n')
        if op == 'token':
            spans = [m.span() for m in TOKEN.finditer(text)]
            if not spans:
                continue
            a, b = draw(st.sampled_from(spans))
            text = text[:a] + draw(st.sampled_from(SNIPPETS) | _TEXT) + text[b:]
        elif op == 'drop':
            i = draw(st.integers(0, len(lines) - 1))
            text = '\n'.join(lines[:i] + lines[i + 1:])
        elif op == 'dup':
            i = draw(st.integers(0, len(lines) - 1))
            text = '\n'.join(lines[:i + 1] + lines[i:])
        else:
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.sampled_from(SNIPPETS) | _TEXT) + text[at:]
    return text


FUZZ = settings(max_examples=150, deadline=datetime.timedelta(seconds=20), database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _check_diags(diags, path, text):
    assert diags, 'an error without diagnostics'
    nlines = text.count('\n') + 1
    for d in diags:
        assert d.file == str(path), d
        assert 1 <= d.line <= nlines + 1 and d.col >= 1, (d, nlines)


def _dvsctl(files, fabric=None):
    out = dvsctl.validate_files(files, fabric)
    return sorted(str(d) for ds in out.values() for d in ds)


def _startup_fabric(path):
    try:
        load_fabric(path)
        return []
    except PolicyError as e:
        return sorted(str(d) for d in e.diags)


@given(mutated(FABRIC_TEXT))
@FUZZ
def test_fuzzed_fabric_files(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / 'fabric.yaml'
        path.write_text(text, encoding='utf-8')
        by_dvsctl = _dvsctl([path])
        by_startup = _startup_fabric(path)
        assert by_dvsctl == by_startup
        if by_startup:
            with_errors = dvsctl.validate_files([path])[str(path)]
            _check_diags(with_errors, path, text)


class _Core:
    """What PolicyService needs of the controller core: the running policy and apply_policy."""

    def __init__(self, fabric):
        self.policy = Policy(fabric)

    @property
    def fabric(self):
        return self.policy.fabric

    def apply_policy(self, candidate, dry_run=False):
        assert dry_run
        return {}


_FABRIC = load_fabric(FABRIC)


def _api(path, text, state):
    svc = PolicyService(_Core(_FABRIC), PolicyStore(state))
    try:
        svc.apply([{'source': str(path), 'text': text}], dry_run=True)
        return []
    except PolicyError as e:
        return sorted(str(d) for d in e.diags)


def _startup_tenant(path, text, state):
    from controller.ofp import load_running_policy
    (state / 'tenants.json').write_text(json.dumps({'t': {'source': str(path), 'text': text}}))
    try:
        load_running_policy(str(FABRIC), str(state), None)
        return []
    except PolicyError as e:
        return sorted(str(d) for d in e.diags)


@given(mutated(TENANT_TEXT))
@FUZZ
def test_fuzzed_tenant_files(text):
    with tempfile.TemporaryDirectory() as tmp:
        path, state = pathlib.Path(tmp) / 'acme.yaml', pathlib.Path(tmp) / 'state'
        state.mkdir()
        path.write_text(text, encoding='utf-8')
        by_dvsctl = _dvsctl([path], FABRIC)
        by_api = _api(path, text, state)
        by_startup = _startup_tenant(path, text, state)
        assert by_dvsctl == by_api == by_startup
        if by_dvsctl:
            _check_diags(dvsctl.validate_files([path], FABRIC)[str(path)], path, text)
