"""Does the results store hold the sweep, the whole sweep and nothing but the sweep?

``connbench run`` writes ``<results>/<sweep>/expected.json`` (the trial ids the sweep
expands to and the command that runs it, see ``connbench.results.expected``). Against
it the report finds

* *missing* trials: expected, with no part file (an interrupted or partial run);
* *failed* trials: their part records a failure (a plain rerun retries them);
* *foreign* trials: parts of trials the sweep no longer has, written under other
  settings (an earlier ``--set``, an edited sweep file, an older code version). They
  are left out of the report, visibly, never pooled with the sweep's own trials.

The findings head the report, with the command that completes the sweep. Results
without a manifest (written by an older connbench) are reported as they are, with a
note that completeness was not checked. pandas only; never torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from connbench.results import expected as manifest


@dataclass
class Completeness:
    sweep: str
    expected: manifest.Expected | None
    missing: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    @property
    def checked(self) -> bool:
        return self.expected is not None

    @property
    def complete(self) -> bool:
        return not (self.missing or self.failed)

    def summary(self) -> str | None:
        """One line for the terminal, or None when there is nothing to say."""
        if not self.checked:
            return None
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} of {len(self.expected.ids)} trials missing")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.foreign:
            parts.append(f"{len(self.foreign)} recorded under other settings left out")
        if not parts:
            return None
        tail = f"; complete them with: {self.expected.command}" if not self.complete else ""
        return ", ".join(parts) + tail

    def markdown(self) -> list[str]:
        """The section at the top of REPORT.md (empty when complete and pure)."""
        if not self.checked:
            return ["> Completeness not checked: these results have no expected.json "
                    "(written by an older connbench run).", ""]
        if self.complete and not self.foreign:
            return []
        lines = ["## Incomplete results" if not self.complete else "## Results left out", ""]
        if self.missing:
            lines.append(f"- **{len(self.missing)} of {len(self.expected.ids)} trials are "
                         "missing** (never run, or interrupted): figures and claims below "
                         "cover only the trials that finished.")
        if self.failed:
            lines.append(f"- **{len(self.failed)} trials failed** (see Failures); a plain "
                         "rerun retries them.")
        if not self.complete:
            lines.append(f"- Complete the sweep with `{self.expected.command}`, then run "
                         f"`connbench report {self.sweep}` again.")
        if self.foreign:
            lines.append(f"- {len(self.foreign)} trials in the results directory were "
                         "recorded under other settings (an earlier `--set`, an edited "
                         "sweep file or an older code version) and are **left out, not "
                         f"pooled**; this report is for `{self.expected.command}`. Run "
                         "other settings into their own `--results` directory to report them.")
        return [*lines, ""]


def check(results_dir: str | Path, sweep: str, df: pd.DataFrame) -> Completeness:
    """Compare the frame of a sweep's parts with its manifest."""
    exp = manifest.read(Path(results_dir) / sweep)
    if exp is None:
        return Completeness(sweep, None)
    ids = df["trial_id"].astype(str)
    present = set(ids)
    searched = set(ids[df["kind"].astype(str).isin(exp.search_kinds)])
    failed_ids = set(ids[df["status"].astype(str) == "failed"])
    wanted = exp.ids
    return Completeness(
        sweep, exp,
        missing=sorted(wanted - present),
        failed=sorted(failed_ids & wanted),
        foreign=sorted(present - wanted - searched))


def own_trials(df: pd.DataFrame, result: Completeness) -> pd.DataFrame:
    """The frame without foreign trials (a copy when something is dropped)."""
    if not result.foreign:
        return df
    return df[~df["trial_id"].astype(str).isin(set(result.foreign))].reset_index(drop=True)


def with_preface(text: str, lines: list[str]) -> str:
    """REPORT.md text with ``lines`` after its title, before anything else."""
    if not lines:
        return text
    title, sep, rest = text.partition("\n\n")
    return f"{title}{sep}" + "\n".join(lines) + "\n" + rest
