"""`connbench …` / `python -m bench …`: one subcommand per harness module.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``main(args) -> int``; modules are imported only when their command runs, so
``connbench list`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bench.registry import SpecError

# command -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("bench.listing", "list structures, cells and tasks with their options"),
    "kernels": ("bench.kernels", "time every structure's recurrent layer (a benchmark)"),
    "train": ("bench.train", "train one model on one task"),
    "run": ("bench.run", "run a sweep into the results store"),
    "report": ("bench.report", "render figures and REPORT.md from the results store"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connbench",
        description="Does an RNN need full hidden-to-hidden connectivity? Measure it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as exc:  # a command whose module is missing
            if exc.name != module:
                raise
            p.set_defaults(_missing=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"connbench {args.command}: not available in this build", file=sys.stderr)
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
