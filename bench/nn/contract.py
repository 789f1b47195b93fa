"""The contract every structure keeps, checked on any structure, a plugin's included.

``check_structure(spec)`` builds the structure at a small size and returns what is
wrong with it, one line per problem (an empty list: it keeps the contract):

* **values and gradients**: the fast path h ↦ h·W equals ``h @ dense()``, and the
  gradients with respect to h and to every parameter equal those of the dense
  reference (float64, for one, three and four gates: Elman, GRU, LSTM);
* **accounting**: ``stored_params`` is the number of trainable numbers,
  ``effective_params`` the structural nonzeros of ``dense()`` (at most gates·H²),
  ``mask()`` covers every nonzero of ``dense()``, ``flops(batch)`` is finite and
  non-negative;
* **cells**: forward and backward of one layer of every registered cell run and give
  (T, B, H) outputs and finite gradients.

``connbench check`` prints these lines, ``connbench run`` refuses a sweep whose
structure breaks the contract, and the test suite runs it on every registered
structure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from connbench.nn import cells as cells_mod
from connbench.nn import structures
from connbench.registry import split_spec

TOLERANCE = 1e-9  # float64: the fast path and the dense reference agree to rounding


def compare_with_dense(rec: structures.Structure, batch: int = 3,
                       tol: float = TOLERANCE) -> list[str]:
    """Problems of ``rec``'s forward and gradients against ``h @ rec.dense()`` (float64)."""
    where = f"{rec.spec} at hidden={rec.hidden}, gates={rec.gates}"
    rec = rec.double()
    h = torch.randn(batch, rec.hidden, dtype=torch.double, requires_grad=True)
    params = list(rec.parameters())
    y = rec(h)
    want = (batch, rec.gates * rec.hidden)
    if tuple(y.shape) != want:
        return [f"{where}: forward gives shape {tuple(y.shape)}, expected {want}"]
    dense = rec.dense()
    if tuple(dense.shape) != (rec.hidden, rec.gates * rec.hidden):
        return [f"{where}: dense() has shape {tuple(dense.shape)}, expected "
                f"{(rec.hidden, rec.gates * rec.hidden)}"]
    y_ref = h @ dense
    problems = []
    err = (y - y_ref).abs().max().item() if y.numel() else 0.0
    if not err <= tol:
        problems.append(f"{where}: forward differs from h @ dense() by {err:.3g}")
    if not y.requires_grad and not y_ref.requires_grad:
        return problems  # no weights and no dependence on h (`none`)
    gy = torch.randn_like(y)
    names = ["h", *(n for n, _ in rec.named_parameters())]
    grads = _grads(y, [h, *params], gy)
    refs = _grads(y_ref, [h, *params], gy)
    for name, a, b in zip(names, grads, refs, strict=True):
        err = (a - b).abs().max().item() if a.numel() else 0.0
        if not err <= tol:
            problems.append(f"{where}: gradient of {name} differs from the dense "
                            f"reference's by {err:.3g}")
    return problems


def _grads(y: torch.Tensor, inputs: list[torch.Tensor], gy: torch.Tensor) -> list[torch.Tensor]:
    if not y.requires_grad:
        return [torch.zeros_like(x) for x in inputs]
    got = torch.autograd.grad(y, inputs, gy, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, got, strict=True)]


def check_accounting(rec: structures.Structure) -> list[str]:
    """Problems of ``rec``'s parameter and FLOP counts (small sizes: builds dense())."""
    where = f"{rec.spec} at hidden={rec.hidden}, gates={rec.gates}"
    problems = []
    trainable = sum(p.numel() for p in rec.parameters() if p.requires_grad)
    if rec.stored_params != trainable:
        problems.append(f"{where}: stored_params={rec.stored_params} but it has "
                        f"{trainable} trainable numbers")
    dense = rec.dense().detach()
    nonzero = int(torch.count_nonzero(dense))
    top = rec.gates * rec.hidden * rec.hidden
    if not nonzero <= rec.effective_params <= top:
        problems.append(f"{where}: effective_params={rec.effective_params} is outside "
                        f"[{nonzero} nonzeros of dense(), {top} = gates·H²]")
    mask = rec.mask()
    if tuple(mask.shape) != tuple(dense.shape) or bool(((dense != 0) & ~mask).any()):
        problems.append(f"{where}: mask() does not cover every nonzero of dense()")
    flops = rec.flops(4)
    if not (isinstance(flops, (int, float)) and math.isfinite(flops) and flops >= 0):
        problems.append(f"{where}: flops(4)={flops!r} is not a finite number >= 0")
    return problems


def check_cell(spec: str, cell: str, hidden: int, steps: int = 3, batch: int = 2) -> list[str]:
    """Problems of one layer of ``cell`` around ``spec``: forward and backward shapes."""
    where = f"{spec} in {cell} at hidden={hidden}"
    layer = cells_mod.make(cell, 3, hidden, spec)
    x = torch.randn(steps, batch, 3)
    try:
        out, last = layer(x)
        (out.sum() + last.sum()).backward()
    except Exception as exc:  # noqa: BLE001 - reported, with the structure's name
        return [f"{where}: forward/backward raised {type(exc).__name__}: {exc}"]
    problems = []
    if tuple(out.shape) != (steps, batch, hidden) or tuple(last.shape) != (batch, hidden):
        problems.append(f"{where}: outputs {tuple(out.shape)} and {tuple(last.shape)}, "
                        f"expected {(steps, batch, hidden)} and {(batch, hidden)}")
    bad = [n for n, p in layer.named_parameters()
           if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad:
        problems.append(f"{where}: non-finite gradients of {', '.join(bad)}")
    return problems


def contract_size(spec: str) -> int:
    """The hidden size the contract uses for ``spec``: its registry entry's size."""
    return structures.REGISTRY.get(split_spec(spec)[0]).size


def check_structure(spec: str, hidden: int | None = None,
                    cells: Iterable[str] | None = None, seed: int = 0) -> list[str]:
    """Everything wrong with the structure ``spec`` (an empty list: it keeps the contract).

    Raises SpecError when ``spec`` is not a valid spec at ``hidden`` (default: the
    size registered with the structure).
    """
    hidden = contract_size(spec) if hidden is None else hidden
    structures.check(spec, hidden)
    gates = sorted(set(cells_mod.GATES.values()) | {1})
    problems: list[str] = []
    for g in gates:
        torch.manual_seed(seed)
        try:
            rec = structures.make(spec, hidden, gates=g)
            problems += compare_with_dense(rec)
            problems += check_accounting(rec)
        except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
            problems.append(f"{spec} at hidden={hidden}, gates={g}: raised "
                            f"{type(exc).__name__}: {exc}")
    for cell in cells if cells is not None else cells_mod.names():
        torch.manual_seed(seed)
        problems += check_cell(spec, cell, hidden)
    return problems
