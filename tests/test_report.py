"""`connbench report`: figures, REPORT.md and the claim verdicts, from synthetic results.

The synthetic frames (tests/conftest_report.py) follow known models, so each test
knows which verdict the report must reach.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest_report import SPECS, synthetic_frame  # noqa: E402

from connbench.cli.report import add_arguments, main
from connbench.report import claims as C  # noqa: E402
from connbench.report import data as D  # noqa: E402
from connbench.report import render_report  # noqa: E402
from connbench.report import verdicts as V  # noqa: E402
from connbench.report.figures import (  # noqa: E402
    FIGURES,
    fig_lookback,
    lookback_table,
    pareto_front,
)
from connbench.report.markdown import lookback_section  # noqa: E402
from connbench.report.stats import (  # noqa: E402
    bootstrap_diff_median_ci,
    bootstrap_median_ci,
    mann_whitney,
)
from connbench.report.style import assign_styles, base_style, short_labels  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(names=("full", "diagonal", "banded", "block", "butterfly"), hiddens=(32, 64),
             task_specs=("binary_addition:bits=8", "adding:length=100"))
NO_BUTTERFLY_CHECK = (None, ["structural check not run (test)"])


def _args(sweep, results, out, *extra):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([sweep, "--results", str(results), "--out", str(out), *extra])


def _write_results(df: pd.DataFrame, results: Path, sweep: str) -> None:
    """One parquet part file per cell, as the store lays them out."""
    folder = results / sweep
    folder.mkdir(parents=True)
    for i, (_, part) in enumerate(df.groupby("trial_id", sort=True)):
        part.to_parquet(folder / f"part{i:04d}.parquet", index=False)


def _catalogue(df: pd.DataFrame) -> dict:
    """What `connbench run` stores beside these rows (connbench.results.catalogue)."""
    from connbench.run.catalogue import build

    return build(sorted(set(df["task_spec"].dropna())))


def _prepared(**kw) -> pd.DataFrame:
    raw = synthetic_frame(**kw)
    df = D.prepare(raw)
    df.attrs["catalogue"] = _catalogue(raw)
    return df


# -- statistics ------------------------------------------------------------------------
def test_mann_whitney_exact_small_samples():
    u, p = mann_whitney([1, 2, 3], [4, 5, 6])
    assert u == 0 and p == pytest.approx(0.1)  # 2 of the 20 arrangements are as extreme
    _, p_same = mann_whitney([1, 4, 6], [2, 3, 5])
    assert p_same > 0.5


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    a = bootstrap_median_ci([0.1, 0.5, 0.9, 0.4])
    assert a == bootstrap_median_ci([0.1, 0.5, 0.9, 0.4])
    assert a.low <= a.estimate <= a.high
    rng = np.random.default_rng(1)
    d = bootstrap_diff_median_ci(rng.normal(1.0, 0.1, 30), rng.normal(0.0, 0.1, 30))
    assert 0.8 < d.low < d.estimate < d.high < 1.2


# -- verdict rules ---------------------------------------------------------------------
def test_fails_both_ways_and_needs_full_to_learn():
    full = [1.0, 0.98, 0.99, 0.97, 1.0]
    assert V.fails([0.01, 0.02, 0.0, 0.01, 0.0], full, 0.0, True).verdict == V.SUPPORTED
    assert V.fails([0.9, 0.95, 0.97, 0.9, 0.92], full, 0.0, True).verdict == V.NOT_SUPPORTED
    mixed = V.fails([0.05, 0.5, 0.9, 0.0, 0.1], full, 0.0, True)
    assert mixed.verdict == V.INCONCLUSIVE and "leans to 'fails'" in mixed.reason
    # the positive control: full at chance makes the comparison uninformative
    flat = V.fails([0.0] * 5, [0.0, 0.01, -0.01, 0.0, 0.0], 0.0, True)
    assert flat.verdict == V.UNINFORMATIVE and "did not beat chance" in flat.reason
    assert V.matches([0.0] * 5, [0.0, 0.01, -0.01, 0.0, 0.0], 0.0, True).verdict \
        == V.UNINFORMATIVE


def test_matches_is_direction_aware():
    # MSE: lower is better, chance 0.167
    full = [0.002, 0.003, 0.004, 0.003, 0.002]
    assert V.matches([0.002, 0.004, 0.003, 0.002, 0.003], full, 0.167,
                     False).verdict == V.SUPPORTED
    assert V.matches([0.10, 0.12, 0.11, 0.1, 0.13], full, 0.167,
                     False).verdict == V.NOT_SUPPORTED
    better = V.matches([0.0, 0.0, 0.001, 0.0, 0.0], full, 0.167, False)
    assert better.verdict == V.SUPPORTED and better.diff.estimate > 0


def test_single_seed_is_never_a_verdict():
    one = V.fails([0.0], [1.0], 0.0, True)
    assert one.verdict == V.INCONCLUSIVE and "say 'supported'" in one.reason
    assert V.matches([1.0], [1.0], 0.0, True).verdict == V.INCONCLUSIVE
    claim = C.claim_diagonal_fails(_prepared(**SMALL, seeds=(0,)))
    assert claim.verdict == V.INCONCLUSIVE
    # three seeds are not enough either; the reason names the run that settles it
    three = V.fails([0.0, 0.01, 0.0], [1.0, 0.99, 1.0], 0.0, True)
    assert three.verdict == V.INCONCLUSIVE and f"at least {V.MIN_SEEDS} seeds" in three.reason


def test_combine_is_unanimous():
    assert V.combine([V.SUPPORTED, V.SUPPORTED]) == V.SUPPORTED
    assert V.combine([V.NOT_SUPPORTED]) == V.NOT_SUPPORTED
    # decided arms that disagree: the claim holds in some settings only
    assert V.combine([V.SUPPORTED, V.NOT_SUPPORTED]) == V.MIXED
    assert V.combine([V.SUPPORTED, V.INCONCLUSIVE, V.NOT_SUPPORTED]) == V.MIXED
    assert V.combine([V.MIXED, V.SUPPORTED]) == V.MIXED
    # nothing decided against the rest: still open
    assert V.combine([V.SUPPORTED, V.INCONCLUSIVE]) == V.INCONCLUSIVE
    assert V.combine([]) == V.INCONCLUSIVE
    assert V.tally([V.SUPPORTED, V.NOT_SUPPORTED, V.SUPPORTED, V.UNINFORMATIVE]) == (
        "2 supported, 1 not supported, 1 uninformative")
    # uninformative arms (full at chance) count for nothing
    assert V.combine([V.SUPPORTED, V.UNINFORMATIVE]) == V.SUPPORTED
    assert V.combine([V.UNINFORMATIVE]) == V.INCONCLUSIVE


def test_parameter_counts_of_the_notes():
    assert V.rnn_params(4, 3, 1) == 28
    assert V.unrolled_dense_params(4, 3, 1, 3) == 127
    assert V.far_fewer(28, 127) == V.SUPPORTED
    assert V.far_fewer(4353, 9217) == V.NOT_SUPPORTED  # binary addition, H=64, T=8: 2x


def test_parameter_claim_counts_the_sweep_sizes():
    claim = C.claim_rnn_fewer_params(_prepared(**SMALL))
    text = "\n".join(claim.evidence)
    # adding, H=64, T=100: 4,353 against 1,292,801
    assert "| adding | 2 | 64 | 1 | 100 | 4,353 | 1,292,801 |" in text
    # binary addition at H=64, T=8 is only 2x: the claim does not hold for every size
    # arithmetic, not statistics: the verdict is the count, and it says where it fails
    assert claim.verdict == "holds at 2 of 3 sizes" and "2 of 3 sizes" in text
    assert "fails at binary_addition H=64 T=8" in text
    adding_only = dict(SMALL, task_specs=("adding:length=100",))
    only_long = C.claim_rnn_fewer_params(_prepared(**adding_only))
    assert only_long.verdict == V.SUPPORTED


# -- claims on synthetic frames --------------------------------------------------------
def test_diagonal_claim_supported_and_refuted():
    assert C.claim_diagonal_fails(_prepared(**SMALL)).verdict == V.SUPPORTED
    good_diag = _prepared(**SMALL, skill={"diagonal": 1.0})
    assert C.claim_diagonal_fails(good_diag).verdict == V.NOT_SUPPORTED


def test_band_claim_supported_and_refuted_with_cost():
    claim = C.claim_band_matches(_prepared(**SMALL))
    assert claim.verdict == V.SUPPORTED
    assert any("steps to solve" in line for line in claim.evidence)
    weak = C.claim_band_matches(_prepared(**SMALL, skill={"banded": 0.3}))
    assert weak.verdict == V.NOT_SUPPORTED


def test_claim_without_data_names_the_sweep():
    speed_only = _prepared(**SMALL, train=False)
    claim = C.claim_diagonal_fails(speed_only)
    assert claim.verdict == V.INCONCLUSIVE and "trask" in claim.needs_sweep
    sparse = C.claim_sparse_competitive(speed_only)
    assert sparse.needs_sweep and "paper" in sparse.needs_sweep


def test_butterfly_structure_is_checked_from_the_matrix():
    rng = np.random.default_rng(0)
    full = {8: (rng.normal(size=(8, 8)), 2 * 8 * 3)}
    ok, lines = C.butterfly_structure_check(matrices=full)
    assert ok and "64/64 nonzero" in lines[0]
    holed = full[8][0].copy()
    holed[0, 5] = 0.0
    ok, _ = C.butterfly_structure_check(matrices={8: (holed, 48)})
    assert ok is False
    df = _prepared(**SMALL)
    assert C.claim_butterfly(df, (False, ["x"])).verdict == V.NOT_SUPPORTED
    assert C.claim_butterfly(df, (True, ["x"])).verdict == V.SUPPORTED


def test_sparse_claim_reports_every_regime():
    claim = C.claim_sparse_competitive(_prepared(**SMALL))
    text = "\n".join(claim.evidence)
    assert "same H" in text and "iso_params" in text and "iso_time): no data" in text
    # diagonal fails binary addition while block matches: the claim holds for some
    # structures and tasks only, and the tally says how the arms went
    assert claim.verdict == V.MIXED
    assert "supported" in claim.tally and "not supported" in claim.tally
    all_good = _prepared(**SMALL, skill={"diagonal": 1.0, "block": 1.0})
    same_h = C.claim_sparse_competitive(all_good).evidence[0]
    assert same_h.startswith("**same H: supported")


def test_diverged_seed_counts_as_chance():
    df = synthetic_frame(**SMALL)
    hit = ((df["structure"] == "banded") & (df["kind"] == "train") & df["step"].isna()
           & (df["seed"] == 0))
    df.loc[hit, "status"] = "diverged"
    df.loc[hit, "value"] = np.nan
    rows = D.train_rows(D.prepare(df))
    band = rows[(rows["label"] == "banded") & (rows["seed"] == 0)]
    assert len(band) and np.allclose(band["value"], band["chance"])


def test_mixed_training_budgets_are_flagged():
    df = synthetic_frame(**SMALL)
    diag = (df["structure"] == "diagonal") & (df["kind"] == "train") & df["step"].isna()
    longer = df[diag].copy()
    longer["trial_id"] = longer["trial_id"] + "-50k"  # a second budget, same everything else
    longer["train_steps"] = 50000
    arms = D.mixed_budget_arms(D.prepare(pd.concat([df, longer], ignore_index=True)))
    # 2 tasks x (H=64, iso_params:2000), all with diagonal runs
    assert len(arms) == 4 and "up to 2 runs per structure and seed" in arms[0]
    assert D.mixed_budget_arms(_prepared(**SMALL)) == []


# -- figures and helpers ---------------------------------------------------------------
def test_pareto_front_both_directions():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([0.5, 0.4, 0.9, 0.9])
    assert pareto_front(x, y, True).tolist() == [True, False, True, False]
    assert pareto_front(x, y, False).tolist() == [True, True, False, False]


def test_one_colour_per_structure_whatever_the_subset():
    from connbench.nn.structures import REGISTRY
    from connbench.report.style import structure_order, use_catalogue

    use_catalogue(_catalogue(synthetic_frame(**SMALL)))
    try:
        few = assign_styles(["diagonal", "full"])
        many = assign_styles(list(SPECS))
        diagonal = REGISTRY.get("diagonal")
        assert few["diagonal"] == many["diagonal"] == base_style()["diagonal"] == (
            diagonal.color, diagonal.marker)
        assert len({c for c, _ in many.values()}) == len(many)
        assert structure_order() == REGISTRY.names()
    finally:
        use_catalogue(None)
    # without a catalogue (older results) every structure still gets its own style
    spare = assign_styles(list(SPECS))
    assert len(set(spare.values())) == len(spare)
    labels = short_labels(["banded:cyclic=false,width=3", "banded:cyclic=false,width=5", "full"])
    assert labels == {"banded:cyclic=false,width=3": "banded:width=3",
                      "banded:cyclic=false,width=5": "banded:width=5", "full": "full"}


def test_lookback_longest_t_solved_and_drawn(tmp_path):
    df = _prepared(names=("full", "diagonal"), speed=False, train=False, lookback=True)
    table = lookback_table(df)
    got = {(r.task, r.label): r.longest_solved for r in table.itertuples()}
    assert got[("copy", "full")] == 1600 and got[("adding", "diagonal")] == 50
    path = tmp_path / "lookback.png"
    assert fig_lookback(df, assign_styles(df["label"]), str(path), 40) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the lookback sweep's REPORT.md table
    assert "| full | 1600 (tried ≤ 1600) | 1600 (tried ≤ 1600) |" in "\n".join(
        lookback_section(df))


# -- the whole report ------------------------------------------------------------------
def test_report_renders_every_figure_and_claim(tmp_path):
    frame = synthetic_frame(**SMALL)
    report = render_report(frame, "synth", str(tmp_path), dpi=40, catalogue=_catalogue(frame),
                           butterfly_check=NO_BUTTERFLY_CHECK)
    text = report.read_text()
    figs = {p.name for p in (tmp_path / "synth" / "figures").glob("*.png")}
    expected = {f"{s.name}.png" for s in FIGURES} - {"lookback.png"}  # another sweep's
    try:
        import connbench.nn.structures  # noqa: F401
    except ImportError:
        expected.discard("matrices.png")
    assert figs == expected
    for heading in ("## Setup", "## Claims", "## Key tables", "## Figures"):
        assert heading in text
    assert text.count("**Verdict: ") == 5
    assert "Diagonal-only W_hh fails binary addition | **supported**" in text
    assert "RNN 28, dense unrolled 127" in text
    assert "(figures/metric_per_structure.png)" in text
    assert "0123456789abcdef" in text and "2026-01-01T00:00:00Z" in text
    page = (tmp_path / "synth" / "REPORT.html").read_text()
    assert re.search(r'<img alt="Speedup vs full"[^>]* src="data:image/png;base64,', page)
    assert page.count("<table>") == text.count("\n|---") and '<h2 id="claims">Claims</h2>' in page


def test_missing_figures_are_named_with_their_sweep(tmp_path):
    df = synthetic_frame(**SMALL, train=False)
    text = render_report(df, "speedonly", str(tmp_path), dpi=40, matrices=False).read_text()
    assert "Lookback: longest T solved: **skipped**" in text
    assert "`lookback` sweep" in text
    assert "Learning curves: **skipped**" in text
    assert not (tmp_path / "speedonly" / "figures" / "learning_curves.png").exists()


def test_rerun_gives_identical_bytes(tmp_path):
    results = tmp_path / "results"
    tiny = dict(names=("full", "diagonal", "banded"), hiddens=(32, 64),
                task_specs=("binary_addition:bits=8",))
    _write_results(synthetic_frame(**tiny), results, "det")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main(_args("det", results, out, "--no-matrices", "--dpi", "40")) == 0
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert {Path("det/REPORT.md"), Path("det/REPORT.html")} <= set(files) and len(files) > 4
    for rel in files:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel


def test_no_results_exits_nonzero_naming_the_command(tmp_path, capsys):
    code = main(_args("default", tmp_path / "results", tmp_path / "out"))
    assert code != 0
    err = capsys.readouterr().err
    assert "connbench run default" in err and "make bench" in err
    assert not (tmp_path / "out").exists()


def test_report_does_not_import_torch(tmp_path):
    results = tmp_path / "results"
    _write_results(synthetic_frame(names=("full", "diagonal"), hiddens=(32,),
                                   task_specs=("adding:length=100",)), results, "nt")
    code = (
        "import sys, argparse\n"
        "from connbench.cli.report import add_arguments, main\n"
        "p = argparse.ArgumentParser(); add_arguments(p)\n"
        f"rc = main(p.parse_args(['nt', '--results', r'{results}', '--out', r'{tmp_path}',"
        " '--no-matrices', '--dpi', '30']))\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'report imported torch'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# -- the science: thread's setting, positive controls, equal tuning, the answer --------
def _thread_frame(skill=None, steps=10000) -> pd.DataFrame:
    """Synthetic rows in Trask's setting (preset trask, sigmoid cell)."""
    t = synthetic_frame(names=("full", "diagonal", "banded", "jordan"),
                        task_specs=("binary_addition:bits=8",), speed=False, iso=False,
                        skill=skill, cell="rnn_sigmoid",
                        settings={"preset": "trask", "steps": steps, "lr": 0.1})
    t["trial_id"] = t["trial_id"] + f"-trask{steps}"
    return t


