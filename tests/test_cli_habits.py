"""CLI habits: --version, run --dry-run, list sweeps, bars only on a terminal, one
summary line, --json for run and report."""

from __future__ import annotations

import io
import json
import math

import pytest

import connbench
from connbench.cli import main as cli


def test_version(capsys):
    assert cli(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"connbench {connbench.__version__}"


def test_dry_run_lists_trials_and_writes_nothing(tmp_path, capsys):
    from connbench.plan.sweep import load_sweep

    assert cli(["run", "smoke", "--results", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    trials = load_sweep("smoke").trials
    assert [line.split()[0] for line in out[:-1]] == [t.trial_id for t in trials]
    assert out[-1].startswith(f"connbench run smoke --dry-run: {len(trials)} trials (")
    assert "3 speed, 1 memory, 5 train" in out[-1] and "nothing run or written" in out[-1]
    assert not (tmp_path / "r").exists()


def test_dry_run_json_estimate(capsys):
    from connbench.plan import preview as P
    from connbench.plan.sweep import load_sweep

    assert cli(["run", "smoke", "--dry-run", "--json", "--workers", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    sweep = load_sweep("smoke")
    speed = sum(3 * t.option("min_run_time") + P.SPEED_OVERHEAD_S
                for t in sweep.trials if t.kind == "speed")
    train = sum(t.option("max_time_s") for t in sweep.trials if t.kind == "train")
    assert data["counts"] == {"speed": 3, "memory": 1, "train": 5}
    assert data["estimate_s"] == pytest.approx(speed + P.MEMORY_TRIAL_S + train / 2, abs=0.1)


def test_list_sweeps(monkeypatch, capsys):
    from connbench.plan import sweep

    monkeypatch.setattr(sweep, "shipped_sweeps", lambda: ["smoke", "trask"])
    assert cli(["list", "sweeps", "--json"]) == 0
    entries = {e["sweep"]: e for e in json.loads(capsys.readouterr().out)["sweeps"]}
    assert entries["smoke"]["trials"] == len(sweep.load_sweep("smoke").trials)
    assert entries["trask"]["description"].startswith("Trask")
    assert cli(["list", "sweeps"]) == 0
    assert "smoke         9 trials" in capsys.readouterr().out


def test_list_one_registry(capsys):
    assert cli(["list", "cells", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["cells"]


def test_progress_bar_only_on_a_terminal(monkeypatch):
    from connbench.run import runner

    monkeypatch.setattr("sys.stderr", io.StringIO())  # a pipe: isatty() is False
    bar = runner._progress(3, "s", quiet=False)
    bar.update(3)
    bar.close()
    assert bar.disable and runner.sys.stderr.getvalue() == ""


def test_train_progress_hides_the_missing_loss_at_step_0(capsys):
    from connbench.cli.train import _progress_line

    _progress_line(0, 10, math.nan, {"accuracy": 0.5})
    _progress_line(5, 10, 0.25, {"accuracy": 0.75})
    err = capsys.readouterr().err
    assert "nan" not in err and "loss 0.25" in err


def test_run_and_report_json(tmp_path, capsys):
    results, reports = tmp_path / "r", tmp_path / "rep"
    assert cli(["run", "smoke", "--results", str(results), "--json",
                "--set", "kinds=['memory']"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["counts"] == {"ok": 2} and run["exit"] == 0
    assert cli(["report", "smoke", "--results", str(results), "--out", str(reports),
                "--no-matrices", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["rows"] > 0 and rep["report"].endswith("REPORT.md")
    assert (reports / "smoke" / "REPORT.html").exists()


def test_train_draws_no_progress_line_into_a_pipe(capsys):
    assert cli(["train", "--task", "binary_addition", "--hidden", "4", "--steps", "3"]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and "step 0/" not in err
    assert out.startswith("binary_addition") and "after 3 steps" in out
