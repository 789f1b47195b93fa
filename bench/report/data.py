"""Reading the results store and shaping it into the tables the report draws.

Everything here is pandas and numpy: the report never imports torch (figure 7 and
the butterfly check import ``connbench.nn.structures`` lazily, elsewhere).
"""

from __future__ import annotations

import glob
import json
import math
import os

import numpy as np
import pandas as pd

from connbench.report.style import short_labels
from connbench.results.schema import COLUMN_NAMES, DTYPES, SPEED_METRIC

EXCLUSIVE_KINDS = ("fwd", "bwd", "fwd+bwd")
# Timing used for "time per step" when one number is wanted: what training pays.
HEADLINE_PASS = "fwd+bwd"


class NoResultsError(FileNotFoundError):
    """The results store holds nothing for this sweep."""


def no_results_message(results_dir: str, sweep: str) -> str:
    return (
        f"no results for sweep '{sweep}' in {results_dir}/: run `connbench run {sweep} "
        f"--results {results_dir}` first (or `make bench SWEEP={sweep}`)"
    )


def _read_parquet_dir(results_dir: str, sweep: str) -> pd.DataFrame:
    """Stand-in for connbench.results.store.load: every part file of the sweep, concatenated."""
    files = sorted(glob.glob(os.path.join(results_dir, sweep, "*.parquet")))
    if not files:
        raise NoResultsError(no_results_message(results_dir, sweep))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def load_results(results_dir: str, sweep: str) -> pd.DataFrame:
    """The sweep's rows from the store, or NoResultsError naming the command to run."""
    import importlib

    try:
        store = importlib.import_module("connbench.results.store")
    except ModuleNotFoundError as exc:
        if exc.name != "connbench.results.store":
            raise
        store = None  # the store module has not landed: read the part files directly
    if store is not None and hasattr(store, "load"):
        try:
            df = store.load(results_dir, sweep)
        except FileNotFoundError as exc:
            raise NoResultsError(f"{exc} (or `make bench SWEEP={sweep}`)") from exc
    else:
        df = _read_parquet_dir(results_dir, sweep)
    if df is None or len(df) == 0:
        raise NoResultsError(no_results_message(results_dir, sweep))
    return df


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Schema columns present and typed, a ``label`` per structure spec, a stable order.

    The stable sort makes every table and figure independent of the order in which
    part files were read.
    """
    df = df.copy()
    for col in COLUMN_NAMES:
        if col not in df.columns:
            df[col] = pd.Series([pd.NA] * len(df), dtype=DTYPES[col])
    spec = df["structure_spec"].astype("string").fillna(df["structure"].astype("string"))
    df["structure_spec"] = spec.fillna("?")
    df["structure"] = df["structure"].astype("string").fillna(
        df["structure_spec"].str.split(":").str[0]
    )
    labels = short_labels(df["structure_spec"].astype(str))
    df["label"] = df["structure_spec"].astype(str).map(labels)
    hidden_str = df["hidden"].astype("string")
    df["hidden_request"] = df["hidden_request"].astype("string").fillna(hidden_str).fillna("?")
    df["task_spec"] = df["task_spec"].astype("string").fillna(df["task"].astype("string"))
    df["device"] = df["device"].astype("string").fillna("cpu")
    settings = [_settings(v) for v in df["train_settings"]]
    df["budget"] = pd.array([s.get("steps") for s in settings], dtype="Int64")
    df["lr"] = pd.array([s.get("lr") for s in settings], dtype="Float64")
    df["preset"] = pd.array([s.get("preset") for s in settings], dtype="string")
    df["role"] = pd.array([s.get("role") or "claim" for s in settings], dtype="string")
    sort_cols = ["kind", "pass", "task_spec", "structure_spec", "cell", "hidden_request",
                 "hidden", "seq_len", "device", "seed", "metric", "step", "trial_id"]
    return df.sort_values(sort_cols, kind="mergesort", na_position="first").reset_index(drop=True)


def _settings(text) -> dict:
    """The row's training settings (train_settings JSON); {} when absent or unreadable
    (rows written before the column existed)."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or pd.isna(text):
        return {}
    try:
        out = json.loads(str(text))
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def is_iso(hidden_request) -> bool:
    text = str(hidden_request)
    return text.startswith("iso_params") or text.startswith("iso_time")


