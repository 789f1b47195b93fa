"""The catalogue of a run (see ``connbench.results.catalogue``), from the live registries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def build(task_specs: Iterable[str] = ()) -> dict[str, Any]:
    """Every registered structure's order and style, and the sizes of ``task_specs``."""
    from connbench import tasks
    from connbench.nn import structures

    return {
        "structures": {
            e.name: {"order": i, "color": e.color, "marker": e.marker}
            for i, e in enumerate(structures.REGISTRY.entries())
        },
        "tasks": {
            spec: {"input_size": int(t.input_size), "output_size": int(t.output_size)}
            for spec in dict.fromkeys(task_specs)
            for t in [tasks.make(spec)]
        },
    }
