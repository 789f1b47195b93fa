"""Recurrent cells around a structured W_hh: Elman (tanh, relu, sigmoid), GRU, LSTM.

A cell is one layer in one direction. The input projection for all time steps is one
matmul before the time loop (as cuDNN does); only the recurrence runs step by step,
with the state kept in the structure's layout (see ``connbench.nn.structures``).

Biases: one bias per gate, folded into the input projection, so an Elman layer has
H biases as in the "Recurrent Layers" parameter formula (torch.nn.RNN keeps two, b_ih
and b_hh, whose sum is the same thing). GRU also keeps b_hn, because PyTorch's GRU
applies it inside the reset gate.

Gate order: GRU (r, z, n) as PyTorch. LSTM stores (i, f, o, g) rather than PyTorch's
(i, f, g, o) so that one sigmoid covers the three sigmoid gates.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from connbench.nn import structures
from connbench.nn.kernels import fused
from connbench.nn.kernels.activations import tanh
from connbench.registry import Registry

CELLS = Registry("cell")
GATES: dict[str, int] = {}  # cell name -> number of gates (kept by register_cell)


def register_cell(name: str, description: str, options=()):
    """Class decorator: register a ``Cell`` subclass under ``name``."""
    register = CELLS.register_class(name, description, Cell, options)

    def deco(cls):
        register(cls)  # checks that cls is a Cell first
        GATES[name] = cls.gates
        return cls

    return deco


class Cell(nn.Module):
    """Base: input projection, structured recurrence, and a time loop."""

    gates = 1
    family = "elman"  # which cell math the fused kernels run (connbench.nn.kernels.fused)
    act_name = "tanh"

    def __init__(self, input_size: int, hidden: int, structure_spec: str = "full",
                 bias: bool = True, init: str = "default", vocab: bool = False):
        super().__init__()
        # "fused", "eager", or None: follow connbench.nn.kernels.fused.implementation()
        self.implementation: str | None = None
        self.input_size, self.hidden, self.vocab = input_size, hidden, vocab
        width = self.gates * hidden
        # the model-wide init only overrides the structure's own when it is set:
        # `full:init=uniform` inside a default model keeps its uniform W_hh
        overrides = {} if init == "default" else {"init": init}
        self.rec = structures.make(structure_spec, hidden, gates=self.gates, **overrides)
        # the sigmoid form of tanh pays off where elementwise work dominates a step; in
        # GEMM-bound steps its extra OpenMP regions cost more (full: measured 8 % slower
        # fwd+bwd at H=2048 with 2 threads, which put it 1.18x behind torch.nn.RNN)
        self.tanh = tanh if self.rec.fast_tanh else torch.tanh
        bound = 1.0 if init == "uniform" else 1.0 / math.sqrt(hidden)
        # With a vocabulary the projection is a lookup table: the same numbers as a
        # one-hot input times W_ih, without the one-hot.
        shape = (input_size, width) if vocab else (width, input_size)
        self.weight_ih = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias_ih = nn.Parameter(torch.empty(width).uniform_(-bound, bound)) if bias else None

    # accounting -------------------------------------------------------------------
    def input_params(self) -> int:
        return self.weight_ih.numel()

    def bias_params(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters(recurse=False) if "bias" in n)

    # time loop ----------------------------------------------------------------------
    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Input for all steps at once: x (T, B, F) or ids (T, B) → (T, B, gates·H)."""
        if self.vocab:
            u = nn.functional.embedding(x, self.weight_ih)
            return u if self.bias_ih is None else u + self.bias_ih
        return nn.functional.linear(x, self.weight_ih, self.bias_ih)

    def forward(self, x: torch.Tensor, return_sequence: bool = True):
        """x time-major. Returns (outputs (T, B, H) or None, last state (B, H))."""
        plan = fused.plan_for(self)
        if plan is not None:
            hs = fused.run(self, plan, x, self.fused_bias(x.shape[1]))
            if not return_sequence:
                return None, self.rec.from_state(hs[-1])
            seq = self.rec.from_state(hs)
            return seq, seq[-1]
        us = self.rec.to_gates(self.project(x))
        h0 = self.rec.to_state(us.new_zeros(x.shape[1], self.hidden))
        outs, h = self.loop(us, h0, self.rec.stepper(), return_sequence)
        seq = self.rec.from_state(torch.stack(outs)) if return_sequence else None
        return seq, self.rec.from_state(h)

    def fused_bias(self, batch: int) -> torch.Tensor | None:
        """A bias the fused kernel applies inside the step (GRU's b_hn), state layout."""
        return None

    def loop(self, us, h, step, keep):
        raise NotImplementedError  # every registered cell overrides this


