"""Block-diagonal structures: block and block_shuffle, state kept as (G, B, H/G)."""

from __future__ import annotations

import math

import torch
from torch import nn

from connbench.nn.kernels.fused import MatrixPlan
from connbench.nn.structures.base import (
    SpecError,
    Structure,
    _per_gate_blocks,
    _uniform_,
    register_structure,
)
from connbench.registry import Option


class _PermuteContiguous(torch.autograd.Function):
    """``x.permute(dims).contiguous()`` whose gradient is contiguous too.

    Plain autograd hands ``bmm``'s backward a permuted, non-contiguous gradient, and
    bmm then falls back to one small matmul per batch entry with a clone each
    (~4x slower butterfly backward here).
    """

    @staticmethod
    def forward(ctx, x, dims):
        ctx.inverse = tuple(sorted(range(len(dims)), key=dims.__getitem__))
        return x.permute(dims).contiguous()

    @staticmethod
    def backward(ctx, grad):
        return grad.permute(ctx.inverse).contiguous(), None


def permute_contiguous(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return _PermuteContiguous.apply(x, dims)


class BlockLayout(Structure):
    """State kept as (G, B, H/G) so every block product is one contiguous ``bmm``."""

    layout_groups = 1

    def to_state(self, x):
        G = self.layout_groups
        return x.unflatten(-1, (G, -1)).movedim(-2, -3).contiguous()

    def from_state(self, s):
        return s.movedim(-3, -2).flatten(-2)

    def to_gates(self, u):
        G = self.layout_groups
        return u.unflatten(-1, (self.gates, G, -1)).movedim(-2, -4).flatten(-2).contiguous()

    def from_gates(self, p):
        return p.unflatten(-1, (self.gates, -1)).movedim(-4, -2).flatten(-3)

    def steps_as_rows(self, s, gates=False):
        # states and gates alike: (T, G, B, k) -> (G, T·B, k), one copy
        return s.transpose(0, 1).reshape(s.shape[1], -1, s.shape[-1])


def _check_groups(name: str, hidden: int, groups: int) -> None:
    if groups < 1 or hidden % groups:
        divisors = [d for d in range(1, hidden + 1) if hidden % d == 0]
        shown = ", ".join(map(str, divisors[:12])) + (" …" if len(divisors) > 12 else "")
        raise SpecError(
            f"{name}: groups={groups} must divide hidden={hidden}; allowed: {shown}"
        )


_GROUPS = Option("groups", int, 4, "number of independent blocks (must divide H)")


@register_structure("block", "block-diagonal: G independent blocks of size H/G", [_GROUPS],
                    example="block:groups=16", size=64, color="#009E73", marker="D")
class BlockStructure(BlockLayout):
    """Block-diagonal W (independent groups, 1905.12340; G-LSTM)."""

    def __init__(self, hidden, gates=1, init="default", groups=4):
        super().__init__(hidden, gates, init)
        self.groups = self.layout_groups = groups
        n = hidden // groups
        self.weight = nn.Parameter(torch.empty(groups, n, gates * n))
        _uniform_(self.weight, 1.0 if init == "uniform" else 1.0 / math.sqrt(n))

    @classmethod
    def validate(cls, hidden, gates=1, groups=4):
        _check_groups(cls.name, hidden, groups)

    def block_dense(self) -> torch.Tensor:
        n = self.hidden // self.groups
        return _per_gate_blocks(
            [torch.block_diag(*self.weight[:, :, g * n:(g + 1) * n]) for g in range(self.gates)]
        )

    def dense(self):
        return self.block_dense()

    @property
    def effective_params(self):
        return self.gates * self.hidden * (self.hidden // self.groups)

    def mask(self):
        n = self.hidden // self.groups
        one = torch.block_diag(*[torch.ones(n, n, dtype=torch.bool)] * self.groups)
        return _per_gate_blocks([one] * self.gates)

    def fused_plan(self):
        w = self.weight.detach()
        return MatrixPlan("block", (w,), (w.transpose(1, 2).contiguous(),),
                          lambda prev, g: [torch.bmm(prev.transpose(1, 2), g)])

    def stepper(self):
        w = self.weight

        def step(h, u):
            return torch.bmm(h, w) if u is None else torch.baddbmm(u, h, w)

        return step


@register_structure(
    "block_shuffle", "G blocks, then a fixed channel shuffle that mixes groups over time",
    [_GROUPS], example="block_shuffle:groups=16", size=64, color="#56B4E9",
    marker="P",
)
class BlockShuffleStructure(BlockStructure):
    """Blocks followed by ShuffleNet's channel shuffle of each gate's outputs.

    Output channel k takes block output g·n + i where k = i·G + g, so after one step
    every group feeds every other group.
    """

    version = 2  # 2: contiguous permutes around the gather

    def __init__(self, hidden, gates=1, init="default", groups=4):
        super().__init__(hidden, gates, init, groups)
        G, n = groups, hidden // groups
        k = torch.arange(hidden)
        perm = (k % G) * n + k // G  # new channel k <- old channel perm[k]
        self.register_buffer("perm", perm, persistent=False)
        # Flat index into one batch row of the (G, gates·n) block output, for every
        # position (g', gate, m) of the shuffled output in the same layout.
        gp, c, m = torch.meshgrid(torch.arange(G), torch.arange(gates), torch.arange(n),
                                  indexing="ij")
        old = perm[gp * n + m]
        flat = (old // n) * gates * n + c * n + old % n
        self.register_buffer("gather_index", flat.reshape(-1), persistent=False)
        # the gather's inverse (a shuffle is a bijection): the backward's index
        self.register_buffer("scatter_index", torch.argsort(flat.reshape(-1)), persistent=False)

    def dense(self):
        H = self.hidden
        blocks = self.block_dense()
        return torch.cat([blocks[:, g * H:(g + 1) * H][:, self.perm] for g in range(self.gates)],
                         dim=1)

    def mask(self):
        H = self.hidden
        base = super().mask()
        return torch.cat([base[:, g * H:(g + 1) * H][:, self.perm] for g in range(self.gates)],
                         dim=1)

    def fused_plan(self):
        w = self.weight.detach()
        return MatrixPlan("shuffle", (w, self.gather_index),
                          (w.transpose(1, 2).contiguous(), self.scatter_index))

    def stepper(self):
        w, idx = self.weight, self.gather_index
        G = self.groups

        def step(h, u):
            out = torch.bmm(h, w)  # (G, B, gates·n)
            B = out.shape[1]
            flat = permute_contiguous(out, (1, 0, 2)).view(B, -1).index_select(1, idx)
            shuffled = permute_contiguous(flat.view(B, G, -1), (1, 0, 2))
            return shuffled if u is None else torch.add(u, shuffled)

        return step
