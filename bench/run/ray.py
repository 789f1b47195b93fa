"""Run sweep cells as Ray tasks, on a cluster (``--address``) or a local Ray instance.

Scheduling:

* every node offers one unit of the custom resource ``connbench_speed_slot``
  (a local instance is started with it; start cluster nodes with
  ``ray start ... --resources='{"connbench_speed_slot": 1}'``);
* speed and memory cells request the whole unit, train cells a sliver
  (``TRAIN_SLOT``), so a speed/memory cell runs only on a node where no other
  connbench task runs, and nothing else starts there while it runs;
* train cells run in parallel, one CPU each; GPU cells request ``num_gpus=1``.

No loss, no duplication: workers only compute; the driver writes. A task returns its
rows and the driver writes them as one atomic part file named by the cell id
(temp file + rename, in ``connbench.results.store``). A worker that dies mid-cell has written
nothing; Ray reruns the task (``max_retries``). Whatever happens, each cell's rows
reach the driver at most once per ``ObjectRef`` and land in a file keyed by its id,
so a second write of the same cell replaces rather than duplicates. If the retries
are exhausted the cell is not recorded and is reported as lost, so the next run (the
same command) picks it up. If the driver dies, finished cells are on disk and a rerun
skips them. The results directory lives only on the driver: cluster nodes need no
shared filesystem.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connbench.registry import SpecError

SPEED_SLOT = "connbench_speed_slot"
TRAIN_SLOT = 0.001  # a train cell's share of the slot: excludes speed cells, not each other
MAX_RETRIES = 3


def _measure(cell: Any, sweep_name: str) -> list[dict]:
    from connbench import plugins
    from connbench.measure.trial import is_exclusive, measure_trial

    plugins.load()  # the run's plugins, named in CONNBENCH_PLUGINS by runtime_env

    # a train cell holds one CPU; a speed/memory cell has the node to itself
    return measure_trial(cell, sweep_name, threads=None if is_exclusive(cell) else 1)


def task_options(cell: Any) -> dict[str, Any]:
    """Ray resource requests of one cell."""
    from connbench.measure.trial import is_exclusive

    opts: dict[str, Any] = {
        "num_cpus": 1,
        "resources": {SPEED_SLOT: 1.0 if is_exclusive(cell) else TRAIN_SLOT},
        "max_retries": MAX_RETRIES,
        "retry_exceptions": False,  # measure_trial turns exceptions into failed rows
    }
    if cell.device.startswith("cuda"):
        opts["num_gpus"] = 1
    return opts


def _connect(address: str | None) -> bool:
    """Connect to (or start) Ray; True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        # ship this checkout's package and the plugins so cluster nodes run the same code
        ray.init(address=address, runtime_env=runtime_env(ship_connbench=True),
                 log_to_driver=False)
    else:
        ray.init(
            num_cpus=os.cpu_count() or 1,
            resources={SPEED_SLOT: 1},
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=runtime_env(ship_connbench=False),
        )
    return True


def runtime_env(ship_connbench: bool) -> dict[str, Any]:
    """What every Ray worker needs: the plugin names, their code, and connbench's.

    ``py_modules`` makes a directory importable under its own name, so connbench is
    shipped as one ``connbench/`` folder assembled from the checkout (``bench/`` with
    ``tasks/`` inside, as setuptools maps them), and a single-file plugin as a package
    of its own name.
    """
    from connbench import plugins

    staging = Path(tempfile.mkdtemp(prefix="connbench-ray-"))
    modules: list[Any] = [_stage_connbench(staging)] if ship_connbench else []
    for name in plugins.loaded():
        modules.append(_stage_module(sys.modules[name.split(".")[0]], staging))
    env: dict[str, Any] = {"env_vars": {plugins.ENV: ",".join(plugins.loaded())}}
    if modules:
        env["py_modules"] = modules
    return env


def _stage_connbench(staging: Path) -> str:
    import connbench
    import connbench.tasks

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    target = staging / "connbench"
    shutil.copytree(Path(connbench.__file__).parent, target, ignore=ignore)
    tasks_dir = Path(connbench.tasks.__file__).parent
    if not (target / "tasks").exists():  # an editable checkout keeps tasks/ apart
        shutil.copytree(tasks_dir, target / "tasks", ignore=ignore)
    return str(target)


def _stage_module(module: Any, staging: Path) -> Any:
    if hasattr(module, "__path__"):  # a package: Ray ships its folder
        return module
    package = staging / module.__name__
    package.mkdir()
    shutil.copy(module.__file__, package / "__init__.py")
    return str(package)


def run_ray(cells: list[Any], sweep_name: str, on_rows: Callable[[Any, list[dict]], None], *,
            address: str | None = None,
            on_start: Callable[[Any], None] = lambda c: None) -> list[Any]:
    """Run ``cells`` as Ray tasks; ``on_rows`` (the driver's writer) gets each result.

    Returns the cells whose task failed even after retries (not recorded).
    """
    import ray

    started = _connect(address)
    try:
        if ray.cluster_resources().get(SPEED_SLOT, 0) < 1:
            raise SpecError(
                f"the Ray cluster offers no {SPEED_SLOT!r} resource; start every node with "
                f"ray start --resources='{{\"{SPEED_SLOT}\": 1}}'"
            )
        gpu_cells = sum("num_gpus" in task_options(c) for c in cells)
        if gpu_cells and ray.cluster_resources().get("GPU", 0) < 1:
            raise SpecError(
                f"{gpu_cells} cell(s) need a GPU (device cuda) but the Ray cluster has none; "
                "drop them, e.g. --set 'speed.devices=[\"cpu\"]'")
        remote = ray.remote(_measure)
        # exclusive cells first so the queue does not starve them behind train cells
        from connbench.measure.trial import is_exclusive

        ordered = sorted(cells, key=lambda c: not is_exclusive(c))
        pending = {remote.options(**task_options(c)).remote(c, sweep_name): c for c in ordered}
        lost: list[Any] = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    rows = ray.get(ref)
                except ray.exceptions.RayError:
                    lost.append(cell)
                    continue
                on_start(cell)
                on_rows(cell, rows)
        return lost
    finally:
        if started:
            ray.shutdown()
