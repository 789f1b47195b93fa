"""Train trials: ``connbench.measure.training.train`` and its rows.

One row per final task metric, and the learning curve as train rows with ``step``
set. Parameter and FLOP columns come from the trained model itself
(``TrainResult.params`` and ``flops_per_step``).
"""

from __future__ import annotations

import math
from typing import Any

from connbench.measure.rows import base_row
from connbench.measure.workload import threads_for
from connbench.plan.sweep import Trial


def measure_train(trial: Trial, sweep: str | None = None, *,
                  threads: int | None = None) -> list[dict]:
    import torch

    from connbench import tasks
    from connbench.measure.training import train

    threads = threads_for(trial, threads)
    torch.set_num_threads(threads)
    task = tasks.make(trial.task_spec)
    result = train(
        task, cell=trial.cell, structure=trial.structure_spec, hidden=trial.hidden,
        layers=trial.layers, steps=trial.option("steps"), lr=trial.option("lr"),
        batch=trial.batch, seed=trial.seed, preset=trial.option("preset"),
        device=trial.device, max_time_s=trial.option("max_time_s"),
        implementation=trial.implementation,
    )
    batch = int(result.config.get("batch") or trial.batch or 1)
    pc = result.params
    info = dict(task.metrics_info)
    primary, chance, status = result.primary_metric, dict(result.chance), str(result.status)
    base = base_row(trial, sweep)
    base.update(
        stored_params=pc.get("recurrent_stored"), effective_params=pc.get("recurrent_effective"),
        total_params=pc.get("total"), flops_per_step=_float(result.flops_per_step),
        threads=threads, batch=batch, cell=result.cell, hidden=int(result.hidden),
        layers=int(result.layers), implementation=result.implementation,
        # the task the run actually used (a preset may change its options)
        seq_len=getattr(tasks.make(result.task), "seq_len", None),
    )
    conf = result.config  # the settings as used, after task defaults and presets
    base.update(optimizer=conf.get("optimizer"), lr=conf.get("lr"), steps_budget=conf.get("steps"),
                preset=conf.get("preset"), max_time_s=conf.get("max_time_s"))
    base["train_settings"] = train_settings_json({**conf, "role": trial.option("role")})
    rows = []
    metrics = dict(result.metrics) or {primary or "loss": math.nan}
    for name, value in metrics.items():
        row = dict(base)
        row.update(
            kind="train", status=status,
            error=(result.error or None) if status != "ok" else None,
            metric=name, value=_float(value), chance=_float(chance.get(name)),
            higher_is_better=info.get(name), primary=(name == primary),
            solved=bool(result.solved), steps_to_solve=result.steps_to_solve,
            train_steps=result.steps, wall_time_s=_float(result.wall_time_s),
        )
        rows.append(row)
    for point in result.history:
        step = point.get("step")
        for name, value in point.items():
            if name == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            row = dict(base)
            row.update(  # a point of the learning curve: a train row with its step set
                kind="train", status="ok", metric=name, value=_float(value),
                step=int(step) if step is not None else None,
                higher_is_better=info.get(name), primary=(name == primary),
                chance=_float(chance.get(name)),
            )
            rows.append(row)
    return rows


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


SETTINGS_KEYS = ("steps", "lr", "optimizer", "batch", "clip", "preset", "init", "bias",
                 "max_time_s", "eval_every", "role")


def train_settings_json(config: dict[str, Any]) -> str:
    """The settings that tell arms apart (budget, lr ...), as canonical JSON for the row."""
    import json

    return json.dumps({k: config.get(k) for k in SETTINGS_KEYS}, sort_keys=True)
