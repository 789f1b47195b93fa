"""Sweep files: a TOML grid that expands into measurable cells with stable ids.

A sweep names the values of each axis; its cells are the cartesian product of the
axes, minus ``exclude`` rules, plus ``include`` rules, once per kind. Example::

    description = "a quick look at three structures"
    tasks          = ["binary_addition", "copy:length=20"]   # spec strings
    structures = ["full", "diagonal", "banded:width=3"]
    cells          = ["rnn_tanh"]                # default ["rnn_tanh"]
    hidden         = [64, "iso_params:20000"]    # a size, or a parameter budget
    layers         = 1                           # a scalar is a one-value list
    seq_len        = [100]                       # speed/memory only; default: the task's
    batch          = 32                          # default: the task's own batch
    seeds          = [0, 1]                      # default [0]
    devices        = ["cpu"]                     # cpu, cuda, cuda:N, mps
    dtype          = "float32"                   # float32, float64, float16, bfloat16
    kinds         = ["speed", "memory", "train"]

    [train]            # options of train cells; any axis may be overridden here too
    steps = 2000       # a list makes it an axis: steps = [2000, 20000] gives two arms
    lr = 1e-3
    max_time_s = 60
    preset = "trask"   # a task preset (checked against the task)
    role = "lookback"  # a cheap probe for the lookback table, never in a verdict

    [speed]            # options of speed cells (and axis overrides for them)
    seeds = [0]
    min_run_time = 0.2
    warmup = 2
    threads = 2

    [memory]
    seeds = [0]

    [[exclude]]        # drop every product cell that matches all keys of a rule
    structure = "block"       # a bare name matches every option; "block:groups=4" only those
    hidden = [32, 64]

    [[include]]        # add cells outside the product; missing axes take the sweep's values
    task = "copy:length=200"
    structure = ["full", "diagonal"]
    kind = "train"
    steps = 20000

Keys may be singular or plural (``task``/``tasks``, ``seed``/``seeds`` ...). Rule keys
are axes, ``kind`` and option names; a list value means "any of". Excludes apply to
the product only, never to includes. ``seq_len`` sets the length of speed and memory
cells; a train cell always uses its task's length (set it with a task option such as
``copy:length=200``).

A ``[lookback]`` table turns the sweep into a search run by ``connbench.run.runner``: for each
train cell, a task option (``option``, default ``length``) is doubled from ``start``
until training fails or ``max`` is reached, then bisected until the bracket is within
``resolution`` (a fraction) of its lower end. Expansion validates the table (keys,
types, that every task has the option); the runner makes each probed cell with
:func:`with_task_option`.

``hidden = "iso_time:H"`` picks the size whose measured fwd+bwd time per step matches
full's at hidden H on this machine (connbench.plan.iso_time; timed at expansion and
cached per machine); trained for the same steps as every other cell.

``hidden = "iso_params:N"`` picks, per (task shape, structure, cell, layers), the valid
size (up to :data:`MAX_HIDDEN`) whose whole model has the total parameter count
closest to N (ties go to the smaller size). The chosen size is ``Cell.hidden``; the
request is ``Cell.hidden_request``.

Each cell has a ``trial_id``: a hash of its canonical config (canonical spec strings,
sorted keys) and of the code versions it measures (the structure's and the task's
``version`` and :data:`HARNESS_VERSION`), never of the sweep name. Precision-only
speed options (``min_run_time``, ``warmup``) are not part of the id. Kind options
reach the runner as ``Cell.options`` (a dict; ``Cell.option(name, default)``).

Impossible cells (butterfly at H=100, groups not dividing H, a budget out of reach)
raise one SpecError listing every offender, or with ``skip_invalid`` come back in
``Sweep.skipped`` as (cell, reason) for "skipped" rows. The full reference, with the
results layout, is docs/results.md.

Command-line overrides (``--set KEY=VALUE``) replace a key before expansion; VALUE is
a TOML value (``--set hidden=[128,512]``, ``--set train.steps=100``; a bare word is a
string). Every mistake raises :class:`~connbench.registry.SpecError` before any work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connbench.registry import Registry, SpecError, did_you_mean, format_spec, split_spec

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

# Bump when the harness changes what a measurement means (model assembly, timing
# method, training loop): old results then get new ids and are never mixed with new.
# 2: trial/kind/pass/structure words; 3: final train metrics on a held-out test set;
# 4: implementation axis, fused kernels by default. Rows of older versions are not mixed in.
HARNESS_VERSION = 4

SWEEPS_DIR = Path(__file__).parent / "sweeps"

KINDS = ("speed", "memory", "train")
DTYPES = ("float32", "float64", "float16", "bfloat16")
AXES = ("task", "structure", "cell", "hidden", "layers", "seq_len", "batch", "seed",
        "device", "dtype", "implementation")
# fused C++ kernels or the eager autograd loop (connbench.nn.kernels.fused.IMPLEMENTATIONS;
# spelled out here so that planning a sweep does not import torch)
IMPLEMENTATIONS = ("fused", "eager")
# Options per kind ([train], [speed], [memory]): name -> type. A list is an axis.
KIND_OPTIONS: dict[str, dict[str, type]] = {
    "train": {"steps": int, "lr": float, "max_time_s": float, "preset": str, "role": str},
    "speed": {"min_run_time": float, "warmup": int, "threads": int},
    "memory": {"threads": int},
}
# What a train cell is for: "claim" (the default) feeds the verdicts; "lookback" is a
# cheap probe of a longer sequence, read only by the report's lookback table.
TRAIN_ROLES = ("claim", "lookback")
# Options that change how precise a figure is, not what it measures: not in the id.
NON_IDENTITY_OPTIONS = frozenset({"min_run_time", "warmup"})
# Default values of the optional axes (None: the task's own value).
AXIS_DEFAULTS: dict[str, list] = {
    "cell": ["rnn_tanh"], "layers": [1], "seq_len": [None], "batch": [None], "seed": [0],
    "device": ["cpu"], "dtype": ["float32"], "implementation": ["fused"],
}
REQUIRED_AXES = ("task", "structure", "hidden")

_PLURALS = {"tasks": "task", "structures": "structure", "cells": "cell",
            "seeds": "seed", "devices": "device", "dtypes": "dtype", "kinds": "kind",
            "implementations": "implementation"}
# Names of the first release, still read so that older sweep files keep working.
_OLD_NAMES = {"connectivity": "structure", "connectivities": "structure", "phase": "kind",
              "phases": "kind"}
_TOP_KEYS = ("description", "plugins", *AXES, "kind", *KINDS, "include", "exclude",
             "lookback")
_LOOKBACK_KEYS = {"option": str, "start": int, "max": int, "resolution": float}
_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
_BUDGET_RE = re.compile(r"^(iso_params|iso_time):\s*([0-9_.eE+]+)\s*$")
# iso_params searches sizes up to this; a bigger budget is an error, not a silent cap.
MAX_HIDDEN = 8192
# A budget above this is out of reach of every size up to MAX_HIDDEN (an LSTM of 8192
# units has about 5e8 recurrent weights per layer); refused before any model is built.
MAX_BUDGET = 10**12


# --------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Trial:
    """One measurable unit: a kind of one model on one task in one setting."""

    trial_id: str
    sweep: str
    kind: str                 # speed, memory or train
    task_spec: str             # canonical, e.g. copy:length=100
    structure_spec: str     # canonical, e.g. banded:cyclic=false,width=3
    cell: str                  # canonical cell spec, e.g. rnn_tanh
    hidden: int                # the size used
    hidden_request: str        # what was asked: "128" or "iso_params:50000"
    layers: int
    seq_len: int | None        # resolved; None only if the task does not say
    batch: int | None          # resolved; None only if the task does not say
    seed: int
    device: str
    dtype: str
    # The kind's options from [train]/[speed]/[memory] (steps, lr, threads ...). A dict
    # so that dataclasses.asdict() gives plain data; excluded from the hash, never
    # mutated.
    options: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    versions: tuple[tuple[str, int], ...] = ()   # (structure, harness, task)
    implementation: str = "fused"  # fused C++ kernels or the eager reference loop
    task: str = dataclasses.field(init=False)          # registry name, from task_spec
    structure: str = dataclasses.field(init=False)  # registry name

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", split_spec(self.task_spec)[0])
        object.__setattr__(self, "structure", split_spec(self.structure_spec)[0])

    def option(self, name: str, default: Any = None) -> Any:
        """A kind option such as ``steps``, or ``default`` when the sweep left it out."""
        return self.options.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data (options and versions as dicts), for logs and JSON."""
        out = dataclasses.asdict(self)
        out["versions"] = dict(self.versions)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        """The inverse of :meth:`to_dict` (a trial sent to another process as JSON)."""
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        given = {k: v for k, v in data.items() if k in fields}
        given["versions"] = tuple(dict(data.get("versions") or {}).items())
        return cls(**given)

    def row_fields(self) -> dict[str, Any]:
        """The identity columns of a results row (connbench.results.schema names), kind excluded."""
        return {
            "trial_id": self.trial_id, "sweep": self.sweep,
            "task": self.task, "task_spec": self.task_spec,
            "structure": self.structure, "structure_spec": self.structure_spec,
            "cell": self.cell, "hidden": self.hidden, "hidden_request": self.hidden_request,
            "layers": self.layers, "seq_len": self.seq_len, "batch": self.batch,
            "dtype": self.dtype, "device": self.device, "seed": self.seed,
            "implementation": self.implementation,
        }


