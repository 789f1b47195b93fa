"""Compare two result sets trial by trial: the before/after of a code change.

Measurements are matched by what was measured (:data:`IDENTITY`: the task, structure,
cell, sizes, device, dtype, pass, metric and the training settings), never by
``trial_id``, which includes code versions and so differs between a "before" and an
"after" that bumped a version. For each matched measurement:

* ``speed``: the median seconds per step of each side, and a two-sided Mann–Whitney U
  test on the stored timing ``samples`` of the two sides;
* ``memory``: the peak bytes of each side (one figure per side: no test);
* ``train``: the final value of each metric, pooled over seeds (median), tested
  with Mann–Whitney U over the per-seed values (two or more seeds a side).

``ratio`` is NEW / BASE. ``worse_pct`` is the change in the bad direction (lower is
better for time and memory; train metrics follow ``higher_is_better``), positive
for a regression. A regression counts for ``--fail-on PCT`` only when it is beyond
PCT and significant (p < :data:`ALPHA`); rows without a test never fail a gate.
The test is ``scipy.stats.mannwhitneyu`` where scipy is installed, else the numpy
implementation in ``connbench.report.stats`` (the tests check they agree).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from connbench.registry import SpecError

ALPHA = 0.05
# The columns that say what a measurement is. threads only for speed and memory (a
# train metric does not depend on it; pool workers get cpu_count // workers).
IDENTITY = ("kind", "pass", "metric", "task_spec", "structure_spec", "cell", "hidden",
            "hidden_request", "layers", "seq_len", "batch", "device", "dtype", "threads",
            "optimizer", "lr", "steps_budget", "max_time_s", "preset")


@dataclass(frozen=True)
class Change:
    """One matched measurement of two result sets."""

    kind: str
    what: str            # pass (speed, memory) or metric (train)
    trial: str           # task, structure, cell, sizes (and seed for speed/memory)
    base: float
    new: float
    ratio: float         # new / base
    worse_pct: float     # change in the bad direction, percent; negative = better
    p: float | None      # Mann–Whitney two-sided p, None where there is nothing to test
    n_base: int
    n_new: int

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < ALPHA

    def regression(self, pct: float) -> bool:
        return self.significant and self.worse_pct > pct


@dataclass(frozen=True)
class Comparison:
    changes: list[Change]     # sorted: worst regression first
    only_base: int            # measurements with no partner in NEW
    only_new: int

    def regressions(self, pct: float) -> list[Change]:
        return [c for c in self.changes if c.regression(pct)]

    def to_dict(self) -> dict:
        return {"changes": [dict(asdict(c), significant=c.significant) for c in self.changes],
                "only_base": self.only_base, "only_new": self.only_new, "alpha": ALPHA}


# --------------------------------------------------------------------------- input
def resolve(where: str, results_dir: str | Path = "results") -> tuple[Path, str]:
    """(results dir, sweep folder name) of a result set given as a folder path
    (``results/default@before``) or a name under ``results_dir`` (``default@before``)."""
    path = Path(where)
    if path.is_dir() and any(path.glob("*.parquet")):
        return path.parent, path.name
    candidate = Path(results_dir) / where
    if candidate.is_dir() and any(candidate.glob("*.parquet")):
        return Path(results_dir), where
    known = sorted(p.name for p in Path(results_dir).glob("*") if p.is_dir()) \
        if Path(results_dir).is_dir() else []
    hint = f"; result sets in {results_dir}: {', '.join(known)}" if known else ""
    raise SpecError(f"{where!r} is not a results folder (a folder of part files such as "
                    f"results/default or a name under --results){hint}")


def load_set(where: str, results_dir: str | Path = "results") -> pd.DataFrame:
    from connbench.results import store

    root, name = resolve(where, results_dir)
    return store.load(root, name)


# --------------------------------------------------------------------------- matching
def _final_ok(df: pd.DataFrame) -> pd.DataFrame:
    df = df[(df["status"] == "ok") & df["step"].isna() & df["value"].notna()].copy()
    # train metrics do not depend on threads; speed/memory settings rows lack train ones
    df.loc[df["kind"] == "train", "threads"] = pd.NA
    return df


def _keys(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    parts = [df[c].astype("string").fillna("") for c in cols]
    out = parts[0]
    for p in parts[1:]:
        out = out + "|" + p
    return out


def _label(row: pd.Series, with_seed: bool) -> str:
    text = f"{row['task_spec']} {row['structure_spec']} {row['cell']} H={row['hidden']}"
    if not pd.isna(row["seq_len"]) and row["kind"] != "train":
        text += f" T={row['seq_len']}"
    if with_seed:
        text += f" s{row['seed']}"
    return text


def _groups(df: pd.DataFrame) -> dict[str, dict]:
    """key -> {row, values}: speed/memory per seed, train pooled over seeds. The latest
    row wins where one set holds the same measurement twice."""
    df = _final_ok(df).sort_values("timestamp", na_position="first")
    out: dict[str, dict] = {}
    cols = list(IDENTITY)
    per_seed = df["kind"] != "train"
    seeded = df[per_seed].assign(_key=_keys(df[per_seed], cols + ["seed"]))
    for key, rows in seeded.groupby("_key", sort=False):
        row = rows.iloc[-1]
        samples = list(row["samples"]) if isinstance(row["samples"], (list, np.ndarray)) else []
        out[key] = {"row": row, "value": float(row["value"]), "samples": samples,
                    "label": _label(row, with_seed=True)}
    train = df[~per_seed]
    train = train.assign(_key=_keys(train, cols))
    for key, rows in train.groupby("_key", sort=False):
        last = rows.drop_duplicates("seed", keep="last")
        values = [float(v) for v in last["value"]]
        row = last.iloc[-1]
        out[key] = {"row": row, "value": float(np.median(values)), "samples": values,
                    "label": _label(row, with_seed=False) + f" ({len(values)} seeds)"}
    return out


def mann_whitney_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Mann–Whitney p (scipy when installed), None with fewer than 2 a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:
        from connbench.report.stats import mann_whitney

        return float(mann_whitney(a, b)[1])
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _ratio(base: float, new: float) -> float:
    """new / base; 1 when both are 0 (an accuracy of 0 before and after is no change)."""
    if base == 0:
        return 1.0 if new == 0 else math.inf
    return new / base


def compare(base: pd.DataFrame, new: pd.DataFrame) -> Comparison:
    """Match two result frames by :data:`IDENTITY` and measure each change."""
    b, n = _groups(base), _groups(new)
    changes = []
    for key in b.keys() & n.keys():
        gb, gn = b[key], n[key]
        row = gb["row"]
        kind = str(row["kind"])
        hib = row["higher_is_better"]  # train: the metric's direction (NA: higher)
        lower_better = kind != "train" or (not pd.isna(hib) and not bool(hib))
        ratio = _ratio(gb["value"], gn["value"])
        change = (ratio - 1.0) * 100.0
        worse = change if lower_better else -change
        what = str(row["pass"]) if kind in ("speed", "memory") else str(row["metric"])
        changes.append(Change(kind, what, gb["label"], gb["value"], gn["value"], ratio,
                              worse, mann_whitney_p(gb["samples"], gn["samples"]),
                              len(gb["samples"]) or 1, len(gn["samples"]) or 1))
    changes.sort(key=lambda c: (-(c.worse_pct if math.isfinite(c.worse_pct) else -1e300),
                                c.kind, c.trial, c.what))
    return Comparison(changes, len(b.keys() - n.keys()), len(n.keys() - b.keys()))


# --------------------------------------------------------------------------- output
def _fmt(kind: str, value: float) -> str:
    if kind == "speed":
        return f"{value * 1e6:.1f} us"
    if kind == "memory":
        return f"{value / 2**20:.2f} MiB"
    return f"{value:.4g}"


def table(comp: Comparison, fail_on: float | None = None) -> str:
    """The comparison as a fixed-width text table (pandas right-aligns the numbers)."""
    if not comp.changes:
        return "(no measurement of BASE matches one of NEW)"
    rows = []
    for c in comp.changes:
        flag = ""
        if fail_on is not None and c.regression(fail_on):
            flag = "REGRESSION"
        elif c.significant:
            flag = "worse" if c.worse_pct > 0 else "better"
        rows.append({"kind": c.kind, "pass/metric": c.what, "trial": c.trial,
                     "base": _fmt(c.kind, c.base), "new": _fmt(c.kind, c.new),
                     "new/base": f"{c.ratio:.3f}", "worse %": f"{c.worse_pct:+.1f}",
                     "p": "n/a" if c.p is None else f"{c.p:.3g}", "": flag})
    frame = pd.DataFrame(rows)
    return frame.to_string(index=False, justify="left", formatters={
        "trial": lambda s: f"{s:<{frame['trial'].str.len().max()}}",
        "pass/metric": lambda s: f"{s:<{frame['pass/metric'].str.len().max()}}",
        "kind": lambda s: f"{s:<6}"})
