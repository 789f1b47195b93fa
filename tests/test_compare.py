"""`connbench compare BASE NEW`: matching by identity, ratios, the test, --fail-on, --json."""

from __future__ import annotations

import json

import pytest

from connbench.cli import main as cli
from connbench.report import stats
from connbench.results import compare as C
from connbench.results import store


def _row(trial_id: str, kind: str, value: float, samples=(), **kw) -> dict:
    row = {"trial_id": trial_id, "sweep": "s", "task": "copy", "task_spec": "copy:length=10",
           "structure": "full", "structure_spec": "full", "cell": "rnn_tanh", "hidden": 16,
           "hidden_request": "16", "layers": 1, "seq_len": 20, "batch": 8, "dtype": "float32",
           "device": "cpu", "threads": 1, "seed": 0, "kind": kind, "status": "ok",
           "value": value, "samples": list(samples), "timestamp": "2026-01-01T00:00:00+00:00"}
    if kind == "speed":
        row.update({"pass": "fwd", "metric": "time_per_step_s"})
    elif kind == "train":
        row.update({"metric": "sequence_accuracy", "higher_is_better": True, "lr": 0.01,
                    "optimizer": "adam", "steps_budget": 30})
    row.update(kw)
    return row


SLOW = [2.0 + 0.01 * i for i in range(10)]
FAST = [1.0 + 0.01 * i for i in range(10)]


def write(tmp_path, name, rows):
    for r in rows:
        store.write_trial(tmp_path, name, r["trial_id"], [r])


@pytest.fixture
def sets(tmp_path):
    """BASE and NEW with different trial ids (a version bump) for the same settings."""
    base = [_row("a1", "speed", 1e-6, [s * 1e-6 for s in FAST]),
            _row("b1", "speed", 1e-6, [s * 1e-6 for s in FAST], structure_spec="diagonal"),
            _row("c1", "train", 0.9, seed=0), _row("d1", "train", 0.8, seed=1),
            _row("e1", "train", 0.5, lr=0.1)]
    new = [_row("a2", "speed", 2e-6, [s * 1e-6 for s in SLOW]),
           _row("b2", "speed", 0.5e-6, [s * 0.5e-6 for s in FAST], structure_spec="diagonal"),
           _row("c2", "train", 0.45, seed=0), _row("d2", "train", 0.4, seed=1),
           _row("f2", "train", 0.5, lr=0.2)]
    write(tmp_path, "s@before", base)
    write(tmp_path, "s@after", new)
    return tmp_path


def test_matches_by_settings_not_trial_id(sets):
    comp = C.compare(store.load(sets, "s@before"), store.load(sets, "s@after"))
    by = {(c.kind, c.trial.split()[1]): c for c in comp.changes}
    assert by[("speed", "full")].ratio == pytest.approx(2.0)
    assert by[("speed", "diagonal")].ratio == pytest.approx(0.5)
    # different lr: never matched, counted on each side
    assert comp.only_base == 1 and comp.only_new == 1
    # train pooled over its two seeds: median 0.85 -> 0.425
    train = next(c for c in comp.changes if c.kind == "train")
    assert train.n_base == 2 and train.ratio == pytest.approx(0.5)
    assert train.worse_pct == pytest.approx(50.0)  # accuracy fell: worse


def test_sorted_worst_first_and_regressions_need_significance(sets):
    comp = C.compare(store.load(sets, "s@before"), store.load(sets, "s@after"))
    assert [c.worse_pct for c in comp.changes] == sorted(
        (c.worse_pct for c in comp.changes), reverse=True)
    slow = comp.changes[0]
    assert slow.kind == "speed" and slow.significant and slow.regression(10)
    assert not slow.regression(150)
    # 2 seeds against 2: p >= 1/3, never significant, never a regression
    train = next(c for c in comp.changes if c.kind == "train")
    assert train.p is not None and not train.significant and not train.regression(10)


def test_cli_fail_on_and_json(sets, capsys):
    assert cli(["compare", "s@before", "s@after", "--results", str(sets)]) == 0
    out = capsys.readouterr()
    assert "REGRESSION" not in out.out and "significantly worse" in out.err
    assert cli(["compare", "s@before", "s@after", "--results", str(sets),
                "--fail-on", "50"]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert cli(["compare", str(sets / "s@before"), str(sets / "s@after"), "--json",
                "--fail-on", "150"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["regressions"] == 0 and len(data["changes"]) == 3


def test_unknown_result_set_is_one_line(sets, capsys):
    assert cli(["compare", "s@nope", "s@after", "--results", str(sets)]) == 2
    err = capsys.readouterr().err
    assert "'s@nope' is not a results folder" in err and "s@before" in err


def test_ratio_of_zero_to_zero_is_no_change():
    assert C._ratio(0.0, 0.0) == 1.0 and C._ratio(0.0, 1.0) == float("inf")


def test_fallback_mann_whitney_matches_scipy_path(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *args, **kw):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    a, b = [1.0, 2.0, 3.5, 4.0], [5.0, 6.0, 7.5, 8.0, 9.0]
    monkeypatch.setattr(builtins, "__import__", no_scipy)
    assert C.mann_whitney_p(a, b) == pytest.approx(stats.mann_whitney(a, b)[1])
    assert C.mann_whitney_p([1.0], b) is None
