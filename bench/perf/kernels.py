"""`connbench kernels`: time every structure's recurrent layer (a benchmark, not a test).

Each row is one Elman tanh layer over a (B, T, 1) input, so the input projection is
negligible and the time is the recurrence: forward, and forward+backward, per time
step. ``torch.nn.RNN`` gets the same input. Speedups are against ``full`` in the same
run.
"""

from __future__ import annotations

import torch
from torch import nn

from connbench.nn import cells, structures
from connbench.perf.timing import Timing, time_callable

DEFAULT_SPECS = [e.example for e in structures.REGISTRY.entries()]  # the registry's examples
TORCH_RNN = "torch.nn.RNN"


def layer_callables(spec: str, hidden: int, batch: int, steps: int, seed: int = 0):
    """(forward, forward+backward) callables for one layer; ``spec`` may be TORCH_RNN."""
    torch.manual_seed(seed)
    x = torch.randn(steps, batch, 1)
    if spec == TORCH_RNN:
        layer = nn.RNN(1, hidden)

        def run():
            return layer(x)[0]
    else:
        layer = cells.make("rnn_tanh", 1, hidden, spec)

        def run():
            return layer(x)[0]

    grad = torch.randn(steps, batch, hidden)

    def fwd():
        with torch.no_grad():
            run()

    def fwd_bwd():
        out = run()
        torch.autograd.backward(out, grad)

    return fwd, fwd_bwd


def measure(specs: list[str], hidden: int, batch: int, steps: int, threads: int,
            min_run_time: float = 1.0, torch_rnn: bool = True) -> list[dict]:
    """Rows of {structure, pass, us_per_step, iqr_us, speedup_vs_full}."""
    torch.set_num_threads(threads)
    rows: list[dict] = []
    names = ([TORCH_RNN] if torch_rnn else []) + list(specs)
    timings: dict[tuple[str, str], Timing] = {}
    for spec in names:
        fwd, fwd_bwd = layer_callables(spec, hidden, batch, steps)
        for measured, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            timings[spec, measured] = time_callable(fn, threads=threads,
                                                 min_run_time=min_run_time).scaled(1.0 / steps)
    for (spec, measured), t in timings.items():
        full = timings.get(("full", measured))
        rows.append({
            "structure": spec,
            "pass": measured,
            "us_per_step": t.median * 1e6,
            "iqr_us": t.iqr * 1e6,
            "speedup_vs_full": (full.median / t.median) if full else float("nan"),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    by = {(r["structure"], r["pass"]): r for r in rows}
    specs = list(dict.fromkeys(r["structure"] for r in rows))
    lines = ["| structure | fwd µs/step | fwd speedup | fwd+bwd µs/step | fwd+bwd speedup |",
             "|---|---:|---:|---:|---:|"]
    for s in specs:
        f, b = by[s, "fwd"], by[s, "fwd+bwd"]
        lines.append(f"| {s} | {f['us_per_step']:.1f} | {f['speedup_vs_full']:.2f}× | "
                     f"{b['us_per_step']:.1f} | {b['speedup_vs_full']:.2f}× |")
    return "\n".join(lines)
