"""REPORT.md: setup, figures, key tables and the claims, as plain Markdown.

Nothing here reads the clock: every date in the report comes from the results, so a
rerun without new results writes the same bytes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from connbench.report import data as D
from connbench.report import verdicts as V
from connbench.report.answer import answer_paragraph
from connbench.report.claims import Claim
from connbench.report.figures import FIGURES, lookback_lengths, lookback_table, speedup_table
from connbench.report.stats import bootstrap_median_ci
from connbench.report.style import label_order
from connbench.report.thread import thread_section


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min {s:02d} s ({seconds:,.0f} s)"


def setup_section(df: pd.DataFrame, sweep: str) -> list[str]:
    env = D.environment(df)
    first, last = D.timestamp_span(df)
    status = df.groupby("status", dropna=False).size()
    status_text = ", ".join(f"{k}: {v}" for k, v in status.items())
    return [
        "## Setup", "",
        f"- Sweep: `{sweep}`: {len(df):,} rows, {df['trial_id'].nunique():,} cells "
        f"({status_text}).",
        f"- Results written between {first} and {last} (UTC, from the rows).",
        f"- Total run time: {_duration(D.total_run_time_s(df))}, the sum of the cells' wall "
        "times.",
        f"- Commit: `{env['git_commit']}` (uncommitted changes: {env['git_dirty']}); "
        f"connbench {env['connbench_version']}.",
        f"- Environment: torch {env['torch_version']}; CUDA {env['cuda_version']}; "
        f"cuDNN {env['cudnn_version']}; CPU {env['cpu_model']}; GPU {env['gpu_name']}; "
        f"threads {env['threads']}; dtype {env['dtype']}; host {env['host']}.",
        "",
    ] + _budget_caveat(df)


def _budget_caveat(df: pd.DataFrame) -> list[str]:
    arms = D.mixed_budget_arms(df)
    if not arms:
        return []
    return ["**Caveat: these arms pool runs that differ in a setting the results do not "
            "record** (e.g. the training budget), so their seeds mix configurations:",
            ""] + [f"- {a}" for a in arms] + [""]


def failures_section(df: pd.DataFrame, limit: int = 20) -> list[str]:
    bad = df[df["status"].isin(["failed", "diverged", "skipped"])]
    bad = bad.drop_duplicates(["trial_id", "kind"])
    if bad.empty:
        return []
    lines = ["## Cells that did not finish normally", "",
             "Diverged training runs count as chance-level seeds in the claims; failed "
             "and skipped cells are left out.", "",
             "| status | kind | task | structure | H | seed | error |",
             "|---|---|---|---|---|---|---|"]
    for r in bad.head(limit).itertuples(index=False):
        err = str(r.error if not pd.isna(r.error) else "").replace("|", "/")[:120]
        lines.append(f"| {r.status} | {r.kind} | {r.task_spec} | {r.label} | "
                     f"{r.hidden_request} | {r.seed} | {err} |")
    if len(bad) > limit:
        lines.append(f"| … {len(bad) - limit} more | | | | | | |")
    return lines + [""]


def figures_section(results: dict[str, str | None]) -> list[str]:
    lines = ["## Figures", ""]
    for spec in FIGURES:
        reason = results.get(spec.name)
        if reason is None:
            lines.append(f"{spec.number}. [{spec.title}](figures/{spec.name}.png)")
        else:
            lines.append(f"{spec.number}. {spec.title}: **skipped**: {reason}. "
                         f"Data comes from the `{spec.source}` sweep.")
    lines.append("")
    for spec in FIGURES:
        if results.get(spec.name) is None:
            lines += [f"### {spec.number}. {spec.title}", "",
                      f"![{spec.title}](figures/{spec.name}.png)", ""]
    return lines


def speed_table_section(df: pd.DataFrame) -> list[str]:
    sp = speedup_table(df)
    if sp.empty:
        return []
    lines = []
    for device in sorted(sp["device"].unique()):
        sub = sp[sp["device"] == device]
        hiddens = sorted(sub["hidden"].unique())
        measured = sub["pass"].iloc[0]
        lines += [f"### Time per step, {measured}, {device} (µs; speedup vs full)", "",
                  "| structure | " + " | ".join(f"H={int(h)}" for h in hiddens) + " |",
                  "|---|" + "---|" * len(hiddens)]
        for lab in label_order(sub["label"]):
            cells = []
            for h in hiddens:
                r = sub[(sub["label"] == lab) & (sub["hidden"] == h)]
                cells.append("–" if r.empty else
                             f"{r['value'].iloc[0] * 1e6:.3g} ({r['speedup'].iloc[0]:.2g}×)")
            lines.append(f"| {lab} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def params_table_section(df: pd.DataFrame) -> list[str]:
    rows = df[df["stored_params"].notna() & df["hidden"].notna()]
    if rows.empty:
        return []
    grid = rows.groupby(["label", "hidden"])["stored_params"].max().reset_index()
    hiddens = sorted(grid["hidden"].unique())
    if len(hiddens) > 8:
        hiddens = hiddens[:: max(1, len(hiddens) // 8)]
    lines = ["### Stored recurrent weights per structure", "",
             "| structure | " + " | ".join(f"H={int(h)}" for h in hiddens) + " |",
             "|---|" + "---|" * len(hiddens)]
    for lab in label_order(grid["label"]):
        cells = []
        for h in hiddens:
            v = grid[(grid["label"] == lab) & (grid["hidden"] == h)]["stored_params"]
            cells.append("–" if v.empty else f"{int(v.iloc[0]):,}")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return lines + [""]


def task_table_section(df: pd.DataFrame) -> list[str]:
    rows = D.train_rows(df)
    if rows.empty:
        return []
    lines = ["### Task results (median over seeds [95 % bootstrap CI]; solved seeds)", "",
             "| task · cell · H | metric | chance | " + " | ".join([]) + "structure | "
             "median [CI] | solved | median steps to solve |",
             "|---|---|---|---|---|---|---|"]
    for key, g in rows.groupby(D.ARM, sort=True, dropna=False):
        chance = g["chance"].dropna()
        ch = f"{float(chance.median()):.3g}" if len(chance) else "n/a"
        for lab in label_order(g["label"]):
            s = g[g["label"] == lab]
            ci = bootstrap_median_ci(s["value"])
            steps = s.loc[s["solved"], "steps_to_solve"].dropna().astype(float)
            st = f"{np.median(steps):.3g}" if len(steps) else "–"
            lines.append(f"| {D.arm_name(*key)} | {s['metric'].iloc[0]} | {ch} | {lab} | "
                         f"{ci.fmt()} | {int(s['solved'].sum())}/{len(s)} | {st} |")
    return lines + [""]


def lookback_section(df: pd.DataFrame) -> list[str]:
    table = lookback_table(df)
    if table.empty:
        return []
    tried = []
    for task in sorted(table["task"].unique()):
        cells = sorted({c for cs in table.loc[table["task"] == task, "cells"]
                        for c in cs.split(", ")})
        ts = ", ".join(str(t) for t in sorted(lookback_lengths(df, task)))
        tried.append(f"{task} ({', '.join(cells)}; T = {ts})")
    lines = ["### Lookback: longest T solved (at least half the seeds)", "",
             "Lengths tried: " + "; ".join(tried) + ". A length counts as solved when at "
             "least half the seeds met the task's solve rule (its `solved` column) within "
             "the budget, at the learning rate chosen on validation for that length. "
             "0 means none of the lengths tried was solved.", "",
             "| structure | " + " | ".join(sorted(table["task"].unique())) + " |",
             "|---|" + "---|" * table["task"].nunique()]
    for lab in label_order(table["label"]):
        cells = []
        for task in sorted(table["task"].unique()):
            r = table[(table["label"] == lab) & (table["task"] == task)]
            cells.append("–" if r.empty else
                         f"{r['longest_solved'].iloc[0]} (tried ≤ {r['longest_tried'].iloc[0]})")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return lines + [""]


RULES = [
    f"- **fails**: the whole 95 % bootstrap CI of the structure's median gain over chance "
    f"is below {V.FAIL_FRACTION:.0%} of full's median gain (not supported: the whole CI is "
    "at or above it).",
    f"- **matches / competitive** (non-inferiority): the 95 % bootstrap CI of the difference "
    f"of medians (structure − full, good direction) has its lower end above −{V.MATCH_MARGIN:.0%}"
    " of full's gain over chance (not supported: its upper end is below that).",
    "- Both need full to have beaten chance (lower end of its CI above chance), else "
    f"{V.UNINFORMATIVE}.",
    f"- Both need at least {V.MIN_SEEDS} seeds on each side; with fewer the verdict is "
    "inconclusive and the table says what the point estimates lean to.",
    f"- **{V.UNINFORMATIVE}**: full itself did not beat chance on that arm (its positive "
    "control failed); the comparison is shown but counts for nothing.",
    "- An inconclusive comparison says which way its median leans and what would "
    "settle it.",
    f"- **far fewer parameters**: the other count is at least {V.FAR_FACTOR:g}× larger.",
    "- Several arms (tasks, cells, sizes) are combined unanimously: all supported → "
    f"supported, all not supported → not supported; decided arms that disagree → "
    f"**{V.MIXED}** (the claim holds in some settings and not in others; the claims "
    "table counts the arms); nothing decided → inconclusive. Claims 1–2 "
    "are decided in the thread's own setting (Trask's preset) when the sweep has it; "
    "other settings are reported beside them.",
    "- Seeds: a diverged run counts as a chance-level seed. Bootstrap: percentile, 4,000 "
    "resamples, fixed seed. With 5 seeds a CI is close to [min, max] and the smallest "
    "two-sided Mann–Whitney p is 0.008: read the seeds, not just the verdict.",
]


def claims_table_section(claims: list[Claim]) -> list[str]:
    """The verdict of every claim, right after the answer."""
    lines = ["## Claims", "", "| # | claim | verdict |", "|---|---|---|"]
    for i, c in enumerate(claims, 1):
        arms = (f" ({c.tally})" if c.tally and not c.needs_sweep
                and c.verdict in (V.MIXED, V.INCONCLUSIVE) else "")
        lines.append(f"| {i} | {c.title} | **{c.verdict}**{arms}"
                     + (" (no data)" if c.needs_sweep else "") + " |")
    return lines + ["", "Each claim's test, evidence and figures are under "
                    "[The claims in detail](#the-claims-in-detail).", ""]


def claims_section(claims: list[Claim], figures: dict[str, str | None]) -> list[str]:
    lines = ["## The claims in detail", "", "Verdict rules (bench/report/verdicts.py):",
             ""] + RULES + [""]
    for i, c in enumerate(claims, 1):
        links = [f"[{name}](figures/{name}.png)" for name in c.figures
                 if figures.get(name, "missing") is None]
        lines += [f"### Claim {i}: {c.title}", "", f"**Verdict: {c.verdict}**", ""]
        if c.needs_sweep:
            first = c.needs_sweep.split("`")[0]
            lines += [f"No data for this claim in this sweep: the `{c.needs_sweep}` sweep "
                      f"tests it (`connbench run {first}`, then `connbench report {first}`).",
                      ""]
        lines += [f"Test: {c.test}", ""]
        lines += c.evidence + [""]
        lines.append("Figures: " + (", ".join(links) if links else "none in this report."))
        lines.append("")
    return lines


def positive_controls_section(df: pd.DataFrame) -> list[str]:
    """Did full learn each arm? An arm where it did not is uninformative: no structure
    can be judged against a reference that learned nothing."""
    rows = D.train_rows(df)
    full = rows[rows["label"] == "full"]
    if full.empty:
        return []
    lines = ["### Positive controls: did full learn each arm?", "",
             "| arm | metric | full median [95 % CI] | chance / baseline | seeds | control |",
             "|---|---|---|---|---|---|"]
    for key, g in full.groupby(D.ARM, sort=True, dropna=False):
        ci = bootstrap_median_ci(g["value"])
        chance = g["chance"].dropna()
        ch = float(chance.median()) if len(chance) else math.nan
        passed = D.full_passed(g) is not False
        verdict = "passed" if passed else f"**failed**: comparisons {V.UNINFORMATIVE}"
        lines.append(f"| {D.arm_name(*key)} | {g['metric'].iloc[0]} | {ci.fmt()} | "
                     f"{ch:.3g} | {len(g)} | {verdict} |")
    return lines + [""]


def lr_section(df: pd.DataFrame) -> list[str]:
    """The learning rate chosen per (arm, structure) on the validation set, where the
    sweep trained a grid; empty when every structure had one lr."""
    rows = D.train_rows(df, choose_lr=False)
    choice = D.lr_choice(rows, df)
    if choice.empty or not (choice["candidates"].str.contains(",")).any():
        return []
    lines = ["### Learning rates: chosen per structure on held-out validation sequences",
             "", "Each structure trains at every lr of the grid; the lr with the best "
             "median validation score (the evaluation set early stopping sees) is kept, "
             "and its seeds are scored on a separate test set for every table and "
             "verdict.", "",
             "| arm | structure | lr grid | chosen lr | validation median |",
             "|---|---|---|---|---|"]
    for r in choice.itertuples(index=False):
        key = tuple(getattr(r, c) for c in D.ARM)
        lr = "n/a" if r.lr is None or pd.isna(r.lr) else f"{r.lr:g}"
        lines.append(f"| {D.arm_name(*key)} | {r.label} | {r.candidates} | {lr} | "
                     f"{r.validation:.3g} |")
    return lines + [""]


def render(df: pd.DataFrame, sweep: str, figures: dict[str, str | None],
           claims: list[Claim]) -> str:
    lines = [f"# connbench report: `{sweep}`", "",
             "Does an RNN need full hidden-to-hidden connectivity? Written by "
             f"`connbench report {sweep}` from the results store only.", ""]
    lines += answer_paragraph(claims)
    lines += claims_table_section(claims)
    lines += setup_section(df, sweep)
    lines += thread_section(df)
    lines += claims_section(claims, figures)
    lines += ["## Key tables", ""]
    lines += positive_controls_section(df) + lr_section(df)
    lines += speed_table_section(df) + params_table_section(df)
    lines += task_table_section(df) + lookback_section(df)
    lines += failures_section(df)
    lines += figures_section(figures)
    return "\n".join(lines).rstrip() + "\n"
