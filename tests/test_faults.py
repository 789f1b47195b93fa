"""Fault injection: failed trials, malformed parts, a full disk, a second run, SIGKILL,
bad flags and bad files. Each case must end in one clear line (or a clean resume),
never a traceback and never a failure recorded as finished.

Trials here are fakes (a row written without training) unless the case is about a
real process, so the suite takes seconds.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from connbench.cli import main as cli
from connbench.measure import trial as measure
from connbench.results import expected as manifest
from connbench.results import store

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))

MINI = """
    tasks = ["copy:length=5"]
    structures = ["full", "diagonal", "banded:width=3"]
    hidden = 8
    kinds = ["train"]
    [train]
    steps = 2
"""


def write(tmp_path: Path, text: str = MINI, name: str = "mini.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def fake_rows(status="ok"):
    """A train measurement that writes one final row instantly; records what ran."""
    calls = []

    def fake(cell, sweep_name, **kw):
        calls.append(cell.structure)
        row = measure.base_row(cell, sweep_name)
        row.update(measure._accounting_of_failed(cell))  # parameter counts, as a real trial has
        row.update(kind="train", metric="loss", value=0.5, primary=True, solved=False,
                   train_steps=2, status=status(cell) if callable(status) else status,
                   error=None)
        return [row]

    fake.calls = calls
    return fake


def run(*argv):
    return cli(["run", *argv])


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# ----------------------------------------------------------- failed is not done


def test_failed_trials_are_retried_by_a_plain_rerun(tmp_path, monkeypatch, capsys):
    sweep, results = write(tmp_path), tmp_path / "r"

    def flaky(cell, sweep_name, **kw):
        if cell.structure == "diagonal":
            raise MemoryError("out of memory (injected)")
        return fake_rows()(cell, sweep_name)

    monkeypatch.setitem(measure.MEASURES, "train", flaky)
    assert run(str(sweep), "--results", str(results), "--quiet") == 1
    err = last_line(capsys.readouterr().err)
    assert "1 failed" in err and "2 ok" in err and "rerun" in err, err
    assert len(store.done_ids(results, "mini")) == 2  # the failed part is not done

    fixed = fake_rows()
    monkeypatch.setitem(measure.MEASURES, "train", fixed)
    assert run(str(sweep), "--results", str(results), "--quiet") == 0
    assert fixed.calls == ["diagonal"]  # only the failed trial ran again
    df = store.load(results, "mini")
    assert (df["status"] == "ok").all() and df["trial_id"].is_unique


def test_diverged_and_skipped_are_results_not_failures(tmp_path, monkeypatch):
    sweep, results = write(tmp_path), tmp_path / "r"
    monkeypatch.setitem(measure.MEASURES, "train", fake_rows(
        lambda c: "diverged" if c.structure == "full" else "ok"))
    assert run(str(sweep), "--results", str(results), "--quiet") == 0
    again = fake_rows()
    monkeypatch.setitem(measure.MEASURES, "train", again)
    assert run(str(sweep), "--results", str(results), "--quiet") == 0
    assert again.calls == []


def test_all_trials_failing_exits_1_with_counts(tmp_path, monkeypatch, capsys):
    sweep = write(tmp_path)

    def boom(*a, **k):
        raise RuntimeError("no")

    monkeypatch.setitem(measure.MEASURES, "train", boom)
    assert run(str(sweep), "--results", str(tmp_path / "r"), "--quiet") == 1
    assert "3 failed" in last_line(capsys.readouterr().err)


@pytest.mark.parametrize("frame", [
    {"trial_id": ["x"]},                                            # no kind/status/...
    {"trial_id": ["x"], "kind": ["train"], "status": ["ok"], "metric": ["m"]},  # no value
])
def test_part_without_required_columns_is_quarantined_and_rerun(tmp_path, frame):
    d = tmp_path / "s"
    d.mkdir()
    pd.DataFrame(frame).to_parquet(d / "x.parquet")
    with pytest.warns(RuntimeWarning, match="lacks required column"):
        assert store.done_ids(tmp_path, "s") == set()
    assert not (d / "x.parquet").exists() and (d / "corrupt" / "x.parquet").exists()


def test_garbage_and_empty_parts_are_quarantined(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / "junk.parquet").write_bytes(b"\x00\xffnot parquet at all")
    (d / "empty.parquet").write_bytes(b"")
    with pytest.warns(RuntimeWarning):
        assert store.done_ids(tmp_path, "s") == set()
    assert sorted(p.name for p in (d / "corrupt").iterdir()) == ["empty.parquet",
                                                                 "junk.parquet"]


def test_unmovable_bad_part_is_skipped_not_a_crash(tmp_path, monkeypatch):
    # A read-only results directory (root ignores chmod, so the move is made to fail).
    d = tmp_path / "s"
    d.mkdir()
    (d / "junk.parquet").write_bytes(b"junk")

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(store.os, "replace", refuse)
    with pytest.warns(RuntimeWarning, match="could not be moved aside"):
        assert store.done_ids(tmp_path, "s") == set()
    assert (d / "junk.parquet").exists()


# ------------------------------------------------------------------- full disk


def test_full_disk_mid_run_is_one_line_and_resumable(tmp_path, monkeypatch, capsys):
    sweep, results = write(tmp_path), tmp_path / "r"
    monkeypatch.setitem(measure.MEASURES, "train", fake_rows())
    real = store.write_trial
    written = []

    def disk_fills(results_dir, sweep_name, trial_id, rows):
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(results_dir))
        written.append(trial_id)
        return real(results_dir, sweep_name, trial_id, rows)

    monkeypatch.setattr(store, "write_trial", disk_fills)
    assert run(str(sweep), "--results", str(results), "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("connbench run: error: No space")
    assert "rerun" in err
    assert {p.stem for p in (results / "mini").glob("*.parquet")} == set(written)
    assert not list((results / "mini").glob(".*.tmp"))

    monkeypatch.setattr(store, "write_trial", real)
    rest = fake_rows()
    monkeypatch.setitem(measure.MEASURES, "train", rest)
    assert run(str(sweep), "--results", str(results), "--quiet") == 0
    assert len(rest.calls) == 2  # the finished trial stayed finished


def test_atomic_write_leaves_no_temp_file_when_the_writer_fails(tmp_path):
    from connbench.files import atomic_write

    def enospc(fh):
        fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "part.parquet", enospc)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_parts_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = store.write_trial(tmp_path, "s", "c1", [
            {"trial_id": "c1", "kind": "speed", "status": "ok", "metric": "m", "value": 1.0}])
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


# ------------------------------------------------------------------------ lock


HOLD = """
import sys, time
from pathlib import Path
from connbench.run.lock import RunLock
lock = RunLock(Path(sys.argv[1]), command="connbench run holder")
lock.acquire()
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_lock(directory: Path, seconds: float) -> subprocess.Popen:
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), str(seconds)],
                            env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_refuses_naming_the_holder(tmp_path, monkeypatch, capsys):
    sweep, results = write(tmp_path), tmp_path / "r"
    monkeypatch.setitem(measure.MEASURES, "train", fake_rows())
    holder = hold_lock(results / "mini", 60)
    try:
        assert run(str(sweep), "--results", str(results), "--quiet") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "in use by another run" in err
        assert f"pid {holder.pid}" in err and "--wait" in err
        assert not list((results / "mini").glob("*.parquet"))
    finally:
        holder.kill()
        holder.wait()
    # The holder died by SIGKILL: its stale lock is taken over.
    assert run(str(sweep), "--results", str(results), "--quiet") == 0
    assert len(list((results / "mini").glob("*.parquet"))) == 3


