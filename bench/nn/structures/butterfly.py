"""The butterfly structure: log2(H) stages of 2×2 mixes, run in its two-factor form."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from connbench.nn.kernels.fused import MatrixPlan
from connbench.nn.structures.base import (
    DenseMask,
    SpecError,
    _dense_plan,
    _dense_stepper,
    _per_gate_blocks,
    register_structure,
)
from connbench.nn.structures.block import BlockLayout, permute_contiguous


def _apply_stage(x: torch.Tensor, params: torch.Tensor, s: int) -> torch.Tensor:
    """Apply butterfly stage ``s`` to row vectors x (gates, R, H): pairs (i, i + 2^s).

    ``params`` (gates, H/2, 2, 2): for pair p, y_pair = x_pair @ params[p].
    """
    H = x.shape[-1]
    stride = 1 << s
    xs = x.unflatten(-1, (H // (2 * stride), 2, stride))  # (gates, R, q, t, r)
    m = params.unflatten(-3, (H // (2 * stride), stride)).unsqueeze(1)  # (gates, 1, q, r, t, u)
    return torch.einsum("...qtr,...qrtu->...qur", xs, m).flatten(-3)


@register_structure(
    "butterfly", "log2(H) stages of learned 2×2 mixes in Walsh–Hadamard order (H = 2^k)",
    color="#E69F00", marker="*",
)
class ButterflyStructure(DenseMask, BlockLayout):
    """Stage s mixes units i and i + 2^s with a learned 2×2 per pair, s = 0 … log2 H − 1.

    After log2 H stages every unit reaches every other. The fast path uses the exact
    "Monarch" refactoring: the low-bit stages multiply to a
    block-diagonal matrix with contiguous √H-sized blocks, the high-bit stages to one
    with strided blocks; both factors are formed once per sequence and each step is
    two ``bmm``s. ``dense()`` applies the stages literally to the identity.

    Below ``factored_min_hidden`` the two small ``bmm``s and their reshuffles cost more
    than one dense product (measured: 0.5× of ``full`` at H = 128, parity at 512), so
    there the step multiplies by the exact product matrix, formed once per sequence.

    Init: each 2×2 is ρ·rotation(θ), θ uniform, ρ = 3^(−1/(2·log2 H)), so the product
    is (1/√3)·orthogonal, the same spectral radius as ``full``'s default.
    """

    version = 2  # 2: contiguous permutes; dense product below factored_min_hidden
    factored_min_hidden = 512

    def __init__(self, hidden, gates=1, init="default"):
        super().__init__(hidden, gates, init)
        self.stages = m = hidden.bit_length() - 1
        self.low = m // 2
        self.nlow, self.nhigh = 1 << self.low, 1 << (m - self.low)
        self.factored = hidden >= self.factored_min_hidden
        self.layout_groups = self.nhigh if self.factored else 1
        self.weight = nn.Parameter(torch.empty(m, gates, hidden // 2, 2, 2))
        with torch.no_grad():
            if init == "uniform":
                self.weight.uniform_(-1.0, 1.0)
            else:
                theta = torch.rand(m, gates, hidden // 2) * (2 * math.pi)
                rho = 3.0 ** (-1.0 / (2 * max(m, 1)))
                c, s = torch.cos(theta) * rho, torch.sin(theta) * rho
                self.weight.copy_(torch.stack([torch.stack([c, s], -1),
                                               torch.stack([-s, c], -1)], -2))

    @classmethod
    def validate(cls, hidden, gates=1):
        if hidden < 2 or hidden & (hidden - 1):
            lo = 1 << max(1, hidden.bit_length() - 1)
            raise SpecError(
                f"butterfly: hidden={hidden} must be a power of two >= 2 "
                f"(nearest: {lo} or {lo * 2})"
            )

    # the plain (B, H) layout when the dense product is used
    def to_state(self, x):
        return super().to_state(x) if self.factored else x

    def from_state(self, s):
        return super().from_state(s) if self.factored else s

    def to_gates(self, u):
        return super().to_gates(u) if self.factored else u

    def from_gates(self, p):
        return super().from_gates(p) if self.factored else p

    def steps_as_rows(self, s, gates=False):
        return super().steps_as_rows(s, gates) if self.factored else s.reshape(-1, s.shape[-1])

    def dense(self):
        H = self.hidden
        x = torch.eye(H, dtype=self.weight.dtype, device=self.weight.device)
        x = x.expand(self.gates, H, H)
        for s in range(self.stages):
            x = _apply_stage(x, self.weight[s], s)
        return _per_gate_blocks(list(x))

    def flops(self, batch):
        if not self.factored:
            return 2.0 * batch * self.gates * self.hidden * self.hidden
        return 2.0 * batch * self.gates * self.hidden * (self.nlow + self.nhigh)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Monarch factors: W1 (nhigh, nlow, gates·nlow), W2 (gates·nlow, nhigh, nhigh)."""
        H, G, nl, nh = self.hidden, self.gates, self.nlow, self.nhigh
        eye = torch.eye(nl, dtype=self.weight.dtype, device=self.weight.device)
        r1 = eye.repeat(1, nh).expand(G, nl, H)  # row lo' = Σ_hi e(hi·nl + lo')
        for s in range(self.low):
            r1 = _apply_stage(r1, self.weight[s], s)
        # r1[c, lo', hi·nl + lo] = block hi of gate c, entry (lo', lo)
        w1 = r1.unflatten(-1, (nh, nl)).permute(2, 1, 0, 3).reshape(nh, nl, G * nl)
        eye_h = torch.eye(nh, dtype=self.weight.dtype, device=self.weight.device)
        r2 = eye_h.repeat_interleave(nl, dim=1).expand(G, nh, H)  # row hi' = Σ_lo e(hi'·nl+lo)
        for s in range(self.low, self.stages):
            r2 = _apply_stage(r2, self.weight[s], s)
        # r2[c, hi', hi·nl + lo] = strided block lo of gate c, entry (hi', hi)
        w2 = r2.unflatten(-1, (nh, nl)).permute(0, 3, 1, 2).reshape(G * nl, nh, nh)
        return w1.contiguous(), w2.contiguous()

    def fused_plan(self):
        if not self.factored:
            # the exact product, formed once per sequence; with grad on, its graph is kept
            # so the weight's gradient is one GEMM and one backward through the stages,
            # not a second forward of them through the eager step (adding, H = 64: 251 ->
            # 309 training steps per second, measured)
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.weight.requires_grad):
                w = self.dense()  # (H, gates·H), y = h·W

            def weight_grads(prev, g):  # d W = prevᵀ·g, then back through the stages
                # the graph stays: a gradcheck (or any second backward) comes back to it
                return list(torch.autograd.grad(w, [self.weight], prev.t().mm(g),
                                                retain_graph=True))

            plan = _dense_plan(w.detach().t())
            return plan if not w.requires_grad else replace(plan, weight_grads=weight_grads)
        with torch.no_grad():
            w1, w2 = self.factors()

        def operand_grads(dops):  # d W1, d W2 from the kernel -> d weight via factors()
            with torch.enable_grad():
                return list(torch.autograd.grad(self.factors(), [self.weight], dops))

        return MatrixPlan("monarch", (w1, w2),
                          (w2.transpose(1, 2).contiguous(), w1.transpose(1, 2).contiguous()),
                          operand_grads=operand_grads)

    def stepper(self):
        if not self.factored:
            # stored (out, in) like full's weight: addmm is 10-20 % faster that way
            return _dense_stepper(self.dense().t().contiguous().t())
        w1, w2 = self.factors()
        G, nl, nh = self.gates, self.nlow, self.nhigh

        def step(h, u):
            B = h.shape[1]
            y1 = torch.bmm(h, w1)  # (nh, B, G·nl)
            y1 = permute_contiguous(y1.view(nh, B, G, nl), (2, 3, 1, 0)).view(G * nl, B, nh)
            z = torch.bmm(y1, w2)  # (G·nl, B, nh)
            z = permute_contiguous(z.view(G, nl, B, nh), (3, 2, 0, 1)).view(nh, B, G * nl)
            return z if u is None else torch.add(u, z)

        return step
