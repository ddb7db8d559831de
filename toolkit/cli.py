"""The ``toolkit`` command: a thin shell over the library.

Each subcommand parses plain values, calls one library function and prints its
result. A ``ToolkitError`` becomes one line on stderr and its exit code; Ctrl-C
exits 130 after whatever finished has been written.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from toolkit.errors import ToolkitError

Command = Callable[[argparse.Namespace], int]


def _cmd_plugins(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from toolkit.plugins import get_registry

    registry = get_registry()
    table = Table(title="pruners", title_justify="left")
    for col in ("name", "backend", "kind", "distribution", "description"):
        table.add_column(col)
    for name in registry.list(args.pattern):
        reg = registry.pruners[name]
        table.add_row(name, reg.spec.backend, reg.spec.kind, reg.distribution, reg.spec.description)
    console = Console(width=max(100, Console().width))
    console.print(table)
    for broken in registry.broken:
        console.print(f"[red]broken plugin[/red] {broken.plugin} ({broken.distribution}): {broken.error}")
        if args.verbose and broken.detail:
            console.print(broken.detail, markup=False)
    return 0


def _add_plugins(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list installed pruner plugins", description="List every pruner that installed plugins offer, and plugins that failed to load.")
    p.add_argument("pattern", nargs="?", help="only names matching this glob, e.g. 'l*'")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of broken plugins")
    p.set_defaults(func=_cmd_plugins)


def _subcommand_adders() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Every subcommand, in the order ``--help`` lists them."""
    return [_add_plugins]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toolkit",
        description="Train, prune and fine-tune segmentation models for defect inspection, and compare pruning methods.",
    )
    from toolkit import __version__

    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _subcommand_adders():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ToolkitError as exc:
        print(f"toolkit {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"toolkit {args.command}: interrupted; finished work is saved", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
