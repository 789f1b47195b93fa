"""What the report needs to know about the registries, stored beside the results.

The report reads only the results (it never imports torch or the registries), yet it
draws every structure in its registered colour and marker, lists structures in
registry order, and needs each task's input and output sizes for the unrolled-network
count. ``connbench run`` therefore writes these facts, taken from the registry and the
task objects of the run (plugins included), to ``<results>/<sweep>/catalogue.json``::

    {"structures": {"full": {"order": 0, "color": "#000000", "marker": "o"}, ...},
     "tasks": {"copy:length=20": {"input_size": 10, "output_size": 10}, ...}}

A later run merges into the file, so a sweep run in pieces keeps every entry. Results
written before the catalogue existed have none: the report then falls back to spare
styles and leaves out what needs task sizes, and says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from connbench.files import atomic_write

FILENAME = "catalogue.json"


def path(results_dir: str | Path, sweep: str) -> Path:
    return Path(results_dir) / sweep / FILENAME


def read(results_dir: str | Path, sweep: str) -> dict[str, Any]:
    """The sweep's catalogue, or an empty one when there is none (or it is unreadable)."""
    try:
        data = json.loads(path(results_dir, sweep).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write(results_dir: str | Path, sweep: str, catalogue: dict[str, Any]) -> Path:
    """Merge ``catalogue`` into the stored one (newer entries win) and write it atomically."""
    merged = read(results_dir, sweep)
    for section, entries in catalogue.items():
        merged.setdefault(section, {}).update(entries)
    blob = json.dumps(merged, indent=1, sort_keys=True).encode()
    return atomic_write(path(results_dir, sweep), lambda fh: fh.write(blob))