def test_wait_starts_when_the_holder_finishes(tmp_path, monkeypatch, capsys):
    sweep, results = write(tmp_path), tmp_path / "r"
    monkeypatch.setitem(measure.MEASURES, "train", fake_rows())
    holder = hold_lock(results / "mini", 1.0)
    try:
        assert run(str(sweep), "--results", str(results), "--quiet", "--wait") == 0
        assert holder.poll() is not None  # it only ran after the holder was gone
        assert "waiting for another run" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_per_sweep(tmp_path, monkeypatch):
    monkeypatch.setitem(measure.MEASURES, "train", fake_rows())
    results = tmp_path / "r"
    holder = hold_lock(results / "other", 60)
    try:
        assert run(str(write(tmp_path)), "--results", str(results), "--quiet") == 0
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------- SIGKILL


def _children(pid: int) -> list[tuple[int, str]]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                out.append((int(stat.parent.name), cmd))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG and /proc are Linux")

PARENT = """
import subprocess, sys, time
from connbench.procs import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         preexec_fn=die_with_parent)
print(child.pid, flush=True)
time.sleep(120)
"""


@linux_only
def test_a_child_dies_with_its_sigkilled_parent():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait()
    assert _gone_within(child, 10), "the child outlived its SIGKILLed parent"


