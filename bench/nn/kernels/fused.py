"""Fused whole-sequence kernels: one C++ call per layer, direction and sequence.

A structure says itself whether and how the fused path applies: ``fused_plan()``
returns an ``ElementwisePlan`` (its W is a sum of shifted diagonals: none, diagonal,
banded, jordan), a ``MatrixPlan`` (a product the C++ time loop runs: full, block,
block_shuffle, lowrank and butterfly through ATen's BLAS calls, random through its
own CSR kernel) or None (eager only: a plugin's structure without a plan). This
module never asks which class a structure is.

Which path runs: ``implementation("eager")`` (a context manager) or a model's
``implementation=`` argument; the default is ``fused``. The eager path (autograd
through ``Recurrence.stepper``) is the reference the tests compare against, the path
for CUDA tensors, and the fallback where the kernels cannot be compiled.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from connbench.nn.kernels import build

IMPLEMENTATIONS = ("fused", "eager")
CELL_CODES = {"elman": 0, "gru": 1, "lstm": 2}  # connbench::Cell in cellmath.h
ACT_CODES = {"tanh": 0, "relu": 1, "sigmoid": 2}  # connbench::Act

# Up to this many input features the elementwise kernel projects each row itself
# (u = x·W_ih + b, F passes over an L1-resident row) rather than reading a (T, B,
# gates·H) tensor that a separate matmul wrote: at F = 1 and H = 2048 that tensor is
# 26 MB written, read, and in the backward written and read twice more.
PROJECT_IN_KERNEL = 16
PLAIN_KINDS = ("dense", "lowrank", "csr")  # matrix plans whose state is plain (B, H) rows

_local = threading.local()


def check_implementation(name: str) -> str:
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={name!r} is not allowed; choose one of {IMPLEMENTATIONS}")
    return name


def current() -> str:
    """The implementation layers use when they do not set one themselves."""
    return getattr(_local, "name", "fused")


@contextlib.contextmanager
def implementation(name: str) -> Iterator[None]:
    """Run layers with ``name`` ("fused" or "eager") inside the block (this thread)."""
    previous = current()
    _local.name = check_implementation(name)
    try:
        yield
    finally:
        _local.name = previous


@dataclass(frozen=True)
class ElementwisePlan:
    """W[j + o_k, j] = table[k, gate, j]: rec_gate[j] = Σ_k h[j + o_k] · table[k, gate, j].

    ``table`` is built from the parameters with autograd on, so its gradient reaches
    them; entries whose row j + o_k falls outside [0, H) must be zero (non-cyclic).
    """

    table: torch.Tensor  # (K, gates, H)
    offsets: tuple[int, ...]
    cyclic: bool


@dataclass(frozen=True)
class MatrixPlan:
    """Operands of one step's product h·W (``forward``) and of g·Wᵀ (``backward``).

    ``kind`` names the product in matrix.cpp (dense, block, shuffle, csr, lowrank,
    monarch); the operands are detached, formed once per sequence. Weight gradients
    come from one batched call of the structure's own ``stepper()`` over all steps, or
    from ``weight_grads(prev, g)`` where the structure has a faster way: given every
    step's h_{t−1} and d(h·W) as one state and one gate layout of batch M = (T−1)·B
    (see ``Structure.steps_as_rows``), it returns the gradients of the structure's
    parameters, in ``parameters()`` order.
    """

    kind: str
    forward: tuple[torch.Tensor, ...]
    backward: tuple[torch.Tensor, ...]
    weight_grads: Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]] | None = None
    # where the kernel sums its forward operands' gradients over the steps itself
    # (monarch): those gradients, in ``forward`` order -> the parameters' gradients
    operand_grads: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None


def plan_for(cell) -> ElementwisePlan | MatrixPlan | None:
    """The fused plan for this cell's next forward, or None to run eager."""
    name = cell.implementation or current()
    if name == "eager" or cell.weight_ih.device.type != "cpu":
        return None  # CUDA keeps the eager path (no GPU to verify a kernel on)
    plan = cell.rec.fused_plan()
    if plan is None or build.load() is None:
        return None
    return plan


def projects_in_kernel(cell, plan) -> bool:
    """Whether the kernel projects the input itself (see ``PROJECT_IN_KERNEL``): few
    features, no vocabulary, and a plain (B, gates·H) layout (elementwise, dense and
    lowrank plans; block and monarch keep their own layouts)."""
    plain = isinstance(plan, ElementwisePlan) or plan.kind in PLAIN_KINDS
    return plain and not cell.vocab and cell.input_size <= PROJECT_IN_KERNEL


def run(cell, plan, x: torch.Tensor, bhn: torch.Tensor | None) -> torch.Tensor:
    """All states (T, …state layout) of one sequence for the input ``x`` (T, B, F)."""
    codes = (CELL_CODES[cell.family], ACT_CODES[cell.act_name])
    params = tuple(p for p in cell.rec.parameters())
    if projects_in_kernel(cell, plan):
        inputs, weight, bias = x.contiguous(), cell.weight_ih, cell.bias_ih
    else:
        inputs, weight, bias = cell.rec.to_gates(cell.project(x)).contiguous(), None, None
    # without a backward to come, the kernels keep no gates or cell states for it
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (inputs, weight, bias, bhn, *params))
    if isinstance(plan, ElementwisePlan):
        return _ElementwiseSequence.apply(inputs, weight, bias, plan.table, bhn, plan.offsets,
                                          plan.cyclic, need_grad, *codes)
    return _MatrixSequence.apply(cell.rec, plan, inputs, weight, bias, bhn, need_grad, *codes,
                                 *params)


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0)


