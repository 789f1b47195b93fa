"""`python -m connbench gate`: the CI timing gate on speed *ratios* measured in one run.

Absolute times on shared machines swing by 10–50 % (measured), and a saved run from
another machine means nothing. So the gate times, in one process and in interleaved
rounds, every structure's recurrent layer (Elman tanh, forward+backward, per step)
next to ``full``, and ``full`` next to ``torch.nn.RNN``. A ratio is a speedup,
``time(baseline) / time(subject)``, always "higher is better"; per round the two
times were taken seconds apart, so machine drift cancels, and the gate uses the
median of the per-round ratios.

The ratios, the sizes and the measuring settings come from a committed thresholds
file (``benchmarks/thresholds.toml``). A ratio fails when it falls below its ``min``;
``--propose`` writes ``min = fraction × measured`` for every ratio, so changing the
thresholds is a reviewed diff, never a side effect. See docs/perf.md.

``CONNBENCH_SLOW=diagonal`` (or ``--slow diagonal``) forces the named structures
through the classic slow path, the masked dense matrix rebuilt every step, to show
that the gate bites.

Exit status: 0 all ratios pass, 1 a ratio regressed (or a committed one could not be
measured), 2 a mistake in the thresholds file or the arguments.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from connbench.nn import cells, structures
from connbench.perf.kernels import TORCH_RNN, layer_callables
from connbench.perf.timing import interleaved
from connbench.registry import SpecError
from connbench.results.environment import SOURCE_ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DEFAULT_THRESHOLDS = SOURCE_ROOT / "benchmarks" / "thresholds.toml"
SLOW_ENV = "CONNBENCH_SLOW"
DOCS = "docs/perf.md"


EAGER = " (eager)"  # a subject/baseline spelled "diagonal (eager)" times the eager path


def split_implementation(name: str) -> tuple[str, str]:
    """("diagonal (eager)") → ("diagonal", "eager"); a plain spec runs fused."""
    if name.endswith(EAGER):
        return name[: -len(EAGER)], "eager"
    return name, "fused"


# -- configuration -------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """How the ratios are measured (the ``[gate]`` table of the thresholds file)."""

    batch: int = 32
    steps: int = 50  # sequence length T
    threads: int = 1
    rounds: int = 11
    min_run_time: float = 0.05  # seconds per callable per round (torch.utils.benchmark)
    fraction: float = 0.6  # --propose sets min = fraction × measured


@dataclass(frozen=True)
class Threshold:
    """One gated ratio: speedup of ``subject`` over ``baseline`` at hidden size ``hidden``."""

    subject: str
    baseline: str
    hidden: int
    typical: float = float("nan")  # the measured value the min was derived from
    min: float = float("nan")

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.subject, self.baseline, self.hidden)


@dataclass
class Gate:
    """A thresholds file: the measuring settings and the gated ratios."""

    settings: Settings
    ratios: list[Threshold]
    source: str = ""


_SETTING_TYPES = {"batch": int, "steps": int, "threads": int, "rounds": int,
                  "min_run_time": float, "fraction": float}


def load(path: str | os.PathLike = DEFAULT_THRESHOLDS) -> Gate:
    """Read and check a thresholds file; SpecError says what is wrong and where."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"thresholds file {str(path)!r} does not exist; create one with "
                        f"`python -m connbench gate --propose {path}`") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"thresholds file {str(path)!r} is not valid TOML: {e}") from None
    raw = data.get("gate", {})
    unknown = set(raw) - set(_SETTING_TYPES)
    if unknown:
        raise SpecError(f"{path}: unknown [gate] keys {sorted(unknown)}; "
                        f"allowed: {sorted(_SETTING_TYPES)}")
    for k, v in raw.items():
        want = _SETTING_TYPES[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (want is int and
                                                                       not isinstance(v, int)):
            raise SpecError(f"{path}: [gate] {k}={v!r} must be {want.__name__}")
        if v <= 0:
            raise SpecError(f"{path}: [gate] {k}={v!r} must be positive")
    settings = Settings(**raw)
    ratios = []
    for i, r in enumerate(data.get("ratio", [])):
        where = f"{path}: [[ratio]] #{i + 1}"
        missing = {"subject", "baseline", "hidden", "min"} - set(r)
        if missing:
            raise SpecError(f"{where} lacks {sorted(missing)}")
        extra = set(r) - {"subject", "baseline", "hidden", "typical", "min"}
        if extra:
            raise SpecError(f"{where}: unknown keys {sorted(extra)}")
        try:
            t = Threshold(str(r["subject"]), str(r["baseline"]), int(r["hidden"]),
                          float(r.get("typical", float("nan"))), float(r["min"]))
        except (TypeError, ValueError) as e:
            raise SpecError(f"{where}: hidden must be an integer, typical and min numbers "
                            f"({e})") from None
        for spec in (split_implementation(t.subject)[0], split_implementation(t.baseline)[0]):
            if spec != TORCH_RNN:
                try:
                    structures.check(spec, t.hidden)
                except SpecError as e:
                    raise SpecError(f"{where}: {e}") from None
        if t.subject == t.baseline:
            raise SpecError(f"{where}: subject and baseline are both {t.subject!r}")
        ratios.append(t)
    keys = [t.key for t in ratios]
    if len(set(keys)) != len(keys):
        raise SpecError(f"{path}: a ratio is listed twice")
    if not ratios:
        raise SpecError(f"{path}: no [[ratio]] entries")
    return Gate(settings, ratios, str(path))


def dump(gate: Gate, header: str = "") -> str:
    """The thresholds file text for ``gate`` (what ``--propose`` writes)."""
    s = gate.settings
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [
        "",
        "# How the ratios are measured: Elman tanh layer, forward+backward, per step.",
        "[gate]",
        f"batch = {s.batch}",
        f"steps = {s.steps}",
        f"threads = {s.threads}",
        f"rounds = {s.rounds}",
        f"min_run_time = {s.min_run_time}",
        f"fraction = {s.fraction}",
        "",
        "# speedup = time(baseline) / time(subject), median over rounds; fails below min.",
    ]
    for t in gate.ratios:
        lines += ["", "[[ratio]]", f'subject = "{t.subject}"', f'baseline = "{t.baseline}"',
                  f"hidden = {t.hidden}", f"typical = {t.typical:.3g}", f"min = {t.min:.3g}"]
    return "\n".join(lines) + "\n"


# -- the slow switch -------------------------------------------------------------------
def slow_names(extra: Iterable[str] = ()) -> set[str]:
    """Structure names to force through the slow path: $CONNBENCH_SLOW plus ``extra``."""
    names = {n.strip() for n in os.environ.get(SLOW_ENV, "").split(",") if n.strip()}
    names |= {n.strip() for n in extra if n.strip()}
    known = set(structures.names())
    bad = sorted(names - known)
    if bad:
        raise SpecError(f"slow switch: unknown structure(s) {bad}; known: {sorted(known)}")
    return names


def force_dense_every_step(rec: structures.Structure) -> structures.Structure:
    """Make ``rec`` rebuild its masked dense matrix at every step (the classic slow path).

    Same numbers as the fast path (``dense()`` is the reference the tests tie to it),
    only the work changes: O(H²) to build W plus a dense GEMM, per step.
    """
    def ident(x):
        return x

    rec.to_state = rec.from_state = rec.to_gates = rec.from_gates = ident

    def stepper():
        def step(h, u):
            w = rec.dense()
            return h.mm(w) if u is None else torch.addmm(u, h, w)

        return step

    rec.stepper = stepper
    return rec


@contextlib.contextmanager
def slowed(names: set[str]) -> Iterator[None]:
    """While active, layers built by ``connbench.nn.cells.make`` whose structure is named in
    ``names`` run the slow path: no fused time loop, dense W rebuilt every step."""
    if not names:
        yield
        return
    real = cells.make

    def make(*args, **kwargs):
        layer = real(*args, **kwargs)
        if layer.rec.name in names:
            force_dense_every_step(layer.rec)
            layer.implementation = "eager"  # the fused kernels bypass the stepper entirely
        return layer

    cells.make = make  # connbench.perf.kernels builds its layers through cells.make
    try:
        yield
    finally:
        cells.make = real


# -- measuring -------------------------------------------------------------------------
@dataclass
class Measurement:
    settings: Settings
    us_per_step: dict[str, float]  # "spec@H" → median µs per step
    per_round: dict[tuple[str, str, int], list[float]]  # ratio key → speedup per round
    slow: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    run_medians: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)
    us_rounds: dict[str, list[float]] = field(default_factory=dict)  # "spec@H" → per round

    def value(self, key: tuple[str, str, int]) -> float:
        return statistics.median(self.per_round[key])