def iso_mask(requests: pd.Series) -> pd.Series:
    """Boolean mask of budget-sized rows (``iso_params:N`` / ``iso_time:S``)."""
    return pd.Series([is_iso(r) for r in requests], index=requests.index, dtype=bool)


def _mode_config(rows: pd.DataFrame, cols: list[str]) -> dict:
    """The most frequent combination of cols (ties broken by sort order)."""
    counts = rows.groupby(cols, dropna=False).size().reset_index(name="n")
    counts = counts.sort_values(["n", *cols], ascending=[False] + [True] * len(cols),
                                kind="mergesort")
    first = counts.iloc[0]
    return {c: first[c] for c in cols}


def speed_rows(df: pd.DataFrame, metric: str = SPEED_METRIC,
               cell: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Timing (or memory) rows of one measured configuration, and that configuration.

    A sweep may time several cells or batches; a figure mixing them would be
    meaningless, so the most common (cell, batch, seq_len) is drawn and named. With
    ``cell``, only that cell's rows are considered (a trained LSTM is costed with LSTM
    timings, never with the Elman ones).
    """
    rows = df[(df["metric"] == metric) & (df["status"] == "ok") & df["value"].notna()]
    if cell is not None:
        rows = rows[rows["cell"] == cell]
    if rows.empty:
        return rows, {}
    config = _mode_config(rows, ["cell", "batch", "seq_len"])
    keep = np.ones(len(rows), dtype=bool)
    for col, val in config.items():
        keep &= (rows[col].isna() if pd.isna(val) else (rows[col] == val)).to_numpy(bool)
    return rows[keep], config


def speed_table(df: pd.DataFrame, metric: str = SPEED_METRIC,
                cell: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Median value and IQR per (device, pass, label, hidden); with repeated trials
    (several seeds of a memory cell, each its own process) also their range (lo, hi) and
    count (repeats)."""
    rows, config = speed_rows(df, metric, cell)
    if rows.empty:
        return pd.DataFrame(columns=["device", "pass", "label", "hidden", "value", "iqr",
                                     "lo", "hi", "repeats"]), {}
    table = (
        rows.groupby(["device", "pass", "label", "hidden"], dropna=False)
        .agg(value=("value", "median"), iqr=("iqr", "median"),
             lo=("value", "min"), hi=("value", "max"), repeats=("value", "size"),
             stored_params=("stored_params", "max"))
        .reset_index()
    )
    return table, config


def time_per_step(df: pd.DataFrame, cell: str | None = None) -> pd.DataFrame:
    """Headline time per step (fwd+bwd, else fwd) per (device, label, hidden), of the
    sweep's main timed configuration, or of ``cell``'s timings (empty when that cell was
    not timed)."""
    table, _ = speed_table(df, cell=cell)
    if table.empty:
        return table
    for measured in (HEADLINE_PASS, "fwd"):
        sub = table[table["pass"] == measured]
        if not sub.empty:
            return sub.reset_index(drop=True)
    return table.iloc[0:0]


def final_train(df: pd.DataFrame) -> pd.Series:
    """Mask of the final train rows (the learning curve's rows have a step)."""
    return (df["kind"] == "train") & df["step"].isna()


