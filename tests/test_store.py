"""The results store: atomic parts, resume, corruption, schema coercion, loading."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from connbench.registry import SpecError
from connbench.results import store
from connbench.results.schema import COLUMN_NAMES, DTYPES

ROOT = Path(__file__).resolve().parents[1]


def rows(trial_id="c1", n=2, **extra):
    return [{"trial_id": trial_id, "sweep": "s", "task": "copy", "hidden": 64, "kind": "speed",
             "pass": "fwd",
             "status": "ok", "metric": "time_per_step_s", "value": 1e-4 * (i + 1),
             "samples": [1e-4, 2e-4, 3e-4], "git_dirty": False, **extra} for i in range(n)]


def test_write_then_load_round_trips_with_schema_dtypes(tmp_path):
    path = store.write_trial(tmp_path, "s", "c1", rows("c1"))
    assert path == tmp_path / "s" / "c1.parquet"
    store.write_trial(tmp_path, "s", "c2", rows("c2", n=1, solved=True, steps_to_solve=300))
    df = store.load(tmp_path, "s")
    assert list(df.columns) == COLUMN_NAMES and len(df) == 3
    for col, dtype in DTYPES.items():
        assert str(df[col].dtype) == ("object" if dtype == "object" else dtype), col
    assert sorted(df["trial_id"]) == ["c1", "c1", "c2"]
    assert list(df.loc[df.trial_id == "c1", "samples"].iloc[0]) == [1e-4, 2e-4, 3e-4]
    two = df[df.trial_id == "c2"].iloc[0]
    assert bool(two["solved"]) and two["steps_to_solve"] == 300
    assert pd.isna(df.loc[df.trial_id == "c1", "solved"]).all()  # missing -> NA
    assert pd.isna(df["error"]).all()


def test_part_file_has_the_arrow_schema(tmp_path):
    path = store.write_trial(tmp_path, "s", "c1", rows())
    schema = pq.read_schema(path)
    assert schema.names == COLUMN_NAMES
    assert str(schema.field("samples").type.value_type) == "double"
    assert str(schema.field("hidden").type) == "int64"


def test_done_ids_and_force_rewrite(tmp_path):
    assert store.done_ids(tmp_path, "s") == set()
    store.write_trial(tmp_path, "s", "c1", rows("c1"))
    store.write_trial(tmp_path, "s", "c2", rows("c2"))
    assert store.done_ids(tmp_path, "s") == {"c1", "c2"}
    # --force: the same cell written again replaces its part; nothing is duplicated
    store.write_trial(tmp_path, "s", "c1", rows("c1", n=5))
    df = store.load(tmp_path, "s")
    assert (df.trial_id == "c1").sum() == 5 and len(df) == 7
    assert store.done_ids(tmp_path, "other") == set()


def test_write_leaves_no_temp_files_and_ignores_stale_ones(tmp_path):
    store.write_trial(tmp_path, "s", "c1", rows())
    (tmp_path / "s" / ".c9.12345.tmp").write_bytes(b"half a file")  # a killed writer
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [".c9.12345.tmp",
                                                                  "c1.parquet"]
    assert store.done_ids(tmp_path, "s") == {"c1"}
    assert set(store.load(tmp_path, "s").trial_id) == {"c1"}


def test_failed_write_keeps_the_old_part(tmp_path, monkeypatch):
    store.write_trial(tmp_path, "s", "c1", rows(n=1))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(store.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        store.write_trial(tmp_path, "s", "c1", rows(n=4))
    monkeypatch.undo()
    assert len(store.load(tmp_path, "s")) == 1
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["c1.parquet"]


def test_sigkill_during_writes_never_leaves_a_broken_part(tmp_path):
    # A child rewrites parts in a loop and is killed mid-stream: every part present
    # must be whole, and no warning (no corrupt file) may appear.
    code = ("import sys; from connbench.results import store\n"
            "rows=[{'kind':'speed','status':'ok','samples':[1.0]*5000}]*50\n"
            "for i in range(10**6): store.write_trial(sys.argv[1], 's', f'c{i%7}', rows)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT)
    try:
        for _ in range(400):  # until a few parts exist (bounded, no timing assert)
            if proc.poll() is not None or len(store.done_ids(tmp_path, "s")) >= 3:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        done = store.done_ids(tmp_path, "s")
        df = store.load(tmp_path, "s")
    assert done and set(df.trial_id) == done
    assert not (tmp_path / "s" / store.CORRUPT_DIR).exists()


def test_corrupt_part_is_moved_aside_and_rerun(tmp_path):
    store.write_trial(tmp_path, "s", "good", rows("good"))
    bad = tmp_path / "s" / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.warns(RuntimeWarning, match="bad.parquet.*moved to"):
        assert store.done_ids(tmp_path, "s") == {"good"}
    assert not bad.exists() and (tmp_path / "s" / "corrupt" / "bad.parquet").exists()
    # a second corrupt copy of the same cell does not overwrite the first one
    bad.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning):
        df = store.load(tmp_path, "s")
    assert set(df.trial_id) == {"good"}
    assert len(list((tmp_path / "s" / "corrupt").iterdir())) == 2


def test_unknown_columns_are_rejected_with_did_you_mean(tmp_path):
    with pytest.raises(store.StoreError, match=r"'hiden'.*did you mean 'hidden'"):
        store.write_trial(tmp_path, "s", "c1", rows(hiden=3))
    assert store.done_ids(tmp_path, "s") == set()


@pytest.mark.parametrize("column, value", [("hidden", 1.5), ("value", "fast"),
                                           ("solved", "maybe"), ("samples", ["a"])])
def test_bad_values_name_the_column(tmp_path, column, value):
    with pytest.raises(store.StoreError, match=f"column '{column}'"):
        store.coerce(rows(**{column: value}))


def test_coercion_of_loose_types():
    df = store.coerce([{"hidden": 64.0, "value": "1e-3", "solved": 1, "samples": None,
                        "seed": None, "threads": "2"},
                       {"hidden": None, "value": None, "solved": None, "samples": (1, 2)}])
    assert df["hidden"].tolist()[0] == 64 and pd.isna(df["hidden"][1])
    assert df["value"][0] == 1e-3 and df["threads"][0] == 2
    assert df["solved"][0] is True or bool(df["solved"][0])
    assert df["samples"].tolist() == [[], [1.0, 2.0]]
    assert store.coerce([]).columns.tolist() == COLUMN_NAMES


def test_rows_of_another_cell_and_empty_cells_are_refused(tmp_path):
    with pytest.raises(store.StoreError, match="other trial_id"):
        store.write_trial(tmp_path, "s", "c1", rows("c2"))
    with pytest.raises(store.StoreError, match="no rows"):
        store.write_trial(tmp_path, "s", "c1", [])
    filled = store.write_trial(tmp_path, "s", "c3", [{"kind": "train", "status": "failed",
                                                     "error": "boom"}])
    df = store.load(tmp_path, "s")
    assert filled.exists() and df.trial_id.tolist() == ["c3"] and df.sweep.tolist() == ["s"]


def test_load_without_results_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"connbench run smoke"):
        store.load(tmp_path, "smoke")
    (tmp_path / "smoke").mkdir()
    with pytest.raises(FileNotFoundError, match="no results for sweep 'smoke'"):
        store.load(tmp_path, "smoke")


def test_load_a_subset_of_cells(tmp_path):
    for cid in ("a", "b", "c"):
        store.write_trial(tmp_path, "s", cid, rows(cid, n=1))
    assert sorted(store.load(tmp_path, "s", trial_ids=["a", "c"]).trial_id) == ["a", "c"]
    assert store.load(tmp_path, "s", trial_ids=["zzz"]).empty


def test_read_cell(tmp_path):
    store.write_trial(tmp_path, "s", "a", rows("a", n=3))
    assert len(store.read_trial(tmp_path, "s", "a")) == 3
    assert store.read_trial(tmp_path, "s", "b") is None
    (tmp_path / "s" / "b.parquet").write_bytes(b"junk")
    with pytest.warns(RuntimeWarning, match="moved to"):
        assert store.read_trial(tmp_path, "s", "b") is None


def test_old_parts_with_fewer_or_retired_columns_still_load(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    # the required columns, but none of the others (pass, samples ...) and a retired one
    pd.DataFrame({"trial_id": ["old"], "kind": ["speed"], "status": ["ok"], "metric": ["m"],
                  "value": [1.0], "hidden": [8], "retired": ["x"]}).to_parquet(
        d / "old.parquet")
    df = store.load(tmp_path, "s")
    assert list(df.columns) == COLUMN_NAMES and df.hidden.tolist() == [8]


def test_results_doc_lists_the_schema():
    from connbench.results.schema import markdown_table

    doc = (ROOT / "docs" / "results.md").read_text()
    assert markdown_table() in doc, ("regenerate the table in docs/results.md from "
                                     "connbench.results.schema")


def test_check_writable(tmp_path):
    assert store.check_writable(tmp_path / "new" / "results", "s").is_dir()
    assert not list((tmp_path / "new" / "results" / "s").iterdir())  # probe removed
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(SpecError, match=r"cannot be written.*--results"):
        store.check_writable(blocker / "results", "s")
    with pytest.raises(SpecError, match="cannot be a results directory name"):
        store.check_writable(tmp_path, "../evil")


# ------------------------------------------------------------------ environment


def test_environment_rows_fit_the_schema():
    pytest.importorskip("torch")
    from connbench.results import environment as env

    e = env.environment("cpu")
    assert set(e) <= set(COLUMN_NAMES)
    assert e["torch_version"] and e["host"] and e["cpu_model"] and e["threads"] >= 1
    assert e["gpu_name"] == "" and e["timestamp"].endswith("+00:00")
    assert e["git_dirty"] in (True, False, None)
    if e["git_commit"]:
        assert len(e["git_commit"]) == 40
    row = store.coerce([e]).iloc[0]
    assert row["connbench_version"] == e["connbench_version"]
    assert env.environment("cpu")["host"] == e["host"]  # cached part stays the same


def test_git_state_outside_a_checkout(tmp_path, monkeypatch):
    from connbench.results import environment as env

    monkeypatch.setattr(env, "SOURCE_ROOT", tmp_path)
    assert env.git_state() == ("", None)


def test_failed_parts_are_not_done_but_diverged_and_skipped_are(tmp_path):
    for tid, status in [("ok1", "ok"), ("bad", "failed"), ("div", "diverged"),
                        ("skip", "skipped")]:
        store.write_trial(tmp_path, "s", tid, rows(tid, n=1, status=status))
    assert store.part_statuses(tmp_path, "s")["bad"] == {"failed"}
    assert store.done_ids(tmp_path, "s") == {"ok1", "div", "skip"}
    assert store.read_trial(tmp_path, "s", "bad") is not None  # kept, for the report
