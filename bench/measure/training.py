"""One training loop for every task, and the `connbench train` command.

`train()` builds a SequenceModel for a task, trains it with the task's default
optimizer settings (each overridable, or taken from a named preset such as `trask`),
evaluates on the task's fixed evaluation set every `eval_every` steps, and stops early
once the task's solved criterion is met. That evaluation set is the *validation* set: it
steers early stopping and the report's learning-rate choice, so the final metrics that
verdicts use come from a separate *test* set (``task.test_set(seed)``), scored once
after training (``TrainResult.metrics``; the last validation scores are
``TrainResult.validation``). It never lets a training error escape: a
NaN/inf loss gives status `diverged`, any other exception status `failed` with the
message. Mistakes in the request (unknown task, cell, structure, preset, a bad
value) raise SpecError before any training starts.

Precedence of settings: explicit arguments > preset > task defaults.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from connbench.registry import SpecError

MODEL_KEYS = ("hidden", "cell", "bias", "init", "layers")  # what a preset may set on the model
EVAL_CHUNK = 512  # sequences per evaluation forward, to bound memory


@dataclass
class TrainResult:
    """Outcome of one training run (see docs/API.md)."""

    task: str
    structure: str
    cell: str
    hidden: int
    layers: int
    seed: int
    status: str  # ok, diverged, failed
    solved: bool
    steps_to_solve: int | None
    steps: int  # optimizer steps actually taken
    wall_time_s: float
    metrics: dict[str, float]  # on the held-out test set, after training
    chance: dict[str, float]
    history: list[dict[str, float | None]]  # step, train_loss (None at step 0), metrics
    params: dict[str, int]  # SequenceModel.param_counts() of the trained model
    primary_metric: str
    higher_is_better: bool
    error: str = ""
    stop_reason: str = ""  # solved, steps, time, diverged, failed
    config: dict[str, Any] = field(default_factory=dict)  # effective training settings
    flops_per_step: float = math.nan  # recurrent FLOPs per step of a training batch
    validation: dict[str, float] = field(default_factory=dict)  # last validation scores
    implementation: str = "fused"  # what the model ran: fused kernels or the eager loop

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: non-finite floats become None."""
        return _json_safe(asdict(self))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _canonical_structure(spec: str, hidden: int) -> str:
    from connbench.nn import structures

    structures.check(spec, hidden)
    return structures.canonical(spec)


def _check_cell(cell: str) -> None:
    from connbench.nn.cells import CELLS

    CELLS.get(cell)


def _build_optimizer(name: str, params, lr: float):
    import torch

    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        # fused: one kernel over all parameters, where torch has one for their device;
        # half the time of the default for-each step at the default sweep's sizes
        # (H = 64: 0.29 -> 0.14 ms of a 1 ms training step, measured)
        params = list(params)
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
        return torch.optim.Adam(params, lr=lr, fused=fused or None)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise SpecError(f"unknown optimizer {name!r}; known: sgd, adam, rmsprop")


def evaluate(model, task, x, y) -> dict[str, float]:
    """Task metrics of `model` on (x, y), forward in chunks without gradients."""
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(xc) for xc in x.split(EVAL_CHUNK)])
        metrics = task.metrics(out, y)
    model.train(was_training)
    return metrics