def _label(spec: str, hidden: int) -> str:
    return f"{spec}@{hidden}"


def measure(gate: Gate, slow: set[str] = frozenset(), rounds: int | None = None) -> Measurement:
    """Time every layer the ratios need, all in one interleaved set of rounds."""
    s = gate.settings
    rounds = rounds or s.rounds
    start = time.perf_counter()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    try:
        return _measure(gate, s, slow, rounds, start)
    finally:
        torch.set_num_threads(threads_before)


def _measure(gate: Gate, s: Settings, slow: set[str], rounds: int, start: float
             ) -> Measurement:
    needed = dict.fromkeys(_label(spec, t.hidden) for t in gate.ratios
                           for spec in (t.baseline, t.subject))
    fns = {}
    with slowed(set(slow)):
        for lab in needed:
            name, hidden = lab.rsplit("@", 1)
            spec, impl = split_implementation(name)
            fns[lab] = layer_callables(spec, int(hidden), s.batch, s.steps,
                                       implementation=impl)[1]  # fwd+bwd
    timings = interleaved(fns, rounds=rounds, threads=s.threads, min_run_time=s.min_run_time)
    per_round = {}
    for t in gate.ratios:
        base = timings[_label(t.baseline, t.hidden)].samples
        subj = timings[_label(t.subject, t.hidden)].samples
        per_round[t.key] = [b / x for b, x in zip(base, subj, strict=True)]
    us = {lab: tm.median / s.steps * 1e6 for lab, tm in timings.items()}
    us_rounds = {lab: [x / s.steps * 1e6 for x in tm.samples] for lab, tm in timings.items()}
    return Measurement(replace(s, rounds=rounds), us, per_round, sorted(slow),
                       time.perf_counter() - start, us_rounds=us_rounds)


