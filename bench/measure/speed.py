"""Speed trials: three timings of the whole model over the task's sequence.

Each pass is measured on its own (``connbench.perf.timing``) and reported per time
step: ``fwd`` (forward and loss, autograd recording as in training), ``bwd``
(``torch.autograd.grad`` over one retained graph, so only the backward pass is in the
timed region) and ``fwd+bwd`` (a fresh graph and its backward per call). ``bwd`` is a
measurement, not ``fwd+bwd − fwd``.
"""

from __future__ import annotations

import time

from connbench.measure.rows import base_row
from connbench.measure.workload import build, threads_for
from connbench.plan.sweep import Trial
from connbench.results.schema import SPEED_METRIC

DEFAULT_MIN_RUN_TIME = 0.2
DEFAULT_WARMUP = 3


def measure_speed(trial: Trial, sweep: str | None = None, *,
                  threads: int | None = None) -> list[dict]:
    import torch

    from connbench.perf.timing import time_callable

    threads = threads_for(trial, threads)
    torch.set_num_threads(threads)
    min_run_time = float(trial.option("min_run_time", DEFAULT_MIN_RUN_TIME))
    warmup = int(trial.option("warmup", DEFAULT_WARMUP))
    w = build(trial)
    task, model, x, y = w.task, w.model, w.x, w.y
    params = [p for p in model.parameters() if p.requires_grad]
    steps = int(x.shape[1])

    def fwd():
        return task.loss(model(x), y)

    def fwd_bwd():
        torch.autograd.grad(task.loss(model(x), y), params)

    held = {}

    def bwd():
        torch.autograd.grad(held["loss"], params, retain_graph=True)

    rows = []
    for measured, fn in (("fwd", fwd), ("bwd", bwd), ("fwd+bwd", fwd_bwd)):
        t0 = time.perf_counter()
        try:
            if measured == "bwd":
                held["loss"] = fwd()  # fresh graph, retained across the timed backward calls
            timing = time_callable(fn, threads=threads, min_run_time=min_run_time,
                                   warmup=warmup, device=trial.device)
        except Exception as exc:
            exc.connbench_pass = measured  # the failed row names the pass that failed
            raise
        row = base_row(trial, sweep)
        row.update(w.accounting)
        row.update(
            kind="speed", metric=SPEED_METRIC,
            value=float(timing.median) / steps,
            iqr=float(timing.iqr) / steps,
            samples=[float(s) / steps for s in timing.samples],
            seq_len=steps, threads=threads, wall_time_s=time.perf_counter() - t0,
        )
        row["pass"] = measured
        rows.append(row)
    held.clear()
    return rows