def train(
    task,
    *,
    cell: str | None = None,
    structure: str = "full",
    hidden: int | None = None,
    layers: int | None = None,
    steps: int | None = None,
    lr: float | None = None,
    batch: int | None = None,
    seed: int = 0,
    preset: str | None = None,
    device: str = "cpu",
    implementation: str = "fused",
    progress: Callable[[int, int, float, dict], None] | None = None,
    max_time_s: float | None = None,
    optimizer: str | None = None,
    clip: float | None = None,
    eval_every: int | None = None,
    stop_when_solved: bool = True,
) -> TrainResult:
    """Train one model on one task; see the module docstring for the rules.

    `task` is a Task or a spec string. `progress(step, total, loss, metrics)` is called
    after every evaluation (loss: mean training loss since the previous one).
    `max_time_s` stops at a wall-clock budget (status ok, stop_reason "time").
    """
    import torch

    from connbench import tasks as task_registry
    from connbench.nn.model import SequenceModel

    # ---- resolve and validate everything first: user mistakes raise SpecError here
    if isinstance(task, str):
        task = task_registry.make(task)
    chosen = None
    if preset is not None:
        if preset not in task.presets:
            known = ", ".join(task.presets) or "none"
            raise SpecError(f"task {task.name!r} has no preset {preset!r}; its presets: {known}")
        chosen = task.presets[preset]
        if chosen.task:
            task = task_registry.make(_merge_spec(task, chosen.task))
    model_cfg: dict[str, Any] = {"cell": "rnn_tanh", "layers": 1, "bias": True, "init": "default"}
    model_cfg.update(chosen.model if chosen else {})
    given = {"cell": cell, "hidden": hidden, "layers": layers}
    model_cfg.update({k: v for k, v in given.items() if v is not None})
    if model_cfg.get("hidden") is None:
        raise SpecError("hidden size missing: pass hidden=H (or a preset that sets it)")
    for key in ("hidden", "layers"):
        if not isinstance(model_cfg[key], int) or model_cfg[key] < 1:
            raise SpecError(f"{key}={model_cfg[key]!r} must be a positive integer")
    # a preset's None is meaningful (clip=None: Trask never clips), so replace, not updated
    defaults = replace(task.defaults, **(chosen.train if chosen else {}))
    defaults = defaults.updated(
        steps=steps, lr=lr, batch=batch, optimizer=optimizer, eval_every=eval_every
    )
    if clip is not None:
        defaults = defaults.updated(clip=clip if clip > 0 else None)
    _check_positive(steps=defaults.steps, batch=defaults.batch, eval_every=defaults.eval_every)
    if not defaults.lr > 0:
        raise SpecError(f"lr={defaults.lr!r} must be a positive number")
    if defaults.optimizer not in task_registry.OPTIMIZERS:
        raise SpecError(
            f"unknown optimizer {defaults.optimizer!r}; "
            f"known: {', '.join(task_registry.OPTIMIZERS)}"
        )
    _check_cell(model_cfg["cell"])
    conn_spec = _canonical_structure(structure, model_cfg["hidden"])
    if hasattr(task, "prepare"):
        task.prepare()  # corpus download/read errors surface now, not mid-run

    torch.manual_seed(seed)
    model = SequenceModel.for_task(
        task, hidden=model_cfg["hidden"], structure=conn_spec, cell=model_cfg["cell"],
        layers=model_cfg["layers"], bias=model_cfg["bias"], init=model_cfg["init"],
        implementation=implementation,  # fused kernels by default: training is their main user
    ).to(device)
    # the structure as built: its spec then carries the init the model gave it
    built = model.recurrences()[0].spec if hasattr(model, "recurrences") else conn_spec
    opt = _build_optimizer(defaults.optimizer, model.parameters(), defaults.lr)
    higher = task.metrics_info[task.primary_metric]
    result = TrainResult(
        task=task.spec,
        structure=built,
        cell=model_cfg["cell"],
        hidden=model_cfg["hidden"],
        layers=model_cfg["layers"],
        seed=seed,
        status="ok",
        solved=False,
        steps_to_solve=None,
        steps=0,
        wall_time_s=0.0,
        metrics={},
        chance=dict(task.chance),
        implementation=model.implementation_used(),
        history=[],
        params=dict(model.param_counts()),
        flops_per_step=float(model.flops_per_step(defaults.batch)),
        primary_metric=task.primary_metric,
        higher_is_better=higher,
        config={
            **asdict(defaults),
            "preset": preset,
            "bias": model_cfg["bias"],
            "init": model_cfg["init"],
            "device": str(device),
            "max_time_s": max_time_s,
            "stop_when_solved": stop_when_solved,
        },
    )

    # ---- the loop: nothing escapes from here on
    t0 = time.perf_counter()
    try:
        _loop(model, task, opt, defaults, result, seed, device, progress, max_time_s,
              stop_when_solved, t0)
    except Exception as exc:  # noqa: BLE001  (a run must report, not crash a sweep)
        result.status, result.stop_reason = "failed", "failed"
        result.error = f"{type(exc).__name__}: {exc}"
    if result.status == "ok":
        _score_test_set(model, task, result, seed, device)
    result.wall_time_s = time.perf_counter() - t0
    return result


