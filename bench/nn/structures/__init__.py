"""Recurrent connectivity structures: the W_hh of an RNN, computed with its structure.

One file per family; importing this package registers every shipped structure.
``make(spec, hidden)`` builds one from a spec string such as ``banded:width=5``.
"""

from __future__ import annotations

import importlib

from connbench.nn.structures.base import REGISTRY, Recurrence, canonical, check, make, names

# The shipped families, imported in this order: registry order is the order of the
# listings, the sweeps and the figures.
FAMILIES = ("dense", "elementwise", "block", "butterfly", "sparse", "lowrank")
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")

from connbench.nn.structures.block import BlockRecurrence, BlockShuffleRecurrence
from connbench.nn.structures.butterfly import ButterflyRecurrence
from connbench.nn.structures.dense import FullRecurrence, NoRecurrence
from connbench.nn.structures.elementwise import (
    BandedRecurrence,
    DiagonalRecurrence,
    JordanRecurrence,
    ShiftedProducts,
)
from connbench.nn.structures.lowrank import LowRankRecurrence
from connbench.nn.structures.sparse import RandomRecurrence

__all__ = [
    "REGISTRY", "Recurrence", "canonical", "check", "make", "names",
    "BlockRecurrence", "BlockShuffleRecurrence", "ButterflyRecurrence", "FullRecurrence",
    "LowRankRecurrence", "NoRecurrence", "BandedRecurrence", "DiagonalRecurrence",
    "JordanRecurrence", "ShiftedProducts", "RandomRecurrence",
]
