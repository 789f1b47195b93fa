"""The report's eight figures. Each draws from the prepared results frame and either
writes its PNG and returns None, or returns the reason it was skipped.

Colours and markers come from one style map per report (``styles``: label ->
(colour, marker)), so a structure looks the same in every figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from connbench.registry import split_spec
from connbench.report import data as D
from connbench.report.matrices import MATRIX_HIDDEN, MatricesUnavailable, dense_matrices
from connbench.report.plotting import (
    count_x,
    figure_legend,
    grid_shape,
    hidden_axis,
    hide_unused,
    new_figure,
    plain_log_x,
    plain_log_y,
    save,
    unique_handles,
)
from connbench.report.stats import bootstrap_median_ci
from connbench.report.style import DIVERGING_CMAP, label_order, natural_key
from connbench.results.schema import MEMORY_METRIC

PASS_TITLES = {"fwd": "forward", "bwd": "backward", "fwd+bwd": "forward + backward"}


@dataclass(frozen=True)
class FigureSpec:
    """A figure: file name, title, the function that draws it, and the sweep that
    provides its data when this one does not."""

    number: int
    name: str
    title: str
    draw: Callable
    source: str


def _device_title(df: pd.DataFrame, device: str) -> str:
    col = "gpu_name" if device.startswith("cuda") else "cpu_model"
    names = sorted({str(v) for v in df.loc[df["device"] == device, col].dropna() if str(v)})
    return f"{device.upper()} ({names[0]})" if names else device.upper()


def _config_text(config: dict) -> str:
    parts = [f"{k} {v}" for k, v in config.items() if not pd.isna(v)]
    return ", ".join(parts).replace("seq_len", "T")


def _structure_handles(labels, styles):
    return [Line2D([], [], color=styles[lab][0], marker=styles[lab][1], linestyle="-",
                   markersize=6) for lab in labels]


def structures_first(handles, names):
    """Legend entries: structures in design order, then everything else as drawn."""
    structs = set(label_order([n for n in names if not n[0].isupper() and " " not in n]))
    order = label_order(structs)
    idx = [names.index(n) for n in order] + [i for i, n in enumerate(names) if n not in structs]
    return [handles[i] for i in idx], [names[i] for i in idx]


# 1 ------------------------------------------------------------------------------------
def fig_time_vs_hidden(df, styles, path, dpi):
    table, config = D.speed_table(df)
    table = table[table["pass"].isin(["fwd", "fwd+bwd"])] if not table.empty else table
    if table.empty:
        return "no timing rows (passes fwd / fwd+bwd)"
    devices = sorted(table["device"].unique())
    passes = [p for p in ("fwd", "fwd+bwd") if p in set(table["pass"])]
    fig, axes = new_figure(len(devices), len(passes), 5.2 * len(passes), 4.0 * len(devices),
                           sharex=True)
    labels = label_order(table["label"])
    for r, device in enumerate(devices):
        for c, measured in enumerate(passes):
            ax = axes[r, c]
            sub = table[(table["device"] == device) & (table["pass"] == measured)]
            for lab in labels:
                s = sub[sub["label"] == lab].sort_values("hidden")
                if s.empty:
                    continue
                colour, marker = styles[lab]
                us = s["value"].to_numpy(float) * 1e6
                ax.errorbar(s["hidden"].to_numpy(float), us,
                            yerr=s["iqr"].fillna(0).to_numpy(float) * 1e6 / 2,
                            color=colour, marker=marker, markersize=5, linewidth=1.4,
                            capsize=2, label=lab)
            _reference_slopes(ax, sub)
            hidden_axis(ax, sub["hidden"])
            plain_log_y(ax)
            ax.set_title(f"{PASS_TITLES[measured]} · {_device_title(df, device)}")
            ax.set_xlabel("hidden size H (units, log scale)")
            ax.set_ylabel("time per step (µs, log scale)")
    handles, names = unique_handles(axes.flat)
    order = sorted(range(len(names)), key=lambda i: names[i].startswith("reference"))
    figure_legend(fig, [handles[i] for i in order], [names[i] for i in order],
                  title="structure")
    fig.suptitle(f"1. Time per time step vs hidden size ({_config_text(config)}; "
                 "error bars: IQR)")
    save(fig, path, dpi)
    return None


def _reference_slopes(ax, sub):
    """Dashed ∝H and dotted ∝H² lines through the median time at the smallest H."""
    hs = np.sort(sub["hidden"].dropna().unique().astype(float))
    if hs.size < 2:
        return
    anchor = float(np.median(sub.loc[sub["hidden"] == hs[0], "value"])) * 1e6
    ax.plot(hs, anchor * hs / hs[0], color="#555555", linestyle="--", linewidth=1,
            label="reference ∝ H")
    ax.plot(hs, anchor * (hs / hs[0]) ** 2, color="#555555", linestyle=":", linewidth=1.2,
            label="reference ∝ H²")
    for power, text in ((1, "∝H"), (2, "∝H²")):
        ax.annotate(text, (hs[-1], anchor * (hs[-1] / hs[0]) ** power), fontsize=8,
                    color="#555555", xytext=(3, 0), textcoords="offset points", va="center")


# 2 ------------------------------------------------------------------------------------
def speedup_table(df) -> pd.DataFrame:
    """time(full) / time(structure) at the same device and H, headline pass."""
    t = D.time_per_step(df)
    if t.empty or "full" not in set(t["label"]):
        return pd.DataFrame()
    full = t[t["label"] == "full"][["device", "hidden", "value"]].rename(
        columns={"value": "full"})
    merged = t.merge(full, on=["device", "hidden"], how="inner")
    merged["speedup"] = merged["full"] / merged["value"]
    return merged


def _times_text(v: float) -> str:
    """2.3×, 23×, 230×: two significant digits without exponents."""
    return f"{v:.2g}×" if v < 100 else f"{v:.0f}×"


def fig_speedup_heatmap(df, styles, path, dpi):
    sp = speedup_table(df)
    if sp.empty:
        return "no timing rows with `full` to compare against"
    devices = sorted(sp["device"].unique())
    labels = label_order(sp["label"])
    hiddens = sorted(sp["hidden"].unique())
    fig, axes = new_figure(1, len(devices), (0.9 * len(hiddens) + 0.8) * len(devices) + 2.8,
                           0.42 * len(labels) + 1.6, sharey=True)
    logs = np.log2(sp["speedup"].to_numpy(float))
    vmax = max(float(np.nanmax(np.abs(logs))), 1.0)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
    for i, device in enumerate(devices):
        ax = axes[0, i]
        grid = (sp[sp["device"] == device]
                .pivot_table(index="label", columns="hidden", values="speedup")
                .reindex(index=labels, columns=hiddens))
        values = grid.to_numpy(float)
        im = ax.imshow(np.log2(values), cmap=DIVERGING_CMAP, norm=norm, aspect="auto")
        for (r, c), v in np.ndenumerate(values):
            if np.isfinite(v):
                dark = abs(np.log2(v)) > 0.55 * vmax
                ax.text(c, r, _times_text(v), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
        ax.set_xticks(range(len(hiddens)), [str(int(h)) for h in hiddens])
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("hidden size H (units)")
        if i == 0:
            ax.set_ylabel("structure")
        ax.set_title(_device_title(df, device))
        ax.grid(False)
    measured = D.time_per_step(df)["pass"].iloc[0]
    cbar = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.9)
    top = int(np.floor(vmax))
    step = max(1, top // 4)
    ticks = np.arange(-top, top + 1, step)
    cbar.set_ticks(ticks, labels=[_times_text(2.0 ** t) if t >= 0 else f"1/{2 ** -t:g}×"
                                  for t in ticks])
    cbar.set_label("speedup vs full (× faster, log scale; >1 = faster, <1 = slower)")
    fig.suptitle(f"2. Speedup vs full, time per step ({PASS_TITLES[measured]})")
    save(fig, path, dpi)
    return None


# 3 ------------------------------------------------------------------------------------
def _metric_label(rows) -> str:
    metric = rows["metric"].iloc[0]
    hib = bool(rows["higher_is_better"].iloc[0])
    return f"{metric} ({'higher' if hib else 'lower'} is better)"


def _panels(rows) -> list[tuple]:
    """(task_spec, cell) panels, with the cell named only when a task has several."""
    keys = rows[["task_spec", "cell"]].drop_duplicates()
    return sorted((tuple(k) for k in keys.itertuples(index=False)),
                  key=lambda k: (natural_key(str(k[0])), str(k[1])))


def fig_metric_per_structure(df, styles, path, dpi):
    rows = D.train_rows(df)
    rows = rows[~D.iso_mask(rows["hidden_request"])]
    if rows.empty:
        return "no train rows"
    panels = _panels(rows)
    nr, nc = grid_shape(len(panels), 2 if len(panels) == 4 else 3)
    fig, axes = new_figure(nr, nc, 5.0 * nc, 4.0 * nr)
    for ax, (task_spec, cell) in zip(axes.flat, panels, strict=False):
        sub = rows[(rows["task_spec"] == task_spec) & (rows["cell"] == cell)]
        labels = label_order(sub["label"])
        reqs = sorted(sub["hidden_request"].unique(), key=lambda r: (len(r), r))
        width = 0.6 / max(len(reqs), 1)
        for x, lab in enumerate(labels):
            colour, marker = styles[lab]
            for j, req in enumerate(reqs):
                vals = sub[(sub["label"] == lab) & (sub["hidden_request"] == req)]["value"]
                if vals.empty:
                    continue
                xpos = x + (j - (len(reqs) - 1) / 2) * width
                ci = bootstrap_median_ci(vals)
                jitter = np.linspace(-0.08, 0.08, len(vals)) if len(vals) > 1 else [0.0]
                ax.scatter(xpos + np.asarray(jitter), vals, s=16, color=colour, alpha=0.6,
                           linewidths=0, label="one seed")
                ax.errorbar([xpos], [ci.estimate],
                            yerr=[[ci.estimate - ci.low], [ci.high - ci.estimate]],
                            color=colour, marker=marker, markersize=7, capsize=3,
                            markeredgecolor="black", markeredgewidth=0.5,
                            label="median over seeds, 95% bootstrap CI")
        chance = sub["chance"].dropna()
        if not chance.empty:
            ax.axhline(float(chance.median()), color="#555555", linestyle="--", linewidth=1,
                       label="chance / trivial baseline")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_xlabel("structure")
        ax.set_ylabel(_metric_label(sub))
        hs = ", ".join(reqs)
        title = f"{task_spec} · {cell} · H={hs}" + (" (left→right)" if len(reqs) > 1
                                                     else "")
        if D.full_passed(sub) is False:  # positive control failed: says nothing
            title += "\nUNINFORMATIVE: full did not beat chance"
            ax.set_facecolor("#eeeeee")
        ax.set_title(title)
    hide_unused(axes, len(panels))
    handles, names = unique_handles(axes.flat)
    handles = [_grey(h, n) for h, n in zip(handles, names, strict=False)]
    figure_legend(fig, handles, names, title=f"{len(rows['seed'].unique())} seeds")
    fig.suptitle("3. Final task metric per structure (colour = structure)")
    save(fig, path, dpi)
    return None


def _grey(handle, name):
    """A neutral legend entry (the colour says the structure, not the mark)."""
    if name == "one seed":
        return Line2D([], [], color="#777777", marker="o", linestyle="", alpha=0.5,
                      markersize=4)
    if name.startswith("median"):
        return Line2D([], [], color="#777777", marker="o", linestyle="-", markersize=6,
                      markeredgecolor="black")
    return handle


# 4 ------------------------------------------------------------------------------------
def pareto_front(x: np.ndarray, y: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Boolean mask of points no other point beats on both cost (x, lower is better)
    and quality (y)."""
    q = y if higher_is_better else -y
    keep = np.ones(len(x), dtype=bool)
    for i in range(len(x)):
        better = (x <= x[i]) & (q >= q[i]) & ((x < x[i]) | (q > q[i]))
        keep[i] = not better.any()
    return keep


