"""`connbench …` / `python -m connbench …`: one subcommand per harness module.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``main(args) -> int``; modules are imported only when their command runs, so
``connbench list`` stays fast. ``--plugin MODULE`` (repeatable, any command) loads a
plugin before the command's module is even imported (see ``connbench.plugins``).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from connbench.registry import SpecError

# command -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("connbench.cli.listing", "list structures, cells and tasks with their options"),
    "kernels": ("connbench.cli.kernels", "time every structure's recurrent layer (a benchmark)"),
    "train": ("connbench.cli.train", "train one model on one task"),
    "run": ("connbench.cli.run", "run a sweep into the results store"),
    "report": ("connbench.cli.report", "render figures and REPORT.md from the results store"),
    "gate": ("connbench.cli.gate", "the CI timing gate: speed ratios against thresholds"),
    "check": ("connbench.cli.check", "check that a structure keeps the contract (plugins too)"),
}


def _add_plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first: it registers structures, cells or tasks "
                        "(repeatable; also CONNBENCH_PLUGINS and entry points)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line: ``connbench CMD: error: ...``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (a broken or slow module
    cannot break the other commands)."""
    parser = _Parser(
        prog="connbench",
        description="Does an RNN need full hidden-to-hidden structure? Measure it.",
    )
    _add_plugin_option(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        _add_plugin_option(p)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    pre = argparse.ArgumentParser(add_help=False)
    _add_plugin_option(pre)
    early, rest = pre.parse_known_args(argv)
    try:  # before any command module is imported: plugins may add names it lists
        from connbench import plugins

        plugins.load(early.plugin)
    except SpecError as exc:
        print(f"connbench: error: {exc}", file=sys.stderr)
        return 2
    command = next((a for a in rest if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a bad argument already printed in one line
        return exc.code if isinstance(exc.code, int) else 2
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
    except BrokenPipeError:
        return _broken_pipe()
    except OSError as exc:  # disk full, unwritable or missing paths: one line, no traceback
        print(f"connbench {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2


def os_error_line(exc: OSError) -> str:
    """``reason: path`` of a resource error, plus how to go on where it matters."""
    where = f": {exc.filename}" if exc.filename else ""
    line = f"{exc.strerror or exc}{where}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        line += "; free some space and rerun the same command (finished work is kept)"
    return line


def _broken_pipe() -> int:
    # `connbench list | head -1`: the reader left; say nothing. Point stdout at devnull
    # so that the interpreter's final flush does not raise again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a command killed by the pipe


if __name__ == "__main__":
    sys.exit(main())