def trial_identity(cell: Trial) -> dict[str, Any]:
    """The data the id hashes: config and code versions, never the sweep name."""
    return {
        "kind": cell.kind, "task": cell.task_spec, "structure": cell.structure_spec,
        "cell": cell.cell, "hidden": cell.hidden, "hidden_request": cell.hidden_request,
        "layers": cell.layers, "seq_len": cell.seq_len, "batch": cell.batch,
        "seed": cell.seed, "device": cell.device, "dtype": cell.dtype,
        "implementation": cell.implementation,
        "options": {k: v for k, v in cell.options.items() if k not in NON_IDENTITY_OPTIONS},
        "versions": dict(cell.versions),
    }


def compute_cell_id(cell: Trial) -> str:
    """16 hex digits of the sha256 of the canonical JSON of :func:`trial_identity`."""
    blob = json.dumps(trial_identity(cell), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------ resolver


class Resolver:
    """What expansion needs from the rest of the harness, behind one small interface.

    The default implementation imports the real registries lazily (torch only when a
    size must be checked or counted); tests may pass a stand-in.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, Any] = {}
        self._totals: dict[tuple, int] = {}
        self._no_meta: set[str] = set()  # structures that cannot be built on meta

    def registry(self, kind: str) -> Registry:
        """The registry of ``task``, ``structure`` or ``cell`` specs."""
        if kind == "task":
            from connbench import tasks
            return tasks.REGISTRY
        if kind == "structure":
            from connbench.nn import structures
            return structures.REGISTRY
        if kind == "cell":
            from connbench.nn import cells
            return cells.CELLS
        raise KeyError(kind)

    def version(self, kind: str, name: str) -> int:
        """The code version of a registered task or structure (0 if it has none)."""
        return int(getattr(self.registry(kind).get(name).obj, "version", 0))

    def _task(self, spec: str) -> Any:
        if spec not in self._tasks:
            from connbench import tasks
            self._tasks[spec] = tasks.make(spec)
        return self._tasks[spec]

    def task_defaults(self, spec: str) -> dict[str, int | None]:
        """The task's own ``seq_len`` and training ``batch``."""
        task = self._task(spec)
        return {"seq_len": getattr(task, "seq_len", None),
                "batch": getattr(getattr(task, "defaults", None), "batch", None)}

    def task_presets(self, spec: str) -> list[str]:
        """Names of the task's presets (e.g. ``trask``)."""
        return list(getattr(self._task(spec), "presets", {}) or {})

    def check(self, structure: str, hidden: int) -> None:
        """Raise SpecError if the structure cannot have this hidden size."""
        from connbench.nn import structures
        structures.check(structure, hidden)

    def model_shape(self, task: str) -> tuple:
        """What a model's size depends on from its task: (input, output, vocab, readout).

        Tasks of the same shape (copy at any length) share their parameter counts.
        """
        t = self._task(task)
        return (t.input_size, t.output_size, bool(t.vocab), t.readout)

    def total_params(self, task: str, cell: str, structure: str, hidden: int,
                     layers: int) -> int:
        """Trainable parameters of the whole model (cached per model shape)."""
        key = (self.model_shape(task), cell, structure, hidden, layers)
        if key not in self._totals:
            self._totals[key] = self._count(task, cell, structure, hidden, layers)
        return self._totals[key]

    def _count(self, task: str, cell: str, structure: str, hidden: int,
               layers: int) -> int:
        import torch

        from connbench.nn.model import SequenceModel
        def build() -> SequenceModel:
            return SequenceModel.for_task(self._task(task), hidden=hidden, structure=structure,
                                          cell=cell, layers=layers)

        # On the meta device nothing is allocated, so large sizes are free; there the
        # total is the trainable numel, which equals param_counts()["total"]. A
        # structure that needs real data to build (a seeded mask) is built for real.
        name = split_spec(structure)[0]
        if name not in self._no_meta:
            try:
                with torch.device("meta"):
                    model = build()
                return sum(p.numel() for p in model.parameters() if p.requires_grad)
            except Exception:  # noqa: BLE001 - any failure on meta: build it for real
                self._no_meta.add(name)  # and do not pay for the failure again
        return int(build().param_counts()["total"])


# -------------------------------------------------------------------- hidden sizes


@dataclass(frozen=True)
class HiddenRequest:
    """A fixed size, or a budget (``iso_params:N``, ``iso_time:H``) resolved per
    structure."""

    kind: str          # "size", "iso_params" or "iso_time"
    value: int

    def __str__(self) -> str:
        return str(self.value) if self.kind == "size" else f"{self.kind}:{self.value}"


def parse_hidden(value: Any) -> HiddenRequest:
    """``128`` or ``"iso_params:50000"``; anything else is a SpecError."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise SpecError(f"hidden={value} must be a positive size")
        return HiddenRequest("size", value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_hidden(int(text))
        m = _BUDGET_RE.match(text)
        if m:
            kind, number = m.groups()
            try:
                n = float(number.replace("_", ""))
            except ValueError:
                n = -1.0
            if n < 1 or not n.is_integer():
                raise SpecError(f"hidden={value!r}: the budget must be a positive integer")
            if n > MAX_BUDGET:
                raise SpecError(f"hidden={value!r}: the budget is above {MAX_BUDGET:.0e} "
                                f"parameters, beyond any size up to {MAX_HIDDEN}")
            return HiddenRequest(kind, int(n))
    raise SpecError(
        f"hidden={value!r} is not a size; allowed: a positive integer, "
        "'iso_params:N' (a total-parameter budget) or 'iso_time:H' (full's step time "
        "at hidden H)")


# ------------------------------------------------------------------------- loading


def shipped_sweeps() -> list[str]:
    """Names of the sweeps shipped in connbench/plan/sweeps/."""
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.toml"))


def sweep_path(name_or_path: str | Path) -> Path:
    """A shipped sweep name or a path to a TOML file, as a path that exists."""
    text = str(name_or_path)
    if not text.strip():
        raise SpecError("an empty sweep name; give a shipped sweep name or a .toml path")
    path = Path(text)
    # A shipped name wins over a folder of the same name in the working directory;
    # a .toml name, a path with a slash or an existing file is a path.
    if path.suffix == ".toml" or "/" in text or path.is_file():
        if path.is_dir():
            raise SpecError(f"sweep file {text!r} is a directory; give the path of a "
                            ".toml file inside it")
        if not path.is_file():
            raise SpecError(f"sweep file {text!r} does not exist")
        return path
    shipped = shipped_sweeps()
    if text not in shipped:
        raise SpecError(f"unknown sweep {text!r}{did_you_mean(text, shipped)}; shipped sweeps: "
                        f"{', '.join(shipped)} (or give a path to a .toml file)")
    return SWEEPS_DIR / f"{text}.toml"


def parse_override(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE a TOML value; a bare word is taken as a string."""
    key, eq, text = item.partition("=")
    if not eq or not key.strip():
        raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. hidden=[128,512]")
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if text[:1] in "[{\"'" or not text:
            raise SpecError(f"--set {item!r}: {text!r} is not a TOML value ({exc})") from None
        value = text  # a bare word like copy:length=100
    return key.strip(), value


@dataclass
class Sweep:
    """An expanded sweep: runnable cells and the impossible ones recorded as skipped."""

    name: str
    path: Path
    description: str
    trials: list[Trial]
    skipped: list[tuple[Trial, str]]
    lookback: dict[str, Any] | None = None
    resolver: Resolver | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.trials)

    def derive(self, cell: Trial, **changes: Any) -> Trial:
        """:func:`derive` with this sweep's resolver."""
        return derive(cell, resolver=self.resolver, **changes)


