"""What a trial needs from the machine, checked before any work: memory and device.

The memory estimate is deliberately simple and an upper bound on the parameters (the
dense structure's count, so no H×H tensor is ever built to count one):

    parameters  P = layers·gates·(H·H + H·I + 2·H) + H·O + O
    bytes       P·bytes·(4 for train: weights, grads, two Adam moments; 2 otherwise)
              + T·B·H·(gates + 1)·layers·bytes·ACTIVATION_FACTOR   (kept for backward)
              + T·B·(I + O)·bytes·2                                (inputs and outputs)

A trial whose estimate exceeds the memory this machine has available is refused up
front with the estimate in the message, instead of failing (or swapping) mid-sweep.
Only ``cpu`` trials are checked against host memory. torch is imported only to ask
whether a device exists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from connbench.registry import SpecError

ACTIVATION_FACTOR = 3  # saved tensors per gate activation in backward, roughly
DTYPE_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
CELL_GATES = {"rnn_tanh": 1, "rnn_relu": 1, "rnn_sigmoid": 1, "gru": 3, "lstm": 4}


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def estimate_bytes(*, hidden: int, layers: int, gates: int, inputs: int, outputs: int,
                   seq_len: int | None, batch: int | None, dtype: str = "float32",
                   train: bool = True) -> int:
    """The estimate of the module docstring, in bytes."""
    nbytes = DTYPE_BYTES.get(dtype, 4)
    h = hidden
    params = layers * gates * (h * h + h * inputs + 2 * h) + h * outputs + outputs
    total = params * nbytes * (4 if train else 2)
    if seq_len and batch:
        total += seq_len * batch * h * (gates + 1) * layers * nbytes * ACTIVATION_FACTOR
        total += seq_len * batch * (inputs + outputs) * nbytes * 2
    return int(total)


def human(n: float) -> str:
    """``1.5 GB``: bytes in decimal units."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def trial_bytes(trial: Any, resolver: Any) -> int:
    """The estimate for one expanded sweep trial."""
    inputs, outputs, _vocab, _readout = resolver.model_shape(trial.task_spec)
    cell_name = trial.cell.partition(":")[0]
    return estimate_bytes(hidden=trial.hidden, layers=trial.layers,
                          gates=CELL_GATES.get(cell_name, 4), inputs=int(inputs),
                          outputs=int(outputs), seq_len=trial.seq_len, batch=trial.batch,
                          dtype=trial.dtype, train=trial.kind == "train")


def check_memory(trials: Iterable[Any], resolver: Any, available: int | None = None) -> None:
    """Refuse (SpecError, one line per size) trials whose estimate exceeds memory."""
    available = available_memory() if available is None else available
    if not available:
        return
    worst: dict[tuple, tuple[int, Any]] = {}
    for t in trials:
        if t.device != "cpu" or not t.hidden:
            continue
        need = trial_bytes(t, resolver)
        if need > available:
            key = (t.kind, t.structure_spec, t.cell, t.hidden, t.seq_len, t.batch)
            worst.setdefault(key, (need, t))
    if not worst:
        return
    lines = [f"{len(worst)} trial setting(s) need more memory than the "
             f"{human(available)} available; lower hidden, batch or seq_len:"]
    for need, t in sorted(worst.values(), key=lambda x: -x[0])[:10]:
        lines.append(f"  - {t.kind} {t.structure_spec} {t.cell} hidden={t.hidden} "
                     f"seq_len={t.seq_len} batch={t.batch}: about {human(need)} (estimate)")
    if len(worst) > 10:
        lines.append(f"  - ... and {len(worst) - 10} more")
    raise SpecError("\n".join(lines))


def max_threads() -> int:
    """The most torch threads a trial may ask for: 4 per core (far beyond that, torch
    itself crashes; beyond the cores, timings measure contention)."""
    return 4 * (os.cpu_count() or 1)


def check_threads(trials: Iterable[Any]) -> None:
    """Refuse a ``threads`` option above :func:`max_threads`."""
    limit = max_threads()
    for t in trials:
        n = t.option("threads")
        if n is not None and n > limit:
            raise SpecError(f"[{t.kind}] threads={n} is more than this machine can use; "
                            f"allowed: 1 to {limit} (4 per core, {os.cpu_count()} cores)")


def check_devices(devices: Iterable[str]) -> None:
    """Refuse devices this machine does not have (``devices = "cuda"`` on a CPU box)."""
    for name in sorted(set(devices)):
        problem = device_problem(name)
        if problem:
            raise SpecError(problem)


def device_problem(name: str) -> str | None:
    """Why ``name`` cannot be used on this machine, or None when it can."""
    if name == "cpu":
        return None
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return (f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU; "
                    "use cpu, or install a CUDA build of torch on a GPU machine")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return (f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s); "
                    f"allowed: cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return None
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        return "device 'mps': not available on this machine; use cpu"
    return None
