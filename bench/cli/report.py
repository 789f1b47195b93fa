"""`connbench report SWEEP`: figures and REPORT.md from the results store."""

from __future__ import annotations

import argparse
import json
import sys

from connbench.report import render_report, sweep_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="SWEEP",
                        help="sweep name (or path to its TOML file) whose results to report")
    parser.add_argument("--results", default="results", metavar="DIR",
                        help="results directory (default: results)")
    parser.add_argument("--out", default="reports", metavar="DIR",
                        help="reports directory; writes DIR/SWEEP/ (default: reports)")
    parser.add_argument("--dpi", type=int, default=None,
                        help="figure resolution in dots per inch (default: 110)")
    parser.add_argument("--json", action="store_true",
                        help="print what was written as one JSON object")
    parser.add_argument("--no-matrices", action="store_true",
                        help="skip figure 7 and the butterfly check (no torch import)")


def main(args: argparse.Namespace) -> int:
    from connbench.report.data import NoResultsError, load_results

    sweep = sweep_name(args.sweep)
    try:
        df = load_results(args.results, sweep)
    except NoResultsError as exc:
        print(f"connbench report: {exc}", file=sys.stderr)
        return 1
    report = render_report(df, sweep, args.out, dpi=args.dpi, matrices=not args.no_matrices)
    figures = sorted(str(p) for p in (report.parent / "figures").glob("*.png"))
    if args.json:
        print(json.dumps({"sweep": sweep, "rows": len(df), "report": str(report),
                          "html": str(report.with_suffix(".html")), "figures": figures}))
    else:
        print(f"connbench report {sweep}: {len(df):,} rows -> {report}, "
              f"{report.with_suffix('.html').name} and {len(figures)} figures")
    return 0
