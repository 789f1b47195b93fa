"""The recurrent matrices themselves, from the real structure modules.

This is the only part of the report that touches torch, and it does so lazily: a
results-only machine without torch still gets every other figure and claim.
"""

from __future__ import annotations

import numpy as np

MATRIX_HIDDEN = 32
MATRIX_SEED = 0  # fixed so that the drawn weights are the same on every rerun


class MatricesUnavailable(RuntimeError):
    """connbench.nn.structures (or torch) cannot be imported here."""


def _structures():
    try:
        from connbench.nn import structures
    except ImportError as exc:  # torch missing, or the module not written yet
        raise MatricesUnavailable(f"connbench.nn.structures is not importable ({exc})") from exc
    return structures


def dense_matrices(specs=None, hidden: int = MATRIX_HIDDEN) -> dict[str, dict]:
    """{spec: {"matrix": (H, H) ndarray, "stored": int, "spec": canonical}} for every spec
    the registry knows (default: each registered structure's example spec); specs it
    does not know are left out (an older checkout)."""
    structures = _structures()
    import torch

    known = set(structures.names())
    out = {}
    for spec in specs or [e.example for e in structures.REGISTRY.entries()]:
        if spec.split(":", 1)[0] not in known:
            continue
        torch.manual_seed(MATRIX_SEED)
        module = structures.make(spec, hidden)
        with torch.no_grad():
            dense = module.dense().detach().to(torch.float64).cpu().numpy()
        out[spec] = {
            "matrix": dense[:, :hidden],  # first gate only for gated layouts
            "stored": int(getattr(module, "stored_params", -1)),
            "spec": str(getattr(module, "spec", spec)),
        }
    return out


def reachability_stages(matrix: np.ndarray) -> int | None:
    """Smallest k such that every unit reaches every unit in k applications of W
    (the nonzero pattern of W^k is full); None if never. k = 1 means W itself is full."""
    pattern = (np.abs(matrix) > 0).astype(np.int64)
    n = pattern.shape[0]
    reach = pattern.copy()
    for k in range(1, n + 1):
        if reach.all():
            return k
        reach = ((reach @ pattern) > 0).astype(np.int64)
    return None
