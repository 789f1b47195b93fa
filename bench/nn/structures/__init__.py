"""Recurrent structure structures: the W_hh of an RNN, computed with its structure.

One file per family; importing this package registers every shipped structure.
``make(spec, hidden)`` builds one from a spec string such as ``banded:width=5``.
"""

from __future__ import annotations

import importlib

from connbench.nn.structures.base import (
    REGISTRY,
    Structure,
    canonical,
    check,
    make,
    names,
    register_structure,
)

# The shipped families, imported in this order: registry order is the order of the
# listings, the sweeps and the figures.
FAMILIES = ("dense", "elementwise", "block", "butterfly", "sparse", "lowrank")
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")

from connbench.nn.structures.block import BlockShuffleStructure, BlockStructure
from connbench.nn.structures.butterfly import ButterflyStructure
from connbench.nn.structures.dense import FullStructure, NoneStructure
from connbench.nn.structures.elementwise import (
    BandedStructure,
    DiagonalStructure,
    JordanStructure,
    ShiftedProducts,
)
from connbench.nn.structures.lowrank import LowRankStructure
from connbench.nn.structures.sparse import RandomStructure

__all__ = [
    "REGISTRY", "Structure", "canonical", "check", "make", "names", "register_structure",
    "BlockStructure", "BlockShuffleStructure", "ButterflyStructure", "FullStructure",
    "LowRankStructure", "NoneStructure", "BandedStructure", "DiagonalStructure",
    "JordanStructure", "ShiftedProducts", "RandomStructure",
]
