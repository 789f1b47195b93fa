"""`connbench gate`: the CI timing gate on in-run speed ratios (see connbench.perf.gate)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

from connbench.cli.args import fraction, positive_int
from connbench.perf.gate import (
    DEFAULT_THRESHOLDS,
    DOCS,
    SLOW_ENV,
    dump,
    evaluate,
    format_table,
    load,
    machine,
    measure,
    pooled,
    proposal,
    slow_names,
)
from connbench.registry import SpecError


# -- command line ----------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--thresholds", default=str(DEFAULT_THRESHOLDS), metavar="TOML",
                   help="committed thresholds and settings (default: %(default)s)")
    p.add_argument("--rounds", type=positive_int, default=None,
                   help="override the number of interleaved rounds (more: less noise)")
    p.add_argument("--slow", action="append", default=[], metavar="NAME",
                   help=f"force structure NAME through the dense-every-step slow path "
                        f"(repeatable; also ${SLOW_ENV}=a,b)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (the table goes to stderr)")
    p.add_argument("--propose", metavar="PATH",
                   help="write thresholds derived from this measurement to PATH "
                        "(min = fraction × measured); never fails")
    p.add_argument("--from", dest="from_", nargs="+", metavar="JSON", default=None,
                   help="with --propose: pool the rounds of earlier --json outputs "
                        "instead of measuring now")
    p.add_argument("--fraction", type=fraction, default=None,
                   help="with --propose: min as a fraction of the measured ratio "
                        "(default: the file's [gate] fraction)")


def main(args: argparse.Namespace) -> int:
    try:
        try:
            gate = load(args.thresholds)
        except UnicodeDecodeError:
            raise SpecError(f"thresholds file {args.thresholds!r} is not UTF-8 text; "
                            "it is a TOML file") from None
        slow = slow_names(args.slow)
        if args.rounds is not None and args.rounds < 1:
            raise SpecError(f"--rounds={args.rounds} must be at least 1")
        if args.fraction is not None and not 0.0 < args.fraction <= 1.0:
            raise SpecError(f"--fraction={args.fraction} must be in (0, 1]")
        if args.propose and slow:
            raise SpecError(f"refusing to propose thresholds with the slow switch on "
                            f"({sorted(slow)}); unset ${SLOW_ENV} and --slow")
        if args.from_ and not args.propose:
            raise SpecError("--from is only used with --propose")
        m = pooled(args.from_, gate.settings) if args.from_ else None
    except SpecError as e:
        print(f"connbench.perf.gate: {e}", file=sys.stderr)
        return 2
    info = machine()
    print(f"connbench.perf.gate: {len(gate.ratios)} ratios from {gate.source}; {info['cpu']}, "
          f"{info['cores']} cores, torch {info['torch']}, load {info.get('loadavg')}"
          + (f"; SLOW: {sorted(slow)}" if slow else ""), file=sys.stderr, flush=True)
    if m is None:
        m = measure(gate, slow, args.rounds)
    source = (f"{len(args.from_)} pooled runs ({m.settings.rounds} rounds)" if args.from_
              else f"{m.settings.rounds} rounds, load {info.get('loadavg')}")
    rows = evaluate(gate.ratios, m.per_round)
    table = format_table(rows, m.settings)
    failed = any(r.failed for r in rows)
    if args.propose:
        new = proposal(gate, m, args.fraction)
        header = (f"connbench timing-gate thresholds. Proposed by `python -m connbench gate "
                  f"--propose` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
                  f"({info['cpu']}, {info['cores']} cores, torch {info['torch']}) from "
                  f"{source}.\n"
                  f"min = fraction × typical; review the diff before committing "
                  f"(see {DOCS}).")
        Path(args.propose).write_text(dump(new, header))
        print(f"connbench gate: proposed thresholds written to {args.propose}",
              file=sys.stderr)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(_nan_to_none({
            "passed": not failed,
            "settings": asdict(m.settings),
            "machine": info,
            "slow": m.slow,
            "elapsed_s": round(m.elapsed_s, 2),
            "us_per_step": {k: round(v, 2) for k, v in m.us_per_step.items()},
            "us_per_step_rounds": {k: [round(x, 2) for x in v] for k, v in m.us_rounds.items()},
            "ratios": [{**asdict(r), "failed": r.failed,
                        "per_round": m.per_round.get((r.subject, r.baseline, r.hidden))}
                       for r in rows],
        })))
    else:
        if m.us_per_step:
            times = "  ".join(f"{k} {v:,.0f}" for k, v in m.us_per_step.items())
            print(f"µs per step (median): {times}", file=sys.stderr)
        print(table)
    print(f"connbench.perf.gate: {'FAIL' if failed else 'PASS'} ({source}) in {m.elapsed_s:.0f} s",
          file=sys.stderr)
    if args.propose:
        return 0
    return 1 if failed else 0


def _nan_to_none(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="connbench gate", description=__doc__.split("\n")[0])
    add_arguments(p)
    return main(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
