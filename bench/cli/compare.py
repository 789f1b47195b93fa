"""`connbench compare BASE NEW`: every matched measurement of two result sets, NEW/BASE.

BASE and NEW are results folders (``results/default@before``) or names under
``--results`` (``default@before``). See ``connbench.results.compare`` for the matching
and the test, and docs/compare.md for the before/after workflow.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", metavar="BASE", help="the 'before' result set")
    parser.add_argument("new", metavar="NEW", help="the 'after' result set")
    parser.add_argument("--results", default="results", metavar="DIR",
                        help="where names are looked up (default: results)")
    parser.add_argument("--fail-on", type=float, default=None, metavar="PCT",
                        help="exit 1 if any measurement is significantly worse by more than "
                        "PCT percent (p < 0.05)")
    parser.add_argument("--kind", choices=("speed", "memory", "train"), default=None,
                        help="only this kind of measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    from connbench.registry import SpecError
    from connbench.results.compare import ALPHA, compare, load_set, table

    if args.fail_on is not None and not args.fail_on >= 0:
        raise SpecError(f"--fail-on {args.fail_on}: must be a percentage >= 0")
    base, new = load_set(args.base, args.results), load_set(args.new, args.results)
    if args.kind:
        base, new = base[base["kind"] == args.kind], new[new["kind"] == args.kind]
    comp = compare(base, new)
    failed = comp.regressions(args.fail_on) if args.fail_on is not None else []
    code = 1 if failed else 0
    if args.json:
        print(json.dumps({"base": args.base, "new": args.new, "fail_on": args.fail_on,
                          "regressions": len(failed), "exit": code, **comp.to_dict()}))
        return code
    print(table(comp, args.fail_on))
    worse = sum(c.significant and c.worse_pct > 0 for c in comp.changes)
    better = sum(c.significant and c.worse_pct < 0 for c in comp.changes)
    unmatched = ""
    if comp.only_base or comp.only_new:
        unmatched = f"; unmatched: {comp.only_base} only in BASE, {comp.only_new} only in NEW"
    gate = ""
    if args.fail_on is not None:
        gate = (f"; {len(failed)} significant regression(s) beyond {args.fail_on:g}%"
                if failed else f"; no significant regression beyond {args.fail_on:g}%")
    print(f"connbench compare {args.base} {args.new}: {len(comp.changes)} matched, "
          f"{worse} significantly worse, {better} significantly better "
          f"(Mann-Whitney p < {ALPHA}){unmatched}{gate}", file=sys.stderr)
    return code