def tradeoff_points(df) -> pd.DataFrame:
    """Median metric per (task, cell, structure, hidden request) with its cost:
    stored recurrent params, and time per step (timing rows at that H, else the
    training wall time per step)."""
    rows = D.train_rows(df)
    if rows.empty:
        return rows
    pts = (rows.groupby(["task_spec", "cell", "label", "hidden_request", "hidden"],
                        dropna=False)
           .agg(value=("value", "median"), stored=("stored_params", "max"),
                wall=("wall_time_s", "median"), steps=("train_steps", "median"),
                higher_is_better=("higher_is_better", "first"), metric=("metric", "first"),
                chance=("chance", "median"))
           .reset_index())
    # Never mix the two clocks in one panel: per cell, timed per-step medians of that cell
    # when the sweep has them (points without a timing at their H are left out), else
    # training wall time.
    parts = []
    for cell, sub in pts.groupby("cell", sort=False):
        tps = D.time_per_step(df, cell=str(cell))
        if not tps.empty:
            tps = tps[tps["device"] == sorted(tps["device"].unique())[0]]
            sub = sub.merge(tps[["label", "hidden", "value"]].rename(columns={"value": "time"}),
                            on=["label", "hidden"], how="left")
            sub["time_source"] = "timed"
        else:
            sub = sub.assign(time=sub["wall"] / sub["steps"], time_source="train")
        parts.append(sub)
    return pd.concat(parts, ignore_index=True)


