"""Recurrent structure structures: the W_hh of an RNN, computed with its structure.

Every structure is a ``Structure`` module that maps h (B, H) to h·W (B, gates·H),
where W is (H, gates·H): one H×H block per gate, each with the same structure. The
fast path uses the structure (elementwise products, shifted products, batched block
matmuls, sparse kernels); ``dense()`` builds the matrix W independently and is the
reference the tests compare against.

Initialisation ("default"): every stored weight is uniform in ±1/√fan_in, where
fan_in is the number of nonzeros feeding one output unit. For ``full`` this is
exactly ``torch.nn.RNN``'s rule, and for every structure it keeps the spectral radius
of W near 1/√3, so the recurrence is stable at t = 0. Exceptions, documented on the
classes: ``lowrank`` matches the per-entry variance of ``full``, and ``butterfly``
uses scaled 2×2 rotations whose product is (1/√3)·orthogonal. ``init=uniform`` makes
every stored weight uniform in [−1, 1) (Trask's binary-addition demo).

Time-loop hooks: a cell keeps its state in the structure's preferred layout for the
whole sequence (block-diagonal structures use (G, B, H/G), so that ``bmm`` gets
contiguous operands: a permuted operand makes bmm fall back to a matmul per entry).
``to_state``/``from_state`` convert (…, B, H) tensors, ``to_gates``/``from_gates``
convert (…, B, gates·H) tensors, and in every layout the gates are the chunks of the
last dimension. ``stepper()`` is called once per sequence (it may precompute factors
from the weights) and returns ``step(h, u)`` = u + h·W in gate layout (u may be None).

The smallest structure (a plugin's, say) is ``__init__`` creating its parameters and
``dense()``: the forward pass, the stepper, the accounting and the mask all default to
the dense matrix. A shipped structure overrides the stepper with its fast path and
counts itself analytically (``effective_params``, ``flops``), so that counting never
builds an H×H tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from connbench.nn.kernels.fused import MatrixPlan
from connbench.registry import Option, Registry, SpecError, format_spec

REGISTRY = Registry("structure")

_INIT = Option("init", str, "default", "weight initialisation", ("default", "uniform"))

Step = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def register_structure(name: str, description: str, options: Iterable[Option] = (), *,
                       example: str | None = None, size: int = 16, color: str | None = None,
                       marker: str | None = None) -> Callable[[type], type]:
    """Class decorator: register a ``Structure`` subclass under ``name``.

    Every structure takes the ``init`` option (the model-wide initialisation), added
    here when ``options`` do not name it. ``example`` and ``size`` are what the
    contract tests, ``connbench check`` and the benchmarks build (example default: the
    bare name, which must be valid at ``size``); ``color``/``marker`` its plot style.
    """
    options = list(options)
    if not any(o.name == "init" for o in options):
        options.append(_INIT)
    return REGISTRY.register_class(name, description, Structure, options, example=example,
                                   size=size, color=color, marker=marker)


def names() -> list[str]:
    """Names of all registered structures."""
    return REGISTRY.names()


def canonical(spec: str) -> str:
    """The spec with every option spelled out (stable key for cell ids)."""
    return REGISTRY.canonical(spec)


def check(spec: str, hidden: int, gates: int = 1) -> None:
    """Raise SpecError if ``spec`` cannot be built at this hidden size. Cheap."""
    entry, opts = REGISTRY.parse(spec)
    _check_hidden(hidden)
    entry.obj.validate(hidden, gates=gates, **_without_init(opts))


def make(spec: str, hidden: int, gates: int = 1, **overrides) -> Structure:
    """Build the structure named by ``spec`` for hidden size ``hidden``.

    ``overrides`` take precedence over options in the spec, e.g.
    ``make("banded", 64, width=5)`` or ``make("full", 16, init="uniform")``.
    """
    entry, opts = REGISTRY.parse(spec, **overrides)
    _check_hidden(hidden)
    if not isinstance(gates, int) or gates < 1:
        raise SpecError(f"gates={gates!r} must be a positive integer")
    init = opts.pop("init", "default")
    entry.obj.validate(hidden, gates=gates, **opts)
    module = entry.obj(hidden, gates=gates, init=init, **opts)
    module.spec = format_spec(entry.name, {**opts, "init": init})
    return module


def _check_hidden(hidden: int) -> None:
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise SpecError(f"hidden={hidden!r} must be a positive integer")


def _without_init(opts: dict) -> dict:
    return {k: v for k, v in opts.items() if k != "init"}


def _uniform_(t: torch.Tensor, bound: float) -> torch.Tensor:
    with torch.no_grad():
        return t.uniform_(-bound, bound)


class Structure(nn.Module):
    """Base class: h (B, H) → h·W (B, gates·H), computed with the structure."""

    version = 1
    name = "?"  # set by register_structure
    fast_tanh = True  # cells may use tanh via sigmoid (connbench.nn.kernels.activations.tanh)

    def __init__(self, hidden: int, gates: int = 1, init: str = "default", **options):
        super().__init__()
        self.hidden = hidden
        self.gates = gates
        self.init = init
        self.options = options  # the registered options, typed (for repr and plugins)
        self.spec = self.name

    @classmethod
    def validate(cls, hidden: int, gates: int = 1, **opts) -> None:
        """Raise SpecError when the options cannot work at this hidden size."""

    # -- accounting ---------------------------------------------------------------
    @property
    def stored_params(self) -> int:
        """Trainable numbers this structure keeps."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def effective_params(self) -> int:
        """Nonzeros (structural) of the (H, gates·H) matrix it acts as."""
        return int(self.mask().sum())

    def flops(self, batch: int) -> float:
        """FLOPs of one step h·W for a batch (2 per multiply-add of the kernel)."""
        return 2.0 * batch * self.effective_params

    def mask(self) -> torch.Tensor:
        """Structural nonzero pattern of ``dense()`` as a bool (H, gates·H) tensor."""
        return self.dense().detach() != 0

    def dense(self) -> torch.Tensor:
        """The (H, gates·H) matrix this structure acts as (the reference path)."""
        raise NotImplementedError(f"{type(self).__name__} must implement dense()")

    # -- layout hooks ---------------------------------------------------------------
    def to_state(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def from_state(self, s: torch.Tensor) -> torch.Tensor:
        return s

    def to_gates(self, u: torch.Tensor) -> torch.Tensor:
        return u

    def from_gates(self, p: torch.Tensor) -> torch.Tensor:
        return p

    def steps_as_rows(self, s: torch.Tensor, gates: bool = False) -> torch.Tensor:
        """Steps (T, …) of states (or ``gates``) in this layout as one layout whose
        batch is T·B: what one batched step over a whole sequence takes. Here through
        the plain (B, k) layout, which costs nothing for a plain layout; layouts that
        put the batch elsewhere override it with one copy."""
        to, back = (self.to_gates, self.from_gates) if gates else (self.to_state, self.from_state)
        plain = back(s)
        return to(plain.reshape(-1, plain.shape[-1]))

    def stepper(self) -> Step:
        """Return ``step(h, u)`` = u + h·W in gate layout; call once per sequence.

        Default: the dense matrix, formed once per sequence (gradients reach the
        parameters through ``dense()``). Fast structures override this.
        """
        return _dense_stepper(self.dense())

    def fused_plan(self):
        """What the fused whole-sequence kernels need, or None to stay eager.

        An ``ElementwisePlan`` or a ``MatrixPlan`` (connbench.nn.kernels.fused); the
        structure decides, the kernel module never inspects the class.
        """
        return None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.from_gates(self.stepper()(self.to_state(h), None))

    def extra_repr(self) -> str:
        return f"{self.spec}, hidden={self.hidden}, gates={self.gates}"


class DenseMask:
    """For structures whose every entry may be nonzero (full, butterfly, lowrank)."""

    def mask(self) -> torch.Tensor:
        return torch.ones(self.hidden, self.gates * self.hidden, dtype=torch.bool)

    @property
    def effective_params(self) -> int:
        return self.gates * self.hidden * self.hidden


def _per_gate_blocks(blocks: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(blocks, dim=1)


def _dense_plan(wt: torch.Tensor) -> MatrixPlan:
    """Plan for h·W with W given as Wᵀ (gates·H, H), the (out, in) storage."""
    wt = wt.detach()
    return MatrixPlan("dense", (wt.t(),), (wt.contiguous(),))


def _dense_stepper(w: torch.Tensor) -> Step:
    def step(h, u):
        return h.mm(w) if u is None else torch.addmm(u, h, w)

    return step


