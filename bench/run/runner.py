"""`connbench run SWEEP`: run a sweep's cells into the results store.

    connbench run SWEEP [--results DIR] [--set KEY=VALUE ...] [--workers N]
                        [--executor local|ray] [--address ADDR] [--force] [--quiet]
                        [--skip-invalid]

Everything that can be wrong with the input (the TOML, names, options, sizes, an empty
sweep, an unwritable results directory) is checked before the first cell runs.

Executors:

* ``local`` (default): speed and memory cells run first, one at a time, with nothing
  else running; then the train cells, in this process or, with ``--workers N``, in a
  pool of N spawned processes (each with ``cpu_count // N`` torch threads).
* ``ray``: every cell is a Ray task (see ``connbench.run.ray``).

In both, the driver (this process) writes each finished cell's rows as one atomic
part file named by its cell id, so a rerun skips finished cells and ``--force`` redoes
them. A cell that raises is recorded as ``failed`` with its message and the sweep
goes on.

A sweep with a ``[lookback]`` table is run as a search instead of a grid: for each
of its base cells the task's length option is doubled until training fails and the
boundary is then bisected; every trained length is a train cell of its own (see
``run_lookback``).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from connbench.plan.sweep import Trial
from connbench.procs import die_with_parent

RowsCallback = Callable[[Trial, list[dict]], None]


# --------------------------------------------------------------------------- CLI


# --------------------------------------------------------------------------- store glue
def write_rows(results: Path, sweep_name: str, trial_id: str, rows: list[dict]) -> None:
    """Persist one cell's rows atomically (the store's per-cell parquet file)."""
    from connbench.results import store

    store.write_trial(results, sweep_name, trial_id, rows)


def done_ids(results: Path, sweep_name: str) -> set[str]:
    from connbench.results import store

    return set(store.done_ids(results, sweep_name))


def trial_status(rows: list[dict]) -> str:
    """The cell's overall status: its worst row status."""
    statuses = {r.get("status") for r in rows if r.get("step") is None} or {"ok"}
    for s in ("failed", "diverged", "skipped"):
        if s in statuses:
            return s
    return "ok"


# --------------------------------------------------------------------------- contract
def check_structures(trials: Iterable[Trial]) -> None:
    """Refuse (SpecError) a sweep with a structure that breaks the contract.

    Runs ``connbench.nn.contract.check_structure`` once per structure spec, in the
    cells the sweep uses it with, at a small size: the size registered with the
    structure or a multiple of it, else the smallest size the sweep gives it. Cheap
    (well under a second for the ten shipped structures); it catches a plugin whose
    fast path disagrees with its ``dense()`` before a single row is recorded.
    """
    from connbench.nn.contract import check_structure, contract_size
    from connbench.nn.structures import check
    from connbench.registry import SpecError

    uses: dict[str, tuple[set[str], set[int]]] = {}
    for t in trials:
        cells, sizes = uses.setdefault(t.structure_spec, (set(), set()))
        cells.add(t.cell)
        sizes.add(t.hidden)
    problems: list[str] = []
    for spec, (cells, sizes) in uses.items():
        base = contract_size(spec)
        for hidden in [base * k for k in (1, 2, 4, 8)] + sorted(sizes)[:1]:
            try:
                check(spec, hidden)
            except SpecError:
                continue
            problems += check_structure(spec, hidden, cells=sorted(cells))
            break
    if problems:
        raise SpecError("a structure breaks the contract (its fast path must act as its "
                        "dense() matrix); fix it before running:\n  - "
                        + "\n  - ".join(problems))


