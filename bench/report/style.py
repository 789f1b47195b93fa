"""One colour and one marker per structure, the same in every figure.

Colours are Okabe–Ito (colour-blind safe) plus two of Paul Tol's muted colours; the
markers differ too, so that the figures survive greyscale printing. Okabe–Ito yellow
is kept for extras only: it is hard to read on white.
"""

from __future__ import annotations

# The ten structures of the design, in the order the figures list them.
STRUCTURE_ORDER = [
    "full", "none", "diagonal", "banded", "jordan",
    "block", "block_shuffle", "butterfly", "random", "lowrank",
]

BASE_STYLE: dict[str, tuple[str, str]] = {
    "full": ("#000000", "o"),
    "none": ("#999999", "X"),
    "diagonal": ("#D55E00", "s"),
    "banded": ("#0072B2", "^"),
    "jordan": ("#CC79A7", "v"),
    "block": ("#009E73", "D"),
    "block_shuffle": ("#56B4E9", "P"),
    "butterfly": ("#E69F00", "*"),
    "random": ("#999933", "h"),
    "lowrank": ("#882255", "<"),
}

# Variants of a structure (banded width 3 and 5) and unknown names cycle through these.
EXTRA_STYLE: list[tuple[str, str]] = [
    ("#332288", ">"), ("#44AA99", "d"), ("#AA4499", "p"), ("#DDCC77", "8"),
    ("#117733", "H"), ("#F0E442", "o"), ("#88CCEE", "s"), ("#CC6677", "^"),
]

SEQUENTIAL_CMAP = "cividis"
DIVERGING_CMAP = "PuOr"


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'banded:cyclic=false,width=3' -> ('banded', {'cyclic': 'false', 'width': '3'})."""
    name, _, rest = str(spec).partition(":")
    options = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        options[key.strip()] = value.strip()
    return name.strip(), options


def structure_sort_key(name: str) -> tuple[int, str]:
    """Design order first, unknown names after, alphabetically."""
    if name in STRUCTURE_ORDER:
        return (STRUCTURE_ORDER.index(name), "")
    return (len(STRUCTURE_ORDER), name)


def short_labels(specs) -> dict[str, str]:
    """A readable label per canonical spec: the bare name when a structure appears with
    one spec only, else the name with only the options that differ between its specs."""
    by_name: dict[str, list[str]] = {}
    for spec in sorted(set(specs)):
        by_name.setdefault(parse_spec(spec)[0], []).append(spec)
    labels = {}
    for name, group in by_name.items():
        if len(group) == 1:
            labels[group[0]] = name
            continue
        parsed = [parse_spec(s)[1] for s in group]
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
    for label in label_order(labels):
        name = label.split(":", 1)[0]
        if name in BASE_STYLE and name not in used_base:
            styles[label] = BASE_STYLE[name]
            used_base.add(name)
        else:
            styles[label] = EXTRA_STYLE[extra % len(EXTRA_STYLE)]
            extra += 1
    return styles
