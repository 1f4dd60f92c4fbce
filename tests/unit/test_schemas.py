"""schemas/*.schema.json (for editors) stay in step with the loaders, and accept the examples.

Validation uses the `jsonschema` package (the `test` extra installs it; a missing one is an
error, never a skip).  The loaders stay the authority (cross-references are theirs alone).
"""
import json
import pathlib

import jsonschema
import pytest
import yaml

from controller.policy import fabric, model, tenant_parse, tenant_security

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / 'schemas'
EXAMPLES = sorted((ROOT / 'examples').rglob('*.yaml'))


def _ecma(rx) -> str:
    """The loader's pattern (anchored with \\Z, used with fullmatch) as JSON Schema writes it:
    in ECMA-262 '$' matches only at the very end, as \\Z does in Python."""
    assert rx.pattern.endswith('\\Z') and not rx.pattern.startswith('^'), rx.pattern
    return '^' + rx.pattern[:-2] + '$'


def _schema(name):
    return json.loads((SCHEMAS / f'{name}.schema.json').read_text())


def _props(node):
    return set(node['properties'])


@pytest.mark.parametrize('name', ['tenant', 'fabric'])
def test_schema_is_draft_2020_12_and_strict(name):
    s = _schema(name)
    assert s['$schema'] == 'https://json-schema.org/draft/2020-12/schema'
    assert s['type'] == 'object' and s['additionalProperties'] is False


def test_tenant_schema_keys_match_the_loader():
    s = _schema('tenant')
    d = s['$defs']
    assert _props(s) == set(tenant_parse.TOP_KEYS) and set(s['required']) == {'tenant', 'networks'}
    assert s['properties']['tenant']['pattern'] == _ecma(tenant_parse.TENANT_RE)
    assert d['name']['pattern'] == _ecma(fabric.NAME_RE) and d['label']['pattern'] == _ecma(tenant_security.LABEL_RE)
    assert _props(d['network']) == {'vlan', 'vni', 'subnet', 'gateway'}
    assert _props(d['workload']) == {'hypervisor', 'labels', 'nics'}
    assert _props(d['nic']) == set(d['nic']['required']) == {'network', 'mac', 'ip'}
    assert _props(d['rule']) == set(d['rule']['required']) == {'name', 'from', 'to', 'allow'}
    assert _props(d['endpoint']) == set(tenant_security.ENDPOINT_KEYS)
    assert _props(d['allow']) == {'proto', 'port', 'ports', 'type'}
    assert d['allow']['properties']['proto']['enum'] == list(tenant_security.PROTOS)
    assert s['properties']['security']['properties']['default']['enum'] == list(tenant_security.DEFAULTS)


def test_fabric_schema_keys_match_the_loader():
    s = _schema('fabric')
    assert _props(s) == set(fabric.TOP_KEYS) and s['required'] == ['switches']
    assert s['$defs']['name']['pattern'] == _ecma(fabric.NAME_RE)
    assert _props(s['properties']['switches']['additionalProperties']) == {'dpid', 'rack_subnet'}
    assert _props(s['properties']['hypervisors']['additionalProperties']) == {'leaf', 'vtep', 'trunk_vlans', 'dpid',
                                                                                'uplinks', 'bond'}
    hv = s['properties']['hypervisors']['additionalProperties']['properties']
    assert hv['bond']['enum'] == list(model.BOND_MODES) and hv['uplinks']['maximum'] == model.MAX_UPLINKS
    assert s['$defs']['dpid']['maximum'] == fabric.MAX_DPID


# --- validation -------------------------------------------------------------------------------

def _validator(name):
    cls = jsonschema.Draft202012Validator
    cls.check_schema(_schema(name))
    return cls(_schema(name))


