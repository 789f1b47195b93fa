"""The random structure: a fixed seeded sparsity mask, CSR kernels with a hand-written backward."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from connbench.nn.kernels import build
from connbench.nn.kernels.fused import MatrixPlan
from connbench.nn.structures.base import (
    SpecError,
    Structure,
    _dense_stepper,
    _uniform_,
    register_structure,
)
from connbench.registry import Option


class _CSRMatmul(torch.autograd.Function):
    """y = h·W for a fixed sparsity pattern, with a hand-written backward.

    torch.sparse's own autograd backward is 2–4× slower than dense (measured);
    here grad_h goes through the transposed CSR and grad of the stored values is a
    sampled dense-dense product (SDDMM) over the nonzeros only.
    """

    @staticmethod
    def forward(ctx, h, values, kernel):
        ctx.save_for_backward(h)
        ctx.kernel = kernel
        # sparse @ dense runs ~2x faster with a contiguous dense operand
        return torch.sparse.mm(kernel.wt, h.t().contiguous()).t()

    @staticmethod
    def backward(ctx, grad_y):
        (h,) = ctx.saved_tensors
        k = ctx.kernel
        grad_h = grad_values = None
        grad_y = grad_y.contiguous()
        if ctx.needs_input_grad[0]:
            grad_h = torch.sparse.mm(k.w, grad_y.t().contiguous()).t()
        if ctx.needs_input_grad[1]:
            sampled = torch.sparse.sampled_addmm(k.pattern, grad_y.t().contiguous(), h, beta=0.0)
            grad_values = sampled.values()
        return grad_h, grad_values, None


class _CSRKernel:
    """The per-sequence CSR tensors of a RandomStructure (W^T and W)."""

    def __init__(self, rec: RandomStructure):
        v = rec.weight.detach()
        size_t = (rec.gates * rec.hidden, rec.hidden)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self.wt = _csr(rec.crow_t, rec.col_t, v, size_t)
            self.pattern = _csr(rec.crow_t, rec.col_t, torch.zeros_like(v), size_t)
            self.w = _csr(rec.crow, rec.col, v[rec.to_w_order], size_t[::-1])


def _csr(crow, col, values, size):
    return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


@register_structure(
    "random", "fixed random sparsity mask of the given density (seeded)",
    [
        Option("density", float, 0.1, "fraction of nonzero entries, in (0, 1]"),
        Option("seed", int, 0, "seed of the mask"),
    ],
    example="random:density=0.1", color="#999933", marker="h",
)
class RandomStructure(Structure):
    """Unstructured sparse W with a fixed seeded mask; stores only the nonzeros.

    Eager: from H ≥ ``csr_min_hidden`` the step is torch's CSR kernel with a custom
    backward; below it the masked dense matrix, materialised once per sequence (not
    per step), is faster because torch's sparse kernels are overhead-bound at small
    sizes. Fused: the kernel's own CSR product at every size (``fused_plan``).
    """

    csr_min_hidden = 512

    def __init__(self, hidden, gates=1, init="default", density=0.1, seed=0):
        super().__init__(hidden, gates, init)
        self.density, self.seed = density, seed
        gen = torch.Generator().manual_seed(seed)
        mask_t = torch.rand(gates * hidden, hidden, generator=gen) < density  # (out, in)
        rows_t, cols_t = mask_t.nonzero(as_tuple=True)  # row-major = CSR order of W^T
        self.register_buffer("rows_t", rows_t, persistent=False)
        self.register_buffer("cols_t", cols_t, persistent=False)
        self.register_buffer("crow_t", _crow(rows_t, gates * hidden), persistent=False)
        self.register_buffer("col_t", cols_t.clone(), persistent=False)
        # the same entries in CSR order of W (in, out)
        order = torch.argsort(cols_t * (gates * hidden) + rows_t)
        self.register_buffer("to_w_order", order, persistent=False)
        self.register_buffer("crow", _crow(cols_t[order], hidden), persistent=False)
        self.register_buffer("col", rows_t[order].clone(), persistent=False)
        self.weight = nn.Parameter(torch.empty(rows_t.numel()))
        # the fused kernel's operands: Wᵀ (out, in) for h·W and W (in, out) for g·Wᵀ, in
        # blocked CSR; each order maps the kernel's nonzeros to ``weight``'s
        for name, blocked in (("fwd", _blocked_csr(rows_t, cols_t, gates * hidden, hidden)),
                              ("bwd", _blocked_csr(cols_t, rows_t, hidden, gates * hidden))):
            for part, t in zip(("crow", "col", "order"), blocked, strict=True):
                self.register_buffer(f"{part}_{name}", t, persistent=False)
        fan_in = max(1.0, density * hidden)
        _uniform_(self.weight, 1.0 if init == "uniform" else 1.0 / math.sqrt(fan_in))

    @classmethod
    def validate(cls, hidden, gates=1, density=0.1, seed=0):
        if not (0.0 < density <= 1.0) or math.isnan(density):
            raise SpecError(f"random: density={density} must be in (0, 1]")

    @property
    def effective_params(self):
        return self.weight.numel()

    def dense(self):
        H = self.hidden
        wt = torch.zeros(self.gates * H, H, dtype=self.weight.dtype, device=self.weight.device)
        return wt.index_put((self.rows_t, self.cols_t), self.weight).t()

    def mask(self):
        m = torch.zeros(self.gates * self.hidden, self.hidden, dtype=torch.bool)
        m[self.rows_t, self.cols_t] = True
        return m.t()

    def fused_plan(self):
        # the fused CSR product at every size: at H = 128 it runs as fast as the masked
        # dense GEMM (measured), and small sizes test it against the dense reference
        v = self.weight.detach()
        crow_f, col_f, order_f = self.crow_fwd, self.col_fwd, self.order_fwd
        crow_b, col_b, order_b = self.crow_bwd, self.col_bwd, self.order_bwd

        def weight_grads(prev, g):  # d values of Wᵀ (out, in): Σ_m g[m, i]·prev[m, j]
            blocked = build.load().csr_value_grad(crow_f, col_f, prev, g)
            return [torch.empty_like(blocked).index_copy_(0, order_f, blocked)]

        return MatrixPlan("csr", (crow_f, col_f, v[order_f]), (crow_b, col_b, v[order_b]),
                          weight_grads)

    def stepper(self):
        if self.hidden < self.csr_min_hidden or self.weight.device.type != "cpu":
            return _dense_stepper(self.dense())
        kernel = _CSRKernel(self)
        values = self.weight

        def step(h, u):
            y = _CSRMatmul.apply(h, values, kernel)
            return y if u is None else torch.add(u, y)

        return step


CSR_BLOCK = 256  # columns per block of the fused kernel's CSR (32 KB of hT at B = 32)


def _blocked_csr(rows: torch.Tensor, cols: torch.Tensor, nrows: int, ncols: int):
    """(crow, col, order) of the nonzeros (rows, cols) in the fused kernel's blocked CSR:
    ordered by (column block, row, column), crow over nblocks·nrows rows (block c's row
    i is crow row c·nrows + i); ``order`` lists the nonzeros' positions in that order."""
    nblocks = max(1, math.ceil(ncols / CSR_BLOCK))
    virtual = torch.div(cols, CSR_BLOCK, rounding_mode="floor") * nrows + rows
    order = torch.argsort(virtual * ncols + cols)
    return _crow(virtual[order], nblocks * nrows), cols[order].contiguous(), order


def _crow(rows: torch.Tensor, nrows: int) -> torch.Tensor:
    counts = torch.bincount(rows, minlength=nrows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])
