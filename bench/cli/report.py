"""`connbench report SWEEP`: figures and REPORT.md from the results store."""

from __future__ import annotations

import argparse
import sys

from connbench.cli.args import bounded_int, non_empty_path
from connbench.report import render_report, sweep_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="SWEEP",
                        help="sweep name (or path to its TOML file) whose results to report")
    parser.add_argument("--results", default="results", metavar="DIR", type=non_empty_path,
                        help="results directory (default: results)")
    parser.add_argument("--out", default="reports", metavar="DIR", type=non_empty_path,
                        help="reports directory; writes DIR/SWEEP/ (default: reports)")
    parser.add_argument("--dpi", type=bounded_int(10, 1200), default=None,
                        help="figure resolution in dots per inch (default: 110)")
    parser.add_argument("--no-matrices", action="store_true",
                        help="skip figure 7 and the butterfly check (no torch import)")


def main(args: argparse.Namespace) -> int:
    from connbench.report.data import NoResultsError, load_results
    from connbench.results import catalogue

    sweep = sweep_name(args.sweep)
    try:
        df = load_results(args.results, sweep)
    except NoResultsError as exc:
        print(f"connbench report: {exc}", file=sys.stderr)
        return 1
    from connbench.report import completeness

    found = completeness.check(args.results, sweep, df)
    df = completeness.own_trials(df, found)
    if df.empty:
        print(f"connbench report: every trial in {args.results}/{sweep} was recorded under "
              f"other settings than the last run ({found.expected.command}); run it to "
              "completion first", file=sys.stderr)
        return 1
    report = render_report(df, sweep, args.out, dpi=args.dpi, matrices=not args.no_matrices,
                           preface=found.markdown(),
                           catalogue=catalogue.read(args.results, sweep))
    print(f"wrote {report} and {report.parent / 'figures'}/")
    note = found.summary()
    if note:
        print(f"connbench report {sweep}: {note}", file=sys.stderr)
    return 0 if found.complete else 1