def _operands(inputs, weight, bias, bhn):
    """b_hn, W_ihᵀ and b_ih as the kernels take them: contiguous, empty when absent."""
    def given(t):
        return _empty(inputs) if t is None else t.contiguous()

    return given(bhn), _empty(inputs) if weight is None else weight.t().contiguous(), given(bias)


class _ElementwiseSequence(torch.autograd.Function):
    """``inputs`` is us (T, B, gates·H), or x (T, B, F) with ``weight`` (gates·H, F) and
    ``bias``: then the kernel projects each row itself."""

    @staticmethod
    def forward(ctx, inputs, weight, bias, table, bhn, offsets, cyclic, need_grad, cell, act):
        ops = build.load()
        b, wx, bx = _operands(inputs, weight, bias, bhn)
        hs, cs = ops.elementwise_forward(inputs, table.contiguous(), list(offsets), cyclic, cell,
                                         act, b, need_grad, wx, bx)
        # gated cells: the backward recomputes the gates from the inputs instead of reading
        # saved ones; a projecting kernel needs x for the projection's gradients
        keep = cell != CELL_CODES["elman"] or weight is not None
        ctx.save_for_backward(hs, inputs if keep else _empty(inputs), cs, table, b, wx, bx)
        ctx.meta = (list(offsets), cyclic, cell, act, bhn is not None, weight is not None,
                    bias is not None)
        return hs

    @staticmethod
    def backward(ctx, gout):
        hs, inputs, cs, table, b, wx, bx = ctx.saved_tensors
        offsets, cyclic, cell, act, has_bhn, projected, has_bias = ctx.meta
        dinputs, dtable, dbhn, dwx, dbx = build.load().elementwise_backward(
            gout, hs, inputs, cs, table.contiguous(), offsets, cyclic, cell, act, b, wx, bx)
        return (dinputs, dwx.t() if projected else None,
                dbx if projected and has_bias else None, dtable,
                dbhn.view_as(b) if has_bhn else None, None, None, None, None, None)


class _MatrixSequence(torch.autograd.Function):
    """``inputs`` is us, or x (T, B, F) with ``weight`` and ``bias`` (see
    ``_ElementwiseSequence``); the projection's gradients come from d us, as a linear
    layer's do."""

    @staticmethod
    def forward(ctx, rec, plan, inputs, weight, bias, bhn, need_grad, cell, act, *params):
        b, wx, bx = _operands(inputs, weight, bias, bhn)
        hs, saved, cs, inters = build.load().matrix_forward(
            inputs, plan.kind, list(plan.forward), cell, act, b, need_grad, wx, bx)
        x = inputs if weight is not None else _empty(inputs)
        ctx.save_for_backward(hs, saved, cs, b, x, weight if weight is not None else x, inters)
        ctx.meta = (rec, plan, cell, act, bhn is not None, weight is not None,
                    bias is not None)
        return hs

    @staticmethod
    def backward(ctx, gout):
        hs, saved, cs, b, x, weight, inters = ctx.saved_tensors
        rec, plan, cell, act, has_bhn, projected, has_bias = ctx.meta
        dus, drecs, dbhn, *dops = build.load().matrix_backward(
            gout, hs, saved, cs, plan.kind, list(plan.backward), cell, act, b, inters)
        params = list(rec.parameters())
        wanted = [p for p, need in zip(params, ctx.needs_input_grad[9:], strict=True) if need]
        if dops:  # the kernel summed its operands' gradients over the steps
            own = dict(zip(map(id, params), plan.operand_grads(dops), strict=True))
            grads = {id(p): own[id(p)] for p in wanted}
        else:
            grads = dict(zip(map(id, wanted), weight_grads(rec, plan, hs, drecs, wanted),
                             strict=True))
        dinputs = dweight = dbias = None
        if projected:  # u = x·Wᵀ + b: as torch.nn.functional.linear's backward
            flat = dus.reshape(-1, dus.shape[-1])
            dinputs = dus.matmul(weight) if ctx.needs_input_grad[2] else None
            dweight = flat.t().mm(x.reshape(-1, x.shape[-1])) if ctx.needs_input_grad[3] else None
            dbias = flat.sum(0) if has_bias and ctx.needs_input_grad[4] else None
        else:
            dinputs = dus
        return (None, None, dinputs, dweight, dbias, dbhn.view_as(b) if has_bhn else None,
                None, None, None, *(grads.get(id(p)) for p in params))


def weight_grads(rec, plan: MatrixPlan, hs: torch.Tensor, drecs: torch.Tensor,
                 params: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """Gradients of the structure's parameters: Σ_t over the products h_{t−1}·W.

    The plan's own ``weight_grads`` where it has one; otherwise one batched call of the
    structure's own (eager) step over all (T−1)·B rows, so the reduction over time is
    one GEMM / bmm, and a structure's weight gradient is right by construction as soon
    as its eager step is.
    """
    if not params:
        return []
    T = hs.shape[0]
    if T == 1:  # h_{-1} = 0: W never acted on anything
        return [torch.zeros_like(p) for p in params]
    prev = rec.steps_as_rows(hs[:-1])  # the state layout, batch (T−1)·B
    g = rec.steps_as_rows(drecs[1:], gates=True)
    if plan.weight_grads is not None:
        own = dict(zip(map(id, rec.parameters()), plan.weight_grads(prev, g), strict=True))
        return [own[id(p)] for p in params]
    with torch.enable_grad():
        y = rec.stepper()(prev, None)
        grads = torch.autograd.grad(y, params, g, allow_unused=True)
    return [torch.zeros_like(p) if d is None else d for p, d in zip(params, grads, strict=True)]
