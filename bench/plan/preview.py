"""What a sweep will do before it runs: trials per kind and a rough time estimate.

Used by ``connbench run SWEEP --dry-run`` and ``connbench list sweeps``. The estimate
is arithmetic on the sweep's own settings, not a measurement:

* a speed trial times three passes, each for at least ``min_run_time`` seconds, plus
  building the model and warming up (:data:`SPEED_OVERHEAD_S` per trial);
* a CPU memory trial starts a fresh Python process that imports torch
  (:data:`MEMORY_TRIAL_S`);
* a train trial takes at most its ``max_time_s`` cap; uncapped trials are counted
  apart (their time depends on the steps and the machine), and train trials share
  the machine ``workers`` at a time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from connbench.measure.speed import DEFAULT_MIN_RUN_TIME
from connbench.plan.sweep import KINDS, Sweep, Trial

SPEED_OVERHEAD_S = 1.0  # build, warm-up and the untimed calls of three passes
MEMORY_TRIAL_S = 4.0    # a fresh interpreter importing torch, one forward+backward


@dataclass(frozen=True)
class Preview:
    """Counts and the estimated seconds of a sweep's trials."""

    sweep: str
    description: str
    counts: dict[str, int]       # kind -> trials (skipped ones under "skipped")
    estimate_s: float            # speed + memory + capped train, train divided by workers
    uncapped_train: int          # train trials without max_time_s (not in the estimate)

    @property
    def total(self) -> int:
        return sum(n for k, n in self.counts.items() if k != "skipped")

    def to_dict(self) -> dict:
        return {"sweep": self.sweep, "description": self.description, "trials": self.total,
                "counts": self.counts, "estimate_s": round(self.estimate_s, 1),
                "uncapped_train": self.uncapped_train}


def trial_seconds(trial: Trial) -> float | None:
    """Rough seconds one trial takes, None when nothing bounds it (uncapped train)."""
    if trial.kind == "speed":
        return 3 * float(trial.option("min_run_time", DEFAULT_MIN_RUN_TIME)) + SPEED_OVERHEAD_S
    if trial.kind == "memory":
        return MEMORY_TRIAL_S
    cap = trial.option("max_time_s")
    return None if cap is None else float(cap)


def preview(sweep: Sweep, workers: int = 1) -> Preview:
    """Trials per kind and the estimated wall time with ``workers`` train processes."""
    counts = Counter({k: 0 for k in KINDS})
    counts.update(t.kind for t in sweep.trials)
    if sweep.skipped:
        counts["skipped"] = len(sweep.skipped)
    alone, train, uncapped = 0.0, 0.0, 0
    for t in sweep.trials:
        s = trial_seconds(t)
        if s is None:
            uncapped += 1
        elif t.kind == "train":
            train += s
        else:
            alone += s
    return Preview(sweep.name, " ".join(sweep.description.split()), dict(counts),
                   alone + train / max(1, workers), uncapped)


def duration(seconds: float) -> str:
    """12 s, 4.5 min, 1.2 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def counts_text(p: Preview) -> str:
    """'60 speed, 30 memory, 150 train' (kinds with no trials left out)."""
    return ", ".join(f"{n} {k}" for k, n in p.counts.items() if n) or "no trials"


def estimate_text(p: Preview) -> str:
    """'about 2 min', 'up to about 12 min (...)' with train trials, plus a note on the
    uncapped train trials, if any."""
    text = f"about {duration(p.estimate_s)}"
    if p.counts.get("train"):
        text = f"up to {text} (train trials at their time caps)"
    if p.uncapped_train:
        text += f" + {p.uncapped_train} train trial(s) without max_time_s (not estimated)"
    return text
