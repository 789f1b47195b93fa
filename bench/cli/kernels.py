"""`connbench kernels`: time every structure's recurrent layer (a benchmark)."""

from __future__ import annotations

import json
import sys

import torch

from connbench.cli.args import finite_positive_float, positive_int, thread_count
from connbench.perf.kernels import DEFAULT_SPECS, format_table, measure, warnings_for
from connbench.registry import SpecError


def add_arguments(p):
    p.add_argument("--hidden", type=positive_int, default=512)
    p.add_argument("--batch", type=positive_int, default=32)
    p.add_argument("--steps", type=positive_int, default=100, help="sequence length T")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="torch threads (default: all)")
    p.add_argument("--min-run-time", type=finite_positive_float, default=0.2,
                   help="seconds per measurement, per round")
    p.add_argument("--rounds", type=positive_int, default=5,
                   help="interleaved rounds (every layer timed once per round)")
    p.add_argument("--impl", default="fused",
                   help="implementations to time, comma-separated: fused, eager (default fused)")
    p.add_argument("--cell", default="rnn_tanh", help="cell: rnn_tanh, rnn_relu, gru, lstm …")
    p.add_argument("--structure", "--connectivity", dest="structure", action="append",
                   metavar="SPEC", help="structures to time (repeatable; default: all ten)")
    p.add_argument("--json", action="store_true", help="print one JSON array")


def main(args) -> int:
    from connbench.nn import cells, structures
    from connbench.nn.kernels.fused import IMPLEMENTATIONS

    impls = tuple(i.strip() for i in args.impl.split(",") if i.strip())
    for i in impls:
        if i not in IMPLEMENTATIONS:
            allowed = ", ".join(IMPLEMENTATIONS)
            raise SpecError(f"--impl {i!r} is not allowed; choose from {allowed}")
    cells.CELLS.get(args.cell)  # did-you-mean on a bad cell name
    specs = args.structure or DEFAULT_SPECS
    for s in specs:
        structures.check(s, args.hidden)
    _check_memory(args)
    if "full" not in specs:
        specs = ["full", *specs]
    threads = args.threads or torch.get_num_threads()
    rows = measure(specs, args.hidden, args.batch, args.steps, threads, args.min_run_time,
                   torch_rnn=args.cell != "rnn_sigmoid", cell=args.cell,
                   implementations=impls, rounds=args.rounds)
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{args.cell} H={args.hidden} B={args.batch} T={args.steps} threads={threads} "
              f"rounds={args.rounds} torch {torch.__version__}", file=sys.stderr, flush=True)
        print(format_table(rows))
    for w in warnings_for(rows, threads):
        print(w, file=sys.stderr)
    return 0


def _check_memory(args) -> None:
    """Refuse sizes that cannot fit before allocating them (the estimate in the message)."""
    from connbench.plan import resources
    from connbench.registry import SpecError

    need = resources.estimate_bytes(hidden=args.hidden, layers=1, gates=1, inputs=args.hidden,
                                    outputs=0, seq_len=args.steps, batch=args.batch,
                                    train=False)
    available = resources.available_memory()
    if available and need > available:
        raise SpecError(f"--hidden {args.hidden} --batch {args.batch} --steps {args.steps} "
                        f"need about {resources.human(need)} (estimate), more than the "
                        f"{resources.human(available)} available")
