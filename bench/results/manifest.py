"""``results/<sweep>/manifest.json``: the effective sweep a results folder was run with.

Written by ``connbench run`` beside the part files before the first trial runs, and
rewritten by every later run into the same folder (the parts say which trials are
done; the manifest says what the last command asked for). It holds the command line,
the overrides, the label, connbench's version, the machine, and every expanded trial
with its settings, so that a folder of parts can be explained without the sweep file
that produced it (which may have changed since).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import connbench
from connbench.files import atomic_write

MANIFEST = "manifest.json"


def manifest(sweep: Any, *, overrides: Sequence[str] = (), label: str | None = None,
             argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The manifest of an expanded sweep (``connbench.plan.sweep.Sweep``) as plain data."""
    from connbench.results.environment import machine, now_utc

    argv = list(sys.argv if argv is None else argv)
    return {
        "connbench_version": connbench.__version__,
        "created": now_utc(),
        "command": " ".join(["connbench", *argv[1:]]) if argv else "",
        "sweep": sweep.name,
        "sweep_file": str(sweep.path) if sweep.path else None,
        "description": sweep.description,
        "overrides": list(overrides),
        "label": label,
        "lookback": sweep.lookback,
        "machine": machine(),
        "trials": [t.to_dict() for t in sweep.trials],
        "skipped": [dict(t.to_dict(), reason=reason) for t, reason in sweep.skipped],
    }


def write_manifest(folder: Path, data: dict[str, Any]) -> Path:
    """Write ``folder/manifest.json`` atomically (a reader never sees half of it)."""
    text = json.dumps(data, indent=1, default=str, sort_keys=False) + "\n"
    return atomic_write(Path(folder) / MANIFEST, lambda fh: fh.write(text.encode()))


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a results folder, or None if it has none."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None
