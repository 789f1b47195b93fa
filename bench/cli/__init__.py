"""`connbench …` / `python -m connbench …`: one subcommand per harness module.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``main(args) -> int``; modules are imported only when their command runs, so
``connbench list`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import connbench
from connbench.registry import SpecError

# command -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("connbench.cli.listing", "list structures, cells and tasks with their options"),
    "kernels": ("connbench.cli.kernels", "time every structure's recurrent layer (a benchmark)"),
    "train": ("connbench.cli.train", "train one model on one task"),
    "run": ("connbench.cli.run", "run a sweep into the results store"),
    "report": ("connbench.cli.report", "render figures and REPORT.md from the results store"),
    "gate": ("connbench.cli.gate", "the CI timing gate: speed ratios against thresholds"),
    "compare": ("connbench.cli.compare", "compare two result sets trial by trial (before/after)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (a broken or slow module
    cannot break the other commands)."""
    parser = argparse.ArgumentParser(
        prog="connbench",
        description="Does an RNN need full hidden-to-hidden structure? Measure it.",
    )
    parser.add_argument("--version", action="version",
                        version=f"connbench {connbench.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except SpecError as exc:
        print(f"connbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
