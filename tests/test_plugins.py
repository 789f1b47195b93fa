"""Plugins: the example plugin (examples/connbench_toeplitz) through every route.

Each route runs a small sweep with speed, memory and train trials and --workers 2 in
a fresh interpreter (as a user would), so the pool workers and the memory subprocess
must load the plugin again; every trial must come back ``ok``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from connbench.results import store

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "connbench_toeplitz"

SWEEP = """
description = "the example plugin, tiny"
{plugins}
tasks = "parity:length=6"
structures = ["toeplitz", "full"]
hidden = 8
batch = 4
kinds = ["speed", "memory", "train"]

[speed]
min_run_time = 0.01
warmup = 1
threads = 1

[memory]
structures = "toeplitz"

[train]
steps = 10
"""

ROUTES = ("entry_point", "flag", "sweep_key", "env")


def _entry_point_dist(where: Path) -> Path:
    """A dist-info folder declaring the example's entry points, as pip would install it."""
    info = where / "connbench_toeplitz-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: connbench-toeplitz\n"
                                   "Version: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[connbench.structures]\ntoeplitz = connbench_toeplitz.structure\n\n"
        "[connbench.tasks]\nparity = connbench_toeplitz.parity\n")
    return where


def _env(*paths: Path, plugins: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CONNBENCH_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    if plugins is not None:
        env["CONNBENCH_PLUGINS"] = plugins
    return env


def _start(route: str, tmp: Path) -> tuple[subprocess.Popen, Path]:
    folder = tmp / route
    folder.mkdir()
    key = 'plugins = ["connbench_toeplitz"]' if route == "sweep_key" else ""
    sweep = folder / "plug.toml"
    sweep.write_text(SWEEP.format(plugins=key))
    args = [sys.executable, "-m", "connbench", "run", str(sweep), "--results",
            str(folder / "results"), "--workers", "2", "--quiet"]
    if route == "flag":
        args[3:3] = ["--plugin", "connbench_toeplitz"]
    paths = [EXAMPLE]
    if route == "entry_point":
        paths.append(_entry_point_dist(folder / "site"))
    env = _env(*paths, plugins="connbench_toeplitz" if route == "env" else None)
    proc = subprocess.Popen(args, cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, folder / "results"


def test_example_plugin_runs_through_every_route(tmp_path):
    # all four at once: each is a few fresh interpreters, mostly waiting on imports
    started = {route: _start(route, tmp_path) for route in ROUTES}
    for route, (proc, results) in started.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{route}: {err}"
        df = store.load(results, "plug")
        final = df[df["step"].isna()]
        assert set(final["status"]) == {"ok"}, (route, final[["kind", "error"]].values.tolist())
        assert set(df["kind"]) == {"speed", "memory", "train"}, route
        assert set(df["structure"]) == {"toeplitz", "full"}, route
        assert set(df["task"]) == {"parity"}, route
        toe = final[(final["structure"] == "toeplitz") & (final["kind"] == "train")]
        assert set(toe["stored_params"]) == {2 * 8 - 1}, route  # counted from dense()
        assert (results / "plug" / "catalogue.json").is_file()


def test_plugin_that_fails_to_import_is_one_error_before_any_work(tmp_path):
    bad = tmp_path / "broken_plugin.py"
    bad.write_text("import connbench\nraise RuntimeError('half-written plugin')\n")
    sweep = tmp_path / "plug.toml"
    sweep.write_text(SWEEP.format(plugins='plugins = ["broken_plugin"]'))
    proc = subprocess.run([sys.executable, "-m", "connbench", "run", str(sweep), "--results",
                           str(tmp_path / "results"), "--quiet"], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "plugin 'broken_plugin' could not be imported: RuntimeError: half-written" \
        in lines[0]
    assert not (tmp_path / "results" / "plug").exists()


def test_unknown_name_without_the_plugin_is_one_error(tmp_path):
    sweep = tmp_path / "plug.toml"
    sweep.write_text(SWEEP.format(plugins=""))
    proc = subprocess.run([sys.executable, "-m", "connbench", "run", str(sweep), "--results",
                           str(tmp_path / "results"), "--quiet"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "unknown task 'parity'" in proc.stderr
    assert not (tmp_path / "results" / "plug").exists()


def test_check_command_on_the_plugin_structure():
    proc = subprocess.run([sys.executable, "-m", "connbench", "check", "toeplitz",
                           "--hidden", "6", "--cell", "gru", "--plugin", "connbench_toeplitz"],
                          env=_env(EXAMPLE), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("toeplitz at hidden=6: ok")


def test_run_refuses_a_structure_that_breaks_the_contract(tmp_path):
    (tmp_path / "lying_plugin.py").write_text(
        "import torch\nimport connbench\n\n"
        "@connbench.register_structure('lying', 'says diagonal, steps twice it')\n"
        "class Lying(connbench.Structure):\n"
        "    def __init__(self, hidden, gates=1, **options):\n"
        "        super().__init__(hidden, gates, **options)\n"
        "        self.weight = torch.nn.Parameter(torch.ones(gates * hidden))\n"
        "    def dense(self):\n"
        "        return torch.cat([torch.diag(w) for w in self.weight.view(self.gates, -1)], 1)\n"
        "    def stepper(self):\n"
        "        return lambda h, u: (2 * h.repeat(1, self.gates) * self.weight\n"
        "                             + (0 if u is None else u))\n")
    sweep = tmp_path / "plug.toml"
    sweep.write_text(SWEEP.format(plugins='plugins = ["lying_plugin", "connbench_toeplitz"]')
                     .replace('["toeplitz", "full"]', '"lying"'))
    proc = subprocess.run([sys.executable, "-m", "connbench", "run", str(sweep), "--results",
                           str(tmp_path / "results"), "--quiet"], cwd=tmp_path,
                          env=_env(tmp_path, EXAMPLE), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "breaks the contract" in proc.stderr
    assert "lying:init=default at hidden=16, gates=1: forward differs" in proc.stderr
    assert not (tmp_path / "results" / "plug").exists()


@pytest.mark.parametrize("command", [["list"], ["list", "--json"]])
def test_list_works_beside_a_users_tasks_and_bench_modules(tmp_path, command):
    (tmp_path / "tasks.py").write_text("raise RuntimeError('the user tasks.py was imported')\n")
    (tmp_path / "bench.py").write_text("raise RuntimeError('the user bench.py was imported')\n")
    proc = subprocess.run([sys.executable, "-m", "connbench", *command], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "binary_addition" in proc.stdout and "butterfly" in proc.stdout
