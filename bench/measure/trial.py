"""Measure one sweep cell and return its tidy result rows (see ``connbench.results.schema``).

A trial has one kind of work:

* ``speed`` — three timings of the whole model over the task's sequence, each
  measured on its own and reported per time step:
  ``fwd`` (forward and loss, autograd recording as in training),
  ``bwd`` (``torch.autograd.grad`` over one retained graph, so only the backward pass
  is in the timed region) and ``fwd+bwd`` (a fresh graph and its backward per call).
  ``bwd`` is a measurement, not ``fwd+bwd − fwd``.
* ``memory`` — extra peak memory of one forward+backward. CUDA: ``max_memory_allocated``
  after ``reset_peak_memory_stats``, minus what was allocated before. CPU: a fresh
  subprocess per cell (``python -m connbench.measure.trial --memory``) that builds the model and
  a batch, resets the kernel's peak-RSS counter (``/proc/self/clear_refs`` = 5, Linux
  ≥ 4.0), runs one forward+backward and reports ``VmHWM − VmRSS before``. Where the
  counter cannot be reset it falls back to ``ru_maxrss`` growth, which is still right
  because the process is fresh (``ru_maxrss`` only ever rises, so a shared process
  would report the largest earlier cell instead).
* ``train`` — ``connbench.measure.training.train``: one row per final task metric and the learning
  curve as ``history`` rows.

Every row carries stored/effective/total parameters and FLOPs per step, from
``SequenceModel.param_counts()`` and ``flops_per_step(batch)``. Any exception becomes
a single ``failed`` row with the error message: one cell never stops a sweep.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from typing import Any

from connbench.results.schema import COLUMN_NAMES, MEMORY_METRIC, SPEED_METRIC

EXCLUSIVE_KINDS = ("speed", "memory")  # kinds of work that need the machine to themselves

# Defaults for knobs a sweep may leave out.
DEFAULT_MIN_RUN_TIME = 0.2
DEFAULT_WARMUP = 3
MEMORY_TIMEOUT_S = 900


# --------------------------------------------------------------------------- cells
def trial_config(cell: Any) -> dict[str, Any]:
    """A plain dict of the cell's fields (the sweep's frozen dataclass, or a dict)."""
    if isinstance(cell, dict):
        return dict(cell)
    if is_dataclass(cell):
        return asdict(cell)
    return dict(vars(cell))


def _get(cfg: dict, *names: str, default: Any = None) -> Any:
    for n in names:
        if n in cfg and cfg[n] is not None:
            return cfg[n]
    opts = cfg.get("options") or cfg.get("extra") or {}
    if isinstance(opts, dict):
        for n in names:
            if opts.get(n) is not None:
                return opts[n]
    return default


def trial_kind(cell: Any) -> str:
    return str(_get(trial_config(cell), "kind", default="train"))


def is_exclusive(cell: Any) -> bool:
    """Speed and memory cells must not share the machine with other work."""
    return trial_kind(cell) in EXCLUSIVE_KINDS


def describe(cell: Any) -> str:
    """A short label for progress bars."""
    c = trial_config(cell)
    return (
        f"{_get(c, 'kind')} {_get(c, 'task')} {_get(c, 'structure')} "
        f"{_get(c, 'cell', 'cell_type')} H={_get(c, 'hidden')}"
        + (f" T={_get(c, 'seq_len')}" if _get(c, "seq_len") else "")
        + (f" s{_get(c, 'seed')}" if _get(c, "seed") is not None else "")
    )


# --------------------------------------------------------------------------- environment
_ENV_CACHE: dict[str, dict] = {}


def environment(device: str = "cpu") -> dict[str, Any]:
    """Environment columns (from ``connbench.results.environment``), computed once per process and device."""
    key = "cuda" if str(device).startswith("cuda") else "cpu"
    if key not in _ENV_CACHE:
        env: dict[str, Any] = {}
        try:
            from connbench.results import environment as env_mod

            fn = getattr(env_mod, "environment", None) or getattr(env_mod, "collect", None)
            if fn is not None:
                try:
                    env = dict(fn(device=key))
                except TypeError:
                    env = dict(fn())
        except Exception:  # the environment never fails a cell
            env = {}
        if not env:
            import platform
            import socket

            import torch

            import connbench

            env = {
                "torch_version": torch.__version__,
                "cuda_version": torch.version.cuda or "",
                "cpu_model": platform.processor() or platform.machine(),
                "host": socket.gethostname(),
                "connbench_version": connbench.__version__,
            }
        _ENV_CACHE[key] = {k: v for k, v in env.items() if k in COLUMN_NAMES}
    return dict(_ENV_CACHE[key])


# --------------------------------------------------------------------------- rows
def base_row(cell: Any, sweep: str) -> dict[str, Any]:
    """The identity columns shared by every row of a cell."""
    c = trial_config(cell)
    row: dict[str, Any] = {name: None for name in COLUMN_NAMES}
    task_spec = str(_get(c, "task_spec", "task", default=""))
    conn_spec = str(_get(c, "structure_spec", "structure", default=""))
    hidden = _get(c, "hidden")
    row.update(
        trial_id=str(_get(c, "trial_id", "id", default="")),
        sweep=sweep,
        task=str(_get(c, "task_name", default=task_spec.split(":")[0])),
        task_spec=task_spec,
        structure=str(_get(c, "structure_name", default=conn_spec.split(":")[0])),
        structure_spec=conn_spec,
        cell=str(_get(c, "cell", "cell_type", default="rnn_tanh")),
        hidden=int(hidden) if isinstance(hidden, (int, float)) else None,
        hidden_request=str(_get(c, "hidden_request", default=hidden if hidden is not None else "")),
        layers=int(_get(c, "layers", default=1)),
        seq_len=_get(c, "seq_len"),
        batch=_get(c, "batch"),
        dtype=str(_get(c, "dtype", default="float32")),
        device=str(_get(c, "device", default="cpu")),
        threads=_get(c, "threads"),
        seed=_get(c, "seed", default=0),
        status="ok",
        samples=[],
    )
    return row


def error_row(cell: Any, sweep: str, kind: str, status: str, error: str,
              measured_pass: str | None = None) -> dict[str, Any]:
    """One row saying a trial did not produce figures (failed / skipped)."""
    row = base_row(cell, sweep)
    row.update(environment(row["device"]))
    row.update({"kind": kind, "pass": measured_pass, "status": status,
                "error": str(error)[:4000], "timestamp": _now()})
    return row


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _try_accounting(cell: Any) -> dict[str, Any]:
    """Parameter and FLOP columns of a cell's model, or nothing if it cannot be built."""
    try:
        from connbench import tasks
        from connbench.nn.model import SequenceModel

        cfg = trial_config(cell)
        task = tasks.make(str(_get(cfg, "task_spec", "task")))
        model = SequenceModel(
            task.input_size, int(_get(cfg, "hidden")), task.output_size,
            cell=str(_get(cfg, "cell", default="rnn_tanh")),
            structure=str(_get(cfg, "structure_spec", "structure")),
            layers=int(_get(cfg, "layers", default=1)), readout=task.readout,
            vocab=task.vocab,
        )
        return accounting(model, int(_get(cfg, "batch", default=1)))
    except Exception:  # noqa: BLE001 - the row is a failure report either way
        return {}


