"""`connbench check SPEC`: does a structure keep the contract? (see connbench.nn.contract)

    connbench check SPEC [--hidden H] [--cell C ...]

Prints one line per problem and exits 1, or says that the structure keeps the
contract and exits 0. Plugins load first (``--plugin``), so a plugin's structure is
checked like a shipped one.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="a structure spec, e.g. banded:width=5")
    parser.add_argument("--hidden", type=int, default=None, metavar="H",
                        help="hidden size to check at (default: the size registered with "
                        "the structure)")
    parser.add_argument("--cell", action="append", default=None, metavar="C",
                        help="check in this cell only (repeatable; default: every cell)")


def main(args: argparse.Namespace) -> int:
    from connbench.nn import cells
    from connbench.nn.contract import check_structure, contract_size

    for cell in args.cell or []:
        cells.CELLS.get(cell)  # SpecError with a did-you-mean
    hidden = args.hidden if args.hidden is not None else contract_size(args.spec)
    problems = check_structure(args.spec, hidden, cells=args.cell)
    where = f"{args.spec} at hidden={hidden}"
    if problems:
        print(f"connbench check: {where} breaks the contract:", file=sys.stderr)
        for line in problems:
            print(f"  - {line}", file=sys.stderr)
        return 1
    print(f"{where}: ok (forward and gradients match dense(), accounting sane, "
          f"runs in {', '.join(args.cell or cells.names())})")
    return 0
