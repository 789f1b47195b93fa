"""`connbench run`: the smoke sweep end to end, resume, force, failures, bad input,
lookback search. Speed and memory figures are real but tiny; train cells are short."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from connbench.cli import main as cli
from connbench.measure import trial as measure
from connbench.plan.sweep import load_sweep
from connbench.results import store
from connbench.results.schema import COLUMN_NAMES, KINDS, PASSES, STATUSES

ROOT = Path(__file__).resolve().parent.parent
# keep the smoke sweep's train cells short in tests
FAST: list[str] = []


def run(*argv: str) -> int:
    return cli(["run", *argv])


def part_ids(results: Path, sweep: str) -> set[str]:
    return {p.stem for p in (results / sweep).glob("*.parquet")}


def smoke_results(tmp_path_factory) -> Path:
    """The smoke sweep run once per test session by the local executor (shared with
    test_ray, which compares the Ray executor against it)."""
    results = tmp_path_factory.getbasetemp() / "smoke-local"
    marker = tmp_path_factory.getbasetemp() / "smoke-local.complete"
    if not marker.exists():
        assert run("smoke", "--results", str(results), "--quiet", *FAST) == 0
        marker.touch()
    return results


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return smoke_results(tmp_path_factory)


@pytest.fixture(scope="module")
def smoke_cells():
    return load_sweep("smoke", overrides=FAST[1::2]).trials


def test_smoke_rows_match_schema(smoke, smoke_cells):
    df = store.load(smoke, "smoke")
    assert list(df.columns)[: len(COLUMN_NAMES)] == COLUMN_NAMES
    assert set(df["trial_id"]) == {c.trial_id for c in smoke_cells}
    assert set(df["status"]) <= set(STATUSES)
    assert set(df["kind"]) <= set(KINDS)
    assert set(df["pass"].dropna()) <= set(PASSES)
    assert (df["status"] == "ok").all(), df.loc[df["status"] != "ok", "error"].tolist()
    for col in ("stored_params", "effective_params", "total_params", "flops_per_step",
                "torch_version", "host", "timestamp", "threads", "seq_len", "implementation"):
        assert df[col].notna().all(), col
    # every smoke structure has a fused plan, so every speed/memory/train row ran fused
    assert set(df["implementation"]) == {"fused"}, set(df["implementation"])
    kinds = {c.kind for c in smoke_cells}
    if "speed" in kinds:
        speed = df[df["kind"] == "speed"]
        assert set(speed["pass"]) == {"fwd", "bwd", "fwd+bwd"}
        assert (speed["metric"] == "time_per_step_s").all()
        assert (speed["value"] > 0).all() and speed["samples"].map(len).gt(0).all()
    if "memory" in kinds:
        mem = df[df["kind"] == "memory"]
        assert (mem["metric"] == "peak_bytes").all() and (mem["value"] > 0).all()
    if "train" in kinds:
        train = df[(df["kind"] == "train") & df["step"].isna()]
        assert train["primary"].sum() == sum(c.kind == "train" for c in smoke_cells)
        assert train["solved"].notna().all() and train["train_steps"].notna().all()
        assert ((df["kind"] == "train") & df["step"].notna()).any()


def test_one_part_file_per_cell(smoke, smoke_cells):
    assert part_ids(smoke, "smoke") == {c.trial_id for c in smoke_cells}


def test_rerun_skips_finished_cells(smoke, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in (smoke / "smoke").glob("*.parquet")}

    def boom(*a, **k):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(measure, "measure_trial", boom)
    assert run("smoke", "--results", str(smoke), "--quiet", *FAST) == 0
    assert {p: p.stat().st_mtime_ns for p in (smoke / "smoke").glob("*.parquet")} == before


def test_force_redoes_every_cell(smoke, smoke_cells, tmp_path, monkeypatch):
    shutil.copytree(smoke, tmp_path / "r")
    seen = []

    def fake(cell, sweep, **kw):
        seen.append(cell.trial_id)
        return [measure.error_row(cell, sweep, "train", "failed", "redone")]

    monkeypatch.setattr(measure, "measure_trial", fake)
    # every trial failed: the run says so in its exit status
    assert run("smoke", "--results", str(tmp_path / "r"), "--quiet", "--force", *FAST) == 1
    assert sorted(seen) == sorted(c.trial_id for c in smoke_cells)
    df = store.load(tmp_path / "r", "smoke")
    assert (df["error"] == "redone").all() and df["trial_id"].is_unique


# the smoke sweep's train cells only, at 5 steps each: enough cells to kill it midway
SHORT = ["--set", 'kinds=["train"]', "--set", "train.steps=5"]


def test_sigkill_mid_run_then_resume(tmp_path):
    cells = load_sweep("smoke", overrides=SHORT[1::2]).trials
    results = tmp_path / "r"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "connbench", "run", "smoke", "--results", str(results), "--quiet",
         *SHORT], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not part_ids(results, "smoke") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = part_ids(results, "smoke")
    assert at_kill, proc.stderr.read().decode()[-2000:]
    ids = {c.trial_id for c in cells}
    assert at_kill < ids, "the run finished before the kill"
    assert run("smoke", "--results", str(results), "--quiet", *SHORT) == 0
    assert part_ids(results, "smoke") == ids
    df = store.load(results, "smoke")
    # every cell exactly once: one part per cell, no repeated rows
    assert set(df["trial_id"]) == ids
    key = ["trial_id", "kind", "pass", "metric", "step"]
    assert not df[key].astype(str).duplicated().any()


# ------------------------------------------------------------------ failures


def write(tmp_path: Path, text: str, name: str = "mini.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_failed_cell_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    sweep = write(tmp_path, """
        tasks = ["copy:length=5"]
        structures = ["full", "diagonal"]
        hidden = 8
        kinds = ["train"]
        [train]
        steps = 5
    """)
    real = measure.MEASURES["train"]

    def flaky(cell, sweep_name, **kw):
        if cell.structure == "diagonal":
            raise RuntimeError("boom in diagonal")
        return real(cell, sweep_name, **kw)

    monkeypatch.setitem(measure.MEASURES, "train", flaky)
    assert run(str(sweep), "--results", str(tmp_path / "r"), "--quiet") == 1
    df = store.load(tmp_path / "r", "mini")
    bad = df[df["structure"] == "diagonal"]
    assert len(bad) == 1 and bad["status"].iloc[0] == "failed"
    assert "boom in diagonal" in bad["error"].iloc[0] and bad["kind"].iloc[0] == "train"
    assert bad["total_params"].iloc[0] > 0  # accounting even on a failed row
    good = df[(df["structure"] == "full") & (df["kind"] == "train") & df["step"].isna()]
    assert (good["status"] == "ok").all() and len(good) >= 1


def test_diverged_cells_are_recorded_by_a_process_pool(tmp_path):
    sweep = write(tmp_path, """
        tasks = ["adding:length=10"]
        structures = ["full", "diagonal"]
        cells = ["rnn_relu"]
        hidden = 16
        kinds = ["train"]
        [train]
        steps = 20
        lr = 1e12
    """)
    assert run(str(sweep), "--results", str(tmp_path / "r"), "--quiet", "--workers", "2") == 0
    df = store.load(tmp_path / "r", "mini")
    train = df[(df["kind"] == "train") & df["step"].isna()]
    assert set(train["structure"]) == {"full", "diagonal"}
    assert (train["status"] == "diverged").all(), train[["status", "error"]]
    assert train["error"].str.contains("non-finite").all()


def test_skip_invalid_records_skipped_rows(tmp_path, capsys):
    sweep = write(tmp_path, """
        tasks = ["copy:length=5"]
        structures = ["full", "butterfly"]
        hidden = 12
        kinds = ["train"]
        [train]
        steps = 2
    """)
    assert run(str(sweep), "--results", str(tmp_path / "r"), "--quiet") == 2
    assert "butterfly" in capsys.readouterr().err
    assert not (tmp_path / "r" / "mini").exists() or not part_ids(tmp_path / "r", "mini")
    assert run(str(sweep), "--results", str(tmp_path / "r"), "--quiet", "--skip-invalid") == 0
    df = store.load(tmp_path / "r", "mini")
    skipped = df[df["structure"] == "butterfly"]
    assert list(skipped["status"]) == ["skipped"] and skipped["error"].iloc[0]


@pytest.mark.parametrize("case", ["unknown_sweep", "malformed", "unknown_key", "empty",
                                  "unwritable", "workers"])
def test_bad_input_exits_2_before_any_work(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(measure, "measure_trial", lambda *a, **k: pytest.fail("work started"))
    results = tmp_path / "r"
    args = ["smoke"]
    if case == "unknown_sweep":
        args = ["smok"]
    elif case == "malformed":
        args = [str(write(tmp_path, 'tasks = ["copy"\nhidden = 8\n'))]
    elif case == "unknown_key":
        args = [str(write(tmp_path, 'tasks = ["copy"]\nconnectivities = ["full"]\n'
                                    'hiden = 8\n'))]
    elif case == "empty":
        args = [str(write(tmp_path, 'tasks = ["copy"]\nconnectivities = []\nhidden = 8\n'))]
    elif case == "unwritable":
        results.write_text("a file, not a directory")
    elif case == "workers":
        args = ["smoke", "--workers", "0"]
    assert run(*args, "--results", str(results), "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("connbench run: error:"), err
    if case == "unknown_sweep":
        assert "did you mean 'smoke'" in err
    if case == "malformed":
        assert "line" in err
    if case == "unknown_key":
        assert "hidden" in err


# ------------------------------------------------------------------ lookback


def test_search_doubles_then_bisects():
    from connbench.run.runner import _search

    tried = []

    def solved_at(n):
        tried.append(n)
        return n <= 37

    assert _search(solved_at, 4, 1024, 0.0) == 37
    assert tried[:5] == [4, 8, 16, 32, 64]
    assert len(tried) <= 5 + 6
    tried.clear()
    assert _search(solved_at, 64, 1024, 0.0) == 0 and tried == [64]
    tried.clear()
    assert _search(lambda n: tried.append(n) or True, 4, 20, 0.1) == 20 and tried[-1] == 20


def test_lookback_sweep_records_every_trained_length(tmp_path, monkeypatch):
    sweep = write(tmp_path, """
        tasks = ["copy"]
        structures = ["full", "diagonal"]
        hidden = 8
        kinds = ["train"]
        [lookback]
        start = 4
        max = 128
        resolution = 0.1
    """)
    limit = {"full": 50, "diagonal": 6}
    calls = []

    def fake_train(cell, sweep_name, **kw):
        from connbench.registry import split_spec

        length = int(split_spec(cell.task_spec)[1]["length"])
        calls.append((cell.structure, length))
        row = measure.base_row(cell, sweep_name)
        row.update(kind="train", metric="loss", value=0.0, primary=True,
                   solved=length <= limit[cell.structure], train_steps=1)
        return [row]

    monkeypatch.setitem(measure.MEASURES, "train", fake_train)
    assert run(str(sweep), "--results", str(tmp_path / "r"), "--quiet") == 0
    df = store.load(tmp_path / "r", "mini")
    assert len(df) == len(calls) and df["trial_id"].is_unique
    assert df["seq_len"].notna().all()
    for conn, lim in limit.items():
        sub = df[df["structure"] == conn]
        best = sub.loc[sub["solved"].astype(bool), "seq_len"].max() - 20  # copy: T + 20
        assert lim * 0.9 <= best <= lim
    # resume: nothing is trained twice
    calls.clear()
    assert run(str(sweep), "--results", str(tmp_path / "r"), "--quiet") == 0
    assert calls == []


def test_fit_length_tiles_or_cuts_a_batch():
    import torch

    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    y = torch.arange(6).reshape(2, 3)
    x7, y7 = measure.fit_length(x, y, 7, every_step=True)
    assert x7.shape == (2, 7, 4) and y7.shape == (2, 7)
    assert torch.equal(x7[:, 3:6], x) and torch.equal(y7[:, 6], y[:, 0])
    x2, y2 = measure.fit_length(x, y[:, 0], 2, every_step=False)
    assert x2.shape == (2, 2, 4) and torch.equal(y2, y[:, 0])


def test_rows_the_store_rejects_become_a_failed_row(tmp_path, monkeypatch):
    sweep = write(tmp_path, """
        tasks = ["copy:length=5"]
        structures = ["full"]
        hidden = 8
        kinds = ["train"]
    """)

    def bad_rows(cell, sweep_name, **kw):
        row = measure.base_row(cell, sweep_name)
        row.update(kind="train", metric="loss", value="not a number")
        return [row]

    monkeypatch.setitem(measure.MEASURES, "train", bad_rows)
    assert run(str(sweep), "--results", str(tmp_path / "r"), "--quiet") == 1
    df = store.load(tmp_path / "r", "mini")
    assert list(df["status"]) == ["failed"]
    assert df["error"].iloc[0].startswith("rows could not be stored")


def test_lookback_role_is_recorded_and_kept_out_of_verdicts(tmp_path):
    sweep = write(tmp_path, """
        tasks = ["adding:length=4"]
        structures = ["full"]
        hidden = 8
        kinds = ["train"]
        [train]
        steps = 5
        [[include]]
        kind = "train"
        task = "adding:length=8"
        structure = "full"
        role = "lookback"
    """)
    assert run(str(sweep), "--results", str(tmp_path / "r"), "--quiet") == 0
    from connbench.report import data as D

    df = D.prepare(store.load(tmp_path / "r", "mini"))
    final = df[D.final_train(df) & df["primary"].astype(bool)]
    roles = dict(zip(final["task_spec"], final["role"], strict=True))
    assert roles == {"adding:length=4": "claim", "adding:length=8": "lookback"}
    assert set(D.train_rows(df)["task_spec"]) == {"adding:length=4"}
    assert set(D.train_rows(df, lookback=True)["task_spec"]) == {"adding:length=4",
                                                                  "adding:length=8"}