def curve_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The learning curves: train rows with a step and a value."""
    return df[(df["kind"] == "train") & df["step"].notna() & df["value"].notna()]


def train_rows(df: pd.DataFrame, primary_only: bool = True,
               choose_lr: bool = True, lookback: bool = False) -> pd.DataFrame:
    """Final task metrics, one row per (arm, structure, seed).

    A diverged run is a failed seed, not a missing one: dropping it would flatter the
    structure, so a diverged row without a value scores the chance level. Failed
    (crashed) cells are left out; the report lists them. Where an arm trained a
    structure at several learning rates, only the seeds of its chosen one (best median
    validation score, see lr_choice) are kept, unless ``choose_lr`` is False.
    Cells with train role "lookback" (cheap probes of longer sequences) are left out
    unless ``lookback`` is True: they feed the lookback table, never a verdict.
    """
    rows = df[final_train(df) & df["status"].isin(["ok", "diverged"])].copy()
    if not lookback and "role" in rows:
        rows = rows[rows["role"].fillna("claim") != "lookback"]
    if primary_only:
        primary = rows["primary"].fillna(False).astype(bool)
        rows = rows[primary]
    diverged_nan = (rows["status"] == "diverged") & rows["value"].isna()
    rows.loc[diverged_nan, "value"] = rows.loc[diverged_nan, "chance"]
    rows = rows[rows["value"].notna()]
    rows["solved"] = rows["solved"].fillna(False).astype(bool)
    rows["higher_is_better"] = rows["higher_is_better"].fillna(True).astype(bool)
    rows = rows.reset_index(drop=True)
    if primary_only and choose_lr:
        rows = rows[_chosen_lr_mask(rows, df)].reset_index(drop=True)
    return rows


# An arm: what a verdict compares structures within. The training budget (steps) is
# part of it, so a sweep with two budgets (the `trask` sweep's 10,000 and 50,000) gives
# two arms instead of pooling them. The learning rate is not: it is tuned per structure.
ARM = ["task_spec", "cell", "hidden_request", "budget"]


def arm_name(task_spec, cell, hidden_request, budget=None) -> str:
    steps = "" if budget is None or pd.isna(budget) else f" · {int(budget):,} steps"
    return f"{task_spec} · {cell} · H={hidden_request}{steps}"


THREAD_PRESET = "trask"


def full_passed(rows: pd.DataFrame) -> bool | None:
    """The positive control of one arm's rows: did full beat chance (the lower end of
    its median's 95 % CI past chance, in the good direction)? None without full rows
    or a chance level. The rule is the one verdicts.py applies."""
    from connbench.report.stats import bootstrap_median_ci

    full = rows[rows["label"] == "full"]
    chance = full["chance"].dropna()
    if full.empty or chance.empty:
        return None
    ci = bootstrap_median_ci(full["value"])
    ch = float(chance.median())
    if bool(full["higher_is_better"].fillna(True).iloc[0]):
        return bool(ci.low > ch)
    return bool(ci.high < ch)


def thread_mask(rows: pd.DataFrame) -> pd.Series:
    """Rows of the thread's own experiment: Trask's preset (or, in rows written before
    train_settings existed, its unmistakable shape: sigmoid cell, batch 1)."""
    preset = rows["preset"].astype("string") if "preset" in rows else None
    by_preset = (preset == THREAD_PRESET).fillna(False) if preset is not None else False
    legacy = (rows["cell"] == "rnn_sigmoid") & (rows["batch"] == 1)
    if preset is not None:
        legacy &= preset.isna()
    return (by_preset | legacy.fillna(False)).astype(bool)


def validation_scores(rows: pd.DataFrame, df: pd.DataFrame) -> pd.Series:
    """Per final row: the last learning-curve value of its metric in the same trial,
    i.e. the score on the validation set that early stopping saw (never the test-set
    value the verdicts use). NaN when the trial logged no curve."""
    curves = curve_rows(df)
    if curves.empty:
        return pd.Series(np.nan, index=rows.index)
    last = (curves.sort_values("step", kind="mergesort")
            .groupby(["trial_id", "metric"])["value"].last())
    keys = list(zip(rows["trial_id"], rows["metric"], strict=True))
    return pd.Series([float(last.get(k, np.nan)) for k in keys], index=rows.index)


def lr_choice(rows: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """The learning rate picked per (arm, structure): the best median over seeds of the
    validation score. Columns: ARM..., label, lr, validation, candidates."""
    cols = [*ARM, "label", "lr", "validation", "candidates"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    r = rows.assign(validation=validation_scores(rows, df).to_numpy())
    r["lr_key"] = r["lr"].astype("Float64").fillna(-1.0).astype(float)
    out = []
    for key, g in r.groupby([*ARM, "label"], sort=True, dropna=False):
        sign = 1.0 if bool(g["higher_is_better"].iloc[0]) else -1.0
        per_lr = g.groupby("lr_key")["validation"].median()
        # a diverged or curve-less setting scores worst, never best
        score = (sign * per_lr).fillna(-math.inf)
        best = float(score.idxmax())
        out.append((*key, None if best < 0 else best, float(per_lr[best]),
                    ", ".join("n/a" if k < 0 else f"{k:g}" for k in sorted(per_lr.index))))
    return pd.DataFrame(out, columns=cols)


def _chosen_lr_mask(rows: pd.DataFrame, df: pd.DataFrame) -> np.ndarray:
    """Keep, per (arm, structure), only the seeds trained at its chosen learning rate."""
    lrs = rows["lr"].astype("Float64").fillna(-1.0).astype(float)
    n_lr = lrs.groupby([rows[c].astype(str) for c in [*ARM, "label"]]).transform("nunique")
    if rows.empty or (n_lr <= 1).all():
        return np.ones(len(rows), dtype=bool)
    choice = lr_choice(rows, df)
    chosen = {tuple(str(v) for v in k): (-1.0 if pd.isna(lr) else lr)
              for *k, lr in choice[[*ARM, "label", "lr"]].itertuples(index=False)}
    keys = rows[[*ARM, "label"]].astype(str).itertuples(index=False)
    keep = [chosen.get(tuple(k), v) == v for k, v in zip(keys, lrs, strict=True)]
    return np.array(keep, dtype=bool)


def mixed_budget_arms(df: pd.DataFrame) -> list[str]:
    """Arms holding more than one cell for the same structure and seed.

    That happens when a sweep has an axis the schema does not record, such as the
    `trask` sweep's two training budgets (10,000 and 50,000 steps): the seeds of such an
    arm pool both configurations, and the report says so.
    """
    rows = train_rows(df)
    out = []
    for key, g in rows.groupby(ARM, sort=True, dropna=False):
        cells = g.groupby(["label", "seed"])["trial_id"].nunique()
        if (cells > 1).any():
            out.append(f"{arm_name(*key)} (up to {int(cells.max())} runs per structure "
                       "and seed)")
    return out


def seeds_of(rows: pd.DataFrame, label: str) -> np.ndarray:
    return rows.loc[rows["label"] == label, "value"].to_numpy(float)


def environment(df: pd.DataFrame) -> dict[str, str]:
    """The distinct environment values of the sweep, joined, for the Setup section."""
    out = {}
    for col in ["torch_version", "cuda_version", "cudnn_version", "cpu_model", "gpu_name",
                "threads", "dtype", "host", "connbench_version", "git_commit"]:
        vals = sorted({str(v) for v in df[col].dropna().tolist() if str(v) != ""})
        out[col] = ", ".join(vals) if vals else "n/a"
    dirty = df["git_dirty"].dropna()
    out["git_dirty"] = "yes" if bool(dirty.any()) else ("no" if len(dirty) else "n/a")
    return out


def total_run_time_s(df: pd.DataFrame) -> float:
    """Sum of wall times, counted once per (trial, kind): a train trial writes one row
    per metric, all carrying the same wall time."""
    rows = df[df["wall_time_s"].notna() & df["step"].isna()]
    if rows.empty:
        return float("nan")
    per = rows.groupby(["trial_id", "kind"], dropna=False)["wall_time_s"].max()
    return float(per.sum())


def timestamp_span(df: pd.DataFrame) -> tuple[str, str]:
    ts = sorted(str(t) for t in df["timestamp"].dropna().tolist() if str(t))
    return (ts[0], ts[-1]) if ts else ("n/a", "n/a")
