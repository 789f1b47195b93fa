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


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="print one JSON object")


def main(args) -> int:
    listing = {title: reg.list() for title, reg in _registries()}
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
