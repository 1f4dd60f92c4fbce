"""Hostile policy files (issue 7, part 1): each defect found by trying the loaders as an
attacker would is a case here.  Every one must end in FILE:LINE:COL errors -- never a
traceback, a crash of the C parser, gigabytes of memory or a value that slips through."""
from __future__ import annotations

import pathlib

import pytest

from controller.cli import dvsctl
from controller.policy import yamlsource
from controller.policy.errors import PolicyError
from controller.policy.fabric import parse_fabric
from controller.policy.tenant import check_together, load_policy, parse_tenant
from controller.policy.yamlsource import parse_yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
FABRIC = ROOT / 'examples' / 'fabric.yaml'
ACME = ROOT / 'examples' / 'tenants' / 'acme.yaml'

TENANT = ('tenant: acme\n'
          'networks:\n'
          '  users: {vlan: 10, subnet: 10.10.0.0/24, gateway: 10.10.0.1}\n'
          'workloads:\n'
          '  web1: {labels: [web], nics: [{network: users, mac: "02:00:0a:0a:00:0b", ip: 10.10.0.11}]}\n')


def errors(fn, text, source='f.yaml'):
    with pytest.raises(PolicyError) as e:
        fn(text, source)
    for d in e.value.diags:
        assert d.file == source and d.line >= 1 and d.col >= 1, d
    return [str(d) for d in e.value.diags]


# ---- bounded YAML ---------------------------------------------------------------------------

@pytest.mark.parametrize('levels', [500, 40_000])
def test_deep_nesting_is_an_error_not_a_recursion_error_or_a_segfault(levels):
    # 500 levels gave a RecursionError traceback; 40,000 segfaulted libyaml's composer
    text = 'tenant: ' + '[' * levels + ']' * levels + '\n'
    got = errors(parse_tenant, text)
    # the top mapping is level 1: the list that opens level MAX_DEPTH + 1 is the error
    assert got == ['f.yaml:1:%d: nested more than %d levels deep' % (8 + yamlsource.MAX_DEPTH,
                                                                      yamlsource.MAX_DEPTH)]


def test_deep_block_nesting_too():
    text = ''.join('  ' * i + 'k%d:\n' % i for i in range(100))
    got = errors(parse_yaml, text)
    assert len(got) == 1 and 'nested more than' in got[0] and got[0].startswith('f.yaml:%d:' % (yamlsource.MAX_DEPTH + 1))


def test_nesting_at_the_limit_is_fine():
    depth = yamlsource.MAX_DEPTH
    doc = parse_yaml('[' * depth + ']' * depth, 'f.yaml')
    assert doc.data is not None


def test_billion_laughs_is_refused_before_it_is_expanded():
    # the 518-byte tenant that drove the controller to 2.2 GB
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += ['a%d: &a%d [%s]' % (i, i, ','.join(['*a%d' % (i - 1)] * 9)) for i in range(1, 9)]
    text = 'tenant: acme\n' + '\n'.join(lines) + '\n'
    assert len(text) < 600
    got = errors(parse_tenant, text)
    assert len(got) == 1 and 'expands the document to more than' in got[0], got
    assert got[0].startswith('f.yaml:7:14: alias *a4'), got     # the alias that crosses the bound


def test_a_few_aliases_are_still_fine():
    doc = parse_yaml('a: &x [1, 2]\nb: *x\nc: *x\n', 'f.yaml')
    assert doc.data == {'a': [1, 2], 'b': [1, 2], 'c': [1, 2]}


def test_recursive_alias_is_an_error():
    assert errors(parse_yaml, 'a: &x [1, *x]\n') == ['f.yaml:1:11: recursive alias *x']


def test_a_huge_document_is_refused_where_it_crosses_the_limit():
    text = 'tenant: acme\n' + '#' * (yamlsource.MAX_BYTES + 10) + '\n'
    got = errors(parse_tenant, text)
    assert got == ['f.yaml:2:%d: document too large: %d characters (at most %d)' % (
        yamlsource.MAX_BYTES - 13 + 1, len(text), yamlsource.MAX_BYTES)]


def test_a_huge_string_is_refused_at_its_position():
    got = errors(parse_tenant, 'tenant: acme\nnetworks: {users: %s}\n' % ('x' * 5000))
    assert got == ['f.yaml:2:19: a value of 5000 characters (at most %d)' % yamlsource.MAX_STRING]


def test_many_values_are_refused():
    got = errors(parse_yaml, '[' + '1,' * (yamlsource.MAX_VALUES + 5) + ']')
    assert len(got) == 1 and 'more than %d values' % yamlsource.MAX_VALUES in got[0]


