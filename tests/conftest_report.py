"""Synthetic result frames in the schema of connbench.results.schema, for the report tests.

The numbers follow simple, known models (time grows with FLOPs, the metric moves
from chance towards the ideal by a per-structure "skill"), so that a test knows
which verdict the report must reach.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from connbench.results.schema import COLUMN_NAMES, DTYPES

SPECS = {
    "full": "full",
    "none": "none",
    "diagonal": "diagonal",
    "banded": "banded:cyclic=false,width=3",
    "jordan": "jordan",
    "block": "block:groups=4",
    "block_shuffle": "block_shuffle:groups=4",
    "butterfly": "butterfly",
    "random": "random:density=0.1,seed=0",
    "lowrank": "lowrank:rank=4",
}

# fraction of the way from chance to the ideal metric that a structure reaches
SKILL = {
    "full": 1.0, "none": 0.0, "diagonal": 0.05, "banded": 0.98, "jordan": 0.5,
    "block": 0.97, "block_shuffle": 0.97, "butterfly": 0.99, "random": 0.8,
    "lowrank": 0.85,
}

# task spec -> (task, primary metric, chance, ideal, higher_is_better, seq_len)
TASKS = {
    "binary_addition:bits=8": ("binary_addition", "sequence_accuracy", 1 / 256, 1.0, True, 8),
    "copy:length=100": ("copy", "recall_accuracy", 0.125, 1.0, True, 120),
    "adding:length=100": ("adding", "mse", 0.167, 0.0, False, 100),
    "char_lm:seq=100": ("char_lm", "bpc", 6.39, 1.6, False, 100),
}


def stored_params(name: str, h: int) -> int:
    return {
        "full": h * h, "none": 0, "diagonal": h, "banded": 3 * h - 2, "jordan": 2 * h - 1,
        "block": h * h // 4, "block_shuffle": h * h // 4,
        "butterfly": 2 * h * int(math.log2(h)), "random": int(0.1 * h * h),
        "lowrank": 8 * h,
    }[name]


ENV = {
    "torch_version": "2.13.0+cpu", "cuda_version": "", "cudnn_version": "",
    "cpu_model": "AMD EPYC (synthetic)", "gpu_name": "", "host": "testhost",
    "git_commit": "0123456789abcdef", "git_dirty": False, "connbench_version": "0.1.0",
    "dtype": "float32", "threads": 2, "layers": 1, "status": "ok",
}


def _row(**kw) -> dict:
    row = dict(ENV)
    row.update(kw)
    return row


def _speed_rows(sweep, names, hiddens, rng, devices):
    rows = []
    for device in devices:
        scale = 1.0 if device == "cpu" else 0.05
        for name in names:
            for h in hiddens:
                p = stored_params(name, h)
                base = scale * (8e-6 + 2e-9 * 32 * max(p, h))
                for measured, mult in (("fwd", 1.0), ("bwd", 1.8), ("fwd+bwd", 2.8)):
                    t = base * mult * (1 + 0.03 * rng.standard_normal())
                    rows.append(_row(
                        trial_id=f"speed-{device}-{name}-{h}", sweep=sweep, task="copy",
                        task_spec="copy:length=100", structure=name,
                        structure_spec=SPECS[name], cell="rnn_tanh", hidden=h,
                        hidden_request=str(h), seq_len=100, batch=32, device=device,
                        seed=0, kind="speed", **{"pass": measured},
                        metric="time_per_step_s", value=t,
                        iqr=0.1 * t, samples=[t], stored_params=p, effective_params=p,
                        wall_time_s=2.0, timestamp="2026-01-01T00:00:00Z",
                        gpu_name="NVIDIA H100" if device == "cuda" else ""))
                rows.append(_row(
                    trial_id=f"mem-{device}-{name}-{h}", sweep=sweep, task="copy",
                    task_spec="copy:length=100", structure=name,
                    structure_spec=SPECS[name], cell="rnn_tanh", hidden=h,
                    hidden_request=str(h), seq_len=100, batch=32, device=device, seed=0,
                    kind="memory", **{"pass": "fwd+bwd"}, metric="peak_bytes",
                    value=float(4 * (32 * 100 * h * 6 + 3 * p) + 2**20),
                    stored_params=p, wall_time_s=1.0, timestamp="2026-01-01T00:01:00Z",
                    gpu_name="NVIDIA H100" if device == "cuda" else ""))
    return rows


def _metric(task_spec, skill, rng):
    _, _, chance, ideal, _, _ = TASKS[task_spec]
    noise = 0.02 * abs(ideal - chance) * rng.standard_normal()
    value = chance + skill * (ideal - chance) + noise
    lo, hi = min(chance, ideal), max(chance, ideal)
    return float(min(max(value, lo), hi))


def _train_rows(sweep, names, task_specs, seeds, hidden_requests, skill, rng, history,
                settings=None, cell="rnn_tanh", tag=""):
    rows = []
    settings_json = json.dumps(settings, sort_keys=True) if settings else None
    for task_spec in task_specs:
        task, metric, chance, ideal, hib, seq_len = TASKS[task_spec]
        for name in names:
            for req in hidden_requests:
                h = int(req) if req.isdigit() else {"full": 40}.get(name, 120)
                for seed in seeds:
                    final = _metric(task_spec, skill[name], rng)
                    gap = abs(final - chance) / abs(ideal - chance)
                    solved = gap > 0.9
                    steps_to_solve = int(800 / max(skill[name], 0.1)) if solved else pd.NA
                    common = dict(
                        trial_id=f"train-{task_spec}-{name}-{req}-{seed}{tag}", sweep=sweep,
                        task=task, task_spec=task_spec, structure=name,
                        structure_spec=SPECS[name], cell=cell, hidden=h,
                        train_settings=settings_json,
                        hidden_request=req, seq_len=seq_len, batch=32, device="cpu",
                        seed=seed, stored_params=stored_params(name, h),
                        total_params=stored_params(name, h) + 4 * h + 1,
                        train_steps=2000, wall_time_s=30.0 + 10 * skill[name],
                        timestamp=f"2026-01-01T01:{seed:02d}:00Z")
                    rows.append(_row(**common, kind="train", metric=metric, value=final,
                                     chance=chance, higher_is_better=hib, primary=True,
                                     solved=solved, steps_to_solve=steps_to_solve))
                    rows.append(_row(**common, kind="train", metric="loss",
                                     value=abs(ideal - final) + 0.01, chance=float("nan"),
                                     higher_is_better=False, primary=False, solved=solved,
                                     steps_to_solve=steps_to_solve))
                    if not history:
                        continue
                    for step in range(0, 2001, 200):
                        frac = 1 - math.exp(-step / 400)
                        v = chance + frac * (final - chance)
                        rows.append(_row(**common, kind="train", metric=metric, value=v,
                                         step=step, chance=chance, higher_is_better=hib,
                                         primary=True))
    return rows


def _lookback_rows(sweep, names, seeds, rng):
    """copy/adding at doubling T; a structure solves T up to a skill-given limit."""
    rows = []
    limits = {n: int(50 * 2 ** (6 * SKILL[n])) for n in names}
    for task, metric, chance, hib in (("copy", "recall_accuracy", 0.125, True),
                                      ("adding", "mse", 0.167, False)):
        for name in names:
            for T in (50, 100, 200, 400, 800, 1600):
                for seed in seeds:
                    solved = T <= limits[name]
                    value = (1.0 if hib else 0.001) if solved else chance
                    rows.append(_row(
                        trial_id=f"lb-{task}-{name}-{T}-{seed}", sweep=sweep, task=task,
                        task_spec=f"{task}:length={T}", structure=name,
                        structure_spec=SPECS[name], cell="rnn_tanh", hidden=64,
                        hidden_request="64", seq_len=T, batch=32, device="cpu", seed=seed,
                        kind="train", metric=metric, value=value, chance=chance,
                        higher_is_better=hib, primary=True, solved=solved,
                        stored_params=stored_params(name, 64), train_steps=1000,
                        wall_time_s=5.0, timestamp="2026-01-01T02:00:00Z"))
    return rows


def synthetic_frame(
    sweep: str = "synthetic",
    names=tuple(SPECS),
    hiddens=(32, 64, 128, 256),
    task_specs=tuple(TASKS),
    seeds=(0, 1, 2, 3, 4),
    skill: dict | None = None,
    speed: bool = True,
    train: bool = True,
    history: bool = True,
    iso: bool = True,
    lookback: bool = False,
    devices=("cpu",),
    seed: int = 0,
    settings: dict | None = None,
    cell: str = "rnn_tanh",
) -> pd.DataFrame:
    """A results frame with the schema's columns and dtypes.

    ``skill`` overrides the per-structure skill, e.g. ``{"diagonal": 1.0}`` makes the
    diagonal as good as full. ``settings`` is written as every train row's
    train_settings JSON (e.g. ``{"preset": "trask", "steps": 10000, "lr": 0.1}``).
    """
    rng = np.random.default_rng(seed)
    sk = dict(SKILL, **(skill or {}))
    rows = []
    if speed:
        rows += _speed_rows(sweep, names, hiddens, rng, devices)
    if train:
        reqs = ["64"]
        if iso:
            reqs.append("iso_params:2000")
        rows += _train_rows(sweep, names, task_specs, seeds, ["64"], sk, rng, history,
                            settings, cell)
        if iso:
            iso_names = [n for n in names if n in ("full", "diagonal", "block")]
            rows += _train_rows(sweep, iso_names, task_specs, seeds, ["iso_params:2000"],
                                sk, rng, False, settings, cell)
    if lookback:
        rows += _lookback_rows(sweep, names, seeds, rng)
    return to_schema(rows)


def to_schema(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in COLUMN_NAMES:
        if col not in df.columns:
            df[col] = pd.NA
    df = df[COLUMN_NAMES]
    for col in COLUMN_NAMES:
        if DTYPES[col] == "float64":
            df[col] = df[col].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        elif DTYPES[col] != "object":
            df[col] = df[col].astype(DTYPES[col])
    return df
