"""Small value checkers shared by the fabric and tenant policy loaders.

Each reports through a yamlsource.Checker and returns None when the value is unusable.
"""
from __future__ import annotations

import ipaddress
import re

from controller.policy.yamlsource import excerpt, kind

# \Z, not $: '$' also matches before a trailing newline, and 'acme\n' is not 'acme'.
NAME_RE = re.compile(r'[A-Za-z][A-Za-z0-9_-]{0,31}\Z')
NAME_RULE = "a name starts with a letter and has at most 32 letters, digits, '_' or '-'"


def named_entries(c, path, value) -> dict:
    """A mapping NAME -> entry; entries with an invalid name are reported and dropped."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        c.error(path, f'expected a mapping of NAME: {{...}}, got {kind(value)}')
        return {}
    out = {}
    for name, entry in value.items():
        if isinstance(name, str) and NAME_RE.fullmatch(name):
            out[name] = entry
        else:
            c.error(path, f'invalid name {excerpt(name)}: {NAME_RULE}', at=path + (name,), key=True)
    return out


def ipv4_network(c, path, v, example='10.10.0.0/24'):
    """A strict IPv4 network: host bits set is an error, not silently masked."""
    if not isinstance(v, str):
        c.error(path, f'expected an IPv4 network like {example}, got {kind(v)}')
        return None
    if '/' not in v:    # ipaddress would silently read it as a /32
        c.error(path, f"{excerpt(v)} has no prefix length; write ADDRESS/LEN, e.g. {example}")
        return None
    try:
        return ipaddress.IPv4Network(v)
    except ValueError:
        try:
            c.error(path, f"{excerpt(v)} has host bits set; did you mean {ipaddress.IPv4Network(v, strict=False)}?")
        except ValueError:
            c.error(path, f"{excerpt(v)} is not a valid IPv4 network (e.g. {example})")
    return None


def ipv4_address(c, path, v, example='10.10.0.11'):
    if not isinstance(v, str):
        c.error(path, f'expected an IPv4 address like {example}, got {kind(v)}')
        return None
    try:
        return ipaddress.IPv4Address(v)
    except ValueError:
        hint = '; write the address without a prefix length' if '/' in v else f' (e.g. {example})'
        c.error(path, f"{excerpt(v)} is not a valid IPv4 address{hint}")
        return None


def known(names) -> str:
    """'a, b, c' (at most 12) or 'none': the valid choices, for 'not defined' messages."""
    names = sorted(names)
    return ', '.join(names[:12]) + (', ...' if len(names) > 12 else '') if names else 'none'


def mark_str(c, path) -> str:
    """'LINE:COL' of the value at path in the checker's file."""
    return '%d:%d' % c.doc.mark(path)
