"""connbench: does an RNN need full hidden-to-hidden structure?

The public API (stable; docs/API.md). Names are imported on first use, so that
``import connbench`` (and ``connbench list``'s start) does not pay for torch or pandas
until something needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# public name -> (module, attribute)
_API: dict[str, tuple[str, str]] = {
    "Option": ("connbench.registry", "Option"),
    "SpecError": ("connbench.registry", "SpecError"),
    "Structure": ("connbench.nn.structures", "Structure"),
    "structure_names": ("connbench.nn.structures", "names"),
    "make_structure": ("connbench.nn.structures", "make"),
    "register_structure": ("connbench.nn.structures", "register_structure"),
    "cell_names": ("connbench.nn.cells", "names"),
    "register_cell": ("connbench.nn.cells", "register_cell"),
    "Cell": ("connbench.nn.cells", "Cell"),
    "Task": ("connbench.tasks", "Task"),
    "task_names": ("connbench.tasks", "names"),
    "make_task": ("connbench.tasks", "make"),
    "register_task": ("connbench.tasks", "register_task"),
    "SequenceModel": ("connbench.nn.model", "SequenceModel"),
    "load_results": ("connbench.results.store", "load"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _API[name]
    except KeyError:
        raise AttributeError(f"module 'connbench' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