def test_thread_setting_decides_claims_1_and_2_and_modern_is_reported_beside():
    # modern setting: the band matches; the thread's setting: it does not
    modern = synthetic_frame(**SMALL)
    df = D.prepare(pd.concat([modern, _thread_frame(skill={"banded": 0.3})],
                             ignore_index=True))
    claim = C.claim_band_matches(df)
    assert claim.verdict == V.NOT_SUPPORTED
    text = "\n".join(claim.evidence)
    assert "In the thread's setting (Trask's preset): not supported" in text
    assert "Beyond the thread (other cells and optimizers): supported" in text
    # without thread rows the modern arms decide, and the text says so
    only_modern = C.claim_band_matches(_prepared(**SMALL))
    assert only_modern.verdict == V.SUPPORTED
    assert "In the thread's setting: no data" in "\n".join(only_modern.evidence)


def test_thread_section_lists_every_seed_per_budget_arm():
    from connbench.report.thread import thread_section

    df = D.prepare(pd.concat([_thread_frame(), _thread_frame(steps=50000)],
                             ignore_index=True))
    text = "\n".join(thread_section(df))
    assert "## The thread's experiment" in text
    assert "10,000 iterations" in text and "50,000 iterations" in text
    diag = [line for line in text.splitlines() if "| diagonal |" in line]
    assert len(diag) == 2 and all('"performed terribly"' in line for line in diag)
    assert all(line.split("|")[4].count(",") == 4 for line in diag)  # 5 seeds listed
    assert "positive control passed" in text
    assert "`trask` sweep" not in text  # both budgets here: nothing to point to
    # Trask's arm alone (the default sweep): the section points to the longer arms
    alone = "\n".join(thread_section(D.prepare(_thread_frame())))
    assert "Trask's own arm only" in alone and "connbench run trask" in alone
    assert thread_section(_prepared(**SMALL)) == []  # no thread rows: no section


