"""Elementwise structures: diagonal, banded (any odd width, cyclic or not), jordan."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from connbench.nn.kernels.fused import ElementwisePlan
from connbench.nn.structures.base import (
    SpecError,
    Structure,
    _per_gate_blocks,
    _uniform_,
    register_structure,
)
from connbench.registry import Option


@register_structure("diagonal", "each unit sees only itself (IndRNN)",
                    color="#D55E00", marker="s")
class DiagonalStructure(Structure):
    """W = diag(d) per gate. Default init uniform ±1 (fan_in 1)."""

    def __init__(self, hidden, gates=1, init="default"):
        super().__init__(hidden, gates, init)
        self.weight = nn.Parameter(torch.empty(gates, hidden))
        _uniform_(self.weight, 1.0)

    def dense(self):
        return _per_gate_blocks([torch.diag(w) for w in self.weight])

    def mask(self):
        return _per_gate_blocks([torch.eye(self.hidden, dtype=torch.bool)] * self.gates)

    @property
    def effective_params(self):
        return self.gates * self.hidden

    def fused_plan(self):
        return ElementwisePlan(self.weight.unsqueeze(0), (0,), False)

    def stepper(self):
        if self.gates == 1:
            d = self.weight[0]

            def step(h, u):
                return h * d if u is None else torch.addcmul(u, h, d)

            return step
        w, width = self.weight, self.gates * self.hidden

        def step(h, u):
            hb = h.unsqueeze(-2)
            if u is None:
                return (hb * w).flatten(-2)
            return torch.addcmul(u.view(*h.shape[:-1], self.gates, -1), hb, w).view(-1, width)

        return step


class ShiftedProducts(Structure):
    """W[j+o, j] = w[o, j] for a fixed set of offsets o (a band, or Jordan's diagonals).

    The step is a sum of shifted products over a zero-padded copy of h: one pad and
    one addcmul per offset. Entries whose row j+o falls outside [0, H) do not exist
    (non-cyclic), and are not stored: the stored vector is scattered into a padded
    (offsets, gates, H) table once per sequence, so no wrap-around weight can get a
    gradient.
    """

    def __init__(self, hidden, gates, init, offsets: tuple[int, ...], cyclic: bool):
        super().__init__(hidden, gates, init)
        self.offsets = offsets
        self.cyclic = cyclic
        j = torch.arange(hidden)
        valid = torch.stack(
            [torch.ones(hidden, dtype=torch.bool) if cyclic else (j + o >= 0) & (j + o < hidden)
             for o in offsets]
        )  # (K, H)
        self.register_buffer("valid", valid.unsqueeze(1).expand(-1, gates, -1).contiguous(),
                             persistent=False)
        n = int(self.valid.sum())
        self.weight = nn.Parameter(torch.empty(n))
        bound = 1.0 if init == "uniform" else 1.0 / math.sqrt(len(offsets))
        _uniform_(self.weight, bound)
        self.pad_left = 0 if cyclic else max(0, -min(offsets))
        self.pad_right = 0 if cyclic else max(0, max(offsets))

    def table(self) -> torch.Tensor:
        """The stored weights as a zero-filled (offsets, gates, H) table."""
        return torch.zeros(self.valid.shape, dtype=self.weight.dtype,
                           device=self.weight.device).masked_scatter(self.valid, self.weight)

    def _rows(self, o: int) -> torch.Tensor:
        j = torch.arange(self.hidden)
        return (j + o) % self.hidden if self.cyclic else j + o

    def dense(self):
        table, H = self.table(), self.hidden
        out = torch.zeros(H, self.gates * H, dtype=table.dtype, device=table.device)
        for k, o in enumerate(self.offsets):
            ok = self.valid[k, 0]
            rows = self._rows(o)[ok]
            for g in range(self.gates):
                cols = (g * H + torch.arange(H))[ok]
                out = out.index_put((rows, cols), table[k, g][ok], accumulate=True)
        return out

    def mask(self):
        H = self.hidden
        out = torch.zeros(H, self.gates * H, dtype=torch.bool)
        for k, o in enumerate(self.offsets):
            ok = self.valid[k, 0]
            for g in range(self.gates):
                out[self._rows(o)[ok], (g * H + torch.arange(H))[ok]] = True
        return out

    @property
    def effective_params(self):
        return int(self.valid.sum())

    def _padded(self, h: torch.Tensor) -> torch.Tensor:
        if self.cyclic:
            reach = max(abs(o) for o in self.offsets)
            if reach == 0:
                return h
            return torch.cat([h[:, -reach:], h, h[:, :reach]], dim=1)
        if self.pad_left or self.pad_right:
            return F.pad(h, (self.pad_left, self.pad_right))
        return h

    def fused_plan(self):
        # table() keeps the wrap-around entries of a non-cyclic band at zero
        return ElementwisePlan(self.table(), tuple(self.offsets), self.cyclic)

    def stepper(self):
        table, H, G = self.table(), self.hidden, self.gates
        base = max(abs(o) for o in self.offsets) if self.cyclic else self.pad_left
        starts = [base + o for o in self.offsets]
        if G == 1:
            ws = [table[k, 0] for k in range(len(starts))]
        else:
            ws = [table[k] for k in range(len(starts))]

        def step(h, u):
            hp = self._padded(h)
            acc = None
            for s, w in zip(starts, ws, strict=True):
                sl = hp[:, s:s + H] if G == 1 else hp[:, s:s + H].unsqueeze(1)
                if acc is not None:
                    acc.addcmul_(sl, w)  # acc is a fresh tensor of this step
                elif u is None:
                    acc = sl * w
                else:
                    acc = torch.addcmul(u if G == 1 else u.view(h.shape[0], G, H), sl, w)
            return acc if G == 1 else acc.view(h.shape[0], G * H)

        return step


@register_structure(
    "banded",
    "units see neighbours within a band |i−j| ≤ width//2",
    [
        Option("width", int, 3, "band width (odd)"),
        Option("cyclic", bool, False, "wrap the band around the ends"),
    ],
    example="banded:width=3", color="#0072B2", marker="^",
)
class BandedStructure(ShiftedProducts):
    """Band of odd ``width`` (Stack Exchange experiment 3 used width 3)."""

    def __init__(self, hidden, gates=1, init="default", width=3, cyclic=False):
        half = width // 2
        super().__init__(hidden, gates, init, tuple(range(-half, half + 1)), cyclic)
        self.width = width

    @classmethod
    def validate(cls, hidden, gates=1, width=3, cyclic=False):
        if width < 1 or width % 2 == 0:
            raise SpecError(f"banded: width={width} must be an odd integer >= 1")
        top = hidden if cyclic else 2 * hidden - 1
        if width > top:
            kind = "cyclic band (width <= H)" if cyclic else "band (width <= 2H-1)"
            raise SpecError(
                f"banded: width={width} is too wide for hidden={hidden}; "
                f"allowed: odd widths in [1, {top}] for a {kind}"
            )


@register_structure("jordan", "diagonal + superdiagonal (Jordan canonical form)",
                    color="#CC79A7", marker="v")
class JordanStructure(ShiftedProducts):
    """W[i, i] and W[i, i+1]: 2H−1 weights per gate."""

    def __init__(self, hidden, gates=1, init="default"):
        super().__init__(hidden, gates, init, (0, -1), cyclic=False)