# -- judging ---------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the gate's table."""

    subject: str
    baseline: str
    hidden: int
    value: float  # median speedup over rounds (nan: not measured)
    low: float  # lowest and highest per-round speedup
    high: float
    typical: float
    min: float
    status: str  # ok, REGRESSED, MISSING, new

    @property
    def failed(self) -> bool:
        return self.status in ("REGRESSED", "MISSING")


def evaluate(thresholds: list[Threshold], values: dict[tuple[str, str, int], list[float]]
             ) -> list[Row]:
    """Compare per-round speedups with the thresholds, one row per ratio.

    A committed ratio that was not measured is MISSING (a failure: deleting a gated
    ratio must be a deliberate edit of the thresholds file); a measured ratio with no
    threshold is reported as ``new`` and does not fail.
    """
    rows = []
    for t in thresholds:
        rounds = values.get(t.key)
        if not rounds:
            rows.append(Row(t.subject, t.baseline, t.hidden, math.nan, math.nan, math.nan,
                            t.typical, t.min, "MISSING"))
            continue
        v = statistics.median(rounds)
        status = "ok" if v >= t.min else "REGRESSED"
        rows.append(Row(t.subject, t.baseline, t.hidden, v, min(rounds), max(rounds),
                        t.typical, t.min, status))
    known = {t.key for t in thresholds}
    for key, rounds in values.items():
        if key not in known and rounds:
            v = statistics.median(rounds)
            rows.append(Row(*key, v, min(rounds), max(rounds), math.nan, math.nan, "new"))
    return rows


def _x(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:.2f}×"


