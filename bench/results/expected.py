"""``<results>/<sweep>/expected.json``: which trials the last run of a sweep asked for.

Written by ``connbench run`` before its first trial, read by ``connbench report`` to
say what is missing and what was recorded under other settings (see
``connbench.report.completeness``). Small on purpose: trial ids, the kinds a search
adds trials to, and the command that completes the sweep::

    {"sweep": "smoke", "command": "connbench run smoke --results results",
     "trials": ["3f…", …], "skipped": ["…"], "search_kinds": []}

``search_kinds`` lists kinds whose trials are found while running (a ``[lookback]``
search trains lengths nobody can list in advance): their trials are neither expected
nor foreign. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from connbench.files import atomic_write

NAME = "expected.json"


@dataclass
class Expected:
    sweep: str
    command: str
    trials: list[str]
    skipped: list[str] = field(default_factory=list)
    search_kinds: list[str] = field(default_factory=list)

    @property
    def ids(self) -> set[str]:
        """Every trial the sweep has, the impossible (skipped) ones included."""
        return set(self.trials) | set(self.skipped)


def write(sweep_dir: Path, expected: Expected) -> Path:
    data = {"sweep": expected.sweep, "command": expected.command,
            "trials": sorted(expected.trials), "skipped": sorted(expected.skipped),
            "search_kinds": sorted(expected.search_kinds)}
    text = json.dumps(data, indent=0).encode()
    return atomic_write(Path(sweep_dir) / NAME, lambda fh: fh.write(text))


def read(sweep_dir: Path) -> Expected | None:
    """The manifest, or None when there is none (results of an older version)."""
    path = Path(sweep_dir) / NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Expected(str(data["sweep"]), str(data["command"]),
                        [str(t) for t in data["trials"]],
                        [str(t) for t in data.get("skipped", [])],
                        [str(k) for k in data.get("search_kinds", [])])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: the report says completeness was not checked


def ids_of(trials: Iterable) -> list[str]:
    return [str(t.trial_id) for t in trials]
