"""Plugins: modules outside connbench that register structures, cells or tasks.

A plugin is any importable module whose import registers something through the
public decorators (``connbench.register_structure``, ``register_cell``,
``register_task``). It is loaded by any of four routes, all before any work starts:

* the entry-point groups ``connbench.structures``, ``connbench.cells`` and
  ``connbench.tasks`` of installed distributions (``[project.entry-points]`` in the
  plugin's pyproject.toml);
* ``--plugin MODULE`` (repeatable) on every ``connbench`` command;
* ``plugins = ["module", ...]`` in a sweep file;
* the ``CONNBENCH_PLUGINS`` environment variable (comma-separated module names).

Every module loaded here is written back to ``CONNBENCH_PLUGINS`` in this process's
environment, so that the processes that run work (pool workers, the memory
subprocess, Ray workers) load the same plugins again. A plugin that fails to import
is one ``PluginError`` naming it, before any work.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterable

from connbench.registry import SpecError

ENV = "CONNBENCH_PLUGINS"
GROUPS = ("connbench.structures", "connbench.cells", "connbench.tasks")

_loaded: list[str] = []  # module names, in load order
_entry_points_done = False


class PluginError(SpecError):
    """A plugin module could not be imported."""


def loaded() -> list[str]:
    """The plugin modules loaded in this process, in order."""
    return list(_loaded)


def from_env() -> list[str]:
    """Module names in ``CONNBENCH_PLUGINS``."""
    return [m.strip() for m in os.environ.get(ENV, "").split(",") if m.strip()]


def load(modules: Iterable[str] = ()) -> list[str]:
    """Load the plugins of every route (entry points, the environment, ``modules``).

    Idempotent and cheap on a second call. Returns every plugin module loaded so far,
    and exports them in ``CONNBENCH_PLUGINS`` for child processes.
    """
    _load_entry_points()
    for name in [*from_env(), *modules]:
        _import(name, "")
    os.environ[ENV] = ",".join(_loaded)
    return loaded()


def _import(name: str, origin: str) -> None:
    name = name.strip()
    if not name or name in _loaded:
        return
    if not all(part.isidentifier() for part in name.split(".")):
        raise PluginError(f"plugin {name!r}{origin} is not a module name (expected e.g. "
                          "my_structures or lab.rnn_plugins)")
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
        raise PluginError(f"plugin {name!r}{origin} could not be imported: "
                          f"{type(exc).__name__}: {exc}") from None
    _loaded.append(name)


def _load_entry_points() -> None:
    global _entry_points_done
    if _entry_points_done:
        return
    for group in GROUPS:
        for ep in importlib.metadata.entry_points(group=group):
            # the module of "pkg.mod" or "pkg.mod:attr": importing it registers
            _import(ep.module, f" (entry point {ep.name!r} in group {group!r})")
    _entry_points_done = True