# --------------------------------------------------------------------------- runner
class Runner:
    """Runs cells with one executor, writes their rows, keeps the progress bar."""

    def __init__(self, *, results: Path, sweep_name: str, executor: str = "local",
                 workers: int = 1, address: str | None = None, force: bool = False,
                 quiet: bool = False):
        self.results = Path(results)
        self.sweep_name = sweep_name
        self.executor = executor
        self.workers = workers
        self.address = address
        self.force = force
        self.quiet = quiet
        self.counts: Counter[str] = Counter()
        self.finished: dict[str, list[dict]] = {}

    # finished trials are skipped unless --force; failed ones are not finished
    def pending(self, cells: Iterable[Trial]) -> list[Trial]:
        cells = list(cells)
        if self.force:
            return cells
        done = done_ids(self.results, self.sweep_name)
        return [c for c in cells if c.trial_id not in done]

    def run(self, cells: list[Trial], skipped: Iterable[tuple[Trial, str]] = ()) -> Counter[str]:
        from connbench.measure.rows import error_row

        todo = self.pending(cells)
        if len(cells) > len(todo):
            self.counts["already done"] += len(cells) - len(todo)
        skipped_todo = []
        done = set() if self.force else done_ids(self.results, self.sweep_name)
        for cell, reason in skipped:
            if cell.trial_id in done:
                self.counts["already done"] += 1
            else:
                skipped_todo.append((cell, reason))
        for cell, reason in skipped_todo:
            self._record(cell, [error_row(cell, self.sweep_name, cell.kind, "skipped", reason)])
        if not todo:
            return self.counts
        bar = _progress(len(todo), self.sweep_name, self.quiet)
        try:
            if self.executor == "ray":
                from connbench.run.ray import run_ray

                lost = run_ray(todo, self.sweep_name, self._callback(bar),
                               address=self.address, on_start=_on_start(bar))
            else:
                lost = run_local(todo, self.sweep_name, self._callback(bar),
                                 workers=self.workers, on_start=_on_start(bar))
        finally:
            bar.close()
        if lost:
            self.counts["lost"] += len(lost)
            print(f"connbench run: {len(lost)} cell(s) did not finish (their worker died); "
                  "rerun the same command to finish them", file=sys.stderr)
        return self.counts

    def _record(self, cell: Trial, rows: list[dict]) -> None:
        from connbench.measure.rows import error_row
        from connbench.results.store import StoreError

        cid = cell.trial_id
        try:
            write_rows(self.results, self.sweep_name, cid, rows)
        except StoreError as exc:  # a measurement bug must not stop the sweep either
            kind = next((r.get("kind") for r in rows), None) or "train"
            rows = [error_row(cell, self.sweep_name, kind, "failed",
                              f"rows could not be stored: {exc}")]
            write_rows(self.results, self.sweep_name, cid, rows)
        self.finished[cid] = rows
        self.counts[trial_status(rows)] += 1

    def _callback(self, bar) -> RowsCallback:
        def on_rows(cell: Trial, rows: list[dict]) -> None:
            self._record(cell, rows)
            bar.update(1)

        return on_rows


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str, refresh: bool = True) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, desc: str, quiet: bool):
    if quiet:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="cell", dynamic_ncols=True, file=sys.stderr)


def _on_start(bar) -> Callable[[Trial], None]:
    from connbench.measure.trial import describe

    def on_start(cell: Trial) -> None:
        bar.set_postfix_str(describe(cell)[:70])

    return on_start


# --------------------------------------------------------------------------- local executor
def run_local(cells: list[Trial], sweep_name: str, on_rows: RowsCallback, *, workers: int = 1,
              on_start: Callable[[Trial], None] = lambda c: None) -> list[Trial]:
    """Speed/memory cells alone and in order, then train cells (in-process or a pool).

    Returns the cells that did not finish (a pool worker died), which were not recorded.
    """
    from connbench.measure.trial import is_exclusive, measure_trial

    exclusive = [c for c in cells if is_exclusive(c)]
    train = [c for c in cells if not is_exclusive(c)]
    for cell in exclusive:
        on_start(cell)
        on_rows(cell, measure_trial(cell, sweep_name))
    if workers <= 1 or len(train) <= 1:
        for cell in train:
            on_start(cell)
            on_rows(cell, measure_trial(cell, sweep_name))
        return []
    return _run_pool(train, sweep_name, on_rows, workers, on_start)


def _pool_measure(cell: Trial, sweep_name: str, threads: int) -> list[dict]:
    from connbench.measure.trial import measure_trial

    return measure_trial(cell, sweep_name, threads=threads)


def _worker_init() -> None:
    from connbench import plugins

    die_with_parent()
    plugins.load()


