"""The lowrank structure: W = U·V, a factorisation control."""

from __future__ import annotations

import math

import torch
from torch import nn

from connbench.nn.kernels.fused import MatrixPlan
from connbench.nn.structures.base import (
    DenseMask,
    SpecError,
    Structure,
    _uniform_,
    register_structure,
)
from connbench.registry import Option


@register_structure(
    "lowrank", "W = U·V of rank r (a factorisation control)",
    [Option("rank", int, 8, "rank r, in [1, H]")],
    example="lowrank:rank=16", color="#882255", marker="<",
)
class LowRankStructure(DenseMask, Structure):
    """W = U (H, r) · V (r, gates·H).

    Init: U and V uniform with the bound that gives W the per-entry variance of
    ``full``'s default (1/(3H)).
    """

    def __init__(self, hidden, gates=1, init="default", rank=8):
        super().__init__(hidden, gates, init)
        self.rank = rank
        self.u = nn.Parameter(torch.empty(hidden, rank))
        self.v = nn.Parameter(torch.empty(rank, gates * hidden))
        bound = 1.0 if init == "uniform" else math.sqrt(3.0 / math.sqrt(3.0 * hidden * rank))
        _uniform_(self.u, bound)
        _uniform_(self.v, bound)

    @classmethod
    def validate(cls, hidden, gates=1, rank=8):
        if not 1 <= rank <= hidden:
            raise SpecError(f"lowrank: rank={rank} must be in [1, hidden={hidden}]")

    def dense(self):
        return self.u @ self.v

    def flops(self, batch):
        return 2.0 * batch * self.rank * (self.hidden + self.gates * self.hidden)

    def fused_plan(self):
        U, V = self.u.detach(), self.v.detach()

        def weight_grads(prev, g):  # h·U·V: d U = prevᵀ·(g·Vᵀ), d V = (prev·U)ᵀ·g
            return [prev.t().mm(g.mm(V.t())), prev.mm(U).t().mm(g)]

        return MatrixPlan("lowrank", (U, V), (V.t().contiguous(), U.t().contiguous()),
                          weight_grads)

    def stepper(self):
        U, V = self.u, self.v

        def step(h, u):
            return h.mm(U).mm(V) if u is None else torch.addmm(u, h.mm(U), V)

        return step