_DEFAULT_RESOLVER: Resolver | None = None


def _default_resolver() -> Resolver:
    global _DEFAULT_RESOLVER
    if _DEFAULT_RESOLVER is None:
        _DEFAULT_RESOLVER = Resolver()
    return _DEFAULT_RESOLVER


def derive(cell: Trial, resolver: Resolver | None = None, **changes: Any) -> Trial:
    """A cell with some fields changed (e.g. a longer task) and a fresh id.

    Specs are canonicalised and the size checked, as at expansion. A train cell that
    changes task takes the new task's length; ``hidden`` alone sets the request too.
    """
    resolver = resolver or _default_resolver()
    if "hidden" in changes and "hidden_request" not in changes:
        changes["hidden_request"] = str(changes["hidden"])
    new = dataclasses.replace(cell, **changes)
    task, _ = _canonical(resolver, "task", new.task_spec)
    conn, _ = _canonical(resolver, "structure", new.structure_spec)
    seq_len = new.seq_len
    if "task_spec" in changes and "seq_len" not in changes and cell.kind == "train":
        seq_len = resolver.task_defaults(task)["seq_len"]
    resolver.check(conn, new.hidden)
    new = dataclasses.replace(new, task_spec=task, structure_spec=conn, seq_len=seq_len,
                              versions=_versions(resolver, task, conn), trial_id="")
    return dataclasses.replace(new, trial_id=compute_cell_id(new))