@pytest.mark.parametrize('path', EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate(path):
    data = yaml.safe_load(path.read_text())
    v = _validator('tenant' if 'tenant' in data else 'fabric')
    assert [e.message for e in v.iter_errors(data)] == []


NET = {'vlan': 10, 'subnet': '10.10.0.0/24'}
NIC = {'network': 'users', 'mac': '02:00:00:00:00:01', 'ip': '10.10.0.11'}
RULE = {'name': 'r', 'from': {'label': 'web'}, 'to': {'cidr': '0.0.0.0/0'}, 'allow': [{'proto': 'tcp', 'port': 80}]}
BAD_TENANTS = [
    {'tenant': 'Acme', 'networks': {'users': NET}},
    {'tenant': 'acme', 'networks': {}},
    {'tenant': 'acme', 'networks': {'users': NET}, 'extra': 1},
    {'tenant': 'acme', 'networks': {'users': {**NET, 'vni': 5}}},
    {'tenant': 'acme', 'networks': {'users': {'subnet': '10.10.0.0/24'}}},
    {'tenant': 'acme', 'networks': {'users': {**NET, 'vlan': 1}}},
    {'tenant': 'acme', 'networks': {'users': NET}, 'workloads': {'w': {'nics': []}}},
    {'tenant': 'acme', 'networks': {'users': NET}, 'workloads': {'w': {'nics': [{**NIC, 'mac': '01:00:00:00:00:01'}]}}},
    {'tenant': 'acme', 'networks': {'users': NET}, 'workloads': {'w': {'nics': [{**NIC, 'ip': '10.10.0.300'}]}}},
    {'tenant': 'acme', 'networks': {'users': NET}, 'security': {'default': 'permit'}},
    {'tenant': 'acme', 'networks': {'users': NET}, 'security': {'rules': [{**RULE, 'from': {'label': 'web', 'cidr': '0.0.0.0/0'}}]}},
    {'tenant': 'acme', 'networks': {'users': NET}, 'security': {'rules': [{**RULE, 'allow': [{'proto': 'icmp', 'port': 1}]}]}},
    {'tenant': 'acme', 'networks': {'users': NET}, 'security': {'rules': [{**RULE, 'allow': [{'proto': 'tcp', 'port': 1, 'ports': '1-2'}]}]}},
    {'tenant': 'acme', 'networks': {'users': NET}, 'security': {'rules': [{**RULE, 'allow': []}]}},
]


def test_tenant_schema_accepts_a_full_policy_and_refuses_bad_ones():
    v = _validator('tenant')
    good = {'tenant': 'acme', 'networks': {'users': NET, 'over': {'vni': 5020, 'subnet': '10.20.0.0/24', 'gateway': '10.20.0.1'}},
            'workloads': {'web1': {'hypervisor': 'hv1', 'labels': ['web'], 'nics': [NIC]}},
            'security': {'default': 'deny', 'rules': [RULE, {**RULE, 'allow': [{'proto': 'udp', 'ports': '8000-8100'}, {'proto': 'any'}]}]}}
    assert [e.message for e in v.iter_errors(good)] == []
    for bad in BAD_TENANTS:
        assert not v.is_valid(bad), bad


def test_fabric_schema_refuses_bad_ones():
    v = _validator('fabric')
    for bad in [{}, {'switches': {}}, {'switches': {'s': {}}}, {'switches': {'s': {'dpid': 0}}},
                {'switches': {'s': {'dpid': 1}}, 'links': [['s']]},
                {'switches': {'s': {'dpid': 1}}, 'hypervisors': {'h': {'leaf': 's'}}},
                {'switches': {'s': {'dpid': 1}}, 'hypervisors': {'h': {'leaf': 's', 'vtep': '1.2.3.4', 'trunk_vlans': [5, 5]}}},
                {'switches': {'s': {'dpid': 1}}, 'hypervisors': {'h': {'leaf': 's', 'vtep': '1.2.3.4', 'uplinks': 0}}},
                {'switches': {'s': {'dpid': 1}}, 'hypervisors': {'h': {'leaf': 's', 'vtep': '1.2.3.4', 'bond': 'slb'}}},
                {'switches': {'s': {'dpid': 1}}, 'underlay': {'mtu': 100}},
                {'switches': {'s': {'dpid': 1}}, 'controller': {'openflow': '127.0.0.1:6653'}}]:
        assert not v.is_valid(bad), bad
