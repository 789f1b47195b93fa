"""Measure one trial and return its tidy result rows (see ``connbench.results.schema``).

A trial (``connbench.plan.sweep.Trial``, typed all the way) has one kind of work:
``speed`` (``connbench.measure.speed``), ``memory`` (``connbench.measure.memory``) or
``train`` (``connbench.measure.train``). Rows are built in ``connbench.measure.rows``.
Every row carries stored/effective/total parameters and FLOPs per step of the model
that was measured or trained. Any exception becomes a single ``failed`` row with the
error message: one trial never stops a sweep.
"""

from __future__ import annotations

import traceback
from typing import Any

from connbench.measure.memory import measure_memory
from connbench.measure.rows import base_row, error_row, stamp
from connbench.measure.speed import measure_speed
from connbench.measure.train import measure_train
from connbench.measure.workload import build, fit_length
from connbench.plan.sweep import Trial

__all__ = ["MEASURES", "base_row", "describe", "error_row", "fit_length", "is_exclusive",
           "measure_trial"]

EXCLUSIVE_KINDS = ("speed", "memory")  # kinds of work that need the machine to themselves
MEASURES = {"speed": measure_speed, "memory": measure_memory, "train": measure_train}


def is_exclusive(trial: Trial) -> bool:
    """Speed and memory trials must not share the machine with other work."""
    return trial.kind in EXCLUSIVE_KINDS


def describe(trial: Trial) -> str:
    """A short label for progress bars."""
    return (f"{trial.kind} {trial.task_spec} {trial.structure_spec} {trial.cell} "
            f"H={trial.hidden}" + (f" T={trial.seq_len}" if trial.seq_len else "")
            + f" s{trial.seed}")


def _accounting_of_failed(trial: Trial) -> dict[str, Any]:
    """Parameter and FLOP columns for a failed trial's row, when its model can be built."""
    try:
        return build(trial).accounting
    except Exception:  # noqa: BLE001 - the row is a failure report either way
        return {}


def measure_trial(trial: Trial, sweep: str | None = None, *,
                  threads: int | None = None) -> list[dict]:
    """Run one trial; return its rows. Never raises: an error is a ``failed`` row."""
    try:
        rows = MEASURES[trial.kind](trial, sweep, threads=threads)
    except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        row = error_row(trial, sweep, trial.kind, "failed", detail,
                        getattr(exc, "connbench_pass", None))
        row.update(_accounting_of_failed(trial))
        return [row]
    return stamp(rows, trial.device)
