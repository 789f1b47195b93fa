"""`connbench kernels`: time every structure's recurrent layer (a benchmark, not a test).

Each row is one layer (Elman tanh by default, ``cell=`` for another) over a (B, T, 1)
input, so the input projection is negligible and the time is the recurrence: forward,
and forward+backward, per time step, for each implementation asked for (``fused``
C++ kernels, ``eager`` autograd loop). ``torch.nn.RNN`` (``nn.LSTM``, ``nn.GRU`` for
those cells) gets the same input. Every callable is timed once per round, in rotating
order (``perf.timing.interleaved``), so machine drift hits all of them alike; speedups
are against ``full`` with the same implementation and against torch, in the same run.

The ``floor`` row (forward only, when diagonal is timed) is one elementwise pass over
the tensors a diagonal step must touch: it reads u_t and h_{t−1} and writes h_t, with
no recurrence between steps, no activation and no Python. A fused kernel cannot go
below this memory traffic (docs/perf.md).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from connbench.nn import cells, structures
from connbench.perf.timing import Timing, interleaved

DEFAULT_SPECS = [e.example for e in structures.REGISTRY.entries()]  # the registry's examples
TORCH_RNN = "torch.nn.RNN"  # the torch layer of the cell being timed (nn.RNN, nn.GRU, nn.LSTM)
FLOOR = "floor"
SPREAD_WARN = 0.20  # IQR / median above which a row is flagged


def torch_name(cell: str) -> str:
    """How the torch layer timed for ``cell`` is shown: torch.nn.RNN, .GRU or .LSTM."""
    return {"lstm": "torch.nn.LSTM", "gru": "torch.nn.GRU"}.get(cell, TORCH_RNN)


def torch_layer(cell: str, hidden: int) -> nn.Module:
    if cell == "lstm":
        return nn.LSTM(1, hidden)
    if cell == "gru":
        return nn.GRU(1, hidden)
    if cell == "rnn_sigmoid":
        raise ValueError("torch has no sigmoid RNN; time rnn_tanh or rnn_relu against it")
    return nn.RNN(1, hidden, nonlinearity="relu" if cell == "rnn_relu" else "tanh")


def layer_callables(spec: str, hidden: int, batch: int, steps: int, seed: int = 0,
                    cell: str = "rnn_tanh", implementation: str = "fused"):
    """(forward, forward+backward) callables for one layer; ``spec`` may be TORCH_RNN."""
    torch.manual_seed(seed)
    x = torch.randn(steps, batch, 1)
    if spec == TORCH_RNN:
        layer = torch_layer(cell, hidden)
    else:
        layer = cells.make(cell, 1, hidden, spec)
        # a layer that already chose (the gate's slow switch forces eager) keeps its choice
        layer.implementation = layer.implementation or implementation

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


def floor_callable(hidden: int, batch: int, steps: int):
    """One pass over a diagonal step's tensors for the whole sequence (see module doc)."""
    u, prev = torch.randn(steps, batch, hidden), torch.randn(steps, batch, hidden)
    w, out = torch.randn(hidden), torch.empty(steps, batch, hidden)

    def fwd():
        torch.addcmul(u, prev, w, out=out)

    return fwd


def measure(specs: list[str], hidden: int, batch: int, steps: int, threads: int,
            min_run_time: float = 0.2, torch_rnn: bool = True, *, cell: str = "rnn_tanh",
            implementations: tuple[str, ...] = ("fused",), rounds: int = 5) -> list[dict]:
    """Rows of {structure, implementation, pass, us_per_step, iqr_us, speedup_vs_full,
    speedup_vs_torch}, all timed in interleaved rounds."""
    torch.set_num_threads(threads)
    fns, keys = {}, {}
    entries = [(TORCH_RNN, "torch")] if torch_rnn else []
    entries += [(s, impl) for impl in implementations for s in specs]
    for spec, impl in entries:
        fwd, fwd_bwd = layer_callables(spec, hidden, batch, steps, cell=cell,
                                       implementation="fused" if impl == "torch" else impl)
        for measured, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            label = f"{spec}|{impl}|{measured}"
            fns[label], keys[label] = fn, (spec, impl, measured)
    if "diagonal" in specs:
        fns["floor"], keys["floor"] = floor_callable(hidden, batch, steps), (FLOOR, "-", "fwd")
    timings: dict[tuple[str, str, str], Timing] = {
        keys[label]: t.scaled(1.0 / steps)
        for label, t in interleaved(fns, rounds=rounds, threads=threads,
                                    min_run_time=min_run_time).items()
    }
    rows = []
    for (spec, impl, measured), t in timings.items():
        full = timings.get(("full", impl, measured))
        ref = timings.get((TORCH_RNN, "torch", measured))
        rows.append({
            "structure": torch_name(cell) if spec == TORCH_RNN else spec,
            "implementation": impl, "pass": measured,
            "us_per_step": t.median * 1e6, "iqr_us": t.iqr * 1e6,
            "speedup_vs_full": (full.median / t.median) if full else float("nan"),
            "speedup_vs_torch": (ref.median / t.median) if ref else float("nan"),
        })
    return rows


def warnings_for(rows: list[dict], threads: int) -> list[str]:
    """Why these numbers may not be trustworthy: wide spread, or a loaded machine."""
    out = []
    wide = [f"{r['structure']} {r['implementation']} {r['pass']} "
            f"({100 * r['iqr_us'] / r['us_per_step']:.0f} %)"
            for r in rows if r["us_per_step"] > 0 and r["iqr_us"] / r["us_per_step"] > SPREAD_WARN]
    if wide:
        out.append(f"warning: IQR above {SPREAD_WARN:.0%} of the median for: " + ", ".join(wide))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = os.cpu_count() or 1
    if load > cores:
        out.append(f"warning: load average {load:.1f} > {cores} cores: other processes share "
                   f"the CPU ({threads} threads asked); trust ratios more than microseconds")
    return out


def format_table(rows: list[dict]) -> str:
    by = {(r["structure"], r["implementation"], r["pass"]): r for r in rows}
    keys = list(dict.fromkeys((r["structure"], r["implementation"]) for r in rows))
    lines = ["| structure | impl | fwd µs/step | IQR | vs full | vs torch "
             "| fwd+bwd µs/step | IQR | vs full | vs torch |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def cells_of(r):
        if r is None:
            return "–", "–", "–", "–"
        return (f"{r['us_per_step']:.1f}", f"{r['iqr_us']:.1f}",
                f"{r['speedup_vs_full']:.2f}×", f"{r['speedup_vs_torch']:.2f}×")

    for s, impl in keys:
        f, b = by.get((s, impl, "fwd")), by.get((s, impl, "fwd+bwd"))
        lines.append(f"| {s} | {impl} | " + " | ".join(cells_of(f)) + " | "
                     + " | ".join(cells_of(b)) + " |")
    return "\n".join(lines).replace("nan×", "–")