def test_budgets_are_separate_arms():
    df = D.prepare(pd.concat([_thread_frame(), _thread_frame(steps=50000)],
                             ignore_index=True))
    rows = D.train_rows(df)
    assert sorted(rows["budget"].dropna().unique()) == [10000, 50000]
    assert D.mixed_budget_arms(df) == []
    claim = C.claim_diagonal_fails(df)
    assert sum("· 10,000 steps" in line or "· 50,000 steps" in line
               for line in claim.evidence) == 2


def test_full_at_chance_makes_the_arm_uninformative_not_a_verdict():
    # adding: full learns nothing (skill 0), so the diagonal there says nothing
    df = _prepared(**SMALL, skill={"full": 0.0, "banded": 0.0, "block": 0.0,
                                   "butterfly": 0.0})
    adding = df[df["task"] == "adding"]
    claim = C.claim_butterfly(adding, (True, ["x"]))
    assert V.UNINFORMATIVE in "\n".join(claim.evidence)
    assert claim.verdict == V.INCONCLUSIVE  # nothing informative to decide on
    from connbench.report.markdown import positive_controls_section

    text = "\n".join(positive_controls_section(df))
    assert "adding:length=100" in text and f"comparisons {V.UNINFORMATIVE}" in text


def _with_lr_grid(df: pd.DataFrame) -> pd.DataFrame:
    """Copies of every train trial at lr 0.1 and 0.001; at 0.1 the diagonal's validation
    curve is best but its test score is worst, so only a validation choice keeps 0.001."""
    parts = []
    for lr in (0.001, 0.1):
        d = df.copy()
        train = d["kind"] == "train"
        d.loc[train, "trial_id"] = d.loc[train, "trial_id"] + f"-lr{lr}"
        d.loc[train, "train_settings"] = f'{{"lr": {lr}, "steps": 2000}}'
        if lr == 0.1:
            diag = train & (d["structure"] == "diagonal")
            curve, final = diag & d["step"].notna(), diag & d["step"].isna()
            d.loc[curve, "value"] = 1.0
            d.loc[final & d["primary"].fillna(False).astype(bool), "value"] = 0.0
        parts.append(d)
    return D.prepare(pd.concat(parts, ignore_index=True))


