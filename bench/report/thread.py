"""The report's "The thread's experiment" section: what the Stack Exchange thread said,
beside what connbench measured in the thread's own setting (Trask's preset), arm by arm.

An arm is one (task spec, hidden size, training budget) of the thread's rows; every seed
is listed, because Trask's demo has no published convergence rate across seeds and the
spread is the finding.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from connbench.registry import split_spec
from connbench.report import data as D
from connbench.report import verdicts as V

# What the thread said, per structure family, and the rule that tests it.
SAID = {
    "diagonal": ('"performed terribly"', V.fails),
    "banded": ('"seemed to work as good as the fully-connected version", "even when I '
               'increased the sizes of inputs & hidden layer"', V.matches),
}
CONTEXT = ("full", "jordan", "none")  # shown for scale, no claim attached


def _family(spec: str) -> str:
    name, opts = split_spec(spec)
    if name == "banded" and opts.get("width", "3") != "3":
        return "banded (other width)"
    return name


def _seeds(g: pd.DataFrame) -> str:
    vals = g.sort_values("seed")
    return ", ".join(f"{v:.3f}" for v in vals["value"].to_numpy(float))


def _arm_title(task_spec: str, hidden_request: str, budget) -> str:
    steps = "budget n/a" if budget is None or pd.isna(budget) else f"{int(budget):,} iterations"
    return f"`{task_spec}`, hidden {hidden_request}, {steps}"


def thread_section(df: pd.DataFrame) -> list[str]:
    """Markdown lines of the section; empty when the sweep has no thread rows."""
    rows = D.train_rows(df)
    if rows.empty:
        return []
    rows = rows[D.thread_mask(rows) & (rows["task"] == "binary_addition")]
    if rows.empty:
        return []
    lines = [
        "## The thread's experiment", "",
        "Trask's binary-addition RNN as the thread ran it (preset `trask`: sigmoid units, "
        "no biases, weights uniform in [−1, 1), squared error, SGD lr 0.1, batch 1, full "
        "BPTT), with the recurrent matrix masked. Metric: **sequence accuracy** (the whole "
        "sum right) on held-out sums, one number per seed. Chance is 2^−bits; the "
        "memoryless XOR predictor gets (3/4)^(bits−1). Verdicts use the rules of the "
        "Claims section; an arm where full did not learn is *uninformative*.", "",
        "| arm | structure | the thread said | sequence accuracy per seed | median | "
        "solved | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = ["task_spec", "hidden_request", "budget"]
    for key, g in rows.groupby(keys, sort=True, dropna=False):
        title = _arm_title(*key)
        fs = g[g["structure"] == "full"]
        chance = float(fs["chance"].dropna().median()) if len(fs) else math.nan
        for fam in [f for f in (*CONTEXT[:1], "diagonal", "banded", *CONTEXT[1:])]:
            xs = g[g["structure_spec"].map(_family) == fam]
            if xs.empty:
                continue
            said, verdict = "—", ""
            if fam in SAID and len(fs):
                said, test = SAID[fam]
                cmp = test(xs["value"], fs["value"], chance, True)
                verdict = f"**{cmp.verdict}** ({cmp.reason})"
            elif fam == "full":
                learned = len(fs) and np.median(fs["value"]) > chance
                verdict = "positive control " + ("passed" if learned else "**failed**")
            lines.append(f"| {title} | {fam} | {said} | {_seeds(xs)} | "
                         f"{float(np.median(xs['value'])):.3f} | "
                         f"{int(xs['solved'].sum())}/{len(xs)} | {verdict} |")
    lines += ["", "*solved*: validation sequence accuracy ≥ 0.99 within the budget (the run "
              "stops there). The 10,000-iteration arm at hidden 16 and 8 bits is Trask's "
              "own setting; the other arms are the thread's \"longer\" and \"larger\" "
              "variants.", ""]
    if rows.groupby(keys, dropna=False).ngroups == 1:
        lines += ["This run has Trask's own arm only. The thread's longer (50,000 "
                  "iterations) and larger (bits 16 and 32, hidden 64) arms are the `trask` "
                  "sweep: `connbench run trask --workers 2`, then `connbench report trask`.",
                  ""]
    return lines
