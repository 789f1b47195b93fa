"""Dense structures: full, and none (the zero matrix, a control)."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from connbench.nn.kernels.fused import ElementwisePlan
from connbench.nn.structures.base import (
    DenseMask,
    Structure,
    _dense_plan,
    _uniform_,
    register_structure,
)


@register_structure("full", "dense H×H recurrent matrix (the usual RNN)",
                    color="#000000", marker="o")
class FullStructure(DenseMask, Structure):
    """Dense W, stored (out, in) like torch (10–20 % faster addmm, measured)."""

    fast_tanh = False  # GEMM-bound: the plain torch.tanh is faster here

    def __init__(self, hidden, gates=1, init="default"):
        super().__init__(hidden, gates, init)
        self.weight = nn.Parameter(torch.empty(gates * hidden, hidden))
        _uniform_(self.weight, 1.0 if init == "uniform" else 1.0 / math.sqrt(hidden))

    def dense(self):
        return self.weight.t()

    def fused_plan(self):
        # d weight (out, in) = Σ_m g[m]ᵀ·prev[m]: one GEMM, not autograd through the step
        return replace(_dense_plan(self.weight), weight_grads=lambda prev, g: [g.t().mm(prev)])

    def stepper(self):
        wt = self.weight.t()

        def step(h, u):
            return h.mm(wt) if u is None else torch.addmm(u, h, wt)

        return step


@register_structure("none", "no recurrence (W = 0): what memory is worth",
                    color="#999999", marker="X")
class NoneStructure(Structure):
    def __init__(self, hidden, gates=1, init="default"):
        super().__init__(hidden, gates, init)
        # no weights: this empty buffer only tracks the module's dtype and device
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    def dense(self):
        return self.anchor.new_zeros(self.hidden, self.gates * self.hidden)

    def mask(self):
        return torch.zeros(self.hidden, self.gates * self.hidden, dtype=torch.bool)

    @property
    def effective_params(self):
        return 0

    def flops(self, batch):
        return 0.0

    def fused_plan(self):
        # no shifted diagonals at all: the kernel runs the cell math on u alone
        return ElementwisePlan(self.anchor.new_zeros(0, self.gates, self.hidden), (), False)

    def stepper(self):
        width = self.gates * self.hidden

        def step(h, u):
            return u if u is not None else h.new_zeros(h.shape[0], width)

        return step