def test_the_memory_subprocess_and_pool_workers_die_with_the_driver(monkeypatch):
    from concurrent import futures

    from connbench.procs import die_with_parent
    from connbench.run import runner

    seen = {}

    def fake_run(cmd, **kw):
        seen.update(kw)
        return subprocess.CompletedProcess(cmd, 0, stdout='{"peak_bytes": 1}\n', stderr="")

    from connbench.measure import memory

    class StubTrial:
        def to_dict(self):
            return {}

    monkeypatch.setattr(memory.subprocess, "run", fake_run)
    memory._in_fresh_process(StubTrial(), 1)
    assert seen["preexec_fn"] is die_with_parent

    class Spy(futures.ProcessPoolExecutor):
        def __init__(self, *a, **kw):
            seen["initializer"] = kw.get("initializer")
            raise RuntimeError("stop here")

    monkeypatch.setattr(futures, "ProcessPoolExecutor", Spy)
    with pytest.raises(RuntimeError, match="stop here"):
        runner._run_pool([1, 2], "s", lambda *a: None, 2, lambda c: None)
    init = seen["initializer"]
    assert init is die_with_parent or die_with_parent.__name__ in init.__code__.co_names


MEMORY_SWEEP = """
    tasks = ["copy:length=5"]
    structures = ["full", "diagonal"]
    hidden = 8
    seq_len = 10
    batch = 4
    kinds = ["memory"]
"""


@linux_only
def test_sigkill_during_a_memory_trial_leaves_no_orphan_and_no_half_part(tmp_path):
    sweep, results = write(tmp_path, MEMORY_SWEEP), tmp_path / "r"
    driver = subprocess.Popen(
        [sys.executable, "-m", "connbench", "run", str(sweep), "--results", str(results),
         "--quiet"], env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    child, deadline = None, time.monotonic() + 120
    while child is None and driver.poll() is None and time.monotonic() < deadline:
        child = next((pid for pid, cmd in _children(driver.pid) if "connbench.measure.memory" in cmd), None)
        time.sleep(0.02)
    assert child is not None, driver.stderr.read().decode()[-2000:]
    driver.kill()
    driver.wait()
    assert _gone_within(child, 10), "the memory subprocess outlived the driver"
    d = results / "mini"
    for part in d.glob("*.parquet"):  # whatever was written is whole
        assert len(store.load(results, "mini", [part.stem])) >= 1
    assert not list(d.glob("*.parquet.tmp"))
    # and the rerun takes over the dead driver's lock and finishes the sweep
    assert run(str(sweep), "--results", str(results), "--quiet") == 0
    assert len(list(d.glob("*.parquet"))) == 2


# -------------------------------------------------------- bad flags, bad files


@pytest.mark.parametrize("argv,word", [
    (["train", "--task", "copy", "--lr", "inf"], "--lr"),
    (["train", "--task", "copy", "--lr", "nan"], "--lr"),
    (["train", "--task", "copy", "--lr", "-0.1"], "--lr"),
    (["train", "--task", "copy", "--lr", "fast"], "--lr"),
    (["train", "--task", "copy", "--max-time", "-1"], "--max-time"),
    (["train", "--task", "copy", "--threads", "-1"], "--threads"),
    (["train", "--task", "copy", "--threads", "0"], "--threads"),
    (["train", "--task", "copy", "--hidden", "0"], "--hidden"),
    (["train", "--task", "copy", "--hidden", "1e3"], "--hidden"),
    (["train", "--task", "copy", "--steps", "-5"], "--steps"),
    (["train", "--task", "copy", "--batch", ""], "--batch"),
    (["train", "--task", "copy", "--seed", "-1"], "--seed"),
    (["train", "--task", "copy", "--layers", "0"], "--layers"),
    (["train", "--task", "copy", "--device", "tpu"], "unknown device"),
    (["kernels", "--batch", "0"], "--batch"),
    (["kernels", "--steps", "0"], "--steps"),
    (["kernels", "--hidden", "-3"], "--hidden"),
    (["kernels", "--min-run-time", "inf"], "--min-run-time"),
    (["run", "smoke", "--workers", "0"], "--workers"),
    (["run", "smoke", "--results", ""], "--results"),
    (["report", "smoke", "--results", " "], "--results"),
    (["report", "smoke", "--out", ""], "--out"),
    (["report", "smoke", "--dpi", "0"], "--dpi"),
    (["report", "smoke", "--dpi", "100000"], "--dpi"),
    (["report", "smoke", "--dpi", "high"], "--dpi"),
    (["gate", "--rounds", "0"], "--rounds"),
    (["gate", "--fraction", "2"], "--fraction"),
])
def test_bad_flags_are_one_line_before_work(argv, word, capsys, monkeypatch):
    monkeypatch.setattr(measure, "measure_trial", lambda *a, **k: pytest.fail("work started"))
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"connbench {argv[0]}: error:") and word in err, err
    assert "Traceback" not in err