def _run_pool(cells, sweep_name, on_rows, workers, on_start) -> list[Any]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool


    threads = max(1, (os.cpu_count() or 1) // workers)
    lost = []
    # spawn, not fork: a forked child of a process that already ran OpenMP can hang.
    # A spawned worker is a fresh interpreter: it loads the run's plugins (exported in
    # CONNBENCH_PLUGINS) before its first trial, and dies with the driver (a SIGKILLed
    # driver leaves no training orphans).
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init) as pool:
        futures = {pool.submit(_pool_measure, c, sweep_name, threads): c for c in cells}
        try:
            for fut in as_completed(futures):
                cell = futures[fut]
                try:
                    rows = fut.result()
                except BrokenProcessPool:
                    lost.append(cell)
                    continue
                on_start(cell)
                on_rows(cell, rows)
        except BaseException:
            # The rows can no longer be written (a full disk, Ctrl-C): start nothing new.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return lost


# --------------------------------------------------------------------------- lookback
def run_lookback(runner: Runner, sweep: Any, spec: Any) -> Counter[str]:
    """Longest length each train cell solves: double until failure, then bisect.

    ``spec`` is the sweep's ``[lookback]`` table (validated by ``connbench.plan.sweep``):
    ``option`` (the task option that sets the length, default ``length``), ``start``
    (first length, default the base cell's own), ``max`` (largest length tried,
    default 1024) and ``resolution`` (stop bisecting when the bracket is narrower than
    this fraction of its lower end, default 0.125). Every trained length is its own
    train cell and part file, so a resumed search replays finished lengths from the
    store instead of training them again. Speed and memory cells of the sweep run as
    a normal grid first.
    """
    from connbench.plan.sweep import with_task_option
    from connbench.registry import split_spec

    cfg = _lookback_config(spec)
    others = [c for c in sweep.trials if c.kind != "train"]
    if others:
        runner.run(others, getattr(sweep, "skipped", []) or [])
    groups = [c for c in sweep.trials if c.kind == "train"]
    resolver = getattr(sweep, "resolver", None)
    bar = _progress(len(groups), f"{sweep.name} (lookback)", runner.quiet)
    runner.quiet, quiet = True, runner.quiet  # one bar for the search, not one per length
    try:
        for base in groups:
            _on_start(bar)(base)
            start = cfg["start"]
            if start is None:
                start = int(split_spec(base.task_spec)[1].get(cfg["option"], 1) or 1)

            def solved_at(length: int, base=base) -> bool:
                cell = with_task_option(base, cfg["option"], length, resolver=resolver)
                return _solved(_run_or_load(runner, cell))

            _search(solved_at, start, max(start, cfg["max"]), cfg["resolution"])
            bar.update(1)
    finally:
        bar.close()
        runner.quiet = quiet
    return runner.counts


def _lookback_config(spec: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"option": "length", "start": None, "max": 1024, "resolution": 0.125}
    cfg.update({k: v for k, v in dict(spec).items() if v is not None})
    return cfg


def _search(solved_at: Callable[[int], bool], start: int, maximum: int,
            resolution: float) -> int:
    """Largest length in [start, maximum] that ``solved_at`` accepts (0 if none).

    Doubling from ``start`` until the first failure (or ``maximum``), then bisecting
    between the last success and the first failure until the bracket is within
    ``resolution`` of its lower end (and at least 1 wide).
    """
    lo, hi = 0, None
    length = start
    while True:
        if solved_at(length):
            lo = length
            if length >= maximum:
                return lo
            length = min(2 * length, maximum)
        else:
            hi = length
            break
    if lo == 0:
        return 0
    while hi - lo > max(1, int(lo * resolution)):
        mid = (lo + hi) // 2
        if solved_at(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _run_or_load(runner: Runner, cell: Trial) -> list[dict]:
    cid = cell.trial_id
    if cid in runner.finished:
        return runner.finished[cid]
    if not runner.force:
        rows = _load_trial(runner.results, runner.sweep_name, cid)
        if rows:
            runner.counts["already done"] += 1
            runner.finished[cid] = rows
            return rows
    runner.run([cell])
    return runner.finished.get(cid, [])


def _load_trial(results: Path, sweep_name: str, trial_id: str) -> list[dict]:
    from connbench.results import store

    if trial_id not in done_ids(results, sweep_name):
        return []  # not there, or failed: train it (again)
    df = store.read_trial(results, sweep_name, trial_id)
    return [] if df is None else df.to_dict("records")


def _solved(rows: list[dict]) -> bool:
    train = [r for r in rows if r.get("kind") == "train" and r.get("step") is None]
    return bool(train) and all(r.get("status") == "ok" for r in train) and any(
        bool(r.get("solved")) is True for r in train
    )