class ElmanCell(Cell):
    activation = staticmethod(tanh)
    act_name = "tanh"

    def loop(self, us, h, step, keep):
        act = self.tanh if self.act_name == "tanh" else self.activation
        outs = []
        for u in us.unbind(0):  # unbind, never us[t]: one indexing op less per step
            h = act(step(h, u))
            if keep:
                outs.append(h)
        return outs, h


@register_cell("rnn_tanh", "Elman RNN, h = tanh(x·W_ih + h·W_hh + b)")
class TanhCell(ElmanCell):
    activation = staticmethod(tanh)
    act_name = "tanh"


@register_cell("rnn_relu", "Elman RNN with ReLU (IRNN, IndRNN)")
class ReluCell(ElmanCell):
    activation = staticmethod(torch.relu)
    act_name = "relu"


@register_cell("rnn_sigmoid", "Elman RNN with sigmoid units (Trask's demo)")
class SigmoidCell(ElmanCell):
    activation = staticmethod(torch.sigmoid)
    act_name = "sigmoid"


@register_cell("gru", "gated recurrent unit (PyTorch's equations)")
class GRUCell(Cell):
    gates = 3
    family = "gru"

    def __init__(self, input_size, hidden, structure_spec="full", bias=True,
                 init="default", vocab=False):
        super().__init__(input_size, hidden, structure_spec, bias, init, vocab)
        bound = 1.0 if init == "uniform" else 1.0 / math.sqrt(hidden)
        self.bias_hn = nn.Parameter(torch.empty(hidden).uniform_(-bound, bound)) if bias else None

    def fused_bias(self, batch):
        if self.bias_hn is None:
            return None
        return self.rec.to_state(self.bias_hn.expand(batch, -1)).contiguous()

    def loop(self, us, h, step, keep):
        bhn = None if self.bias_hn is None else self.rec.to_state(self.bias_hn.view(1, -1))
        outs = []
        for u in us.unbind(0):
            rec = step(h, None)
            k = rec.shape[-1] // 3
            r, z = torch.sigmoid(u[..., :2 * k] + rec[..., :2 * k]).chunk(2, -1)
            rn = rec[..., 2 * k:] if bhn is None else rec[..., 2 * k:] + bhn
            n = self.tanh(torch.addcmul(u[..., 2 * k:], r, rn))
            h = torch.lerp(n, h, z)  # (1 − z)·n + z·h
            if keep:
                outs.append(h)
        return outs, h


@register_cell("lstm", "long short-term memory (PyTorch's equations)")
class LSTMCell(Cell):
    gates = 4
    family = "lstm"

    def loop(self, us, h, step, keep):
        c = torch.zeros_like(h)
        outs = []
        for u in us.unbind(0):
            pre = step(h, u)
            k = pre.shape[-1] // 4
            i, f, o = torch.sigmoid(pre[..., :3 * k]).chunk(3, -1)
            c = torch.addcmul(f * c, i, self.tanh(pre[..., 3 * k:]))
            h = o * self.tanh(c)
            if keep:
                outs.append(h)
        return outs, h


def names() -> list[str]:
    """Names of every registered cell."""
    return CELLS.names()


def make(name: str, input_size: int, hidden: int, structure_spec: str = "full",
         bias: bool = True, init: str = "default", vocab: bool = False) -> Cell:
    """Build the cell registered as ``name``."""
    entry = CELLS.get(name)
    return entry.obj(input_size, hidden, structure_spec, bias, init, vocab)