# --------------------------------------------------------------------------- building
def _threads(cfg: dict, default: int | None) -> int:
    t = _get(cfg, "threads", default=default)
    if t is None:
        t = os.cpu_count() or 1
    return max(1, int(t))


def build(cfg: dict):
    """(task, model, x, y, accounting) for a cell, on its device and dtype."""
    import torch

    from connbench import tasks
    from connbench.nn.model import SequenceModel

    task = tasks.make(str(_get(cfg, "task_spec", "task")))
    device = str(_get(cfg, "device", default="cpu"))
    dtype = getattr(torch, str(_get(cfg, "dtype", default="float32")))
    hidden = int(_get(cfg, "hidden"))
    batch = int(_get(cfg, "batch", default=32))
    seed = int(_get(cfg, "seed", default=0))
    torch.manual_seed(seed)
    model = SequenceModel(
        task.input_size,
        hidden,
        task.output_size,
        cell=str(_get(cfg, "cell", "cell_type", default="rnn_tanh")),
        structure=str(_get(cfg, "structure_spec", "structure")),
        layers=int(_get(cfg, "layers", default=1)),
        readout=task.readout,
        vocab=task.vocab,
    ).to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    x, y = task.sample(batch, gen)
    seq_len = _get(cfg, "seq_len")
    if seq_len and int(seq_len) != x.shape[1]:
        x, y = fit_length(x, y, int(seq_len), every_step=task.readout == "every_step")
    x = x.to(device)
    y = y.to(device)
    if x.is_floating_point():
        x = x.to(dtype)
    if y.is_floating_point():
        y = y.to(dtype)
    return task, model, x, y, accounting(model, batch)


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


