"""`connbench list`: the registered structures, cells and tasks with their options."""

from __future__ import annotations

import json


def _registries():
    from connbench.nn import cells, structures

    regs = [("structures", structures.REGISTRY), ("cells", cells.CELLS)]
    try:
        from connbench import tasks
    except ImportError:  # tasks package not importable: list the rest
        return regs
    return regs + [("tasks", tasks.REGISTRY)]


WHAT = ("structures", "cells", "tasks", "sweeps")


def add_arguments(p):
    p.add_argument("what", nargs="?", choices=WHAT, default=None,
                   help="list only these (default: structures, cells and tasks)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def sweeps() -> list[dict]:
    """The shipped sweeps with their descriptions, trial counts and time estimates."""
    from connbench.plan.preview import preview
    from connbench.plan.sweep import load_sweep, shipped_sweeps

    return [preview(load_sweep(name, skip_invalid=True)).to_dict() for name in shipped_sweeps()]


def _print_sweeps(entries: list[dict]) -> None:
    from connbench.plan.preview import duration

    print("sweeps (connbench run NAME; --dry-run shows the trials):")
    for e in entries:
        kinds = ", ".join(f"{n} {k}" for k, n in e["counts"].items() if n)
        est = f"up to about {duration(e['estimate_s'])}"
        if e["uncapped_train"]:
            est += f" + {e['uncapped_train']} uncapped train"
        print(f"  {e['sweep']:<10} {e['trials']:>4} trials ({kinds}), {est}")
        print(f"  {'':<10} {e['description']}")


def main(args) -> int:
    if args.what == "sweeps":
        entries = sweeps()
        if args.json:
            print(json.dumps({"sweeps": entries}, indent=1))
        else:
            _print_sweeps(entries)
        return 0
    listing = {title: reg.list() for title, reg in _registries()
               if args.what in (None, title)}
    if args.json:
        print(json.dumps(listing, indent=1, default=str))
        return 0
    for title, entries in listing.items():
        print(f"{title}:")
        for e in entries:
            print(f"  {e['name']:<15} {e['description']}")
            for name, o in e["options"].items():
                choices = f" one of {o['choices']}" if "choices" in o else ""
                default = str(o["default"]).lower() if o["type"] == "bool" else o["default"]
                print(f"  {'':<15}   {name}: {o['type']} = {default}{choices}  {o['help']}")
        print()
    return 0
