"""``hidden = "iso_time:REF"``: each structure at the hidden size whose measured
fwd+bwd time per step matches full's at hidden REF, on this machine.

The times are measured at expansion (connbench.perf.timing, a short run per size) and
cached per machine in ``~/.cache/connbench/iso_time.json`` (key: CPU model, torch
version, threads, and the model and batch shape), so a sweep expands in seconds the
second time. The search is the iso_params one with time instead of parameters: time
grows with the size, so galloping up from the smallest valid size and bisecting times
about 2·log2(answer) sizes.

Where the step time hardly grows with the size (tiny models, whose time is mostly
fixed overhead) the match is loose and noisy: use a reference of 128 or more.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

from connbench.registry import SpecError

REFERENCE = "full"
MIN_RUN_TIME = 0.2  # seconds per timed size: enough to rank sizes, cheap to search
# Step-time function: (task, cell, structure, hidden, layers, batch, seq_len) -> seconds
StepTimer = Callable[[str, str, str, int, int, int, int], float]


def cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(root) / "connbench" / "iso_time.json"


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f
                        if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def measured_step_time(task, cell: str, structure: str, hidden: int, layers: int,
                       batch: int, seq_len: int) -> float:
    """Median fwd+bwd seconds per time step of the whole model, on this machine."""
    import torch

    from connbench.nn.model import SequenceModel
    from connbench.perf.timing import time_callable

    torch.manual_seed(0)
    model = SequenceModel(task.input_size, hidden, task.output_size, cell=cell,
                          structure=structure, layers=layers, readout=task.readout,
                          vocab=task.vocab)
    x, _ = task.sample(batch, torch.Generator().manual_seed(0))
    x = x[:, :seq_len] if x.shape[1] >= seq_len else x

    def step():
        model.zero_grad(set_to_none=True)
        model(x).float().sum().backward()

    t = time_callable(step, min_run_time=MIN_RUN_TIME, warmup=1)
    return t.median / max(1, x.shape[1])


class CachedTimer:
    """A step timer backed by the per-machine JSON cache; ``measure`` does the work."""

    def __init__(self, resolver, measure=measured_step_time, path: Path | None = None):
        self.resolver, self.measure = resolver, measure
        self.path = path or cache_path()
        self._machine: str | None = None
        try:
            self.cache = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.cache = {}

    def __call__(self, task: str, cell: str, structure: str, hidden: int, layers: int,
                 batch: int, seq_len: int) -> float:
        if self._machine is None:
            self._machine = _machine()
        shape = self.resolver.model_shape(task)
        key = json.dumps([self._machine, list(shape), cell, structure, hidden, layers,
                          batch, seq_len])
        if key not in self.cache:
            self.cache[key] = self.measure(self.resolver._task(task), cell, structure,
                                           hidden, layers, batch, seq_len)
            self._save()
        return float(self.cache[key])

    def _save(self) -> None:
        from connbench.files import atomic_write

        text = json.dumps(self.cache, sort_keys=True).encode()
        atomic_write(self.path, lambda fh: fh.write(text))


def iso_time_size(sizes, timer: StepTimer, reference: int, task: str, cell: str,
                  structure: str, layers: int, batch: int, seq_len: int) -> int:
    """The valid size (``sizes``: a ValidSizes) whose step time is closest to full's
    at ``reference``; ties go to the smaller size."""
    from connbench.registry import split_spec

    if split_spec(structure)[0] == REFERENCE:
        return reference  # by definition; timing noise must not move the reference
    target = timer(task, cell, REFERENCE, reference, layers, batch, seq_len)
    if not sizes.has(0):
        raise SpecError(f"{structure} accepts no hidden size to match iso_time:{reference}")

    def t(i: int) -> float:
        return timer(task, cell, structure, sizes[i], layers, batch, seq_len)

    if t(0) >= target:
        # the smallest model is no faster than full at the reference: on this machine
        # the step time is overhead, not the recurrence, and no size "matches" it
        raise SpecError(
            f"iso_time:{reference}: {structure} at hidden={sizes[0]} already takes "
            f"{t(0) * 1e6:.3g} µs per step, no less than full's {target * 1e6:.3g} µs at "
            f"hidden={reference}; the step time is overhead here: use a larger reference")
    i = sizes.nearest(t, target)
    # None: faster than full even at the largest size searched, which is as close as it gets
    return sizes[len(sizes.sizes) - 1 if i is None else i]
