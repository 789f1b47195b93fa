"""Provenance: every row carries its trial's settings and the environment from the one
collector; `connbench run` writes the effective sweep as manifest.json."""

from __future__ import annotations

import json

import pytest

from connbench.results import environment as envmod
from connbench.results import store
from connbench.results.manifest import read_manifest
from connbench.results.schema import COLUMN_NAMES

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 167
model name\t: Intel(R) Xeon(R) Processor

processor\t: 1
model name\t: Some Other CPU
"""
ARM = "processor\t: 0\nBogoMIPS\t: 48.00\nModel\t: Raspberry Pi 4 Model B Rev 1.4\n"


def test_parse_cpuinfo_reads_the_first_processor_only():
    assert envmod.parse_cpuinfo(X86) == ("Intel(R) Xeon(R) Processor", "f6m167")


def test_parse_cpuinfo_arm_name_and_no_numeric_processor():
    assert envmod.parse_cpuinfo(ARM) == ("Raspberry Pi 4 Model B Rev 1.4", "")
    assert envmod.parse_cpuinfo("processor : 0\n") == ("", "")


def test_environment_has_every_environment_column():
    env = envmod.environment("cpu")
    for col in ("python_version", "numpy_version", "torch_version", "cpu_model", "cpu_count",
                "load_avg", "host", "git_commit", "git_dirty", "connbench_version"):
        assert col in env and col in COLUMN_NAMES
    assert env["cpu_count"] >= 1 and env["python_version"].count(".") == 2


def test_gate_machine_uses_the_one_collector(monkeypatch):
    from connbench.perf import gate

    monkeypatch.setattr(envmod, "cpu_info", lambda: ("Test CPU 9000", "f1m2"))
    info = gate.machine()
    assert info["cpu"] == envmod.environment()["cpu_model"]
    assert info["cpu_id"] == "f1m2"
    assert {"cores", "threads", "torch", "python", "numpy", "loadavg"} <= set(info)


class _Trial:
    """What settings_columns reads of a Trial: its kind and its options."""

    def __init__(self, kind, **options):
        self.kind, self.options = kind, options

    def option(self, name, default=None):
        return self.options.get(name, default)


def test_settings_columns_per_kind():
    from connbench.measure.rows import settings_columns
    from connbench.measure.speed import DEFAULT_MIN_RUN_TIME

    train = settings_columns(_Trial("train", steps=30, lr=0.1, max_time_s=5.0, preset="trask"))
    assert train == {"optimizer": None, "lr": 0.1, "steps_budget": 30, "max_time_s": 5.0,
                     "preset": "trask"}
    speed = settings_columns(_Trial("speed", warmup=4))
    assert speed == {"min_run_time": DEFAULT_MIN_RUN_TIME, "warmup": 4}
    assert settings_columns(_Trial("memory")) == {}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from test_run import smoke_results  # the local run, shared with test_run

    return smoke_results(tmp_path_factory)


def test_rows_carry_settings_and_environment(smoke):
    df = store.load(smoke, "smoke")
    final_train = df[(df["kind"] == "train") & df["step"].isna()]
    # the values the run used, after task defaults: never empty on a train row
    assert final_train["optimizer"].notna().all() and (final_train["lr"] > 0).all()
    assert (final_train["steps_budget"] == 30).all() and (final_train["max_time_s"] == 20).all()
    speed = df[df["kind"] == "speed"]
    assert (speed["min_run_time"] == 0.05).all() and (speed["warmup"] == 1).all()
    assert speed["lr"].isna().all()
    for col in ("python_version", "numpy_version", "cpu_count", "load_avg"):
        assert df[col].notna().all(), col


def test_run_writes_the_manifest_of_the_effective_sweep(smoke):
    m = read_manifest(smoke / "smoke")
    assert m["sweep"] == "smoke" and m["connbench_version"]
    assert m["command"].startswith("connbench")
    df = store.load(smoke, "smoke")
    assert {t["trial_id"] for t in m["trials"]} == set(df["trial_id"])
    assert m["machine"]["cores"] >= 1
    json.dumps(m)  # plain data


def test_manifest_records_overrides_and_label(tmp_path, monkeypatch):
    from connbench.cli import main as cli

    # the memory trial and the sweep's one [[include]] train trial: a quick real run
    assert cli(["run", "smoke", "--results", str(tmp_path), "--quiet", "--label", "base",
                "--set", "kinds=['memory']"]) == 0
    m = read_manifest(tmp_path / "smoke@base")
    assert m["label"] == "base" and m["overrides"] == ["kinds=['memory']"]
    assert sorted(t["kind"] for t in m["trials"]) == ["memory", "train"]
    assert set(store.load(tmp_path, "smoke@base")["sweep"]) == {"smoke@base"}