def fig_tradeoff(df, styles, path, dpi):
    pts = tradeoff_points(df)
    if pts.empty:
        return "no train rows"
    panels = _panels(pts)
    fig, axes = new_figure(len(panels), 2, 10.5, 3.6 * len(panels))
    for r, (task_spec, cell) in enumerate(panels):
        sub = pts[(pts["task_spec"] == task_spec) & (pts["cell"] == cell)]
        hib = bool(sub["higher_is_better"].iloc[0])
        for c, (col, xlabel) in enumerate([
            ("stored", "stored recurrent weights (count, {scale})"),
            ("time", "time per step (µs, log scale)"),
        ]):
            ax = axes[r, c]
            s = sub[sub[col].notna()]
            x = s[col].to_numpy(float) * (1e6 if col == "time" else 1.0)
            y = s["value"].to_numpy(float)
            for lab, xi, yi, req in zip(s["label"], x, y, s["hidden_request"], strict=False):
                colour, marker = styles[lab]
                ax.scatter([xi], [yi], color=colour, marker=marker, s=40, label=lab,
                           edgecolors="black" if D.is_iso(req) else "none", linewidths=0.6)
            if len(x):
                front = pareto_front(x, y, hib)
                order = np.argsort(x[front])
                # steps-post: a quality level is reached only at the cost that buys it
                ax.plot(x[front][order], y[front][order], color="#333333", linewidth=1,
                        drawstyle="steps-post", zorder=0, label="Pareto front")
                ax.scatter(x[front], y[front], s=140, facecolors="none",
                           edgecolors="#333333", linewidths=1, label="on the Pareto front")
            if col == "stored":
                xlabel = xlabel.format(scale=count_x(ax, x))
            else:
                plain_log_x(ax)
                timed = (sub["time_source"] == "timed").all()
                src = "timed fwd+bwd" if timed else "training wall time / training step"
                xlabel = f"time per step (µs, log scale; {src})"
                if timed and sub["time"].isna().any():
                    xlabel += "\n(sizes without a timing, e.g. iso budgets, left out)"
            chance = s["chance"].dropna()
            if not chance.empty:
                ax.axhline(float(chance.median()), color="#555555", linestyle="--",
                           linewidth=1, label="chance / trivial baseline")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"median {_metric_label(s if len(s) else sub)}")
            ax.set_title(f"{task_spec} · {cell}")
    handles, names = structures_first(*unique_handles(axes.flat))
    figure_legend(fig, handles, names, title="structure (black edge: iso budget)")
    fig.suptitle("4. Task metric vs cost, Pareto front marked")
    save(fig, path, dpi)
    return None


