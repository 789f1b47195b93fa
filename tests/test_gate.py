"""The timing gate (connbench.perf.gate): comparison and table logic on synthetic ratios, the
thresholds file, and one small real run showing that a slowed structure fails it."""

import json

import pytest
import torch

from connbench.cli import gate as gate_cli
from connbench.nn import cells
from connbench.perf import gate
from connbench.perf.kernels import DEFAULT_SPECS, TORCH_RNN
from connbench.registry import SpecError

T_DIAG = gate.Threshold("diagonal", "full", 1024, typical=20.0, min=12.0)
T_FULL = gate.Threshold("full", TORCH_RNN, 1024, typical=0.9, min=0.54)


def _rows(values):
    return gate.evaluate([T_DIAG, T_FULL], values)


def test_evaluate_passes_at_and_above_min():
    rows = _rows({T_DIAG.key: [19.0, 21.0, 20.0], T_FULL.key: [0.54, 0.54, 0.6]})
    assert [r.status for r in rows] == ["ok", "ok"]
    assert rows[0].value == 20.0 and (rows[0].low, rows[0].high) == (19.0, 21.0)
    assert not any(r.failed for r in rows)


def test_evaluate_uses_the_median_so_one_bad_round_does_not_fail():
    rows = _rows({T_DIAG.key: [1.0, 19.0, 21.0], T_FULL.key: [0.9, 0.1, 0.95]})
    assert [r.status for r in rows] == ["ok", "ok"]


def test_evaluate_flags_each_regressed_ratio():
    rows = _rows({T_DIAG.key: [0.9, 1.1, 1.0], T_FULL.key: [0.9, 0.9, 0.9]})
    assert [r.status for r in rows] == ["REGRESSED", "ok"]
    assert rows[0].failed and rows[0].value == 1.0


def test_missing_ratio_fails_and_unknown_ratio_is_new():
    extra = ("banded:width=3", "full", 1024)
    rows = _rows({T_FULL.key: [0.9], extra: [10.0]})
    by = {(r.subject, r.hidden): r for r in rows}
    assert by["diagonal", 1024].status == "MISSING" and by["diagonal", 1024].failed
    assert by["banded:width=3", 1024].status == "new"
    assert not by["banded:width=3", 1024].failed


def test_table_names_ratio_value_threshold_and_sizes():
    rows = _rows({T_DIAG.key: [0.95, 0.9, 1.0], T_FULL.key: [0.9]})
    text = gate.format_table(rows, gate.Settings(batch=32, steps=50, rounds=3))
    assert "FAIL: 1 of 2 ratios regressed" in text
    fail_line = next(line for line in text.splitlines() if line.startswith("  diagonal"))
    for part in ("diagonal / full", "H=1024", "B=32", "T=50", "0.95×", "min 12.00×",
                 "typical 20.00×"):
        assert part in fail_line
    assert "docs/perf.md" in text
    ok = gate.format_table(_rows({T_DIAG.key: [20.0], T_FULL.key: [0.9]}), gate.Settings())
    assert "PASS: all 2 ratios" in ok and "REGRESSED" not in ok


def test_proposal_roundtrips_through_the_file(tmp_path):
    g = gate.Gate(gate.Settings(rounds=7), [T_DIAG, T_FULL])
    m = gate.Measurement(g.settings, {}, {T_DIAG.key: [10.0, 12.0, 11.0],
                                          T_FULL.key: [1.0, 1.0, 1.0]})
    new = gate.proposal(g, m, fraction=0.5)
    assert [(t.typical, t.min) for t in new.ratios] == [(11.0, 5.5), (1.0, 0.5)]
    path = tmp_path / "t.toml"
    path.write_text(gate.dump(new, "header line\nsecond"))
    back = gate.load(path)
    assert back.settings == gate.Settings(rounds=7, fraction=0.5)
    assert [(t.key, t.typical, t.min) for t in back.ratios] == \
        [(t.key, t.typical, t.min) for t in new.ratios]


@pytest.mark.parametrize("text, match", [
    ("[gate]\nroundz = 3\n", "unknown \\[gate\\] keys"),
    ("[gate]\nrounds = 0\n", "must be positive"),
    ('[[ratio]]\nsubject = "diagonal"\nbaseline = "full"\nhidden = 64\n', "lacks \\['min'\\]"),
    ('[[ratio]]\nsubject = "diagonl"\nbaseline = "full"\nhidden = 64\nmin = 1\n', "diagonal"),
    ('[[ratio]]\nsubject = "butterfly"\nbaseline = "full"\nhidden = 48\nmin = 1\n',
     "power of two"),
    ("[gate]\n", "no \\[\\[ratio\\]\\]"),
    ("[gate\n", "not valid TOML"),
])
def test_bad_thresholds_file_says_what_is_wrong(tmp_path, text, match):
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=match):
        gate.load(path)


