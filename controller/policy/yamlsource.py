"""A YAML reader that remembers where every value came from, plus small schema-check helpers.

PyYAML's safe_load loses positions and silently keeps the last of duplicate keys, so we
compose the node tree ourselves, build plain Python values from it and record the
(line, col) of every mapping key and value by *path* -- a tuple of mapping keys and list
indices, e.g. ('links', 1, 0).  Used by the fabric loader and the tenant policy loader.
"""
from __future__ import annotations

import dataclasses
import datetime
import difflib
from typing import Any

import yaml
from yaml import nodes

from controller.policy.errors import Diag, PolicyError

Path = tuple  # of str | int (and other scalar mapping keys)
Mark = tuple  # (line, col), both 1-based

_MAP, _SEQ = 'tag:yaml.org,2002:map', 'tag:yaml.org,2002:seq'
_MERGE = 'tag:yaml.org,2002:merge'
_SCALAR_TAGS = {'tag:yaml.org,2002:' + t for t in ('str', 'int', 'float', 'bool', 'null', 'timestamp', 'binary')}

# Bounds on what one document may cost to read.  A policy file is small and shallow (a
# 1000-workload tenant is ~150 KB, ~20,000 values, 6 levels deep); these stop hostile input --
# deep nesting (libyaml's composer recurses in C: 40,000 levels segfault), alias bombs
# ("billion laughs": a 518-byte file that expands to gigabytes) and huge strings.
MAX_BYTES = 1 << 20             # characters of YAML text
MAX_DEPTH = 32                  # nested mappings/lists
MAX_VALUES = 200_000            # values after aliases are expanded
MAX_STRING = 1024               # characters of one scalar (names are at most 32)
EXCERPT = 40                    # characters of a bad value quoted in a message


def tag_name(tag: str) -> str:
    """'tag:yaml.org,2002:bool' -> '!!bool', as the operator wrote it."""
    return '!!' + tag[len('tag:yaml.org,2002:'):] if tag.startswith('tag:yaml.org,2002:') else excerpt(tag)


def excerpt(v, limit: int = EXCERPT) -> str:
    """repr(v), cut to about `limit` characters: messages never echo a whole hostile value."""
    if isinstance(v, str) and len(v) > limit:
        return repr(v[:limit]) + '...'
    r = repr(v)
    return r if len(r) <= limit + 20 else r[:limit] + '...'


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) <= 80 else text[:77] + '...'


def path_str(path: Path) -> str:
    """('switches', 'leaf1', 'dpid') -> 'switches.leaf1.dpid'; ('links', 1, 0) -> 'links[1][0]'."""
    out = ''
    for p in path:
        p = p if isinstance(p, (int, bool)) or len(str(p)) <= EXCERPT else str(p)[:EXCERPT] + '...'
        out += f'[{p}]' if isinstance(p, int) and not isinstance(p, bool) else (f'.{p}' if out else str(p))
    return out


@dataclasses.dataclass
class YamlDoc:
    file: str
    data: Any                                   # plain dict/list/scalars
    values: dict = dataclasses.field(default_factory=dict)   # path -> Mark of the value
    keys: dict = dataclasses.field(default_factory=dict)     # path -> Mark of the key naming it

    def mark(self, path: Path) -> Mark:
        """Where the value at path starts; for an absent path, its nearest present ancestor."""
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, (1, 1))

    def key_mark(self, path: Path) -> Mark:
        """Where the key naming path[-1] starts (a list item's own position; the value's if absent)."""
        return self.keys.get(path) or self.mark(path)

    def diag(self, path: Path, message: str, key: bool = False) -> Diag:
        line, col = self.key_mark(path) if key else self.mark(path)
        return Diag(self.file, line, col, message)


def _mark(m) -> Mark:
    return (m.line + 1, m.column + 1)