def test_lr_is_chosen_on_validation_and_reported():
    from connbench.report.markdown import lr_section

    df = _with_lr_grid(synthetic_frame(**SMALL, iso=False))
    choice = D.lr_choice(D.train_rows(df, choose_lr=False), df)
    diag = choice[(choice["label"] == "diagonal")
                  & choice["task_spec"].str.contains("binary")]
    assert diag["lr"].tolist() == [0.1] and diag["candidates"].iloc[0] == "0.001, 0.1"
    rows = D.train_rows(df)
    kept = rows[(rows["label"] == "diagonal") & (rows["task"] == "binary_addition")]
    # one lr, 5 seeds; its test scores are the worst, and still it is kept: the choice
    # never looked at the test set
    assert set(kept["lr"]) == {0.1} and len(kept) == 5 and (kept["value"] == 0.0).all()
    # on adding (lower is better) the 0.1 curve of 1.0 is the worst: 0.001 is chosen
    adding = rows[(rows["label"] == "diagonal") & (rows["task"] == "adding")]
    assert set(adding["lr"]) == {0.001}
    text = "\n".join(lr_section(df))
    assert "chosen per structure on held-out validation" in text and "| diagonal |" in text
    assert lr_section(_prepared(**SMALL)) == []  # one lr everywhere: no section