def format_table(rows: list[Row], settings: Settings) -> str:
    """A fixed-width table, then one line per failure naming ratio, value, min, size."""
    s = settings
    head = (f"speedup = time(baseline) / time(subject); Elman tanh layer, forward+backward "
            f"per step, B={s.batch} T={s.steps} threads={s.threads}; median of "
            f"{s.rounds} interleaved rounds")
    cols = ("ratio", "H", "value", "min", "typical", "rounds low–high", "status")
    body = [(r.subject + " / " + r.baseline, str(r.hidden), _x(r.value), _x(r.min),
             _x(r.typical), f"{_x(r.low)}–{_x(r.high)}" if not math.isnan(r.low) else "–",
             r.status) for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    align = ["<", ">", ">", ">", ">", ">", "<"]

    def line(cells):
        parts = zip(cells, align, widths, strict=True)
        return "  ".join(f"{c:{a}{w}}" for c, a, w in parts).rstrip()

    out = [head, "", line(cols), line("-" * w for w in widths), *map(line, body)]
    failed = [r for r in rows if r.failed]
    out.append("")
    if failed:
        out.append(f"FAIL: {len(failed)} of {len(rows)} ratios regressed:")
        for r in failed:
            if r.status == "MISSING":
                out.append(f"  {r.subject} / {r.baseline} at H={r.hidden}: not measured "
                           f"(min {_x(r.min)})")
            else:
                typical = (f" (typical {_x(r.typical)}; now "
                           f"{100.0 * r.value / r.typical:.0f} % of typical)"
                           if r.typical > 0 else "")
                out.append(f"  {r.subject} / {r.baseline} at H={r.hidden}, B={s.batch}, "
                           f"T={s.steps}: {_x(r.value)} < min {_x(r.min)}{typical}")
        out.append(f"How to read and fix this: {DOCS}.")
    else:
        out.append(f"PASS: all {len(rows)} ratios at or above their min.")
    return "\n".join(out)


SPREAD_MARGIN = 0.85  # with pooled runs: min stays 15 % below the worst run's median


def proposal(gate: Gate, m: Measurement, fraction: float | None = None) -> Gate:
    """Thresholds from a measurement: typical = median of all rounds, min = fraction ×
    typical. With several pooled runs, min is also kept SPREAD_MARGIN below the lowest
    run median seen, so a ratio whose runs already spread widely gets a looser min
    instead of a flaky gate."""
    f = fraction if fraction is not None else gate.settings.fraction
    ratios = []
    for t in gate.ratios:
        if t.key not in m.per_round:
            continue
        v = m.value(t.key)
        low = f * v
        runs = m.run_medians.get(t.key, [])
        if len(runs) >= 2:
            low = min(low, SPREAD_MARGIN * min(runs))
        ratios.append(replace(t, typical=round(v, 3), min=round(low, 3)))
    return Gate(replace(gate.settings, fraction=f), ratios)


def pooled(paths: Iterable[str | os.PathLike], settings: Settings) -> Measurement:
    """Per-round ratios of earlier ``--json`` runs, pooled (for ``--propose --from``).

    Runs from separate processes catch the between-process spread (memory layout,
    co-tenants) that one run's rounds cannot; the median over the pool is a steadier
    ``typical`` than any single run.
    """
    per_round: dict[tuple[str, str, int], list[float]] = {}
    run_medians: dict[tuple[str, str, int], list[float]] = {}
    rounds = 0
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            got = data["settings"]
            ratios = data["ratios"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SpecError(f"--from {path}: not a `connbench gate --json` output "
                            f"({e})") from None
        if data.get("slow"):
            raise SpecError(f"--from {path}: measured with the slow switch {data['slow']}")
        for k in ("batch", "steps", "threads"):
            if got.get(k) != getattr(settings, k):
                raise SpecError(f"--from {path}: measured with {k}={got.get(k)}, the "
                                f"thresholds file says {k}={getattr(settings, k)}")
        rounds += int(got.get("rounds", 0))
        for r in ratios:
            if r.get("per_round"):
                key = (r["subject"], r["baseline"], int(r["hidden"]))
                values = [float(v) for v in r["per_round"]]
                per_round.setdefault(key, []).extend(values)
                run_medians.setdefault(key, []).append(statistics.median(values))
    if not per_round:
        raise SpecError("--from: no measured ratios in the given files")
    return Measurement(replace(settings, rounds=rounds), {}, per_round,
                       run_medians=run_medians)


def machine() -> dict:
    """Where the numbers come from (for the table header and the JSON): the one
    environment collector, ``connbench.results.environment.machine``."""
    from connbench.results.environment import machine as collect

    return collect()


def fingerprint(info: dict | None = None) -> str:
    """A folder-safe id of what absolute timings depend on: CPU/GPU model, cores,
    torch threads, torch version. Saved pytest-benchmark runs are compared only
    within one fingerprint (see benchmarks/perf.py)."""
    info = info or machine()
    parts = [info["cpu"], info.get("cpu_id", ""), f"{info['cores']}c", f"{info['threads']}t",
             f"torch{info['torch']}"]
    if info.get("gpu"):
        parts.append(info["gpu"])
    slug = "-".join(p for p in parts if p).lower()
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in slug).strip("-")

