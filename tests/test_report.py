"""`connbench report`: figures, REPORT.md and the claim verdicts, from synthetic results.

The synthetic frames (tests/conftest_report.py) follow known models, so each test
knows which verdict the report must reach.
"""

from __future__ import annotations

import argparse
import os
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
    full = [1.0, 0.98, 0.99]
    assert V.fails([0.01, 0.02, 0.0], full, 0.0, True).verdict == V.SUPPORTED
    assert V.fails([0.9, 0.95, 0.97], full, 0.0, True).verdict == V.NOT_SUPPORTED
    assert V.fails([0.05, 0.5, 0.9], full, 0.0, True).verdict == V.INCONCLUSIVE
    flat = V.fails([0.0, 0.0, 0.0], [0.0, 0.01, -0.01], 0.0, True)
    assert flat.verdict == V.INCONCLUSIVE and "did not beat chance" in flat.reason


def test_matches_is_direction_aware():
    # MSE: lower is better, chance 0.167
    full = [0.002, 0.003, 0.004]
    assert V.matches([0.002, 0.004, 0.003], full, 0.167, False).verdict == V.SUPPORTED
    assert V.matches([0.10, 0.12, 0.11], full, 0.167, False).verdict == V.NOT_SUPPORTED
    better = V.matches([0.0, 0.0, 0.001], full, 0.167, False)
    assert better.verdict == V.SUPPORTED and better.diff.estimate > 0


def test_single_seed_is_never_a_verdict():
    one = V.fails([0.0], [1.0], 0.0, True)
    assert one.verdict == V.INCONCLUSIVE and "say 'supported'" in one.reason
    assert V.matches([1.0], [1.0], 0.0, True).verdict == V.INCONCLUSIVE
    claim = C.claim_diagonal_fails(_prepared(**SMALL, seeds=(0,)))
    assert claim.verdict == V.INCONCLUSIVE


def test_combine_is_unanimous():
    assert V.combine([V.SUPPORTED, V.SUPPORTED]) == V.SUPPORTED
    assert V.combine([V.NOT_SUPPORTED]) == V.NOT_SUPPORTED
    assert V.combine([V.SUPPORTED, V.NOT_SUPPORTED]) == V.INCONCLUSIVE
    assert V.combine([]) == V.INCONCLUSIVE


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
    assert claim.verdict == V.INCONCLUSIVE and "2 of 3 sizes" in text
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
    # diagonal fails binary addition, so "competitive" cannot hold for every task
    assert claim.verdict == V.INCONCLUSIVE
    all_good = _prepared(**SMALL, skill={"diagonal": 1.0, "block": 1.0})
    same_h = C.claim_sparse_competitive(all_good).evidence[0]
    assert same_h.startswith("**same H: supported")


def test_diverged_seed_counts_as_chance():
    df = synthetic_frame(**SMALL)
    hit = (df["structure"] == "banded") & (df["kind"] == "train") & df["step"].isna() & (df["seed"] == 0)
    df.loc[hit, "status"] = "diverged"
    df.loc[hit, "value"] = np.nan
    rows = D.train_rows(D.prepare(df))
    band = rows[(rows["label"] == "banded") & (rows["seed"] == 0)]
    assert len(band) and np.allclose(band["value"], band["chance"])


def test_mixed_training_budgets_are_flagged():
    df = synthetic_frame(**SMALL)
    longer = df[(df["structure"] == "diagonal") & (df["kind"] == "train") & df["step"].isna()].copy()
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
    assert '<img alt="Speedup vs full" src="figures/speedup_heatmap.png">' in page
    assert page.count("<table>") == text.count("\n|---") and "<h2>Claims</h2>" in page


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
