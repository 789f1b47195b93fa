"""`make perf`: run the pytest-benchmark suite, save it, compare with this machine's last run.

Saved runs live under ``.benchmarks/<fingerprint>/<python-id>/NNNN_*.json`` where the
fingerprint is CPU/GPU model, cores, torch threads and torch version
(``connbench.perf.gate.fingerprint``): absolute times are only ever compared within one
fingerprint. When a saved run exists the new one is compared with the latest one with
``--benchmark-compare-fail=median:<fail>%``. A run that fails (a regression or an
error) is renamed ``rejected-NNNN_*.json``, so it never becomes the baseline; a run
with extra pytest arguments (``-k …``) is compared but not saved.

    python benchmarks/perf.py                   # run, save, compare if possible
    python benchmarks/perf.py --fail 25         # stricter (default 50 %)
    python benchmarks/perf.py --baseline 0001   # compare with saved run 0001
    python benchmarks/perf.py -k H128           # extra args go to pytest; not saved

Environment: CONNBENCH_THREADS (default 1) sets torch threads for the suite.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_FAIL = 50  # per cent on the median; same-machine noise is 10–35 % (measured)


def saved_runs(storage: Path) -> list[Path]:
    return sorted(storage.glob("*/[0-9][0-9][0-9][0-9]_*.json"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/perf.py", description=__doc__.split("\n")[0])
    p.add_argument("--fail", type=int, default=DEFAULT_FAIL, metavar="PCT",
                   help="fail when a median is this many per cent slower (default %(default)s)")
    p.add_argument("--baseline", metavar="NUM",
                   help="compare with saved run NUM instead of the latest")
    p.add_argument("--no-compare", action="store_true", help="only run and save")
    p.add_argument("--storage", default=str(ROOT / ".benchmarks"),
                   help="root of the saved runs (default %(default)s)")
    args, pytest_args = p.parse_known_args(argv)

    os.environ.setdefault("CONNBENCH_THREADS", "1")
    import pytest
    import torch

    from connbench.perf.gate import fingerprint
    from connbench.results.environment import machine

    torch.set_num_threads(int(os.environ["CONNBENCH_THREADS"]))
    fp = fingerprint(machine())
    storage = Path(args.storage) / fp
    before = set(saved_runs(storage))
    cmd = [str(ROOT / "benchmarks"), f"--rootdir={ROOT}",
           f"--benchmark-storage=file://{storage}",
           "--benchmark-columns=min,median,iqr,rounds", "--benchmark-sort=fullname"]
    if pytest_args:  # a partial or tweaked run (-k …) is compared, never saved
        print("perf: extra pytest arguments given: this run is not saved")
    else:
        cmd.append("--benchmark-autosave")
    if before and not args.no_compare:
        cmd += ["--benchmark-compare" + (f"={args.baseline}" if args.baseline else ""),
                f"--benchmark-compare-fail=median:{args.fail:g}%"]
        print(f"perf: comparing with {'run ' + args.baseline if args.baseline else 'the latest'}"
              f" of {len(before)} saved run(s) for {fp} (fail at median +{args.fail:g} %)")
    else:
        print(f"perf: no comparison ({'--no-compare' if before else 'no saved run for ' + fp})"
              + ("" if pytest_args else "; this run becomes the baseline"))
    try:
        rc = int(pytest.main(cmd + pytest_args))
    except Exception as e:  # PerformanceRegression escapes pytest's terminal summary
        print(f"perf: {type(e).__name__}: {e}")
        rc = 1
    new = sorted(set(saved_runs(storage)) - before)
    if rc != 0:
        for f in new:
            f.rename(f.with_name("rejected-" + f.name))
            print(f"perf: failed run kept as {f.with_name('rejected-' + f.name)} "
                  f"(not a baseline)")
    elif new:
        print(f"perf: saved {new[-1]}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
