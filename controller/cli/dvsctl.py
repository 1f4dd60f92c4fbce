"""dvsctl: the operator's client.  Subcommands live in COMMANDS; add one with @command."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from controller.policy.errors import Diag, PolicyError
from controller.policy.fabric import build_fabric
from controller.policy.tenant import build_tenant, check_tenants, is_tenant_doc
from controller.policy.yamlsource import load_yaml

# name -> (help, add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {}


def command(name: str, help: str, arguments: Callable = lambda p: None):
    """Register `run(args) -> int` as subcommand `name`; `arguments` adds its argparse options."""
    def register(run):
        COMMANDS[name] = (help, arguments, run)
        return run
    return register


def _load(path):
    """-> ('tenant' | 'fabric', model or None, [Diag]) for one file.  A broken tenant file
    still gives what of it is valid (PolicyError.partial), for the checks across files."""
    try:
        doc = load_yaml(path)
    except PolicyError as e:
        return None, None, e.diags
    try:
        if is_tenant_doc(doc):
            return 'tenant', build_tenant(doc), []
        return 'fabric', build_fabric(doc), []
    except PolicyError as e:
        return ('tenant', e.partial, e.diags) if is_tenant_doc(doc) else (None, None, e.diags)


def validate_file(path) -> list[Diag]:
    """Every problem in one policy file on its own (empty when it is valid)."""
    return _load(path)[2]


def validate_files(files, fabric_path=None) -> dict[str, list[Diag]]:
    """file -> its problems, including the cross-file ones: the tenant files are checked
    together, and against the fabric (`fabric_path`, else the one fabric among `files`)."""
    results = {str(f): _load(f) for f in files}
    out = {f: diags for f, (_, _, diags) in results.items()}
    fabrics = [m for kind, m, _ in results.values() if kind == 'fabric' and m is not None]
    fabric = fabrics[0] if len(fabrics) == 1 else None
    if fabric_path is not None:
        key = str(fabric_path)
        kind, fabric, diags = results[key] if key in results else _load(fabric_path)
        if kind == 'tenant':
            fabric, diags = None, [Diag(key, 1, 1, '--fabric: this is a tenant policy, not a fabric')]
        elif key in results:
            diags = []                  # already reported as one of `files`
        if diags:
            out[key] = out.get(key, []) + diags
    tenants = [m for kind, m, _ in results.values() if kind == 'tenant' and m is not None]
    try:
        check_tenants(fabric, tenants)
    except PolicyError as e:
        for d in e.diags:
            out.setdefault(d.file, []).append(d)
    return out


def _validate_arguments(p):
    p.add_argument('files', nargs='+', metavar='FILE')
    p.add_argument('--fabric', metavar='FABRIC',
                   help='check the tenant files against this fabric (default: the one fabric among FILE...)')


@command('validate', 'check fabric/tenant YAML files; print FILE:LINE:COL errors', _validate_arguments)
def cmd_validate(args) -> int:
    results = validate_files(dict.fromkeys(args.files), args.fabric)   # each file once, in order
    failed = False
    for f, diags in results.items():
        for d in sorted(diags):
            print(d, file=sys.stderr)
        if diags:
            failed = True
        elif f in args.files:
            print(f'{f}: ok')
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    import controller.cli.remote  # noqa: F401  (registers apply, delete, show)
    import controller.cli.trace  # noqa: F401  (registers trace)
    import controller.cli.events  # noqa: F401  (registers events)
    import controller.cli.web  # noqa: F401  (registers view)
    parser = argparse.ArgumentParser(prog='dvsctl', description='opendvs control client')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, (help, arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == '__main__':
    sys.exit(main())