# 5 ------------------------------------------------------------------------------------
def _main_request(rows) -> str:
    """The hidden request a task was trained at most often (ties: the larger size)."""
    counts = rows.groupby("hidden_request").size().reset_index(name="n")
    counts["num"] = pd.to_numeric(counts["hidden_request"], errors="coerce").fillna(-1)
    counts = counts.sort_values(["n", "num", "hidden_request"], ascending=False,
                                kind="mergesort")
    return str(counts.iloc[0]["hidden_request"])


def learning_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Median and IQR over seeds per step. A run that stopped early (solved) keeps its
    last value for the later steps, so early stopping does not shrink the sample."""
    wide = rows.pivot_table(index="step", columns="seed", values="value", aggfunc="median")
    wide = wide.sort_index().ffill()
    q = wide.quantile([0.25, 0.5, 0.75], axis=1).T
    q.columns = ["q25", "median", "q75"]
    return q.reset_index()


def curve_panels(hist: pd.DataFrame) -> list[tuple]:
    """(task_spec, cell, budget) panels of the learning curves: one per training budget
    too, because curves of 10,000- and 50,000-step runs pooled into one median would be
    neither (budget None where the rows do not record one)."""
    out = []
    for t, c in _panels(hist):
        budgets = hist.loc[(hist["task_spec"] == t) & (hist["cell"] == c), "budget"]
        out += [(t, c, int(b)) for b in sorted(budgets.dropna().unique())] or [(t, c, None)]
    return out


def fig_learning_curves(df, styles, path, dpi):
    hist = D.curve_rows(df)
    hist = hist[hist["primary"].fillna(False).astype(bool)]
    hist = hist[~D.iso_mask(hist["hidden_request"])]
    # only the runs the tables use (each structure's chosen lr), and no step 0: the
    # untrained model's score would set the axis range and squash every curve
    hist = hist[hist["trial_id"].isin(set(D.train_rows(df)["trial_id"])) & (hist["step"] > 0)]
    if hist.empty:
        return "no learning-curve rows"
    panels = curve_panels(hist)
    split = len(panels) > len(_panels(hist))  # some task has several budgets: name them
    nr, nc = grid_shape(len(panels), 2)
    fig, axes = new_figure(nr, nc, 5.6 * nc, 3.8 * nr)
    for ax, (task_spec, cell, budget) in zip(axes.flat, panels, strict=False):
        sub = hist[(hist["task_spec"] == task_spec) & (hist["cell"] == cell)]
        if budget is not None:
            sub = sub[sub["budget"] == budget]
        req = _main_request(sub)
        sub = sub[sub["hidden_request"] == req]
        for i, lab in enumerate(label_order(sub["label"])):
            colour, marker = styles[lab]
            curve = learning_curves(sub[sub["label"] == lab])
            # marker and dash pattern as well as colour: ten lines stay distinguishable
            ax.plot(curve["step"], curve["median"], color=colour, linewidth=1.5, label=lab,
                    marker=marker, markevery=max(1, len(curve) // 6), markersize=5,
                    linestyle=("-", "--", "-.", ":")[i % 4])
            ax.fill_between(curve["step"], curve["q25"], curve["q75"], color=colour,
                            alpha=0.15, linewidth=0)
        chance = sub["chance"].dropna()
        if not chance.empty:
            ax.axhline(float(chance.median()), color="#555555", linestyle="--", linewidth=1,
                       label="chance / trivial baseline")
        ax.set_xlabel("training step (optimizer updates)")
        ax.set_ylabel(_metric_label(sub))
        steps = f" · {budget:,} steps" if split and budget is not None else ""
        ax.set_title(f"{task_spec} · {cell} · H={req}{steps}")
    hide_unused(axes, len(panels))
    handles, names = unique_handles(axes.flat)
    handles.append(Patch(color="#777777", alpha=0.3))
    names.append("interquartile range over seeds")
    figure_legend(fig, handles, names, title="median over seeds")
    fig.suptitle("5. Learning curves (evaluation metric during training)")
    save(fig, path, dpi)
    return None


# 6 ------------------------------------------------------------------------------------
LOOKBACK_TASKS = ("copy", "adding")


def delay_T(rows: pd.DataFrame) -> pd.Series:
    """The task's own T (copy: the delay, its ``length`` option; the sequence is T+20
    long), else the sequence length."""
    length = rows["task_spec"].map(lambda s: split_spec(str(s))[1].get("length"))
    return pd.to_numeric(length, errors="coerce").fillna(rows["seq_len"].astype(float))


def lookback_table(df) -> pd.DataFrame:
    """Longest T solved per (task, structure): a T counts as solved when at least half
    of its seeds solved it. Needs at least two sequence lengths of the task. Reads the
    claims' cells and the lookback probes (train role "lookback") alike."""
    rows = D.train_rows(df, lookback=True)
    rows = rows[rows["task"].isin(LOOKBACK_TASKS)]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(seq_len=delay_T(rows))
    rows = rows[rows["seq_len"].notna()]
    out = []
    for (task, lab), g in rows.groupby(["task", "label"], sort=True):
        if g["seq_len"].nunique() < 2 and rows[rows["task"] == task]["seq_len"].nunique() < 2:
            continue
        per_t = g.groupby("seq_len")["solved"].mean()
        solved_ts = per_t[per_t >= 0.5].index
        out.append({"task": task, "label": lab, "cells": ", ".join(sorted(g["cell"].unique())),
                    "longest_solved": int(max(solved_ts)) if len(solved_ts) else 0,
                    "longest_tried": int(g["seq_len"].max()),
                    "seeds": int(g["seed"].nunique())})
    return pd.DataFrame(out)


