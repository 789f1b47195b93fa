"""One colour and one marker per structure, the same in every figure.

Each structure's own colour and marker are registered with it (``register_structure(
..., color=, marker=)``) and reach the report through the results' catalogue
(``connbench.results.catalogue``), as does the registry order the figures use; without
a catalogue every structure gets a spare style, in alphabetical order. The
shipped colours are Okabe–Ito (colour-blind safe) plus two of Paul Tol's muted
colours; the markers differ too, so that the figures survive greyscale printing.
Okabe–Ito yellow is kept for extras only: it is hard to read on white.
"""

from __future__ import annotations

from connbench.registry import split_spec

_CATALOGUE: dict = {}  # the results' catalogue (connbench.results.catalogue) in use


def use_catalogue(catalogue: dict | None) -> None:
    """Take structure order and styles from a results catalogue (render_report sets it)."""
    global _CATALOGUE
    _CATALOGUE = dict(catalogue or {})


def _registered() -> dict[str, dict]:
    entries = _CATALOGUE.get("structures", {})
    return dict(sorted(entries.items(), key=lambda kv: kv[1].get("order", 0)))


def structure_order() -> list[str]:
    """The registered structures, in the order the figures list them (registry order)."""
    return list(_registered())


def base_style() -> dict[str, tuple[str, str]]:
    """Each registered structure's own (colour, marker), where it has one."""
    return {n: (e["color"], e["marker"]) for n, e in _registered().items()
            if e.get("color") and e.get("marker")}


# Variants of a structure (banded width 3 and 5) and unknown names cycle through these.
EXTRA_STYLE: list[tuple[str, str]] = [
    ("#332288", ">"), ("#44AA99", "d"), ("#AA4499", "p"), ("#DDCC77", "8"),
    ("#117733", "H"), ("#F0E442", "o"), ("#88CCEE", "s"), ("#CC6677", "^"),
]



def _extra_style(k: int) -> tuple[str, str]:
    """The k-th spare style: every colour with each marker in turn, so the first 64
    spare styles all differ (8 is not enough for a plugin-rich or catalogue-less run)."""
    n = len(EXTRA_STYLE)
    colour = EXTRA_STYLE[k % n][0]
    marker = EXTRA_STYLE[(k + k // n) % n][1]
    return colour, marker


SEQUENTIAL_CMAP = "cividis"
DIVERGING_CMAP = "PuOr"


def structure_sort_key(name: str) -> tuple[int, str]:
    """Registry order first, unknown names after, alphabetically."""
    order = structure_order()
    if name in order:
        return (order.index(name), "")
    return (len(order), name)


def short_labels(specs) -> dict[str, str]:
    """A readable label per canonical spec: the bare name when a structure appears with
    one spec only, else the name with only the options that differ between its specs."""
    by_name: dict[str, list[str]] = {}
    for spec in sorted(set(specs)):
        by_name.setdefault(split_spec(spec)[0], []).append(spec)
    labels = {}
    for name, group in by_name.items():
        if len(group) == 1:
            labels[group[0]] = name
            continue
        parsed = [split_spec(s)[1] for s in group]
        keys = sorted({k for p in parsed for k in p})
        varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
        for spec, opts in zip(group, parsed, strict=False):
            shown = ",".join(f"{k}={opts.get(k, '?')}" for k in varying)
            labels[spec] = f"{name}:{shown}" if shown else spec
    return labels


def label_order(labels) -> list[str]:
    """Labels sorted by structure (design order), then by label text."""
    def key(label: str):
        name = label.split(":", 1)[0]
        return (*structure_sort_key(name), natural_key(label))

    return sorted(set(labels), key=key)


def natural_key(text: str) -> tuple:
    """Sort 'width=11' after 'width=3'."""
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def assign_styles(labels) -> dict[str, tuple[str, str]]:
    """Colour and marker per label: the structure's own for its first label, an extra
    one for further variants. Deterministic for a given set of labels."""
    styles: dict[str, tuple[str, str]] = {}
    used_base: set[str] = set()
    extra = 0
    base = base_style()
    for label in label_order(labels):
        name = label.split(":", 1)[0]
        if name in base and name not in used_base:
            styles[label] = base[name]
            used_base.add(name)
        else:
            styles[label] = _extra_style(extra)
            extra += 1
    return styles