def test_answer_paragraph_follows_the_verdicts():
    from connbench.report.answer import answer_paragraph

    def claims(**verdicts):
        return [C.Claim(k, k, v, "") for k, v in verdicts.items()]

    yes = answer_paragraph(claims(diagonal_fails=V.SUPPORTED, band_matches=V.NOT_SUPPORTED,
                                  butterfly=V.NOT_SUPPORTED,
                                  sparse_competitive=V.NOT_SUPPORTED))[0]
    assert yes.startswith("**Yes, in this run**") and "does not match full" in yes
    no = answer_paragraph(claims(band_matches=V.SUPPORTED, butterfly=V.INCONCLUSIVE))[0]
    assert no.startswith("**No, not in this run**")
    open_ = answer_paragraph(claims(band_matches=V.INCONCLUSIVE,
                                    fewer_params="holds at 4 of 5 sizes"))[0]
    assert open_.startswith("**Not settled") and "holds at 4 of 5 sizes" in open_
    mixed = answer_paragraph(claims(band_matches=V.NOT_SUPPORTED, butterfly=V.MIXED))[0]
    assert mixed.startswith("**Not everywhere, in this run**")
    assert "learns as well as full in some settings and not in others" in mixed


def test_report_opens_with_the_answer_then_the_claims_table():
    from connbench.report.markdown import render

    df = _prepared(**SMALL)
    text = render(df, "synth", {}, C.all_claims(df, NO_BUTTERFLY_CHECK))
    head = text.split("## Claims")[0]
    assert "**Yes, in this run**" in head or "**No, not in this run**" in head \
        or "**Not settled by this run**" in head
    assert text.index("## Claims") < text.index("## Setup") < text.index("## Key tables")


