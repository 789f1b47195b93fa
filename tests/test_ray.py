"""The Ray executor: same cells, rows and statuses as the local one (one local Ray)."""

from __future__ import annotations

import pytest

from connbench.cli import main as cli
from connbench.plan.sweep import load_sweep
from connbench.results import store
from connbench.run.ray import SPEED_SLOT, TRAIN_SLOT, task_options

FAST: list[str] = []


def test_resource_requests():
    cells = load_sweep("smoke", overrides=FAST[1::2]).trials
    for cell in cells:
        opts = task_options(cell)
        want = 1.0 if cell.kind in ("speed", "memory") else TRAIN_SLOT
        assert opts["resources"] == {SPEED_SLOT: want}
        assert "num_gpus" not in opts and opts["max_retries"] >= 1
    import dataclasses

    gpu = dataclasses.replace(cells[0], device="cuda")
    assert task_options(gpu)["num_gpus"] == 1


def test_ray_matches_local(tmp_path, tmp_path_factory):
    ray = pytest.importorskip("ray")
    from test_run import smoke_results  # the local run, shared with test_run

    local, remote = smoke_results(tmp_path_factory), tmp_path / "ray"
    ray.init(num_cpus=2, resources={SPEED_SLOT: 1}, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    try:
        assert cli(["run", "smoke", "--results", str(remote), "--quiet", "--executor", "ray",
                    *FAST]) == 0
    finally:
        ray.shutdown()
    a, b = store.load(local, "smoke"), store.load(remote, "smoke")
    key = ["trial_id", "kind", "pass", "metric", "step", "status"]

    def summary(df):
        return sorted(map(tuple, df[key].astype(object).where(df[key].notna(), "").astype(str)
                          .drop_duplicates().values.tolist()))

    assert summary(a) == summary(b)
    assert sorted(a["trial_id"].unique()) == sorted(b["trial_id"].unique())
    # train rows are deterministic given the seed: same metrics either way
    ta = a[(a["kind"] == "train") & a["step"].isna()].sort_values(["trial_id", "metric"])
    tb = b[(b["kind"] == "train") & b["step"].isna()].sort_values(["trial_id", "metric"])
    assert ta["trial_id"].tolist() == tb["trial_id"].tolist()
    assert ta["value"].to_numpy() == pytest.approx(tb["value"].to_numpy(), abs=0.05, nan_ok=True)
