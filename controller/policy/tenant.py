"""Tenant policies: YAML -> frozen model.Tenant, then checks across tenants and the fabric.

    parse_tenant(text, source) / load_tenant(path)   one file, strict; PolicyError lists every problem
    check_tenants(fabric, tenants)                   VLAN/VNI/MAC/name clashes, placement hints
    load_policy(fabric, paths)                       both, for a set of files

Parsing is in tenant_parse (+ tenant_security), the cross-file checks in tenant_checks.
"""
from __future__ import annotations

from controller.policy import model
from controller.policy.errors import PolicyError
from controller.policy.tenant_checks import check_tenants
from controller.policy.tenant_parse import TOP_KEYS, build_tenant, tenant_doc
from controller.policy.yamlsource import YamlDoc, load_yaml, parse_yaml

__all__ = ['parse_tenant', 'load_tenant', 'build_tenant', 'check_tenants', 'check_together', 'load_policy',
           'tenant_doc', 'is_tenant_doc', 'TOP_KEYS']


def parse_tenant(text: str, source: str = '<tenant>') -> model.Tenant:
    """One tenant policy from a string (tests, API pushes); `source` names it in errors."""
    return build_tenant(parse_yaml(text, source))


def load_tenant(path) -> model.Tenant:
    """Load and validate one tenant policy file; raise PolicyError listing every problem."""
    return build_tenant(load_yaml(path))


def is_tenant_doc(doc: YamlDoc) -> bool:
    """A YAML mapping with a top-level key only tenant policies have (`tenant:`, `networks:`,
    `workloads:`, `security:`) is a tenant policy; anything else is read as a fabric.  (A
    tenant file that lost its `tenant:` line is still a tenant file with that one error.)"""
    return isinstance(doc.data, dict) and any(k in doc.data for k in TOP_KEYS if isinstance(k, str))


def load_policy(fabric: model.Fabric | None, paths) -> list[model.Tenant]:
    """Load every tenant file and check them together against the fabric.  One PolicyError
    carries the problems of all files."""
    attempts = []
    for path in paths:
        try:
            attempts.append(load_tenant(path))
        except PolicyError as e:
            attempts.append(e)
    return check_together(fabric, attempts)


def check_together(fabric: model.Fabric | None, attempts) -> list[model.Tenant]:
    """attempts: per file, in order, its Tenant or the PolicyError parsing it raised.  The
    checks across files run over the good tenants *and* what is valid of the broken ones, so a
    clash is reported alongside a file's own errors; one PolicyError carries everything.
    Returns the tenants when there is no problem at all."""
    diags, tenants, checked = [], [], []
    for a in attempts:
        if isinstance(a, PolicyError):
            diags += a.diags
            if a.partial is not None:
                checked.append(a.partial)
        else:
            tenants.append(a)
            checked.append(a)
    try:
        check_tenants(fabric, checked)
    except PolicyError as e:
        diags += e.diags
    if diags:
        raise PolicyError(diags)
    return tenants
