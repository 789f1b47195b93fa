"""Timers: torch.utils.benchmark on CPU, CUDA events on GPU. Seconds per call."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils import benchmark


@dataclass
class Timing:
    """Median and interquartile range of per-call times, with the raw samples."""

    median: float
    iqr: float
    samples: list[float] = field(default_factory=list)

    def scaled(self, factor: float) -> Timing:
        return Timing(self.median * factor, self.iqr * factor, [s * factor for s in self.samples])


def _summary(samples: list[float]) -> Timing:
    if len(samples) >= 4:
        q = statistics.quantiles(samples, n=4)
        iqr = q[2] - q[0]
    else:
        iqr = max(samples) - min(samples) if samples else float("nan")
    return Timing(statistics.median(samples), iqr, list(samples))


def time_callable(fn: Callable[[], object], *, threads: int | None = None,
                  min_run_time: float = 1.0, warmup: int = 2,
                  device: str = "cpu") -> Timing:
    """Time ``fn()``: warm-up calls, then repeated measurement; seconds per call."""
    for _ in range(warmup):
        fn()
    if device.startswith("cuda"):
        return _time_cuda(fn, min_run_time)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn},
                            num_threads=threads or torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    # blocked_autorange reports block means; each block is m.number_per_run calls
    return _summary(list(m.times))


def _time_cuda(fn: Callable[[], object], min_run_time: float) -> Timing:
    torch.cuda.synchronize()
    samples: list[float] = []
    total = 0.0
    while total < min_run_time or len(samples) < 5:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        s = start.elapsed_time(end) / 1000.0
        samples.append(s)
        total += s
    return _summary(samples)


def interleaved(fns: dict[str, Callable[[], object]], *, rounds: int, threads: int | None = None,
                min_run_time: float = 0.2) -> dict[str, Timing]:
    """Time several callables in interleaved rounds so machine drift hits all alike.

    Each round times every callable once (in a rotating order); the result per
    callable is the summary over its per-round medians.
    """
    names = list(fns)
    per: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            per[n].append(time_callable(fns[n], threads=threads, min_run_time=min_run_time,
                                        warmup=1).median)
    return {n: _summary(v) for n, v in per.items()}