def test_metric_figure_marks_an_uninformative_panel(tmp_path):
    import matplotlib.pyplot as plt

    from connbench.report.figures import fig_metric_per_structure
    from connbench.report.style import assign_styles as styles_for

    df = _prepared(**SMALL, skill={"full": 0.0})
    titles = []
    real_savefig = plt.Figure.savefig

    def spy(fig, *a, **k):
        titles.extend(ax.get_title() for ax in fig.axes)
        return real_savefig(fig, *a, **k)

    plt.Figure.savefig = spy
    try:
        fig_metric_per_structure(df, styles_for(df["label"].unique()), tmp_path / "m.png", 40)
    finally:
        plt.Figure.savefig = real_savefig
    assert any("UNINFORMATIVE" in t for t in titles)
    at_chance = D.train_rows(df)
    assert D.full_passed(at_chance[at_chance["task"] == "adding"]) is False
    learned = D.train_rows(_prepared(**SMALL))
    assert D.full_passed(learned[learned["task"] == "adding"]) is True


# -- this round's figure fixes ---------------------------------------------------------
def test_lookback_probes_enter_the_lookback_table_but_no_verdict():
    claims = synthetic_frame(names=("full", "diagonal"), task_specs=("adding:length=100",),
                             speed=False, iso=False)
    probes = synthetic_frame(names=("full", "diagonal"), speed=False, train=False,
                             lookback=True)
    probes["train_settings"] = '{"role": "lookback"}'
    df = D.prepare(pd.concat([claims, probes], ignore_index=True))
    verdict_rows = D.train_rows(df)
    assert set(verdict_rows["task_spec"]) == {"adding:length=100"}
    table = lookback_table(df)
    got = {(r.task, r.label): r.longest_solved for r in table.itertuples()}
    assert got[("copy", "full")] == 1600 and got[("adding", "diagonal")] == 50
    # without the role, the probes would be arms of their own in the claims
    plain = D.prepare(pd.concat([claims, probes.assign(train_settings=None)],
                                ignore_index=True))
    assert "adding:length=1600" in set(D.train_rows(plain)["task_spec"])