def lookback_lengths(df, task: str) -> set[int]:
    rows = df[D.final_train(df) & (df["task"] == task)]
    return {int(t) for t in delay_T(rows).dropna()}


def fig_lookback(df, styles, path, dpi):
    table = lookback_table(df)
    if table.empty:
        return "no copy/adding train rows at two or more sequence lengths"
    tasks = [t for t in LOOKBACK_TASKS if t in set(table["task"])]
    labels = label_order(table["label"])
    fig, axes = new_figure(1, len(tasks), 5.0 * len(tasks), 0.4 * len(labels) + 1.8,
                           sharey=True)
    for ax, task in zip(axes.flat, tasks, strict=False):
        sub = table[table["task"] == task].set_index("label")
        for y, lab in enumerate(labels):
            if lab not in sub.index:
                continue
            colour, _ = styles[lab]
            best, tried = sub.loc[lab, "longest_solved"], sub.loc[lab, "longest_tried"]
            ax.barh(y, best if best else 0, color=colour, height=0.7,
                    label="longest T solved (≥ half the seeds)")
            ax.plot([tried], [y], marker="|", color="#333333", markersize=12,
                    linestyle="", label="longest T tried")
            ax.text(max(best, 1) * 1.05, y, str(best) if best else "none",
                    va="center", fontsize=8)
        tried_ts = sorted(lookback_lengths(df, task))
        hidden_axis(ax, tried_ts)
        ax.set_xlim(tried_ts[0] / 2, tried_ts[-1] * 2)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("sequence length T (time steps, log scale)")
        if ax is axes.flat[0]:
            ax.invert_yaxis()  # shared y: invert once, full on top
            ax.set_ylabel("structure")
        ax.set_title(f"{task}")
    handles, names = unique_handles(axes.flat)
    handles = [Patch(color="#777777") if n.startswith("longest T solved") else h
               for h, n in zip(handles, names, strict=False)]
    figure_legend(fig, handles, names)
    fig.suptitle("6. Lookback: longest delay T solved per structure")
    save(fig, path, dpi)
    return None


