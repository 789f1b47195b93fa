"""A Toeplitz W_hh: one weight per diagonal, 2H−1 weights per gate.

The smallest structure connbench accepts: ``__init__`` creates the parameters and
``dense()`` returns the (H, gates·H) matrix. connbench derives the rest from
``dense()``: the recurrent step, the stored and effective parameter counts, FLOPs.
"""

import torch
from torch import nn

import connbench


@connbench.register_structure("toeplitz", "one weight per diagonal (2H−1 per gate)",
                              color="#117733", marker="H")
class ToeplitzStructure(connbench.Structure):
    def __init__(self, hidden, gates=1, **options):
        super().__init__(hidden, gates, **options)
        bound = 1.0 if self.init == "uniform" else hidden ** -0.5  # fan-in H, as full
        self.weight = nn.Parameter(torch.empty(gates, 2 * hidden - 1).uniform_(-bound, bound))
        i = torch.arange(hidden)
        self.register_buffer("diagonal", i[None, :] - i[:, None] + hidden - 1, persistent=False)

    def dense(self):
        return torch.cat(list(self.weight[:, self.diagonal]), dim=1)  # W[i, j] = w[j − i]