def test_memory_repeats_give_a_median_and_error_bars(tmp_path):
    from connbench.report.figures import _repeats_text, fig_memory

    base = synthetic_frame(names=("full", "diagonal"), hiddens=(32, 64), train=False)
    mem = base[base["kind"] == "memory"]
    repeats = [mem.assign(seed=s, trial_id=mem["trial_id"] + f"-r{s}",
                          value=mem["value"] * f) for s, f in ((1, 0.9), (2, 1.3))]
    df = D.prepare(pd.concat([base, *repeats], ignore_index=True))
    table, _ = D.speed_table(df, "peak_bytes")
    row = table[(table["label"] == "full") & (table["hidden"] == 64)].iloc[0]
    one = float(mem[(mem["structure"] == "full") & (mem["hidden"] == 64)]["value"].iloc[0])
    assert row["repeats"] == 3 and row["value"] == pytest.approx(one)
    assert row["lo"] == pytest.approx(0.9 * one) and row["hi"] == pytest.approx(1.3 * one)
    assert _repeats_text(table).startswith("median of 3 repeats")
    single, _ = D.speed_table(D.prepare(base), "peak_bytes")
    assert _repeats_text(single) == "one measurement each, no error bars"
    path = tmp_path / "memory.png"
    assert fig_memory(df, assign_styles(df["label"]), str(path), 40) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_lstm_arm_is_costed_with_lstm_timings_only():
    from connbench.report.figures import tradeoff_points

    tanh = synthetic_frame(names=("full", "diagonal"), hiddens=(32, 64),
                           task_specs=("adding:length=100",), iso=False)
    lstm = synthetic_frame(names=("full", "diagonal"), hiddens=(64,),
                           task_specs=("binary_addition:bits=8",), iso=False, cell="lstm")
    lstm_speed = lstm["kind"] == "speed"
    lstm.loc[lstm_speed, "cell"] = "lstm"
    lstm.loc[lstm_speed, "value"] *= 10
    lstm.loc[lstm_speed, "trial_id"] += "-lstm"
    lstm = lstm[lstm["kind"] != "memory"]
    lstm.loc[lstm["kind"] == "train", "trial_id"] += "-lstm"
    df = D.prepare(pd.concat([tanh, lstm], ignore_index=True))
    main = D.time_per_step(df)
    own = D.time_per_step(df, cell="lstm")
    assert set(own["hidden"]) == {64} and set(main["hidden"]) == {32, 64}
    key = (own["label"] == "full") & (own["hidden"] == 64)
    assert float(own.loc[key, "value"].iloc[0]) > 5 * float(
        main.loc[(main["label"] == "full") & (main["hidden"] == 64), "value"].iloc[0])
    pts = tradeoff_points(df)
    for cell, timings in (("lstm", own), ("rnn_tanh", main)):
        p = pts[(pts["cell"] == cell) & (pts["label"] == "full") & (pts["hidden"] == 64)]
        t = timings[(timings["label"] == "full") & (timings["hidden"] == 64)]["value"]
        assert float(p["time"].iloc[0]) == pytest.approx(float(t.iloc[0]))
    assert D.time_per_step(df, cell="gru").empty


