"""The five claims of the thread and the paper, each checked against the sweep's rows.

Each ``claim_*`` function takes the prepared frame and returns a ``Claim``: a verdict
from connbench.report.verdicts, the evidence as Markdown lines, the test used, the figure
that shows it, and, when the sweep has no data for it, the sweep that does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from connbench.registry import split_spec
from connbench.report import data as D
from connbench.report import verdicts as V
from connbench.report.matrices import MatricesUnavailable, dense_matrices, reachability_stages

NO_DATA = "no data"



def task_sizes(df: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """{task spec: (input size, output size)} from the results' catalogue (the task
    objects of the run, plugins included); the rows themselves do not record them."""
    tasks = df.attrs.get("catalogue", {}).get("tasks", {})
    return {spec: (int(t["input_size"]), int(t["output_size"])) for spec, t in tasks.items()}

TEST_FAILS = (f"Bootstrap {int(V.CI_LEVEL * 100)} % CI (percentile, {{n}} resamples, "
              "fixed seed) of the median over seeds of the gain over chance, as a fraction "
              f"of full's median gain; supported when the whole CI is below "
              f"{V.FAIL_FRACTION:.0%}. Mann–Whitney U (two-sided; exact for small samples "
              "without ties) against full beside it.")
TEST_MATCHES = ("Non-inferiority: bootstrap 95 % CI of the difference of medians over seeds "
                "(structure − full, in the metric's good direction); supported when its "
                f"lower end is above −{V.MATCH_MARGIN:.0%} of full's gain over chance, "
                "not supported when its upper end is below it. Mann–Whitney U beside it.")


@dataclass
class Claim:
    key: str
    title: str
    verdict: str
    test: str
    figures: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    needs_sweep: str | None = None
    # how the arms behind the verdict went ("3 supported, 1 not supported"); shown beside
    # a mixed or inconclusive verdict
    tally: str = ""


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def _is_width3_band(spec: str) -> bool:
    name, opts = split_spec(spec)
    return name == "banded" and opts.get("width", "3") == "3"


def _labels_where(rows: pd.DataFrame, predicate) -> list[str]:
    specs = rows[["structure_spec", "label"]].drop_duplicates()
    return sorted(specs.loc[specs["structure_spec"].map(predicate), "label"].unique())


def _arms(rows: pd.DataFrame, x_label: str, tasks=None, iso=None):
    """Yield (arm key, x rows, full rows) where both x and full were trained."""
    if tasks is not None:
        rows = rows[rows["task"].isin(tasks)]
    if iso is not None:
        rows = rows[pd.Series([bool(iso(str(r))) for r in rows["hidden_request"]],
                              index=rows.index, dtype=bool)]
    for key, g in rows.groupby(D.ARM, sort=True, dropna=False):
        xs, fs = g[g["label"] == x_label], g[g["label"] == "full"]
        if len(xs) and len(fs):
            yield key, xs, fs


def _chance(g: pd.DataFrame) -> float:
    c = g["chance"].dropna()
    return float(c.median()) if len(c) else math.nan


def _comparison_row(key, xs, fs, cmp: V.Comparison, extra: str = "") -> str:
    metric = xs["metric"].iloc[0]
    return (f"| {D.arm_name(*key)} | {metric} | {_fmt(float(np.median(xs['value'])))} "
            f"| {_fmt(float(np.median(fs['value'])))} | {_fmt(_chance(fs))} "
            f"| {cmp.diff.fmt() if not math.isnan(cmp.diff.estimate) else cmp.fraction.fmt()} "
            f"| {_fmt(cmp.margin)} | {_fmt(cmp.p_value, 2)} | {cmp.n_x}/{cmp.n_full} "
            f"| {cmp.verdict}{extra} ({cmp.reason}) |")


TABLE_HEAD = [
    "| arm | metric | structure median | full median | chance | {stat} | margin "
    "| Mann–Whitney p | seeds (x/full) | verdict |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


def _head(stat: str) -> list[str]:
    return [TABLE_HEAD[0].format(stat=stat), TABLE_HEAD[1]]


# -- claim 1 --------------------------------------------------------------------------
def _compare(test, xs, fs):
    """Run a verdict test (V.fails / V.matches) of a structure's seeds against full's."""
    return test(xs["value"], fs["value"], _chance(fs), bool(fs["higher_is_better"].iloc[0]))


def claim_diagonal_fails(df: pd.DataFrame) -> Claim:
    claim = Claim("diagonal_fails", "Diagonal-only W_hh fails binary addition",
                  V.INCONCLUSIVE, TEST_FAILS.format(n=4000), ["metric_per_structure"])
    rows = D.train_rows(df)
    labels = _labels_where(rows, lambda s: split_spec(s)[0] == "diagonal")
    return _thread_then_modern(claim, rows, labels, V.fails,
                               "fraction of full's gain [CI]", "trask` or `default")


def _thread_then_modern(claim: Claim, rows: pd.DataFrame, labels, test, stat: str,
                        sweep: str, cost=None) -> Claim:
    """The thread's claims are judged in the thread's setting (Trask's preset) first;
    other binary-addition arms (tanh/LSTM, Adam) are reported beside it as "beyond the
    thread", never pooled into its verdict. With no thread rows the modern arms decide,
    and the text says so."""
    parts = {}
    for name, pick in (("thread", True), ("modern", False)):
        sub = rows[D.thread_mask(rows) == pick] if len(rows) else rows
        verdicts, lines, costs, reasons = [], _head(stat), [], []
        for label in labels:
            for key, xs, fs in _arms(sub, label, tasks=["binary_addition"],
                                     iso=lambda r: not D.is_iso(r)):
                cmp = _compare(test, xs, fs)
                verdicts.append(cmp.verdict)
                reasons.append(cmp.reason)
                lines.append(_comparison_row(key, xs, fs, cmp))
                if cost is not None:
                    costs.append(cost(key, xs, fs, label))
        parts[name] = (verdicts, lines, costs, reasons)
    (tv, tl, tc, tr), (mv, ml, mc, mr) = parts["thread"], parts["modern"]
    if not tv and not mv:
        return _finish(claim, [], [], sweep)
    claim.verdict = V.combine(tv if tv else mv)
    deciding, why = (tv, tr) if tv else (mv, mr)
    # one deciding arm: its own reason (the lean, what would settle it) says more
    claim.tally = why[0] if len(deciding) == 1 else V.tally(deciding)
    claim.evidence = []
    if tv:
        claim.evidence += [f"**In the thread's setting (Trask's preset): {V.combine(tv)}** "
                           "— this decides the verdict.", ""] + tl + [""]
        if tc:
            claim.evidence += ["Training cost:"] + tc + [""]
    else:
        claim.evidence += ["**In the thread's setting: no data** — run the `trask` sweep; "
                           "the verdict below comes from the modern setting alone.", ""]
    if mv:
        claim.evidence += [f"**Beyond the thread (other cells and optimizers): "
                           f"{V.combine(mv)}**" + (" — reported beside, not part of the "
                                                   "verdict." if tv else ""), ""] + ml
        if mc:
            claim.evidence += ["", "Training cost:"] + mc
    return claim


# -- claim 2 --------------------------------------------------------------------------
def _cost_line(df, rows, key, xs, fs, x_label) -> str:
    """Training cost of x against full on one arm: steps to solve, wall time, time/step."""
    def solved_steps(g):
        s = g.loc[g["solved"], "steps_to_solve"].dropna().astype(float)
        return (float(np.median(s)) if len(s) else math.nan), len(s), len(g)

    (xs_steps, xs_n, xs_all), (fs_steps, fs_n, fs_all) = solved_steps(xs), solved_steps(fs)
    wall_x, wall_f = float(xs["wall_time_s"].median()), float(fs["wall_time_s"].median())
    ratio, source = time_ratio(df, xs, fs, x_label)
    return (f"- {D.arm_name(*key)}: solved by {xs_n}/{xs_all} seeds (full {fs_n}/{fs_all}); "
            f"median steps to solve {_fmt(xs_steps)} vs full {_fmt(fs_steps)}; median training "
            f"wall time {_fmt(wall_x)} s vs {_fmt(wall_f)} s; time per step "
            f"{_fmt(ratio)}× full's ({source}); stored recurrent weights "
            f"{_fmt(float(xs['stored_params'].max()))} vs "
            f"{_fmt(float(fs['stored_params'].max()))}.")


def claim_band_matches(df: pd.DataFrame) -> Claim:
    claim = Claim("band_matches", "A 3-wide band matches full on binary addition, "
                  "and at what training cost", V.INCONCLUSIVE, TEST_MATCHES,
                  ["metric_per_structure", "learning_curves", "metric_vs_cost"])
    rows = D.train_rows(df)
    labels = _labels_where(rows, _is_width3_band)
    return _thread_then_modern(
        claim, rows, labels, V.matches, "difference of medians [CI]", "trask` or `default",
        cost=lambda key, xs, fs, label: _cost_line(df, rows, key, xs, fs, label))


# -- claim 3 --------------------------------------------------------------------------
BUTTERFLY_CHECK_SIZES = (32, 64)


def butterfly_structure_check(sizes=BUTTERFLY_CHECK_SIZES, matrices=None):
    """(ok, lines): is dense() of the butterfly full at each H, reached in one
    application (its log2 H stages), with 2H·log2 H stored weights?

    ``matrices`` ({H: (dense, stored)}) can be injected; by default they come from
    connbench.nn.structures. ok is None when the structure cannot be built here.
    """
    if matrices is None:
        try:
            matrices = {}
            for h in sizes:
                m = dense_matrices(["butterfly"], h).get("butterfly")
                if m is None:
                    return None, ["connbench.nn.structures has no `butterfly` structure"]
                matrices[h] = (m["matrix"], m["stored"])
        except MatricesUnavailable as exc:
            return None, [f"structural check not run: {exc}"]
    ok, lines = True, []
    for h, (w, stored) in sorted(matrices.items()):
        nonzero = int((np.abs(w) > 0).sum())
        stages = int(round(math.log2(h)))
        expected_stored = 2 * h * stages
        full_pattern = nonzero == h * h
        ok &= full_pattern and stored in (expected_stored, -1)
        lines.append(f"- H={h}: dense() has {nonzero}/{h * h} nonzero entries "
                     f"({'every unit reaches every unit' if full_pattern else 'not full'}; "
                     f"steps of W to full reach: {reachability_stages(w)}); stored weights "
                     f"{stored} vs 2H·log2 H = {expected_stored} for {stages} stages of 2×2 "
                     "mixes.")
    return ok, lines


def claim_butterfly(df: pd.DataFrame, structure_check=None) -> Claim:
    claim = Claim("butterfly", "The butterfly (Walsh–Hadamard) arrangement connects every "
                  "unit to every other in log2 H stages and learns as well as full",
                  V.INCONCLUSIVE,
                  "Structure: dense() of the real module at H = 32 and 64 computed here, "
                  "all entries nonzero and 2H·log2 H stored weights. Learning: "
                  + TEST_MATCHES, ["matrices", "metric_per_structure"])
    ok, struct_lines = structure_check or butterfly_structure_check()
    rows = D.train_rows(df)
    verdicts, lines = [], _head("difference of medians [CI]")
    for label in _labels_where(rows, lambda s: split_spec(s)[0] == "butterfly"):
        for key, xs, fs in _arms(rows, label, iso=lambda r: not D.is_iso(r)):
            cmp = _compare(V.matches, xs, fs)
            verdicts.append(cmp.verdict)
            lines.append(_comparison_row(key, xs, fs, cmp))
    learn = V.combine(verdicts) if verdicts else NO_DATA
    claim.evidence = ["Structure:"] + struct_lines + ["", f"Learning ({learn}):"]
    claim.evidence += lines if verdicts else ["- no butterfly and full train rows in this "
                                              "sweep; the `default` sweep trains both."]
    claim.tally = V.tally(verdicts)
    if ok is False or learn == V.NOT_SUPPORTED:
        claim.verdict = V.NOT_SUPPORTED
    elif ok and learn in (V.SUPPORTED, V.MIXED):
        claim.verdict = learn
    if not verdicts:
        claim.needs_sweep = "default"
    return claim


# -- claim 4 --------------------------------------------------------------------------
REGIMES = [
    ("same H", lambda r: not D.is_iso(r)),
    ("equal parameters (iso_params)", lambda r: r.startswith("iso_params")),
    ("equal time (iso_time)", lambda r: r.startswith("iso_time")),
]


def time_ratio(df, xs, fs, x_label) -> tuple[float, str]:
    """Time per step of x over full's at the arm's H, and where it came from: the timed
    fwd+bwd median when the sweep timed that H, else training wall time per step."""
    tps = D.time_per_step(df, cell=xs["cell"].iloc[0])
    h = xs["hidden"].iloc[0]
    if not tps.empty:
        tps = tps[tps["device"] == sorted(tps["device"].unique())[0]]
        tx = tps[(tps["label"] == x_label) & (tps["hidden"] == h)]["value"]
        tf = tps[(tps["label"] == "full") & (tps["hidden"] == h)]["value"]
        if len(tx) and len(tf):
            return float(tx.iloc[0] / tf.iloc[0]), f"timed {tps['pass'].iloc[0]} at H={h}"
    wx = (xs["wall_time_s"] / xs["train_steps"].astype(float)).median()
    wf = (fs["wall_time_s"] / fs["train_steps"].astype(float)).median()
    if pd.isna(wx) or pd.isna(wf) or not wf:
        return math.nan, "no timing"
    return float(wx / wf), "training wall time per step"


def _cheaper(df, xs, fs, x_label) -> tuple[bool | None, str]:
    """At the same H: fewer stored weights and less time per step than full?"""
    px, pf = float(xs["stored_params"].max()), float(fs["stored_params"].max())
    rt, source = time_ratio(df, xs, fs, x_label)
    rp = px / pf if pf else math.nan
    text = f"; weights {_fmt(rp)}× and time {_fmt(rt)}× full's ({source})"
    if math.isnan(rp) or math.isnan(rt):
        return None, text
    return (rp < 1 and rt < 1), text


def claim_sparse_competitive(df: pd.DataFrame) -> Claim:
    claim = Claim("sparse_competitive", "Structurally sparse RNNs (diagonal, block) reach "
                  "accuracy competitive with full at a fraction of the time and weights "
                  "(arXiv:1905.12340), at equal parameters and at equal time",
                  V.INCONCLUSIVE, TEST_MATCHES + " At the same H the structure must also "
                  "store fewer weights and take less time per step (timed fwd+bwd, else "
                  "training wall time per step); at iso budgets the cost is equal by "
                  "construction.", ["metric_per_structure", "metric_vs_cost"])
    rows = D.train_rows(df)
    labels = _labels_where(rows, lambda s: split_spec(s)[0] in ("diagonal", "block"))
    regime_verdicts, every = [], []
    for regime, pick in REGIMES:
        verdicts, lines = [], _head("difference of medians [CI]")
        for label in labels:
            for key, xs, fs in _arms(rows, label, iso=pick):
                cmp = _compare(V.matches, xs, fs)
                verdict, extra = cmp.verdict, ""
                if regime == "same H":
                    cheaper, extra = _cheaper(df, xs, fs, label)
                    if cheaper is False:
                        verdict = V.NOT_SUPPORTED
                        cmp.reason += "; not cheaper than full in both weights and time"
                    elif cheaper is None and verdict == V.SUPPORTED:
                        verdict = V.INCONCLUSIVE
                cmp.verdict = verdict
                verdicts.append(verdict)
                lines.append(_comparison_row((f"{label} on {key[0]}", *key[1:]),
                                             xs, fs, cmp, extra))
        if verdicts:
            combined = V.combine(verdicts)
            regime_verdicts.append(combined)
            every += verdicts
            n_sup = sum(v == V.SUPPORTED for v in verdicts)
            claim.evidence += [f"**{regime}: {combined}** ({n_sup} of {len(verdicts)} "
                               "comparisons supported)", ""] + lines + [""]
        else:
            where = "`paper` (or any sweep with `hidden = " + (
                "iso_params:N`)" if "params" in regime else "iso_time:S`)"
                if "time" in regime else "a size`)")
            claim.evidence += [f"**{regime}: {NO_DATA}** — run a sweep with these rows, "
                               f"e.g. {where}.", ""]
    if regime_verdicts:
        claim.verdict = V.combine(regime_verdicts)
        claim.tally = V.tally(every)
        if len(regime_verdicts) < len(REGIMES) and claim.verdict == V.SUPPORTED:
            claim.verdict = V.INCONCLUSIVE  # the claim is about all three regimes
    else:
        claim.verdict, claim.needs_sweep = V.INCONCLUSIVE, "default` and `paper"
    return claim


# -- claim 5 --------------------------------------------------------------------------
def claim_rnn_fewer_params(df: pd.DataFrame) -> Claim:
    claim = Claim("fewer_params", "An RNN needs far fewer parameters than a dense network "
                  "over the unrolled sequence", V.INCONCLUSIVE,
                  "Counting, no statistics: Elman RNN (I·H) + (H·H + H) + (H·O + O) against "
                  "the dense unrolled network (T·I·T·H + T·H) + (T·H·O + O) of the "
                  f"\"Recurrent Layers\" notes; supported when the dense count is at least "
                  f"{V.FAR_FACTOR:g}× the RNN's for every size.", ["metric_vs_cost"])
    rnn, dense = V.rnn_params(4, 3, 1), V.unrolled_dense_params(4, 3, 1, 3)
    verdicts, sizes_failed = [V.far_fewer(rnn, dense)], []
    claim.evidence = [
        f"- The notes' example (input 4, hidden 3, output 1, T = 3): RNN {rnn}, dense "
        f"unrolled {dense} ({dense / rnn:.1f}×).", "",
        "| task | I | H | O | T | RNN params | dense unrolled params | ratio | recorded "
        "total_params (full) |", "|---|---|---|---|---|---|---|---|---|"]
    io = task_sizes(df)
    rows = D.train_rows(df)
    rows = rows[(rows["label"] == "full") & ~D.iso_mask(rows["hidden_request"])]
    missing = sorted(set(rows["task_spec"]) - set(io))
    rows = rows[rows["task_spec"].isin(io.keys())]
    # the recorded count is an Elman run's where the size has one (the formula is Elman's)
    rows = rows.assign(elman=rows["cell"].astype(str).str.startswith("rnn_"))
    sizes = (rows.sort_values("elman", ascending=False, kind="mergesort")
             [["task", "task_spec", "hidden", "seq_len", "total_params", "elman", "cell"]]
             .drop_duplicates(["task_spec", "hidden", "seq_len"])
             .sort_values(["task_spec", "hidden", "seq_len"]))
    for task, spec, h, t, recorded, elman, cell in sizes.itertuples(index=False):
        if pd.isna(h) or pd.isna(t):
            continue
        i, o = io[spec]
        r, d = V.rnn_params(i, int(h), o), V.unrolled_dense_params(i, int(h), o, int(t))
        verdicts.append(V.far_fewer(r, d))
        if verdicts[-1] != V.SUPPORTED:
            sizes_failed.append(f"{task} H={int(h)} T={int(t)} ({d / r:.1f}×)")
        rec = ("n/a" if pd.isna(recorded) else f"{int(recorded):,}") if elman else \
            f"n/a (trained as {cell} only)"
        claim.evidence.append(f"| {task} | {i} | {int(h)} | {o} | {int(t)} | {r:,} | {d:,} "
                              f"| {d / r:,.0f}× | {rec} |")
    if len(verdicts) == 1:
        claim.evidence.append("| (no full train rows in this sweep: only the notes' "
                              "example is counted) | | | | | | | | |")
    claim.evidence += _count_summary(verdicts, sizes_failed)
    claim.evidence.append("")
    claim.evidence.append("Input/output sizes I, O are those of the task objects of the "
                          "run (the results' catalogue.json); the rows do not record them.")
    if missing:
        claim.evidence.append(f"Not counted (no sizes in the catalogue: results from before "
                              f"it existed): {', '.join(missing)}.")
    claim.verdict = count_verdict(verdicts)
    return claim


def count_verdict(verdicts) -> str:
    """Claim 5 is arithmetic: all sizes → supported, none → not supported, otherwise the
    count itself ("holds at 4 of 5 sizes"), never "inconclusive"."""
    held = sum(v == V.SUPPORTED for v in verdicts)
    if held == len(verdicts):
        return V.SUPPORTED
    if held == 0:
        return V.NOT_SUPPORTED
    return f"holds at {held} of {len(verdicts)} sizes"


def _count_summary(verdicts, sizes_failed) -> list[str]:
    held = sum(v == V.SUPPORTED for v in verdicts)
    where = ("; fails at " + ", ".join(sizes_failed) + ", where T²·I/H is small"
             if sizes_failed else "")
    return ["", f"At least {V.FAR_FACTOR:g}× more weights in the dense network at {held} "
            f"of {len(verdicts)} sizes (the notes' example included){where}. The ratio "
            "grows like T²·I/H: short sequences with a wide hidden layer are where the "
            "unrolled network is not much larger."]


def _finish(claim: Claim, verdicts, lines, sweep: str) -> Claim:
    if verdicts:
        claim.verdict = V.combine(verdicts)
        claim.tally = V.tally(verdicts)
        claim.evidence = lines
    else:
        claim.verdict = V.INCONCLUSIVE
        claim.needs_sweep = sweep
        claim.evidence = [f"- {NO_DATA}: this sweep has no matching train rows."]
    return claim


def all_claims(df: pd.DataFrame, butterfly_check=None) -> list[Claim]:
    return [
        claim_diagonal_fails(df),
        claim_band_matches(df),
        claim_butterfly(df, butterfly_check),
        claim_sparse_competitive(df),
        claim_rnn_fewer_params(df),
    ]