# 7 ------------------------------------------------------------------------------------
def fig_matrices(df, styles, path, dpi):
    try:
        mats = dense_matrices(hidden=MATRIX_HIDDEN)
    except MatricesUnavailable as exc:
        return str(exc)
    if not mats:
        return "connbench.nn.structures knows none of the default structures"
    cmap = matplotlib.colormaps[DIVERGING_CMAP].with_extremes(bad="white")
    nr, nc = grid_shape(len(mats), 5)
    fig, axes = new_figure(nr, nc, 2.6 * nc + 1.0, 2.75 * nr + 0.6)
    for ax, (spec, m) in zip(axes.flat, mats.items(), strict=False):
        w = m["matrix"]
        im = ax.imshow(_connection_image(w), cmap=cmap, vmin=-1, vmax=1,
                       interpolation="nearest")
        nnz = int((w != 0).sum())
        if nnz == 0:
            ax.text(0.5, 0.5, "all zero:\nno recurrence", transform=ax.transAxes,
                    ha="center", va="center", fontsize=8, color="#555555")
        ax.set_title(f"{spec}\nnonzeros {nnz}, stored {m['stored']}", fontsize=8)
        ax.set_xlabel("to unit j", fontsize=7)
        ax.set_ylabel("from unit i", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(False)
    hide_unused(axes, len(mats))
    cbar = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    cbar.set_ticks([-1, -0.25, 0.25, 1], labels=["−max", "−small", "+small", "+max"])
    cbar.set_label("weight W[i, j] (sign and size; white = exactly 0, no connection)")
    fig.suptitle(f"7. The recurrent matrices: dense() of each structure at H={MATRIX_HIDDEN}"
                 " (h_next = h · W)")
    save(fig, path, dpi)
    return None


def _connection_image(w: np.ndarray) -> np.ma.MaskedArray:
    """Zeros masked (drawn white); every nonzero weight at least a quarter of the colour
    scale, so that a tiny but real connection is never mistaken for a missing one."""
    scale = float(np.abs(w).max()) or 1.0
    img = np.sign(w) * (0.25 + 0.75 * np.abs(w) / scale)
    return np.ma.masked_where(w == 0, img)


# 8 ------------------------------------------------------------------------------------
def fig_memory(df, styles, path, dpi):
    table, config = D.speed_table(df, MEMORY_METRIC)
    if table.empty:
        return "no memory rows (kind memory, peak_bytes)"
    devices = sorted(table["device"].unique())
    fig, axes = new_figure(1, len(devices), 5.6 * len(devices), 4.2)
    for ax, device in zip(axes.flat, devices, strict=False):
        sub = table[table["device"] == device]
        if sub["hidden"].nunique() == 1:  # one size: a line would be a column of dots
            _memory_bars(ax, sub, styles)
            ax.set_title(f"{_device_title(df, device)} · H={int(sub['hidden'].iloc[0])}")
            continue
        for lab in label_order(sub["label"]):
            s = sub[sub["label"] == lab].sort_values("hidden")
            colour, marker = styles[lab]
            mib = s["value"].to_numpy(float) / 2**20
            err = np.vstack([mib - s["lo"].to_numpy(float) / 2**20,
                             s["hi"].to_numpy(float) / 2**20 - mib])
            ax.errorbar(s["hidden"].to_numpy(float), mib, yerr=err, color=colour,
                        marker=marker, markersize=5, linewidth=1.4, capsize=3, label=lab)
        hidden_axis(ax, sub["hidden"])
        plain_log_y(ax)
        ax.set_xlabel("hidden size H (units, log scale)")
        ax.set_ylabel("peak memory of fwd+bwd (MiB, log scale)")
        ax.set_title(_device_title(df, device))
    handles, names = unique_handles(axes.flat)
    figure_legend(fig, handles, names, title="structure")
    fig.suptitle(f"8. Peak memory vs hidden size ({_config_text(config)}; "
                 f"{_repeats_text(table)})")
    save(fig, path, dpi)
    return None


def _repeats_text(table) -> str:
    """What the error bars are: the range over repeated measurements, or none."""
    n = table["repeats"].astype(int)
    if n.max() <= 1:
        return "one measurement each, no error bars"
    span = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    return f"median of {span} repeats, each in a fresh process; error bars: min–max"


def _memory_bars(ax, sub, styles):
    labels = label_order(sub["label"])
    for y, lab in enumerate(labels):
        r = sub[sub["label"] == lab].iloc[0]
        mib = float(r["value"]) / 2**20
        xerr = [[mib - float(r["lo"]) / 2**20], [float(r["hi"]) / 2**20 - mib]]
        ax.barh(y, mib, color=styles[lab][0], height=0.7, label=lab, xerr=xerr, capsize=3)
        ax.text(mib, y, f" {mib:.3g}", va="center", fontsize=8)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("peak memory of fwd+bwd (MiB)")
    ax.set_ylabel("structure")


FIGURES = [
    FigureSpec(1, "time_vs_hidden", "Time per step vs hidden size", fig_time_vs_hidden,
               "default"),
    FigureSpec(2, "speedup_heatmap", "Speedup vs full", fig_speedup_heatmap, "default"),
    FigureSpec(3, "metric_per_structure", "Task metric per structure",
               fig_metric_per_structure, "default"),
    FigureSpec(4, "metric_vs_cost", "Task metric vs parameters and time", fig_tradeoff,
               "default"),
    FigureSpec(5, "learning_curves", "Learning curves", fig_learning_curves, "default"),
    FigureSpec(6, "lookback", "Lookback: longest T solved", fig_lookback, "lookback"),
    FigureSpec(7, "matrices", "The recurrent matrices at H=32", fig_matrices,
               "any (needs connbench.nn.structures and torch)"),
    FigureSpec(8, "memory_vs_hidden", "Peak memory vs hidden size", fig_memory, "default"),
]