def with_task_option(cell: Trial, option: str, value: Any,
                     resolver: Resolver | None = None) -> Trial:
    """The cell with one task option changed, e.g. ``with_task_option(c, "length", 64)``."""
    name, opts = split_spec(cell.task_spec)
    opts[option] = value
    return derive(cell, resolver=resolver, task_spec=format_spec(name, opts))


def _versions(resolver: Resolver, task: str, conn: str) -> tuple[tuple[str, int], ...]:
    return (("structure", resolver.version("structure", split_spec(conn)[0])),
            ("harness", HARNESS_VERSION),
            ("task", resolver.version("task", split_spec(task)[0])))


def load_sweep(name_or_path: str | Path, overrides: Iterable[str] = (),
               skip_invalid: bool = False, resolver: Resolver | None = None) -> Sweep:
    """Read, override, validate and expand a sweep.

    ``overrides`` are ``KEY=VALUE`` strings (see :func:`parse_override`). Impossible
    cells raise one SpecError listing them all, unless ``skip_invalid`` is set: then
    they are returned in ``Sweep.skipped`` with the reason, for "skipped" rows.
    """
    path = sweep_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: malformed TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not a UTF-8 text file (byte {exc.start}); a sweep file "
                        "is TOML text") from None
    except OSError as exc:
        raise SpecError(f"sweep file {str(path)!r} cannot be read "
                        f"({exc.strerror or exc})") from None
    return expand(raw, name=path.stem, path=path, overrides=overrides,
                  skip_invalid=skip_invalid, resolver=resolver)


def expand(raw: dict[str, Any], *, name: str, path: Path | None = None,
           overrides: Iterable[str] = (), skip_invalid: bool = False,
           resolver: Resolver | None = None) -> Sweep:
    """Expand an already-parsed sweep table (see the module docstring)."""
    resolver = resolver or Resolver()
    spec = _normalise(raw, where=str(path or name))
    _load_plugins(spec.get("plugins", []), where=str(path or name))
    for item in overrides:
        _apply_override(spec, *parse_override(item))
    spec = _normalise(spec, where=str(path or name))  # overridden tables get checked too
    plan = _Plan(spec, resolver, where=str(path or name))
    cells, skipped = plan.expand(name, skip_invalid)
    if not cells and not skipped:
        raise SpecError(f"sweep {name!r} expands to no cells: every product cell is "
                        "excluded or an axis is empty; check its exclude rules and --set")
    return Sweep(name, Path(path) if path else Path(f"{name}.toml"),
                 spec.get("description", ""), cells, skipped, spec.get("lookback"), resolver)


# ------------------------------------------------------------ normalising the table