class _Builder:
    """Walks a composed node tree into plain values, recording marks and structural errors."""

    def __init__(self, doc: YamlDoc):
        self.doc, self.diags = doc, []
        self.scalars = yaml.constructor.SafeConstructor()   # resolves 0x101, true, ~ like safe_load
        self.stack: set[int] = set()                        # node ids being walked: catches &a [*a]

    def err(self, node, message):
        self.diags.append(Diag(self.doc.file, *_mark(node.start_mark), message))

    def build(self, node, path: Path):
        self.doc.values[path] = _mark(node.start_mark)
        if id(node) in self.stack:
            self.err(node, 'recursive alias')
            return None
        if isinstance(node, nodes.ScalarNode):
            return self.scalar(node)
        if node.tag not in (_MAP, _SEQ):
            self.err(node, f'unsupported tag {tag_name(node.tag)}')
            return None
        self.stack.add(id(node))
        try:
            if isinstance(node, nodes.SequenceNode):
                return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
            return self.build_mapping(node, path)
        finally:
            self.stack.discard(id(node))

    def scalar(self, node):
        if node.tag not in _SCALAR_TAGS:               # !!set/!!map on a scalar, !foo, !!python/...
            self.err(node, f'unsupported tag {tag_name(node.tag)}')
            return None
        try:
            return self.scalars.construct_object(node)
        except Exception as e:                          # noqa: BLE001 - PyYAML raises anything here
            # !!bool x (KeyError), !!timestamp x (AttributeError), !!int x (ValueError),
            # !!binary x (ConstructorError), 2024-13-01 (ValueError: looks like a date but is not)
            self.err(node, f'invalid {tag_name(node.tag)} value {excerpt(node.value)}'
                           + (f': {_short(e)}' if isinstance(e, ValueError) else ''))
        return None

    def build_mapping(self, node, path: Path) -> dict:
        out, seen = {}, {}
        for knode, vnode in node.value:
            if knode.tag == _MERGE:
                self.err(knode, 'merge keys (<<) are not supported; repeat the keys or use an alias (*name) as a value')
                continue
            if not isinstance(knode, nodes.ScalarNode):
                self.err(knode, 'mapping keys must be plain scalars')
                continue
            key = self.scalar(knode)
            try:
                hash(key)
            except TypeError:
                self.err(knode, 'mapping keys must be plain scalars')
                continue
            if key in seen:
                line, col = seen[key]
                self.err(knode, f'duplicate key {excerpt(key)} (first defined at {line}:{col})')
                continue                  # keep the first: the duplicate is the error
            seen[key] = _mark(knode.start_mark)
            self.doc.keys[path + (key,)] = seen[key]
            out[key] = self.build(vnode, path + (key,))
        return out


def _offset_mark(text: str, offset: int) -> Mark:
    before = text[:offset]
    return (before.count('\n') + 1, offset - (before.rfind('\n') + 1) + 1)


# libyaml's composer keeps the same marks and is ~3x faster (a 1000-workload policy: 0.07 s);
# on a syntax error the pure-Python one reports it, in the wording our messages expect
_LOADER = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)


def _too_big(file: str, m, message: str) -> PolicyError:
    return PolicyError([Diag(file, *_mark(m), message)])


def _check_bounds(text: str, file: str, loader) -> None:
    """Walk the event stream (no recursion, no values built) and refuse a document that is too
    deep, expands to too many values through aliases, or has a huge scalar -- before anything
    is composed.  Raises PolicyError at the first offending place; YAMLError for bad syntax."""
    ev = yaml.events
    open_, anchors, values = [], {}, 0         # open collections' anchors; anchor -> values it expands to
    counts: list[int] = []                      # values inside each open collection
    for e in yaml.parse(text, Loader=loader):
        n = 0
        if isinstance(e, (ev.MappingStartEvent, ev.SequenceStartEvent)):
            if len(open_) >= MAX_DEPTH:
                raise _too_big(file, e.start_mark, f'nested more than {MAX_DEPTH} levels deep')
            if e.anchor:
                anchors[e.anchor] = None        # open: an alias to it now is recursive
            open_.append(e.anchor)
            counts.append(0)
            n = 1
        elif isinstance(e, (ev.MappingEndEvent, ev.SequenceEndEvent)):
            anchor, inside = open_.pop(), counts.pop()
            if anchor:
                anchors[anchor] = inside + 1
            if counts:
                counts[-1] += inside
            continue
        elif isinstance(e, ev.ScalarEvent):
            if len(e.value) > MAX_STRING:
                raise _too_big(file, e.start_mark, f'a value of {len(e.value)} characters (at most {MAX_STRING})')
            if e.anchor:
                anchors[e.anchor] = 1
            n = 1
        elif isinstance(e, ev.AliasEvent):
            if e.anchor in anchors and anchors[e.anchor] is None:
                raise _too_big(file, e.start_mark, f'recursive alias *{excerpt(e.anchor)[1:-1]}')
            n = anchors.get(e.anchor) or 1      # undefined: the composer reports it
            if values + n > MAX_VALUES:
                raise _too_big(file, e.start_mark, f'alias *{excerpt(e.anchor)[1:-1]} expands the document '
                                                   f'to more than {MAX_VALUES} values (aliases are copied)')
        if counts:
            counts[-1] += n
        values += n
        if values > MAX_VALUES:
            raise _too_big(file, e.start_mark, f'more than {MAX_VALUES} values in one document')


def _compose(text: str, file: str, loader):
    _check_bounds(text, file, loader)
    return yaml.compose(text, Loader=loader)