def test_a_huge_file_on_disk_is_refused_by_dvsctl_validate(tmp_path, capsys):
    f = tmp_path / 'big.yaml'
    f.write_text('tenant: ' + '[' * 50_000 + ']' * 50_000 + '\n')
    assert dvsctl.main(['validate', str(f)]) == 1
    err = capsys.readouterr().err
    assert err.startswith('%s:1:' % f) and 'nested more than' in err and 'Traceback' not in err


# ---- every tag and scalar type ------------------------------------------------------------

@pytest.mark.parametrize('value, message', [
    ('!!timestamp x', "invalid !!timestamp value 'x'"),        # was: AttributeError traceback
    ('!!bool x', "invalid !!bool value 'x'"),                  # was: KeyError traceback
    ('!!int x', "invalid !!int value 'x'"),
    ('!!float x', "invalid !!float value 'x'"),
    ('!!binary x', "invalid !!binary value 'x'"),
    ('!!set {a, b}', 'unsupported tag !!set'),
    ('!!omap [a: 1]', 'unsupported tag !!omap'),
    ('!!set a', 'unsupported tag !!set'),                      # was: an empty Python set
    ('!!map a', 'unsupported tag !!map'),                      # was: {} silently
    ('!!str [a]', 'unsupported tag !!str'),
    ('!!merge a', 'unsupported tag !!merge'),
    ('!!value a', 'unsupported tag !!value'),
    ('!foo a', "unsupported tag '!foo'"),
    ('!!python/name:os.system a', 'unsupported tag !!python/name:os.system'),
])
def test_every_tag_is_an_error_at_its_value(value, message):
    got = errors(parse_tenant, 'tenant: %s\nnetworks: {}\n' % value)
    assert len(got) == 1 and got[0].startswith('f.yaml:1:9: ' + message), got


@pytest.mark.parametrize('value, kind', [
    ('!!binary aGVsbG8=', 'binary'), ('2024-01-01', 'date 2024-01-01'),
    ('!!timestamp 2024-01-01T10:00:00Z', 'timestamp'), ('1.5', 'number 1.5'), ('~', 'null'),
    ('.nan', 'number nan'), ('0x10', 'integer 16'), ('yes', 'boolean true'),
])
def test_valid_scalars_of_the_wrong_type_are_named(value, kind):
    got = errors(parse_tenant, 'tenant: %s\nnetworks: {}\n' % value)
    assert 'f.yaml:1:9: tenant: expected a string, got %s' % kind in got, got


def test_odd_keys_are_reported_not_crashed_on():
    for key in ('!!binary aGk=', '2024-01-01', '.nan', '[a]', '{a: 1}', '!!bool x', 'null'):
        got = errors(parse_tenant, 'tenant: acme\nnetworks: {}\n%s: 1\n' % key)
        assert got and all(g.startswith('f.yaml:') for g in got), (key, got)


# ---- a trailing newline is not part of a name ----------------------------------------------

def _quoted(s):
    return '"%s"' % s.replace('\n', '\\n')


@pytest.mark.parametrize('text, where', [
    (TENANT.replace('tenant: acme', 'tenant: ' + _quoted('acme\n')), '1:9: tenant: invalid tenant name'),
    (TENANT.replace('"02:00:0a:0a:00:0b"', _quoted('02:00:0a:0a:00:0b\n')), 'is not a MAC address'),
    (TENANT.replace('[web]', '[%s]' % _quoted('web\n')), 'invalid label'),
    (TENANT.replace('  users:', '  %s:' % _quoted('users\n')), 'invalid name'),
    (TENANT.replace('{labels', '{hypervisor: %s, labels' % _quoted('hv1\n')), 'invalid hypervisor name'),
    (TENANT + 'security:\n  rules:\n    - {name: %s, from: {label: web}, to: {label: web}, allow: [{proto: any}]}\n'
     % _quoted('r1\n'), 'invalid rule name'),
    (TENANT + 'security:\n  rules:\n    - {name: r1, from: {label: %s}, to: {label: web}, allow: [{proto: any}]}\n'
     % _quoted('web\n'), 'invalid label'),
    (TENANT + 'security:\n  rules:\n    - {name: r1, from: {network: %s}, to: {label: web}, allow: [{proto: any}]}\n'
     % _quoted('users\n'), 'is not defined in networks'),
    (TENANT + 'security:\n  rules:\n    - {name: r1, from: {label: web}, to: {label: web}, allow: [{proto: tcp, ports: %s}]}\n'
     % _quoted('80-90\n'), 'expected a port range'),
])
def test_a_trailing_newline_is_refused_in_tenant_files(text, where):
    got = errors(parse_tenant, text)
    assert any(where in g for g in got), got
    assert all('\n' not in g for g in got), got               # quoted as \n, never a raw newline


def test_two_tenants_acme_and_acme_newline_cannot_both_run():
    parse_tenant(TENANT, 'a.yaml')
    with pytest.raises(PolicyError):
        parse_tenant(TENANT.replace('tenant: acme', 'tenant: "acme\\n"'), 'b.yaml')