def test_committed_thresholds_cover_every_structure_and_torch():
    g = gate.load(gate.DEFAULT_THRESHOLDS)
    keys = {(t.subject, t.baseline) for t in g.ratios}
    for spec in DEFAULT_SPECS:
        if spec != "full":
            assert (spec, "full") in keys, spec
    assert ("full", TORCH_RNN) in keys
    for t in g.ratios:
        assert 0 < t.min < t.typical, t
    # the suite must fit the ~3 minute budget: few rounds, one thread, short sequences
    assert g.settings.rounds <= 15 and g.settings.steps <= 100


def test_slow_switch_names_are_checked(monkeypatch):
    monkeypatch.setenv(gate.SLOW_ENV, "diagonal, banded")
    assert gate.slow_names(["jordan"]) == {"diagonal", "banded", "jordan"}
    monkeypatch.setenv(gate.SLOW_ENV, "diagonl")
    with pytest.raises(SpecError, match="unknown structure"):
        gate.slow_names()


@pytest.mark.parametrize("spec", ["diagonal", "banded:width=3", "block:groups=4"])
def test_slow_path_computes_the_same_layer(spec):
    torch.manual_seed(0)
    x = torch.randn(6, 3, 2)
    fast = cells.make("rnn_tanh", 2, 16, spec)
    with gate.slowed({spec.split(":")[0]}):
        slow = cells.make("rnn_tanh", 2, 16, spec)
    assert slow.implementation == "eager"
    assert cells.make("rnn_tanh", 2, 16, spec).rec.stepper.__func__  # patch undone
    slow.load_state_dict(fast.state_dict())
    torch.testing.assert_close(slow(x)[0], fast(x)[0])


TINY = """
[gate]
batch = 32
steps = 20
threads = 1
rounds = 5
min_run_time = 0.02

# diagonal is ~4-7x faster than full here; rebuilt dense every step it is ~1x
[[ratio]]
subject = "diagonal"
baseline = "full"
hidden = 512
typical = 5.0
min = 1.8
"""


def test_gate_passes_normally_and_fails_when_diagonal_is_forced_dense(tmp_path, monkeypatch,
                                                                      capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    monkeypatch.delenv(gate.SLOW_ENV, raising=False)
    threads = torch.get_num_threads()
    assert gate_cli.cli(["--thresholds", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["ratios"][0]["value"] >= 1.8

    monkeypatch.setenv(gate.SLOW_ENV, "diagonal")
    assert gate_cli.cli(["--thresholds", str(path)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "diagonal / full at H=512" in out
    assert torch.get_num_threads() == threads  # the gate restores the thread count


def test_propose_refuses_the_slow_switch(tmp_path, monkeypatch, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    monkeypatch.setenv(gate.SLOW_ENV, "diagonal")
    assert gate_cli.cli(["--thresholds", str(path), "--propose", str(tmp_path / "p.toml")]) == 2
    assert "refusing" in capsys.readouterr().err
    assert not (tmp_path / "p.toml").exists()


def test_propose_from_pooled_json_runs(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    runs = []
    for i, rounds in enumerate(([4.0, 6.0], [5.0, 5.5, 3.0])):
        run = tmp_path / f"run{i}.json"
        run.write_text(json.dumps({
            "settings": {"batch": 32, "steps": 20, "threads": 1, "rounds": len(rounds)},
            "slow": [],
            "ratios": [{"subject": "diagonal", "baseline": "full", "hidden": 512,
                        "per_round": rounds}]}))
        runs.append(str(run))
    out = tmp_path / "proposed.toml"
    args = ["--thresholds", str(path), "--propose", str(out), "--fraction", "0.5", "--from"]
    assert gate_cli.cli(args + runs) == 0
    (t,) = gate.load(out).ratios
    assert (t.typical, t.min) == (5.0, 2.5)  # median of the 5 pooled rounds
    # a fraction close to 1 is capped by the runs' own spread (lowest run median 5.0)
    args[args.index("0.5")] = "0.95"
    assert gate_cli.cli(args + runs) == 0
    assert gate.load(out).ratios[0].min == pytest.approx(gate.SPREAD_MARGIN * 5.0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"settings": {"batch": 32, "steps": 99, "threads": 1},
                               "ratios": []}))
    assert gate_cli.cli(args + [str(bad)]) == 2
    assert "steps=99" in capsys.readouterr().err