def parse_yaml(text: str, file: str) -> YamlDoc:
    """Parse one YAML document; raise PolicyError on syntax errors, duplicate keys and
    documents beyond the bounds above (each at its FILE:LINE:COL)."""
    doc = YamlDoc(file, None)
    if len(text) > MAX_BYTES:
        raise PolicyError([Diag(file, *_offset_mark(text, MAX_BYTES),
                                f'document too large: {len(text)} characters (at most {MAX_BYTES})')])
    try:
        try:
            root = _compose(text, file, _LOADER)
        except yaml.MarkedYAMLError:
            root = _compose(text, file, yaml.SafeLoader)   # re-raises with PyYAML's wording
    except yaml.MarkedYAMLError as e:
        m = e.problem_mark or e.context_mark
        where = _mark(m) if m else (1, 1)
        msg = e.problem or e.context or 'invalid YAML'
        if e.context and e.context_mark and e.problem:
            at = '%d:%d' % _mark(e.context_mark)
            # PyYAML phrases some errors as context + "but found ..."; keep them readable.
            msg = (f'{e.context} (at {at}), {e.problem}' if e.problem.startswith('but ')
                   else f'{e.problem} ({e.context} at {at})')
        raise PolicyError([Diag(file, *where, f'YAML syntax error: {_short_msg(msg)}')]) from None
    except yaml.reader.ReaderError as e:                 # e.g. a control character in the text
        raise PolicyError([Diag(file, *_offset_mark(text, e.position), f'YAML syntax error: {e.reason}')]) from None
    if root is None:                                     # empty file or only comments
        return doc
    b = _Builder(doc)
    doc.data = b.build(root, ())
    if b.diags:
        raise PolicyError(b.diags)
    return doc


def _short_msg(msg: str) -> str:
    """PyYAML quotes the offending token (an alias or tag name can be long): keep it short."""
    return msg if len(msg) <= 200 else msg[:197] + '...'


def load_yaml(path) -> YamlDoc:
    """Read and parse a YAML file; an unreadable or non-UTF-8 file is a PolicyError too."""
    file = str(path)
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as e:
        raise PolicyError([Diag(file, 1, 1, f'cannot read: {e.strerror or e}')]) from None
    try:
        text = raw.decode('utf-8-sig')
    except UnicodeDecodeError as e:
        head = raw[:e.start].decode('utf-8', 'replace')
        raise PolicyError([Diag(file, *_offset_mark(head, len(head)), 'cannot read: not UTF-8 text')]) from None
    return parse_yaml(text, file)


# --- schema helpers: each records a Diag and returns None when the value is unusable ----------

def kind(v) -> str:
    """An operator's name for a YAML value's type, with the value when it is short."""
    name = {type(None): 'null', bool: 'boolean', int: 'integer', float: 'number', str: 'string',
            list: 'list', dict: 'mapping', bytes: 'binary', datetime.date: 'date',
            datetime.datetime: 'timestamp'}.get(type(v), type(v).__name__)
    if isinstance(v, bool):
        return f'boolean {str(v).lower()}'       # as YAML spells it
    if isinstance(v, str):
        return f'{name} {excerpt(v)}'
    if isinstance(v, (int, float, datetime.date)) and len(repr(v)) <= 40:
        return f'{name} {v}'
    return name


class Checker:
    """Collects Diags against one YamlDoc so a loader can report every problem at once."""

    def __init__(self, doc: YamlDoc):
        self.doc, self.diags = doc, []

    def error(self, path: Path, message: str, at: Path | None = None, key: bool = False) -> None:
        """Report `path: message` at the value (or key, if key=True) found at `at` (default: path)."""
        prefix = f'{path_str(path)}: ' if path else ''
        self.diags.append(self.doc.diag(path if at is None else at, prefix + message, key=key))

    def raise_if_errors(self) -> None:
        if self.diags:
            raise PolicyError(self.diags)

    def mapping(self, path: Path, value, allowed, required=()) -> dict | None:
        """A mapping with only `allowed` keys and every `required` one; null counts as empty."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.error(path, f'expected a mapping, got {kind(value)}')
            return None
        for k in value:
            if k not in allowed:
                close = difflib.get_close_matches(str(k)[:64], allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ''
                self.error(path, f"unknown key {excerpt(k)} (allowed: {', '.join(sorted(allowed))}){hint}",
                           at=path + (k,), key=True)
        for k in required:
            if k not in value:
                self.error(path, f'missing required key {k!r}', key=True)
        return value

    def sequence(self, path: Path, value) -> list | None:
        """A list; null counts as empty."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f'expected a list, got {kind(value)}')
            return None
        return value

    def string(self, path: Path, value) -> str | None:
        if not isinstance(value, str):
            self.error(path, f'expected a string, got {kind(value)}')
            return None
        return value

    def integer(self, path: Path, value, lo: int, hi: int, fmt=str) -> int | None:
        """An int in lo..hi (a YAML boolean is not an int, whatever Python thinks)."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f'expected an integer in {fmt(lo)}..{fmt(hi)}, got {kind(value)}')
            return None
        if not lo <= value <= hi:
            self.error(path, f'{fmt(value)} is out of range {fmt(lo)}..{fmt(hi)}')
            return None
        return value
