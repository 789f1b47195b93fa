"""Results rows, built in one place (columns: ``connbench.results.schema``).

Every row starts from :func:`base_row`: the trial's identifying columns
(``Trial.row_fields``), then what one measurement adds. :func:`stamp` adds the
environment (``connbench.results.environment``, the one collector) and the time.
"""

from __future__ import annotations

from typing import Any

from connbench.plan.sweep import Trial
from connbench.results.environment import environment, now_utc
from connbench.results.schema import COLUMN_NAMES

ACCOUNTING = ("stored_params", "effective_params", "total_params", "flops_per_step")


def base_row(trial: Trial, sweep: str | None = None) -> dict[str, Any]:
    """Every column, None but the trial's identity; ``sweep`` overrides the trial's."""
    row: dict[str, Any] = dict.fromkeys(COLUMN_NAMES)
    row.update(trial.row_fields())
    if sweep is not None:
        row["sweep"] = sweep
    row.update(kind=trial.kind, status="ok", samples=[])
    row.update(settings_columns(trial))
    return row


def settings_columns(trial: Trial) -> dict[str, Any]:
    """The trial's settings as row columns, so that two arms differing only in, say,
    ``--set train.lr`` stay apart in the rows and not only in their ids. Train rows
    overwrite these with the values the run used (task defaults, preset)."""
    if trial.kind == "train":
        steps = trial.option("steps")
        return {"optimizer": trial.option("optimizer"), "lr": trial.option("lr"),
                "steps_budget": None if steps is None else int(steps),
                "max_time_s": trial.option("max_time_s"), "preset": trial.option("preset")}
    if trial.kind == "speed":
        from connbench.measure.speed import DEFAULT_MIN_RUN_TIME, DEFAULT_WARMUP

        return {"min_run_time": float(trial.option("min_run_time", DEFAULT_MIN_RUN_TIME)),
                "warmup": int(trial.option("warmup", DEFAULT_WARMUP))}
    return {}


def accounting(model, batch: int) -> dict[str, Any]:
    """Parameter and FLOP columns of a model (the one that was measured or trained)."""
    pc = model.param_counts()
    return {
        "stored_params": int(pc["recurrent_stored"]),
        "effective_params": int(pc["recurrent_effective"]),
        "total_params": int(pc["total"]),
        "flops_per_step": float(model.flops_per_step(batch)),
        # what ran, not what was asked: CUDA, a structure without a fused plan, or a
        # machine without a compiler run eager even when the sweep says fused
        "implementation": model.implementation_used(),
    }


def error_row(trial: Trial, sweep: str | None, kind: str, status: str, error: str,
              measured_pass: str | None = None) -> dict[str, Any]:
    """One row saying a trial did not produce figures (failed / skipped)."""
    row = base_row(trial, sweep)
    row.update({"kind": kind, "pass": measured_pass, "status": status,
                "error": str(error)[:4000]})
    return stamp([row], trial.device)[0]


def stamp(rows: list[dict[str, Any]], device: str) -> list[dict[str, Any]]:
    """Fill the environment columns a row left empty, and the timestamp."""
    env = {k: v for k, v in environment(device).items() if k in COLUMN_NAMES}
    when = now_utc()
    for row in rows:
        for key, value in env.items():
            if row.get(key) is None:
                row[key] = value
        row["timestamp"] = when
    return rows
