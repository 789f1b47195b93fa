"""One generic registry for structures, cells and tasks.

Entries are registered by decorator with a one-line description and typed options.
A compact *spec string* is the single syntax used by the CLI and the sweep files::

    banded:width=5            block:groups=16
    random:density=0.1,seed=3 lowrank:rank=8

Unknown names get a did-you-mean and the list of names; unknown or ill-typed options
name the allowed options and their types.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


class SpecError(ValueError):
    """A user mistake in a name, spec string or option value."""


_TYPE_NAMES = {int: "int", float: "float", bool: "bool", str: "str"}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Option:
    """A typed option of a registry entry."""

    name: str
    type: type
    default: Any
    help: str = ""
    choices: tuple | None = None

    def describe(self) -> str:
        tname = _TYPE_NAMES.get(self.type, self.type.__name__)
        default = _format_value(self.default)
        text = f"{self.name} ({tname}, default {default})"
        if self.choices:
            text += f" one of {', '.join(map(str, self.choices))}"
        return text

    def coerce(self, value: Any, owner: str) -> Any:
        """Convert a string or Python value to this option's type, or raise SpecError."""
        expected = _TYPE_NAMES.get(self.type, self.type.__name__)
        try:
            if self.type is bool:
                if isinstance(value, bool):
                    out = value
                elif isinstance(value, (int, float)) and value in (0, 1):
                    out = bool(value)
                elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                    out = value.strip().lower() in _TRUE
                else:
                    raise ValueError
            elif self.type is int:
                if isinstance(value, bool):
                    raise ValueError
                if isinstance(value, float):
                    if not value.is_integer():
                        raise ValueError
                    out = int(value)
                else:
                    out = int(str(value).strip())
            elif self.type is float:
                if isinstance(value, bool):
                    raise ValueError
                out = float(str(value).strip()) if isinstance(value, str) else float(value)
            else:
                out = self.type(value)
        except (TypeError, ValueError):
            raise SpecError(
                f"{owner}: option {self.name}={value!r} is not a valid {expected}"
            ) from None
        if self.choices is not None and out not in self.choices:
            raise SpecError(
                f"{owner}: option {self.name}={out!r} is not allowed; "
                f"choose one of {', '.join(map(str, self.choices))}"
            )
        return out


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


@dataclass
class Entry:
    """A registered object with its description and options."""

    name: str
    obj: Any
    description: str
    options: dict[str, Option] = field(default_factory=dict)
    # What the rest of the harness needs to know about the entry, kept beside it so
    # that nothing else lists the entries: the spec and size the contract tests and
    # the benchmarks build (``example``, ``size``), and the plot style.
    example: str = ""
    size: int = 16
    color: str | None = None
    marker: str | None = None

    def resolve(self, given: dict[str, Any], owner: str | None = None) -> dict[str, Any]:
        """Typed options: defaults overridden by `given` (strings or values)."""
        owner = owner or self.name
        out = {name: opt.default for name, opt in self.options.items()}
        for key, value in given.items():
            if key not in self.options:
                allowed = ", ".join(o.describe() for o in self.options.values()) or "none"
                hint = did_you_mean(key, self.options)
                raise SpecError(f"{owner} has no option {key!r}{hint}; allowed options: {allowed}")
            out[key] = self.options[key].coerce(value, owner)
        return out


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``name:key=value,key=value`` into the name and raw string options."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty spec {spec!r}; expected NAME or NAME:key=value,...")
    name, _, rest = spec.strip().partition(":")
    opts: dict[str, str] = {}
    if rest.strip():
        for part in rest.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise SpecError(
                    f"malformed option {part!r} in spec {spec!r}; expected key=value"
                )
            if key.strip() in opts:
                raise SpecError(f"option {key.strip()!r} given twice in spec {spec!r}")
            opts[key.strip()] = value.strip()
    return name.strip(), opts


class Registry:
    """Maps names to objects, with typed options and did-you-mean lookups."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str, description: str, options: Iterable[Option] = (), *,
        example: str | None = None, size: int = 16, color: str | None = None,
        marker: str | None = None,
    ) -> Callable[[Any], Any]:
        """Decorator: register ``obj`` under ``name``.

        ``example`` (default: the bare name) and ``size`` are the spec and hidden size
        the contract tests and the benchmarks build; ``color`` and ``marker`` its style
        in the figures (None: one of the report's spare styles).
        """
        options = tuple(options)

        def deco(obj: Any) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, description, {o.name: o for o in options},
                                        example or name, size, color, marker)
            return obj

        return deco

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        """Every entry, in registration order."""
        return list(self._entries.values())

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry:
        """The entry called ``name``; an unknown name raises with a did-you-mean."""
        try:
            return self._entries[name]
        except KeyError:
            hint = did_you_mean(name, self._entries)
            raise SpecError(
                f"unknown {self.kind} {name!r}{hint}; known: {', '.join(self._entries)}"
            ) from None

    def parse(self, spec: str, **overrides: Any) -> tuple[Entry, dict[str, Any]]:
        """Parse a spec string into its entry and fully typed options."""
        name, raw = split_spec(spec)
        entry = self.get(name)
        raw.update(overrides)
        return entry, entry.resolve(raw, owner=f"{self.kind} {name!r}")

    def canonical(self, spec: str) -> str:
        """The spec with every option spelled out, sorted: a stable key for ids."""
        entry, opts = self.parse(spec)
        return format_spec(entry.name, opts)

    def list(self) -> list[dict[str, Any]]:
        """Names, descriptions and options of every entry."""
        return [
            {
                "name": e.name,
                "description": e.description,
                "options": {
                    o.name: {
                        "type": _TYPE_NAMES.get(o.type, o.type.__name__),
                        "default": o.default,
                        "help": o.help,
                        **({"choices": list(o.choices)} if o.choices else {}),
                    }
                    for o in e.options.values()
                },
            }
            for e in self._entries.values()
        ]


def format_spec(name: str, opts: dict[str, Any]) -> str:
    """Inverse of parsing: ``name:key=value,...`` with keys sorted."""
    if not opts:
        return name
    return name + ":" + ",".join(f"{k}={_format_value(v)}" for k, v in sorted(opts.items()))
