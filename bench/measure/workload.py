"""The model and batch that a speed or memory trial measures."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from connbench.measure.rows import accounting
from connbench.plan.sweep import Trial


@dataclass
class Workload:
    task: Any
    model: Any  # SequenceModel, on the trial's device and dtype
    x: Any
    y: Any
    accounting: dict[str, Any]  # of this very model (connbench.measure.rows.accounting)


def threads_for(trial: Trial, given: int | None = None) -> int:
    """Torch threads: the sweep's ``threads`` option, else ``given``, else every core."""
    t = trial.option("threads", given)
    return max(1, int(t if t is not None else (os.cpu_count() or 1)))


def build(trial: Trial) -> Workload:
    """The trial's model (seeded) and one batch of its task at its sequence length."""
    import torch

    from connbench import tasks
    from connbench.nn.model import SequenceModel

    task = tasks.make(trial.task_spec)
    dtype = getattr(torch, trial.dtype)
    batch = int(trial.batch or task.defaults.batch)
    torch.manual_seed(trial.seed)
    model = SequenceModel.for_task(task, hidden=trial.hidden, structure=trial.structure_spec,
                                   cell=trial.cell, layers=trial.layers,
                                   implementation=trial.implementation)
    model = model.to(device=trial.device, dtype=dtype)
    x, y = task.sample(batch, torch.Generator().manual_seed(trial.seed))
    if trial.seq_len and trial.seq_len != x.shape[1]:
        x, y = fit_length(x, y, trial.seq_len, every_step=task.readout == "every_step")
    x, y = x.to(trial.device), y.to(trial.device)
    if x.is_floating_point():
        x = x.to(dtype)
    if y.is_floating_point():
        y = y.to(dtype)
    return Workload(task, model, x, y, accounting(model, batch))


def fit_length(x, y, length: int, *, every_step: bool):
    """A batch cut or tiled along time to ``length`` steps (speed/memory ``seq_len``).

    Timing and memory depend on the shapes, not on what the sequence means, so a
    task's batch is repeated (or cut) to the requested length; per-step targets follow.
    """
    reps = -(-length // x.shape[1])
    x = x.repeat(1, reps, *([1] * (x.dim() - 2)))[:, :length]
    if every_step:
        y = y.repeat(1, reps, *([1] * (y.dim() - 2)))[:, :length]
    return x, y