def _load_plugins(modules: Any, where: str) -> None:
    """The sweep's ``plugins`` (module names), loaded before any name is resolved."""
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise SpecError(f"{where}: plugins={modules!r} must be a list of module names, "
                        'e.g. plugins = ["my_structures"]')
    if modules:
        from connbench import plugins

        plugins.load(modules)


def _key(key: str, allowed: Sequence[str], where: str) -> str:
    """The canonical (singular) key, or a SpecError with a did-you-mean."""
    canon = _PLURALS.get(key) or _OLD_NAMES.get(key, key)
    if canon not in allowed:
        shown = sorted({_plural_of(a) for a in allowed})
        raise SpecError(f"{where}: unknown key {key!r}{did_you_mean(key, shown + list(allowed))}; "
                        f"allowed: {', '.join(shown)}")
    return canon


def _plural_of(key: str) -> str:
    return next((p for p, s in _PLURALS.items() if s == key), key)


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def _normalise_table(table: Any, allowed: Sequence[str], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SpecError(f"{where} must be a table (key = value lines), not {table!r}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        canon = _key(key, allowed, where)
        if canon in out:
            raise SpecError(f"{where}: {canon!r} is given twice (singular and plural form)")
        out[canon] = value
    return out


def _normalise(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Keys made canonical and values shape-checked; specs are checked later."""
    spec = _normalise_table(raw, _TOP_KEYS, where)
    for kind in KINDS:
        if kind in spec:
            allowed = (*AXES, *KIND_OPTIONS[kind])
            spec[kind] = _normalise_table(spec[kind], allowed, f"{where} [{kind}]")
    rule_keys = (*AXES, "kind", *{k for s in KIND_OPTIONS.values() for k in s})
    for rule_kind in ("include", "exclude"):
        rules = spec.get(rule_kind, [])
        if isinstance(rules, dict):
            rules = [rules]
        if not isinstance(rules, list):
            raise SpecError(f"{where}: {rule_kind} must be [[{rule_kind}]] tables, not {rules!r}")
        spec[rule_kind] = [_normalise_table(r, rule_keys, f"{where} [[{rule_kind}]] #{i + 1}")
                      for i, r in enumerate(rules)]
    if "lookback" in spec:
        spec["lookback"] = _normalise_table(spec["lookback"], tuple(_LOOKBACK_KEYS),
                                            f"{where} [lookback]")
    return spec


def _apply_override(spec: dict[str, Any], key: str, value: Any) -> None:
    head, _, tail = key.partition(".")
    known = [_plural_of(k) for k in _TOP_KEYS] + [
        f"{p}.{k}" for p in KINDS for k in (*AXES, *KIND_OPTIONS[p])] + [
        f"lookback.{k}" for k in _LOOKBACK_KEYS]
    try:
        head = _key(head, _TOP_KEYS, "--set")
        if tail:
            if head not in KINDS and head != "lookback":
                raise SpecError("")
            allowed = (tuple(_LOOKBACK_KEYS) if head == "lookback"
                       else (*AXES, *KIND_OPTIONS[head]))
            tail = _key(tail, allowed, "--set")
    except SpecError:
        top = sorted({_plural_of(k) for k in _TOP_KEYS})
        raise SpecError(f"--set: unknown key {key!r}{did_you_mean(key, known)}; allowed: "
                        f"{', '.join(top)}, or TABLE.KEY for a key of [train], [speed], "
                        "[memory] or [lookback] (e.g. train.steps)") from None
    if tail:
        spec.setdefault(head, {})[tail] = value
    else:
        spec[head] = value


# ------------------------------------------------------------------------ expansion


def _canonical(resolver: Resolver, kind: str, spec: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(spec, str):
        raise SpecError(f"{kind} {spec!r} must be a spec string such as 'name:key=value'")
    entry, opts = resolver.registry(kind).parse(spec)
    return format_spec(entry.name, opts), opts


def _check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{what}={value!r} must be an integer >= {minimum}")
    return value


def _check_option(name: str, typ: type, value: Any, where: str) -> Any:
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, typ):
        raise SpecError(f"{where}: {name}={value!r} must be a {typ.__name__}")
    if typ is float and not math.isfinite(value):
        raise SpecError(f"{where}: {name}={value!r} must be a finite positive number")
    if typ in (int, float) and value <= 0:
        raise SpecError(f"{where}: {name}={value!r} must be positive")
    if typ is str and not value.strip():
        raise SpecError(f"{where}: {name} is empty; give a name")
    if name == "role" and value not in TRAIN_ROLES:
        raise SpecError(f"{where}: role={value!r} is not a train role"
                        f"{did_you_mean(value, TRAIN_ROLES)}; roles: {', '.join(TRAIN_ROLES)}")
    return value


class _Pattern:
    """A rule value for task/structure: a name plus only the options it spells out."""

    def __init__(self, resolver: Resolver, kind: str, spec: Any):
        if not isinstance(spec, str):
            raise SpecError(f"rule value {kind}={spec!r} must be a spec string")
        name, given = split_spec(spec)
        entry, typed = resolver.registry(kind).parse(spec)
        self.name = entry.name
        self.opts = {k: typed[k] for k in given}

    def matches(self, resolver: Resolver, kind: str, canonical: str) -> bool:
        entry, typed = resolver.registry(kind).parse(canonical)
        return entry.name == self.name and all(typed[k] == v for k, v in self.opts.items())


class _Plan:
    """Validated axes of every kind, rules and the code that turns them into cells."""

    def __init__(self, spec: dict[str, Any], resolver: Resolver, where: str):
        self.r = resolver
        self.where = where
        self.lookback = spec.get("lookback")
        missing = [a for a in REQUIRED_AXES if a not in spec]
        if missing:
            raise SpecError(f"{where}: missing {', '.join(_plural_of(m) for m in missing)}; "
                            "a sweep needs tasks, structures and hidden")
        kinds = [self._phase(p) for p in _as_list(spec.get("kind", list(KINDS)))]
        if not kinds:
            raise SpecError(f"{where}: kinds is empty; give at least one of "
                            f"{', '.join(KINDS)}")
        if not isinstance(spec.get("description", ""), str):
            raise SpecError(f"{where}: description={spec['description']!r} must be a string")
        self.kinds = list(dict.fromkeys(kinds))
        base = {a: self._axis(a, spec.get(a, AXIS_DEFAULTS.get(a)), where) for a in AXES}
        self.axes: dict[str, dict[str, list]] = {}
        self.options: dict[str, dict[str, list]] = {}
        for kind in KINDS:
            table = spec.get(kind, {})
            w = f"{where} [{kind}]"
            if kind == "train" and "seq_len" in table:
                raise SpecError(f"{w}: seq_len cannot be set for train cells; set the "
                                "task's own length, e.g. copy:length=200")
            axes = dict(base)
            axes.update({a: self._axis(a, table[a], w) for a in AXES if a in table})
            if kind == "train":
                axes["seq_len"] = [None]
            self.axes[kind] = axes
            self.options[kind] = {
                k: [_check_option(k, typ, v, w) for v in _as_list(table[k])]
                for k, typ in KIND_OPTIONS[kind].items() if k in table}
        for preset in self.options["train"].get("preset", []):
            self._check_preset(preset, self.axes["train"]["task"], f"{where} [train]")
        self.excludes = [self._rule(r, f"{where} [[exclude]] #{i + 1}", pattern=True)
                         for i, r in enumerate(spec.get("exclude", []))]
        self.includes = [self._rule(r, f"{where} [[include]] #{i + 1}", pattern=False)
                         for i, r in enumerate(spec.get("include", []))]
        if self.lookback is not None:
            self._check_lookback()

    # -- validation of single values

    def _phase(self, value: Any) -> str:
        if value not in KINDS:
            raise SpecError(f"{self.where}: unknown kind {value!r}"
                            f"{did_you_mean(str(value), KINDS)}; allowed: {', '.join(KINDS)}")
        return value

    def _axis(self, axis: str, value: Any, where: str) -> list:
        values = _as_list(value)
        if not values:
            raise SpecError(f"{where}: {_plural_of(axis)} is empty; give at least one value")
        return [self._value(axis, v, where) for v in values]

    def _value(self, axis: str, v: Any, where: str) -> Any:
        if axis in ("task", "structure", "cell"):
            return _canonical(self.r, axis, v)[0]
        if axis == "hidden":
            return parse_hidden(v)
        if axis in ("layers", "seq_len", "batch"):
            return None if v is None else _check_int(v, f"{where}: {axis}", 1)
        if axis == "seed":
            return _check_int(v, f"{where}: seed", 0)
        if axis == "device":
            if not isinstance(v, str) or not _DEVICE_RE.match(v):
                raise SpecError(f"{where}: device {v!r} is not allowed; use cpu, cuda, "
                                "cuda:N or mps")
            return v
        if axis == "implementation":
            if v not in IMPLEMENTATIONS:
                raise SpecError(f"{where}: implementation {v!r}"
                                f"{did_you_mean(str(v), IMPLEMENTATIONS)} is not allowed; use "
                                f"one of {', '.join(IMPLEMENTATIONS)}")
            return v
        if axis == "dtype":
            if v not in DTYPES:
                raise SpecError(f"{where}: dtype {v!r}{did_you_mean(str(v), DTYPES)} is not "
                                f"allowed; use one of {', '.join(DTYPES)}")
            return v
        raise KeyError(axis)

    def _rule(self, rule: dict[str, Any], where: str, pattern: bool) -> dict[str, list]:
        out: dict[str, list] = {}
        for key, value in rule.items():
            values = _as_list(value)
            if not values:
                raise SpecError(f"{where}: {key} is empty")
            if key == "kind":
                out[key] = [self._phase(v) for v in values]
            elif pattern and key in ("task", "structure", "cell"):
                out[key] = [_Pattern(self.r, key, v) for v in values]
            elif key in AXES:
                out[key] = [self._value(key, v, where) for v in values]
            else:
                typ = next(s[key] for s in KIND_OPTIONS.values() if key in s)
                out[key] = [_check_option(key, typ, v, where) for v in values]
        if not out:
            raise SpecError(f"{where} is empty; a rule needs at least one key")
        return out

    def _check_preset(self, preset: str, task_specs: Iterable[str], where: str) -> None:
        for task in task_specs:
            presets = self.r.task_presets(task)
            if preset not in presets:
                raise SpecError(f"{where}: task {split_spec(task)[0]!r} has no preset "
                                f"{preset!r}{did_you_mean(preset, presets)}; its presets: "
                                f"{', '.join(presets) or 'none'}")

    def _check_lookback(self) -> None:
        w = f"{self.where} [lookback]"
        s = self.lookback
        s.setdefault("option", "length")
        if not isinstance(s["option"], str):
            raise SpecError(f"{w}: option={s['option']!r} must be a task option name")
        for k in ("start", "max"):
            if k in s:
                _check_int(s[k], f"{w}: {k}", 1)
        if "resolution" in s:
            s["resolution"] = _check_option("resolution", float, s["resolution"], w)
        if s.get("start", 1) > s.get("max", 1 << 62):
            raise SpecError(f"{w}: start={s['start']} is above max={s['max']}")
        if "train" not in self.kinds:
            raise SpecError(f"{w}: a lookback search trains; add 'train' to kinds")
        for task in {t for axes in self.axes.values() for t in axes["task"]}:
            entry, _ = self.r.registry("task").parse(task)
            if s["option"] not in entry.options:
                raise SpecError(f"{w}: task {entry.name!r} has no option {s['option']!r}"
                                f"{did_you_mean(s['option'], entry.options)}; its options: "
                                f"{', '.join(entry.options) or 'none'}")

    # -- products

    def _raw_cells(self) -> list[dict[str, Any]]:
        raws: list[dict[str, Any]] = []
        for kind in self.kinds:
            axes, options = self.axes[kind], self.options[kind]
            for raw in self._product(kind, axes, options):
                if not any(self._matches(raw, rule) for rule in self.excludes):
                    raws.append(raw)
        for rule in self.includes:
            for kind in rule.get("kind", self.kinds):
                axes = {a: rule.get(a, self.axes[kind][a]) for a in AXES}
                if kind == "train" and rule.get("seq_len", [None]) != [None]:
                    raise SpecError(f"{self.where}: an include sets seq_len for train "
                                    "cells; set the task's length instead")
                stray = [k for k in rule if k not in AXES and k != "kind"
                         and k not in KIND_OPTIONS[kind]]
                if stray:
                    raise SpecError(f"{self.where}: include sets {', '.join(stray)}, "
                                    f"which {kind} cells do not have")
                options = {**self.options[kind],
                           **{k: v for k, v in rule.items() if k in KIND_OPTIONS[kind]}}
                for preset in options.get("preset", []):
                    self._check_preset(preset, axes["task"], f"{self.where} [[include]]")
                raws.extend(self._product(kind, axes, options))
        return raws

    @staticmethod
    def _product(kind: str, axes: dict[str, list], options: dict[str, list]):
        names = list(AXES) + list(options)
        for combo in itertools.product(*(axes[a] for a in AXES), *options.values()):
            raw = dict(zip(names, combo, strict=True))
            raw["kind"] = kind
            raw["options"] = {k: raw.pop(k) for k in sorted(options)}
            yield raw

    def _matches(self, raw: dict[str, Any], rule: dict[str, list]) -> bool:
        options = raw["options"]
        for key, values in rule.items():
            if key in ("task", "structure", "cell"):
                if not any(p.matches(self.r, key, raw[key]) for p in values):
                    return False
            elif key == "hidden":
                # Rules match the request: 64 matches hidden=64, "iso_params:N" the budget.
                if raw["hidden"] not in values:
                    return False
            elif key in AXES or key == "kind":
                if raw[key] not in values:
                    return False
            elif options.get(key, _MISSING) not in values:
                return False
        return True

    # -- resolving

    def expand(self, sweep: str, skip_invalid: bool) -> tuple[list[Trial], list[tuple[Trial, str]]]:
        cells: dict[str, Trial] = {}
        offenders: list[tuple[Trial, str]] = []
        for raw in self._raw_cells():
            cell, reason = self._resolve(raw, sweep)
            if reason is not None:
                offenders.append((cell, reason))
            elif cell.trial_id not in cells:
                cells[cell.trial_id] = cell
        # Impossible cells are collected and reported together, so one run of the
        # command shows every offender instead of one per attempt.
        unique = list({c.trial_id: (c, r) for c, r in offenders}.values())
        if unique and not skip_invalid:
            raise SpecError(_offender_message(unique))
        return list(cells.values()), unique

    def _resolve(self, raw: dict[str, Any], sweep: str) -> tuple[Trial, str | None]:
        task, conn = raw["task"], raw["structure"]
        request: HiddenRequest = raw["hidden"]
        defaults = (self.r.task_defaults(task)
                    if raw["seq_len"] is None or raw["batch"] is None else {})
        seq_len = raw["seq_len"] if raw["seq_len"] is not None else defaults.get("seq_len")
        batch = raw["batch"] if raw["batch"] is not None else defaults.get("batch")
        reason = None
        if request.kind == "size":
            hidden = request.value
            try:
                self.r.check(conn, hidden)
            except SpecError as exc:
                reason = str(exc)
        else:
            try:
                if request.kind == "iso_time":
                    hidden = self._iso_time(request.value, task, raw, conn, batch, seq_len)
                else:
                    hidden = iso_params_size(self.r, request.value, task, raw["cell"],
                                             conn, raw["layers"])
            except SpecError as exc:
                hidden, reason = 0, str(exc)
        versions = _versions(self.r, task, conn)
        cell = Trial("", sweep, raw["kind"], task, conn, raw["cell"], hidden, str(request),
                    raw["layers"], seq_len, batch, raw["seed"], raw["device"], raw["dtype"],
                    dict(raw["options"]), versions, raw["implementation"])
        return dataclasses.replace(cell, trial_id=compute_cell_id(cell)), reason


    def _iso_time(self, reference: int, task: str, raw: dict[str, Any], conn: str,
                  batch: int | None, seq_len: int | None) -> int:
        """The size of ``conn`` whose fwd+bwd step time matches full's at ``reference``
        (connbench.plan.iso_time), timed at the cell's batch and length."""
        from connbench.plan.iso_time import iso_time_size

        timer = self.r.__dict__.get("step_timer")
        if timer is None:
            from connbench.plan.iso_time import CachedTimer

            timer = self.r.__dict__["step_timer"] = CachedTimer(self.r)
        cache = self.r.__dict__.setdefault("_iso_time", {})
        key = (reference, self.r.model_shape(task), raw["cell"], conn, raw["layers"],
               batch, seq_len)
        if key not in cache:
            cache[key] = iso_time_size(valid_sizes(self.r, conn), timer, reference, task,
                                       raw["cell"], conn, raw["layers"], batch or 32,
                                       seq_len or 100)
        return cache[key]


_MISSING = object()


def _offender_message(offenders: list[tuple[Trial, str]]) -> str:
    # One line per (structure, requested size): the first reason stands for the group.
    groups: dict[str, list[tuple[Trial, str]]] = {}
    for cell, reason in offenders:
        groups.setdefault(f"{cell.structure_spec} at hidden={cell.hidden_request}",
                          []).append((cell, reason))
    lines = [f"{len(offenders)} impossible cell(s); fix or exclude them, or pass "
             "--skip-invalid to record them as skipped:"]
    for what, items in groups.items():
        lines.append(f"  - {what} ({len(items)} cell(s)): {items[0][1]}")
    return "\n".join(lines)


# ------------------------------------------------------------------ iso_params


class ValidSizes:
    """The hidden sizes a structure accepts, found lazily in increasing order.

    Checks can cost (a structure may build a small mask to decide), so sizes are only
    checked as far as a search actually looks.
    """

    def __init__(self, resolver: Resolver, structure: str, limit: int = MAX_HIDDEN):
        self.resolver, self.structure, self.limit = resolver, structure, limit
        self.sizes: list[int] = []
        self._next = 1

    def has(self, i: int) -> bool:
        """Whether there are more than ``i`` valid sizes up to the limit."""
        while len(self.sizes) <= i and self._next <= self.limit:
            try:
                self.resolver.check(self.structure, self._next)
                self.sizes.append(self._next)
            except SpecError:
                pass
            self._next += 1
        return len(self.sizes) > i

    def __getitem__(self, i: int) -> int:
        if not self.has(i):
            raise IndexError(i)
        return self.sizes[i]

    def nearest(self, value: Callable[[int], float], target: float) -> int | None:
        """The index whose ``value(i)`` (growing with i) is closest to ``target``, ties to
        the smaller; None when even the largest valid size stays below it.

        Gallops up from the smallest size, so nothing much larger than the answer is
        ever evaluated (a model may be built for real), then bisects; invariant:
        value(lo) < target <= value(hi). Callers handle value(0) >= target first.
        """
        lo, hi = 0, 1
        while self.has(hi) and value(hi) < target:
            lo, hi = hi, 2 * hi + 1
        if not self.has(hi):
            hi = len(self.sizes) - 1
            if value(hi) < target:
                return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if value(mid) < target:
                lo = mid
            else:
                hi = mid
        return lo if target - value(lo) <= value(hi) - target else hi


def valid_sizes(resolver: Resolver, structure: str, limit: int = MAX_HIDDEN) -> ValidSizes:
    """The (cached, lazy) valid sizes of a structure up to ``limit``."""
    cache = resolver.__dict__.setdefault("_valid_sizes", {})
    key = (structure, limit)
    if key not in cache:
        cache[key] = ValidSizes(resolver, structure, limit)
    return cache[key]


def iso_params_size(resolver: Resolver, budget: int, task: str, cell: str,
                    structure: str, layers: int) -> int:
    """The valid size whose model's total parameters are closest to ``budget``.

    Totals grow with the size, so a galloping search then a bisection over the
    valid sizes builds about 2·log2(answer) models. Ties go to the smaller size.
    """
    cache = resolver.__dict__.setdefault("_iso", {})
    key = (budget, resolver.model_shape(task), cell, structure, layers)
    if key not in cache:
        cache[key] = _iso_search(resolver, budget, task, cell, structure, layers)
    return cache[key]


def _iso_search(resolver: Resolver, budget: int, task: str, cell: str,
                structure: str, layers: int) -> int:
    sizes = valid_sizes(resolver, structure)
    if not sizes.has(0):
        raise SpecError(f"{structure} accepts no hidden size up to {MAX_HIDDEN}")

    def total(i: int) -> int:
        return resolver.total_params(task, cell, structure, sizes[i], layers)

    if total(0) >= budget:
        return sizes[0]
    i = sizes.nearest(total, budget)
    if i is None:
        top = len(sizes.sizes) - 1
        raise SpecError(
            f"iso_params:{budget} is out of reach for {structure} ({task}, {cell}, "
            f"{layers} layer(s)): hidden={sizes[top]} has only {total(top)} parameters; "
            f"sizes above {MAX_HIDDEN} are not searched")
    return sizes[i]
