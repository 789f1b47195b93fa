"""Reading the results store and shaping it into the tables the report draws.

Everything here is pandas and numpy: the report never imports torch (figure 7 and
the butterfly check import ``connbench.nn.structures`` lazily, elsewhere).
"""

from __future__ import annotations

import glob
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
    sort_cols = ["kind", "pass", "task_spec", "structure_spec", "cell", "hidden_request",
                 "hidden", "seq_len", "device", "seed", "metric", "step", "trial_id"]
    return df.sort_values(sort_cols, kind="mergesort", na_position="first").reset_index(drop=True)


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


def speed_rows(df: pd.DataFrame, metric: str = SPEED_METRIC) -> tuple[pd.DataFrame, dict]:
    """Timing (or memory) rows of one measured configuration, and that configuration.

    A sweep may time several cells or batches; a figure mixing them would be
    meaningless, so the most common (cell, batch, seq_len) is drawn and named.
    """
    rows = df[(df["metric"] == metric) & (df["status"] == "ok") & df["value"].notna()]
    if rows.empty:
        return rows, {}
    config = _mode_config(rows, ["cell", "batch", "seq_len"])
    keep = np.ones(len(rows), dtype=bool)
    for col, val in config.items():
        keep &= (rows[col].isna() if pd.isna(val) else (rows[col] == val)).to_numpy(bool)
    return rows[keep], config


def speed_table(df: pd.DataFrame, metric: str = SPEED_METRIC) -> tuple[pd.DataFrame, dict]:
    """Median value and IQR per (device, pass, label, hidden)."""
    rows, config = speed_rows(df, metric)
    if rows.empty:
        return pd.DataFrame(columns=["device", "pass", "label", "hidden", "value", "iqr"]), {}
    table = (
        rows.groupby(["device", "pass", "label", "hidden"], dropna=False)
        .agg(value=("value", "median"), iqr=("iqr", "median"),
             stored_params=("stored_params", "max"))
        .reset_index()
    )
    return table, config


def time_per_step(df: pd.DataFrame) -> pd.DataFrame:
    """Headline time per step (fwd+bwd, else fwd) per (device, label, hidden)."""
    table, _ = speed_table(df)
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


def train_rows(df: pd.DataFrame, primary_only: bool = True) -> pd.DataFrame:
    """Final task metrics, one row per (arm, structure, seed).

    A diverged run is a failed seed, not a missing one: dropping it would flatter the
    structure, so a diverged row without a value scores the chance level. Failed
    (crashed) cells are left out; the report lists them.
    """
    rows = df[final_train(df) & df["status"].isin(["ok", "diverged"])].copy()
    if primary_only:
        primary = rows["primary"].fillna(False).astype(bool)
        rows = rows[primary]
    diverged_nan = (rows["status"] == "diverged") & rows["value"].isna()
    rows.loc[diverged_nan, "value"] = rows.loc[diverged_nan, "chance"]
    rows = rows[rows["value"].notna()]
    rows["solved"] = rows["solved"].fillna(False).astype(bool)
    rows["higher_is_better"] = rows["higher_is_better"].fillna(True).astype(bool)
    return rows.reset_index(drop=True)


ARM = ["task_spec", "cell", "hidden_request"]


def arm_name(task_spec, cell, hidden_request) -> str:
    return f"{task_spec} · {cell} · H={hidden_request}"


def mixed_budget_arms(df: pd.DataFrame) -> list[str]:
    """Arms holding more than one cell for the same structure and seed.

    That happens when a sweep has an axis the schema does not record, such as the
    `trask` sweep's two training budgets (10,000 and 50,000 steps): the seeds of such an
    arm pool both configurations, and the report says so.
    """
    rows = train_rows(df)
    out = []
    for key, g in rows.groupby(ARM, sort=True):
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