def accounting(model, batch: int) -> dict[str, Any]:
    pc = model.param_counts()
    return {
        "stored_params": int(pc["recurrent_stored"]),
        "effective_params": int(pc["recurrent_effective"]),
        "total_params": int(pc["total"]),
        "flops_per_step": float(model.flops_per_step(batch)),
    }


# --------------------------------------------------------------------------- speed
def _time(fn, *, threads: int, min_run_time: float, warmup: int, device: str):
    """``connbench.perf.timing.time_callable`` (the lead's timer)."""
    from connbench.perf.timing import time_callable

    return time_callable(
        fn, threads=threads, min_run_time=min_run_time, warmup=warmup, device=device
    )


def measure_speed(cell: Any, sweep: str, *, threads: int | None = None) -> list[dict]:
    import torch

    cfg = trial_config(cell)
    threads = _threads(cfg, threads)
    torch.set_num_threads(threads)
    device = str(_get(cfg, "device", default="cpu"))
    min_run_time = float(_get(cfg, "min_run_time", default=DEFAULT_MIN_RUN_TIME))
    warmup = int(_get(cfg, "warmup", default=DEFAULT_WARMUP))
    task, model, x, y, acct = build(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    steps = int(x.shape[1])

    def fwd():
        return task.loss(model(x), y)

    def fwd_bwd():
        torch.autograd.grad(task.loss(model(x), y), params)

    held = {"loss": fwd()}

    def bwd():
        torch.autograd.grad(held["loss"], params, retain_graph=True)

    rows = []
    for measured, fn in (("fwd", fwd), ("bwd", bwd), ("fwd+bwd", fwd_bwd)):
        t0 = time.perf_counter()
        try:
            if measured == "bwd":
                held["loss"] = fwd()  # fresh graph, retained across the timed backward calls
            timing = _time(fn, threads=threads, min_run_time=min_run_time, warmup=warmup,
                           device=device)
        except Exception as exc:
            exc.connbench_pass = measured  # the failed row names the pass that failed
            raise
        wall = time.perf_counter() - t0
        row = base_row(cell, sweep)
        row.update(acct)
        row.update({"kind": "speed", "pass": measured})
        row.update(
            metric=SPEED_METRIC,
            value=float(timing.median) / steps,
            iqr=float(timing.iqr) / steps,
            samples=[float(s) / steps for s in timing.samples],
            seq_len=steps,
            threads=threads,
            wall_time_s=wall,
        )
        rows.append(row)
    held.clear()
    return rows


# --------------------------------------------------------------------------- memory
def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory_here(cfg: dict) -> dict[str, Any]:
    """Extra peak bytes of one forward+backward, measured in this process.

    Call it on CPU only in a fresh process (``python -m connbench.measure.trial --memory``).
    """
    import resource

    import torch

    threads = _threads(cfg, None)
    torch.set_num_threads(threads)
    device = str(_get(cfg, "device", default="cpu"))
    task, model, x, y, acct = build(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    out: dict[str, Any] = dict(acct, threads=threads, seq_len=int(x.shape[1]))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        grads = torch.autograd.grad(task.loss(model(x), y), params)
        torch.cuda.synchronize()
        out.update(peak_bytes=int(torch.cuda.max_memory_allocated() - before),
                   method="cuda.max_memory_allocated")
        del grads
        return out
    rss_before = _proc_status_kb("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    reset = rss_before is not None and _reset_peak_rss()
    grads = torch.autograd.grad(task.loss(model(x), y), params)
    if reset:
        hwm = _proc_status_kb("VmHWM") or 0
        out.update(peak_bytes=max(0, hwm - rss_before) * 1024, method="VmHWM after clear_refs")
    else:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        base = rss_before if rss_before is not None else maxrss_before
        out.update(peak_bytes=max(0, maxrss - base) * 1024, method="ru_maxrss growth")
    del grads
    return out


def measure_memory(cell: Any, sweep: str, *, threads: int | None = None) -> list[dict]:
    cfg = trial_config(cell)
    cfg["threads"] = _threads(cfg, threads)
    device = str(_get(cfg, "device", default="cpu"))
    t0 = time.perf_counter()
    if device.startswith("cuda"):
        res = peak_memory_here(cfg)
    else:
        res = _memory_in_fresh_process(cfg)
    row = base_row(cell, sweep)
    row.update({k: res[k] for k in ("stored_params", "effective_params", "total_params",
                                    "flops_per_step")})
    row.update({"kind": "memory", "pass": "fwd+bwd"})
    row.update(
        metric=MEMORY_METRIC,
        value=float(res["peak_bytes"]),
        seq_len=res["seq_len"],
        threads=res["threads"],
        wall_time_s=time.perf_counter() - t0,
    )
    return [row]


def _memory_in_fresh_process(cfg: dict) -> dict[str, Any]:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "connbench.measure.trial", "--memory"],
        input=json.dumps(cfg, default=str),
        capture_output=True,
        text=True,
        env=env,
        timeout=MEMORY_TIMEOUT_S,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        msg = tail[-1] if tail else f"exit code {proc.returncode}"
        raise RuntimeError(f"memory subprocess failed: {msg}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- train
def measure_train(cell: Any, sweep: str, *, threads: int | None = None) -> list[dict]:
    import torch

    from connbench import tasks
    from connbench.measure.training import train

    cfg = trial_config(cell)
    threads = _threads(cfg, threads)
    torch.set_num_threads(threads)
    task = tasks.make(str(_get(cfg, "task_spec", "task")))
    kwargs: dict[str, Any] = dict(
        cell=_get(cfg, "cell", "cell_type"),
        structure=str(_get(cfg, "structure_spec", "structure")),
        hidden=_int(_get(cfg, "hidden")),
        layers=_int(_get(cfg, "layers")),
        steps=_int(_get(cfg, "steps", "train_steps")),
        lr=_get(cfg, "lr"),
        batch=_int(_get(cfg, "batch")),
        seed=int(_get(cfg, "seed", default=0)),
        preset=_get(cfg, "preset") or None,
        device=str(_get(cfg, "device", default="cpu")),
        progress=None,
        max_time_s=_get(cfg, "max_time_s"),
    )
    for key in ("optimizer", "clip", "eval_every", "stop_when_solved"):
        if _get(cfg, key) is not None:
            kwargs[key] = _get(cfg, key)
    result = train(task, **kwargs)

    conf = dict(getattr(result, "config", {}) or {})
    batch = int(conf.get("batch") or kwargs["batch"] or 1)
    acct = _train_accounting(result, batch)
    info = dict(getattr(task, "metrics_info", {}) or {})
    primary = result.primary_metric
    chance = dict(result.chance or {})
    status = str(result.status)
    try:  # the task the run actually used (a preset may change its options)
        seq_len = tasks.make(result.task).seq_len
    except Exception:  # noqa: BLE001
        seq_len = getattr(task, "seq_len", None)
    base = base_row(cell, sweep)
    base.update(acct, threads=threads, seq_len=seq_len, batch=batch, cell=result.cell,
                hidden=int(result.hidden), layers=int(result.layers),
                train_settings=train_settings_json(conf))

    rows = []
    metrics = dict(result.metrics or {}) or {primary or "loss": math.nan}
    for name, value in metrics.items():
        row = dict(base)
        row.update(
            kind="train",
            status=status,
            error=(result.error or None) if status != "ok" else None,
            metric=name,
            value=_float(value),
            chance=_float(chance.get(name)),
            higher_is_better=info.get(name),
            primary=(name == primary),
            solved=bool(result.solved),
            steps_to_solve=result.steps_to_solve,
            train_steps=result.steps,
            wall_time_s=_float(result.wall_time_s),
        )
        rows.append(row)
    for point in result.history or []:
        step = point.get("step")
        for name, value in point.items():
            if name == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            row = dict(base)
            row.update(  # a point of the learning curve: a train row with its step set
                kind="train",
                status="ok",
                metric=name,
                value=_float(value),
                step=int(step) if step is not None else None,
                higher_is_better=info.get(name),
                primary=(name == primary),
                chance=_float(chance.get(name)),
            )
            rows.append(row)
    return rows


SETTINGS_KEYS = ("steps", "lr", "optimizer", "batch", "clip", "preset", "init", "bias",
                 "max_time_s", "eval_every")


def train_settings_json(config: dict[str, Any]) -> str:
    """The settings that tell arms apart (budget, lr ...), as canonical JSON for the row."""
    import json

    return json.dumps({k: config.get(k) for k in SETTINGS_KEYS}, sort_keys=True)


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def _train_accounting(result, batch: int) -> dict[str, Any]:
    """Parameter counts of the trained model, and its FLOPs per step."""
    from connbench import tasks
    from connbench.nn.model import SequenceModel

    pc = dict(result.params or {})
    out: dict[str, Any] = {
        "stored_params": pc.get("recurrent_stored"),
        "effective_params": pc.get("recurrent_effective"),
        "total_params": pc.get("total"),
        "flops_per_step": math.nan,
    }
    try:
        task = tasks.make(result.task)
        model = SequenceModel(
            task.input_size, int(result.hidden), task.output_size, cell=result.cell,
            structure=result.structure, layers=int(result.layers),
            bias=bool((result.config or {}).get("bias", True)), readout=task.readout,
            vocab=task.vocab,
        )
        acct = accounting(model, batch)
        out.update({k: v for k, v in acct.items() if out.get(k) is None or k == "flops_per_step"})
    except Exception:  # noqa: BLE001 - a failed run may not be buildable; keep what we have
        pass
    return out


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# --------------------------------------------------------------------------- entry point
MEASURES = {"speed": measure_speed, "memory": measure_memory, "train": measure_train}


def measure_trial(cell: Any, sweep: str, *, threads: int | None = None) -> list[dict]:
    """Run one cell; return its rows. Never raises: an error is a ``failed`` row."""
    kind = trial_kind(cell)
    device = str(_get(trial_config(cell), "device", default="cpu"))
    try:
        fn = MEASURES.get(kind)
        if fn is None:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(MEASURES)}")
        rows = fn(cell, sweep, threads=threads)
    except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        row = error_row(cell, sweep, kind, "failed", detail,
                        getattr(exc, "connbench_pass", None))
        row.update(_try_accounting(cell))
        return [row]
    env = environment(device)
    stamp = _now()
    for row in rows:
        for k, v in env.items():
            if row.get(k) is None:
                row[k] = v
        row["timestamp"] = stamp
    return rows


def _memory_main() -> int:
    cfg = json.loads(sys.stdin.read())
    res = peak_memory_here(cfg)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="internal: measure one cell's peak memory")
    ap.add_argument("--memory", action="store_true", required=True)
    ap.parse_args()
    sys.exit(_memory_main())
