"""`connbench run SWEEP`: run a sweep's trials into the results store (see connbench.run)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from connbench.cli.args import non_empty_path, positive_int
from connbench.registry import SpecError
from connbench.run.runner import Runner, check_structures, run_lookback


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="a shipped sweep name (smoke, default, paper, trask, "
                        "lookback) or the path of a TOML file")
    parser.add_argument("--results", default="results", metavar="DIR", type=non_empty_path,
                        help="results directory; rows go to DIR/<sweep>/ (default: results)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a sweep axis, e.g. "
                        "--set hidden=[128,512] --set seeds=[0,1] (repeatable)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N",
                        help="local executor: N processes for train cells (default 1: "
                        "in-process)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where cells run (default: local)")
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="ray: address of a running cluster (default: start a local "
                        "Ray instance)")
    parser.add_argument("--force", action="store_true",
                        help="redo trials already finished (failed ones are retried anyway)")
    parser.add_argument("--wait", action="store_true",
                        help="when another run holds this sweep's results, wait for it "
                        "instead of refusing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="record impossible cells as skipped instead of refusing the sweep")


def main(args: argparse.Namespace) -> int:
    if args.address and args.executor != "ray":
        raise SpecError("--address needs --executor ray")
    if args.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SpecError("--executor ray: ray is not installed; "
                            "pip install 'connbench[ray]'") from None

    from connbench.plan.sweep import load_sweep
    from connbench.results import catalogue, store
    from connbench.run.catalogue import build as build_catalogue

    sweep = load_sweep(args.sweep, overrides=tuple(args.overrides),
                       skip_invalid=args.skip_invalid)
    cells = list(sweep.trials)
    skipped = list(sweep.skipped)
    if not cells and not skipped:
        raise SpecError(f"sweep {sweep.name!r} has no cells; check its axes and excludes")
    if args.executor == "local":  # a Ray cluster's workers may have what this machine lacks
        from connbench.plan import resources

        resources.check_devices(c.device for c in cells)
        resources.check_threads(cells)
        resources.check_memory(cells, sweep.resolver)
    check_structures(cells)
    results = Path(args.results)
    target = store.check_writable(results, sweep.name)
    # what the report needs from the registries (styles, task sizes), beside the rows
    catalogue.write(results, sweep.name, build_catalogue(t.task_spec for t in cells))
    from connbench.run.lock import RunLock, waiting_message

    with RunLock(target, wait=args.wait, command=_command(args), on_wait=waiting_message):
        return _run(args, sweep, cells, skipped, results)


def _command(args: argparse.Namespace) -> str:
    """The command line that runs (and completes) this sweep again."""
    argv = ["connbench", "run", args.sweep, "--results", args.results]
    for item in args.overrides:
        argv += ["--set", item]
    if args.skip_invalid:
        argv.append("--skip-invalid")
    if args.executor != "local":
        argv += ["--executor", args.executor]
    return shlex.join(argv)


def _run(args, sweep, cells, skipped, results: Path) -> int:
    from connbench.results import expected
    lookback = getattr(sweep, "lookback", None)
    search = ["train"] if lookback else []
    expected.write(results / sweep.name, expected.Expected(
        sweep.name, _command(args),
        [c.trial_id for c in cells if c.kind not in search],
        [trial.trial_id for trial, _ in skipped], search))
    runner = Runner(
        results=results,
        sweep_name=sweep.name,
        executor=args.executor,
        workers=args.workers,
        address=args.address,
        force=args.force,
        quiet=args.quiet,
    )
    t0 = time.perf_counter()
    if lookback:
        counts = run_lookback(runner, sweep, lookback)
    else:
        counts = runner.run(cells, skipped)
    unfinished = counts.get("failed", 0) + counts.get("lost", 0)
    # Failures are reported even with --quiet: the last line says how many and what next.
    if not args.quiet or unfinished:
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if n) or "nothing"
        tail = (f"; {unfinished} trial(s) did not finish: rerun `{_command(args)}` to retry "
                "them" if unfinished else "")
        print(f"connbench run {sweep.name}: {summary} in {time.perf_counter() - t0:.0f} s "
              f"-> {results / sweep.name}{tail}", file=sys.stderr)
    return 1 if unfinished else 0
