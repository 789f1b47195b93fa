"""Tasks registry: importing this package registers every task.

``names()`` lists the tasks, ``make("copy:length=100")`` builds one from a spec string;
see docs/tasks.md for each task's options, metrics, chance levels and presets.
"""

from __future__ import annotations

from connbench.tasks import adding, binary_addition, char_lm, copy  # noqa: F401  (they register)
from connbench.tasks.base import OPTIMIZERS, REGISTRY, Preset, Task, TrainDefaults, register_task

__all__ = ["OPTIMIZERS", "REGISTRY", "Preset", "Task", "TrainDefaults", "make", "names",
           "register_task"]


def names() -> list[str]:
    """Names of every registered task."""
    return REGISTRY.names()


def make(spec: str) -> Task:
    """Build a task from a spec such as ``adding:length=200``; SpecError on a mistake."""
    entry, options = REGISTRY.parse(spec)
    return entry.obj(**options)