def test_cuda_on_a_cpu_only_torch_is_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli(["train", "--task", "copy", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CUDA" in err


def test_huge_hidden_is_refused_with_the_estimate(capsys):
    assert cli(["train", "--task", "copy", "--hidden", "1000000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--hidden 1000000" in err and "TB (estimate)" in err and "available" in err


def sweep_case(tmp_path: Path, case: str) -> list[str]:
    if case == "cuda_sweep":
        return [str(write(tmp_path, MINI + 'devices = "cuda"\n'))]
    if case == "huge_hidden":
        return [str(write(tmp_path, MINI.replace("hidden = 8", "hidden = 1000000")))]
    if case == "huge_batch":
        return [str(write(tmp_path, MINI.replace("hidden = 8", "hidden = 8\nbatch = 10000000000")))]
    if case == "nan_lr":
        return [str(write(tmp_path, MINI + "lr = nan\n"))]
    if case == "inf_time":
        return [str(write(tmp_path, MINI + "max_time_s = inf\n"))]
    if case == "negative_threads":
        return [str(write(tmp_path, MINI + "[speed]\nthreads = -1\n"))]
    if case == "string_steps":
        return [str(write(tmp_path, MINI.replace("steps = 2", 'steps = "two"')))]
    if case == "non_utf8":
        path = tmp_path / "latin.toml"
        path.write_bytes('description = "caf\xe9"\n'.encode("latin-1"))
        return [str(path)]
    if case == "binary":
        path = tmp_path / "blob.toml"
        path.write_bytes(bytes(range(256)) * 4)
        return [str(path)]
    if case == "directory":
        (tmp_path / "dir.toml").mkdir()
        return [str(tmp_path / "dir.toml")]
    if case == "missing":
        return [str(tmp_path / "nope.toml")]
    if case == "set_nan":
        return [str(write(tmp_path)), "--set", "train.lr=nan"]
    if case == "set_empty":
        return [str(write(tmp_path)), "--set", "hidden=[]"]
    if case == "set_negative":
        return [str(write(tmp_path)), "--set", "seeds=[-1]"]
    if case == "empty_name":
        return [""]
    raise KeyError(case)


SWEEP_WORDS = {"cuda_sweep": "no CUDA", "huge_hidden": "hidden=1000000",
               "huge_batch": "batch=10000000000", "nan_lr": "lr=nan",
               "inf_time": "max_time_s=inf", "negative_threads": "threads=-1",
               "string_steps": "steps='two'", "non_utf8": "not a UTF-8",
               "binary": "not a UTF-8", "directory": "is a directory",
               "missing": "does not exist", "set_nan": "lr=nan", "set_empty": "empty",
               "set_negative": "seed=-1", "empty_name": "empty sweep name"}


@pytest.mark.parametrize("case", sorted(SWEEP_WORDS))
def test_bad_sweeps_are_refused_before_work(case, tmp_path, capsys, monkeypatch):
    if case == "cuda_sweep":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    monkeypatch.setattr(measure, "measure_trial", lambda *a, **k: pytest.fail("work started"))
    args = sweep_case(tmp_path, case)
    assert run(*args, "--results", str(tmp_path / "r"), "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("connbench run: error:") and SWEEP_WORDS[case] in err, err
    assert "Traceback" not in err
    assert not list((tmp_path / "r").glob("*/*.parquet"))


def test_a_smoke_folder_does_not_hide_the_shipped_sweep(tmp_path, monkeypatch):
    from connbench.plan.sweep import SWEEPS_DIR, sweep_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").mkdir()
    assert sweep_path("smoke") == SWEEPS_DIR / "smoke.toml"


def test_results_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "r").write_text("a file")
    assert run(str(write(tmp_path)), "--results", str(tmp_path / "r"), "--quiet") == 2
    assert "cannot be written" in capsys.readouterr().err


@linux_only
def test_broken_pipe_is_quiet():
    proc = subprocess.Popen([sys.executable, "-m", "connbench", "list"], env=ENV, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written, like `| head -0`
    err = proc.stderr.read().decode()
    proc.wait()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 141)


# ------------------------------------------------------------------ the report


def test_manifest_round_trips(tmp_path):
    exp = manifest.Expected("s", "connbench run s --results r", ["b", "a"], ["c"], ["train"])
    manifest.write(tmp_path, exp)
    back = manifest.read(tmp_path)
    assert back.ids == {"a", "b", "c"} and back.command == exp.command
    assert back.search_kinds == ["train"]
    (tmp_path / manifest.NAME).write_text("{not json")
    assert manifest.read(tmp_path) is None


def test_run_writes_the_manifest(tmp_path, monkeypatch):
    from connbench.plan.sweep import load_sweep

    sweep = write(tmp_path)
    monkeypatch.setitem(measure.MEASURES, "train", fake_rows())
    assert run(str(sweep), "--results", str(tmp_path / "r"), "--quiet",
               "--set", "seeds=[0,1]") == 0
    data = json.loads((tmp_path / "r" / "mini" / "expected.json").read_text())
    ids = {t.trial_id for t in load_sweep(sweep, overrides=["seeds=[0,1]"]).trials}
    assert set(data["trials"]) == ids and len(ids) == 6
    assert "--set 'seeds=[0,1]'" in data["command"]


def test_report_names_missing_trials_and_the_command(tmp_path, monkeypatch, capsys):
    sweep, results = write(tmp_path), tmp_path / "r"
    monkeypatch.setitem(measure.MEASURES, "train", fake_rows())
    assert run(str(sweep), "--results", str(results), "--quiet") == 0
    next((results / "mini").glob("*.parquet")).unlink()  # as if interrupted
    out = tmp_path / "reports"
    rc = cli(["report", str(sweep), "--results", str(results), "--out", str(out),
              "--no-matrices"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "1 of 3 trials missing" in err and "connbench run" in err
    text = (out / "mini" / "REPORT.md").read_text()
    head = text[: text.index("##", text.index("Incomplete") + 5)]
    assert "1 of 3 trials are missing" in head and f"--results {results}" in head


def test_report_never_pools_trials_of_other_settings(tmp_path, monkeypatch, capsys):
    sweep, results = write(tmp_path), tmp_path / "r"
    monkeypatch.setitem(measure.MEASURES, "train", fake_rows())
    assert run(str(sweep), "--results", str(results), "--quiet",
               "--set", "train.steps=3") == 0
    assert run(str(sweep), "--results", str(results), "--quiet") == 0
    assert len(list((results / "mini").glob("*.parquet"))) == 6
    out = tmp_path / "reports"
    assert cli(["report", str(sweep), "--results", str(results), "--out", str(out),
                "--no-matrices"]) == 0
    assert "3 recorded under other settings left out" in capsys.readouterr().err
    text = (out / "mini" / "REPORT.md").read_text()
    assert "left out, not pooled" in text


def test_completeness_of_a_frame(tmp_path):
    from connbench.report import completeness

    manifest.write(tmp_path / "s", manifest.Expected("s", "connbench run s", ["a", "b", "c"]))
    df = pd.DataFrame({"trial_id": ["a", "b", "z"], "kind": ["train"] * 3,
                       "status": ["ok", "failed", "ok"]})
    found = completeness.check(tmp_path, "s", df)
    assert found.missing == ["c"] and found.failed == ["b"] and found.foreign == ["z"]
    assert not found.complete
    assert list(completeness.own_trials(df, found)["trial_id"]) == ["a", "b"]
    assert completeness.check(tmp_path, "other", df).markdown()[0].startswith(
        "> Completeness not checked")


@pytest.mark.parametrize("fault", ["out_is_a_file", "disk_full"])
def test_report_resource_errors_are_one_line(fault, tmp_path, monkeypatch, capsys):
    import connbench.report as report

    sweep, results = write(tmp_path), tmp_path / "r"
    monkeypatch.setitem(measure.MEASURES, "train", fake_rows())
    assert run(str(sweep), "--results", str(results), "--quiet") == 0
    out = tmp_path / "reports"
    if fault == "out_is_a_file":
        out.write_text("a file")
    else:
        def full(path, write):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        monkeypatch.setattr(report, "atomic_write", full)
    capsys.readouterr()
    rc = cli(["report", str(sweep), "--results", str(results), "--out", str(out),
              "--no-matrices"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("connbench report: error:"), err
