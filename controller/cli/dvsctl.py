"""dvsctl: the operator's client.  Subcommands live in COMMANDS; add one with @command."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from controller.policy.errors import Diag, PolicyError
from controller.policy.fabric import build_fabric
from controller.policy.yamlsource import load_yaml

# name -> (help, add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {}


def command(name: str, help: str, arguments: Callable = lambda p: None):
    """Register `run(args) -> int` as subcommand `name`; `arguments` adds its argparse options."""
    def register(run):
        COMMANDS[name] = (help, arguments, run)
        return run
    return register


def validate_file(path) -> list[Diag]:
    """Every problem in one policy file (empty when it is valid)."""
    try:
        doc = load_yaml(path)
        if isinstance(doc.data, dict) and 'tenant' in doc.data:
            return [Diag(str(path), 1, 1, 'tenant policies are not supported by this version')]
        build_fabric(doc)
    except PolicyError as e:
        return e.diags
    return []


@command('validate', 'check fabric/tenant YAML files; print FILE:LINE:COL errors',
         lambda p: p.add_argument('files', nargs='+', metavar='FILE'))
def cmd_validate(args) -> int:
    failed = False
    for f in args.files:
        diags = validate_file(f)
        for d in diags:
            print(d, file=sys.stderr)
        if diags:
            failed = True
        else:
            print(f'{f}: ok')
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
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