@pytest.mark.parametrize('key, value', [
    ('openflow', 'tcp:127.0.0.1:6653\n'), ('api', 'http://127.0.0.1:8080\n'), ('api', 'http://x\n:8080'),
])
def test_a_trailing_newline_is_refused_in_fabric_endpoints(key, value):
    # a fabric `api:` with "\n" used to validate and then crash the controller at start
    text = 'controller: {%s: %s}\nswitches: {s1: {dpid: 1}}\n' % (key, _quoted(value))
    got = errors(parse_fabric, text)
    assert got and got[0].startswith('f.yaml:1:') and 'controller.%s: expected' % key in got[0], got


def test_a_trailing_newline_is_refused_in_fabric_names():
    got = errors(parse_fabric, 'switches: {%s: {dpid: 1}}\n' % _quoted('s1\n'))
    assert any('invalid name' in g for g in got), got


# ---- messages quote a short excerpt ---------------------------------------------------------

@pytest.mark.parametrize('text', [
    'tenant: "%s"\nnetworks: {}\n',
    'tenant: acme\nnetworks: {u: {vlan: 5, subnet: "%s"}}\n',
    'tenant: acme\nnetworks: {u: {vlan: 5, subnet: 10.0.0.0/24, gateway: "%s"}}\n',
    'tenant: acme\nnetworks: {"%s": {vlan: 5, subnet: 10.0.0.0/24}}\n',
    'tenant: acme\nnetworks: {}\n"%s": 1\n',
    'tenant: acme\nnetworks: {}\n!%s a: 1\n',
])
def test_messages_quote_at_most_a_short_excerpt_of_a_bad_value(text):
    bad = 'Z' * 1000
    for d in errors(parse_tenant, text % bad):
        assert len(d) < 400 and 'Z' * 100 not in d, d


# ---- every error at once ---------------------------------------------------------------------

def test_an_ip_outside_its_subnet_is_reported_even_when_the_vlan_is_out_of_range():
    text = TENANT.replace('vlan: 10', 'vlan: 5000').replace('ip: 10.10.0.11', 'ip: 10.99.0.11')
    got = errors(parse_tenant, text)
    assert any('networks.users.vlan: 5000 is out of range 2..4094' in g for g in got), got
    assert any("10.99.0.11 is not inside subnet 10.10.0.0/24 of network 'users'" in g for g in got), got


def test_cross_file_clashes_are_reported_alongside_a_files_own_errors(tmp_path):
    from controller.policy.fabric import load_fabric
    other = tmp_path / 'globex.yaml'
    # its own error (bad gateway) and a clash with acme (VLAN 10 and a MAC)
    other.write_text('tenant: globex\n'
                     'networks:\n'
                     '  users: {vlan: 10, subnet: 10.50.0.0/24, gateway: 10.99.0.1}\n'
                     '  ok: {vlan: 30, subnet: 10.60.0.0/24}\n'
                     'workloads:\n'
                     '  w: {nics: [{network: ok, mac: "02:00:0a:0a:00:0b", ip: 10.60.0.5}]}\n')
    with pytest.raises(PolicyError) as e:
        load_policy(load_fabric(FABRIC), [ACME, other])
    got = [str(d) for d in e.value.diags]
    assert any('gateway 10.99.0.1 is not inside subnet' in g for g in got), got
    assert any("MAC 02:00:0a:0a:00:0b is already used by tenant 'acme'" in g for g in got), got
    # dvsctl validate reports the same
    results = dvsctl.validate_files([ACME, other], FABRIC)
    assert sorted(str(d) for d in results[str(other)]) == sorted(got)


def test_check_together_returns_the_tenants_when_all_is_well():
    t = parse_tenant(TENANT, 'a.yaml')
    assert check_together(None, [t]) == [t]


def test_a_good_nic_of_a_broken_workload_is_still_checked_across_files():
    acme = parse_tenant(TENANT, 'a.yaml')
    other = ('tenant: globex\n'
             'networks:\n'
             '  apps: {vlan: 30, subnet: 10.30.0.0/24}\n'
             'workloads:\n'
             '  w: {nics: [{network: apps, mac: "02:00:0a:0a:00:0b", ip: 10.30.0.5},\n'
             '             {network: apps, mac: "02:00:0a:0a:00:0c", ip: 10.99.0.5}]}\n')
    try:
        parse_tenant(other, 'g.yaml')
    except PolicyError as e:
        broken = e
    with pytest.raises(PolicyError) as e:
        check_together(None, [acme, broken])
    got = [str(d) for d in e.value.diags]
    assert any('10.99.0.5 is not inside subnet' in g for g in got), got
    assert any(g.startswith('g.yaml:5:') and "MAC 02:00:0a:0a:00:0b is already used by tenant 'acme'" in g
               for g in got), got