def _score_test_set(model, task, result, seed, device) -> None:
    """Final metrics on the test set, never seen by early stopping or lr selection."""
    result.validation = dict(result.metrics)
    try:
        test_x, test_y = (t.to(device) for t in task.test_set(seed))
        metrics = evaluate(model, task, test_x, test_y)
    except Exception as exc:  # noqa: BLE001  (a run must report, not crash a sweep)
        result.status, result.stop_reason = "failed", "failed"
        result.error = f"test set: {type(exc).__name__}: {exc}"
        return
    if not all(math.isfinite(v) for v in metrics.values()):
        result.status, result.stop_reason = "diverged", "diverged"
        result.error = "non-finite metric on the test set"
        return
    result.metrics = metrics


def _loop(model, task, opt, defaults, result, seed, device, progress, max_time_s,
          stop_when_solved, t0) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    eval_x, eval_y = (t.to(device) for t in task.eval_set(seed))
    params = [p for p in model.parameters() if p.requires_grad]
    total = defaults.steps
    # summed on device, read only at evaluations: no per-step host sync, and a NaN or
    # inf anywhere since the last evaluation survives in the sum
    loss_sum = torch.zeros((), device=device)
    since = 0

    def record(step: int) -> bool:
        """Evaluate and log; returns True when training should stop."""
        nonlocal loss_sum, since
        # None at step 0: no training loss yet (NaN would mean diverged)
        train_loss = (loss_sum / since).item() if since else None
        metrics = evaluate(model, task, eval_x, eval_y)
        result.history.append({"step": step, "train_loss": train_loss, **metrics})
        finite = train_loss is None or math.isfinite(train_loss)
        if not (finite and all(math.isfinite(v) for v in metrics.values())):
            result.status = "diverged"
            result.stop_reason = "diverged"
            result.error = f"non-finite loss or metric at step {step}"
            return True
        result.metrics = metrics
        loss_sum = torch.zeros((), device=device)
        since = 0
        if progress is not None:
            progress(step, total, float("nan") if train_loss is None else train_loss, metrics)
        if not result.solved and task.solved(metrics):
            result.solved, result.steps_to_solve = True, step
            if stop_when_solved:
                result.stop_reason = "solved"
                return True
        return False

    if record(0):
        return
    model.train()
    for step in range(1, total + 1):
        x, y = task.sample(defaults.batch, gen)
        x, y = x.to(device), y.to(device)
        loss = task.loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if defaults.clip:
            torch.nn.utils.clip_grad_norm_(params, defaults.clip)
        opt.step()
        loss_sum += loss.detach()
        since += 1
        result.steps = step
        out_of_time = max_time_s is not None and time.perf_counter() - t0 >= max_time_s
        if step % defaults.eval_every == 0 or step == total or out_of_time:
            if record(step):
                return
        if out_of_time:
            result.stop_reason = "time"
            return
    result.stop_reason = "steps"


def _merge_spec(task, options: dict[str, Any]) -> str:
    from connbench.registry import format_spec

    return format_spec(task.name, {**task.options, **options})


def _check_positive(**values: Any) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(f"{key}={value!r} must be a positive integer")


# ------------------------------------------------------------------------------ CLI