def test_learning_curves_get_a_panel_per_training_budget():
    from connbench.report.figures import curve_panels

    ten = synthetic_frame(names=("full", "diagonal"), task_specs=("binary_addition:bits=8",),
                          speed=False, iso=False, settings={"steps": 10000})
    fifty = ten.assign(trial_id=ten["trial_id"] + "-50k",
                       train_settings='{"steps": 50000}')
    df = D.prepare(pd.concat([ten, fifty], ignore_index=True))
    assert curve_panels(D.curve_rows(df)) == [
        ("binary_addition:bits=8", "rnn_tanh", 10000),
        ("binary_addition:bits=8", "rnn_tanh", 50000)]
    assert curve_panels(D.curve_rows(D.prepare(ten))) == [
        ("binary_addition:bits=8", "rnn_tanh", 10000)]


def test_an_inconclusive_comparison_says_what_would_settle_it():
    # five seeds straddling the 25 % line: ask for twice the seeds
    straddle = V.fails([0.1, 0.35, 0.12, 0.33, 0.34], [1.0] * 5, 0.0, True)
    assert straddle.verdict == V.INCONCLUSIVE
    assert "leans to 'does not fail'" in straddle.reason
    assert "at least 10 per side" in straddle.reason
    ten = V.fails([0.1, 0.35, 0.12, 0.33, 0.34] * 2, [1.0] * 10, 0.0, True)
    assert ten.verdict == V.INCONCLUSIVE and "at least 20 per side" in ten.reason
