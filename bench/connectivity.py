"""Recurrent connectivity structures: the W_hh of an RNN, computed with its structure.

Every structure is a ``Recurrence`` module that maps h (B, H) to h·W (B, gates·H),
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
contiguous operands; see PERF_NOTES pitfall 2). ``to_state``/``from_state`` convert
(…, B, H) tensors, ``to_gates``/``from_gates`` convert (…, B, gates·H) tensors, and in
every layout the gates are the chunks of the last dimension. ``stepper()`` is called
once per sequence (it may precompute factors from the weights) and returns
``step(h, u)`` = u + h·W in gate layout (u may be None).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench.registry import Option, Registry, SpecError, format_spec

REGISTRY = Registry("connectivity")

_INIT = Option("init", str, "default", "weight initialisation", ("default", "uniform"))

Step = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


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


def make(spec: str, hidden: int, gates: int = 1, **overrides) -> Recurrence:
    """Build the structure named by ``spec`` for hidden size ``hidden``.

    ``overrides`` take precedence over options in the spec, e.g.
    ``make("banded", 64, width=5)`` or ``make("full", 16, init="uniform")``.
    """
    entry, opts = REGISTRY.parse(spec, **overrides)
    _check_hidden(hidden)
    if not isinstance(gates, int) or gates < 1:
        raise SpecError(f"gates={gates!r} must be a positive integer")
    init = opts.pop("init")
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


class Recurrence(nn.Module):
    """Base class: h (B, H) → h·W (B, gates·H), computed with the structure."""

    version = 1
    name = "?"
    fast_tanh = True  # cells may use tanh via sigmoid (bench.cells.tanh); see there

    def __init__(self, hidden: int, gates: int = 1, init: str = "default"):
        super().__init__()
        self.hidden = hidden
        self.gates = gates
        self.init = init
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
        raise NotImplementedError  # every registered structure overrides this

    # -- layout hooks ---------------------------------------------------------------
    def to_state(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def from_state(self, s: torch.Tensor) -> torch.Tensor:
        return s

    def to_gates(self, u: torch.Tensor) -> torch.Tensor:
        return u

    def from_gates(self, p: torch.Tensor) -> torch.Tensor:
        return p

    def stepper(self) -> Step:
        """Return ``step(h, u)`` = u + h·W in gate layout; call once per sequence."""
        raise NotImplementedError  # every registered structure overrides this

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.from_gates(self.stepper()(self.to_state(h), None))

    def extra_repr(self) -> str:
        return f"{self.spec}, hidden={self.hidden}, gates={self.gates}"


class _PermuteContiguous(torch.autograd.Function):
    """``x.permute(dims).contiguous()`` whose gradient is contiguous too.

    Plain autograd hands ``bmm``'s backward a permuted, non-contiguous gradient, and
    bmm then falls back to one small matmul per batch entry with a clone each
    (PERF_NOTES pitfall 2; ~4x slower butterfly backward here).
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


def _per_gate_blocks(blocks: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(blocks, dim=1)


# --------------------------------------------------------------------------------------
@REGISTRY.register("full", "dense H×H recurrent matrix (the usual RNN)", [_INIT])
class FullRecurrence(Recurrence):
    """Dense W, stored (out, in) like torch (10–20 % faster addmm, PERF_NOTES 8)."""

    name = "full"
    fast_tanh = False  # GEMM-bound: the plain torch.tanh is faster here

    def __init__(self, hidden, gates=1, init="default"):
        super().__init__(hidden, gates, init)
        self.weight = nn.Parameter(torch.empty(gates * hidden, hidden))
        _uniform_(self.weight, 1.0 if init == "uniform" else 1.0 / math.sqrt(hidden))

    def dense(self):
        return self.weight.t()

    def mask(self):
        return torch.ones(self.hidden, self.gates * self.hidden, dtype=torch.bool)

    def stepper(self):
        wt = self.weight.t()

        def step(h, u):
            return h.mm(wt) if u is None else torch.addmm(u, h, wt)

        return step


@REGISTRY.register("none", "no recurrence (W = 0): what memory is worth", [_INIT])
class NoRecurrence(Recurrence):
    name = "none"

    def __init__(self, hidden, gates=1, init="default"):
        super().__init__(hidden, gates, init)
        # no weights: this empty buffer only tracks the module's dtype and device
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    def dense(self):
        return self.anchor.new_zeros(self.hidden, self.gates * self.hidden)

    def mask(self):
        return torch.zeros(self.hidden, self.gates * self.hidden, dtype=torch.bool)

    def flops(self, batch):
        return 0.0

    def stepper(self):
        width = self.gates * self.hidden

        def step(h, u):
            return u if u is not None else h.new_zeros(h.shape[0], width)

        return step


@REGISTRY.register("diagonal", "each unit sees only itself (IndRNN)", [_INIT])
class DiagonalRecurrence(Recurrence):
    """W = diag(d) per gate. Default init uniform ±1 (fan_in 1)."""

    name = "diagonal"

    def __init__(self, hidden, gates=1, init="default"):
        super().__init__(hidden, gates, init)
        self.weight = nn.Parameter(torch.empty(gates, hidden))
        _uniform_(self.weight, 1.0)

    def dense(self):
        return _per_gate_blocks([torch.diag(w) for w in self.weight])

    def mask(self):
        return _per_gate_blocks([torch.eye(self.hidden, dtype=torch.bool)] * self.gates)

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


class ShiftedProducts(Recurrence):
    """W[j+o, j] = w[o, j] for a fixed set of offsets o (a band, or Jordan's diagonals).

    The step is a sum of shifted products over a zero-padded copy of h: one pad and
    one addcmul per offset. Entries whose row j+o falls outside [0, H) do not exist
    (non-cyclic), and are not stored: the stored vector is scattered into a padded
    (offsets, gates, H) table once per sequence, so no wrap-around weight can get a
    gradient (PERF_NOTES pitfall 7).
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


@REGISTRY.register(
    "banded",
    "units see neighbours within a band |i−j| ≤ width//2",
    [
        Option("width", int, 3, "band width (odd)"),
        Option("cyclic", bool, False, "wrap the band around the ends"),
        _INIT,
    ],
)
class BandedRecurrence(ShiftedProducts):
    """Band of odd ``width`` (Stack Exchange experiment 3 used width 3)."""

    name = "banded"

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


@REGISTRY.register("jordan", "diagonal + superdiagonal (Jordan canonical form)", [_INIT])
class JordanRecurrence(ShiftedProducts):
    """W[i, i] and W[i, i+1]: 2H−1 weights per gate."""

    name = "jordan"

    def __init__(self, hidden, gates=1, init="default"):
        super().__init__(hidden, gates, init, (0, -1), cyclic=False)


# --------------------------------------------------------------------------------------
class BlockLayout(Recurrence):
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


def _check_groups(name: str, hidden: int, groups: int) -> None:
    if groups < 1 or hidden % groups:
        divisors = [d for d in range(1, hidden + 1) if hidden % d == 0]
        shown = ", ".join(map(str, divisors[:12])) + (" …" if len(divisors) > 12 else "")
        raise SpecError(
            f"{name}: groups={groups} must divide hidden={hidden}; allowed: {shown}"
        )


_GROUPS = Option("groups", int, 4, "number of independent blocks (must divide H)")


@REGISTRY.register("block", "block-diagonal: G independent blocks of size H/G", [_GROUPS, _INIT])
class BlockRecurrence(BlockLayout):
    """Block-diagonal W (independent groups, 1905.12340; G-LSTM)."""

    name = "block"

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

    def mask(self):
        n = self.hidden // self.groups
        one = torch.block_diag(*[torch.ones(n, n, dtype=torch.bool)] * self.groups)
        return _per_gate_blocks([one] * self.gates)

    def stepper(self):
        w = self.weight

        def step(h, u):
            return torch.bmm(h, w) if u is None else torch.baddbmm(u, h, w)

        return step


@REGISTRY.register(
    "block_shuffle", "G blocks, then a fixed channel shuffle that mixes groups over time",
    [_GROUPS, _INIT],
)
class BlockShuffleRecurrence(BlockRecurrence):
    """Blocks followed by ShuffleNet's channel shuffle of each gate's outputs.

    Output channel k takes block output g·n + i where k = i·G + g, so after one step
    every group feeds every other group.
    """

    name = "block_shuffle"
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


# --------------------------------------------------------------------------------------
def _apply_stage(x: torch.Tensor, params: torch.Tensor, s: int) -> torch.Tensor:
    """Apply butterfly stage ``s`` to row vectors x (gates, R, H): pairs (i, i + 2^s).

    ``params`` (gates, H/2, 2, 2): for pair p, y_pair = x_pair @ params[p].
    """
    H = x.shape[-1]
    stride = 1 << s
    xs = x.unflatten(-1, (H // (2 * stride), 2, stride))  # (gates, R, q, t, r)
    m = params.unflatten(-3, (H // (2 * stride), stride)).unsqueeze(1)  # (gates, 1, q, r, t, u)
    return torch.einsum("...qtr,...qrtu->...qur", xs, m).flatten(-3)


@REGISTRY.register(
    "butterfly", "log2(H) stages of learned 2×2 mixes in Walsh–Hadamard order (H = 2^k)",
    [_INIT],
)
class ButterflyRecurrence(BlockLayout):
    """Stage s mixes units i and i + 2^s with a learned 2×2 per pair, s = 0 … log2 H − 1.

    After log2 H stages every unit reaches every other. The fast path uses the exact
    "Monarch" refactoring (PERF_NOTES pitfall 4): the low-bit stages multiply to a
    block-diagonal matrix with contiguous √H-sized blocks, the high-bit stages to one
    with strided blocks; both factors are formed once per sequence and each step is
    two ``bmm``s. ``dense()`` applies the stages literally to the identity.

    Below ``factored_min_hidden`` the two small ``bmm``s and their reshuffles cost more
    than one dense product (measured: 0.5× of ``full`` at H = 128, parity at 512), so
    there the step multiplies by the exact product matrix, formed once per sequence.

    Init: each 2×2 is ρ·rotation(θ), θ uniform, ρ = 3^(−1/(2·log2 H)), so the product
    is (1/√3)·orthogonal, the same spectral radius as ``full``'s default.
    """

    name = "butterfly"
    version = 2  # 2: contiguous permutes; dense product below factored_min_hidden
    factored_min_hidden = 512

    def __init__(self, hidden, gates=1, init="default"):
        super().__init__(hidden, gates, init)
        self.stages = m = hidden.bit_length() - 1
        self.low = m // 2
        self.nlow, self.nhigh = 1 << self.low, 1 << (m - self.low)
        self.factored = hidden >= self.factored_min_hidden
        self.layout_groups = self.nhigh if self.factored else 1
        self.weight = nn.Parameter(torch.empty(m, gates, hidden // 2, 2, 2))
        with torch.no_grad():
            if init == "uniform":
                self.weight.uniform_(-1.0, 1.0)
            else:
                theta = torch.rand(m, gates, hidden // 2) * (2 * math.pi)
                rho = 3.0 ** (-1.0 / (2 * max(m, 1)))
                c, s = torch.cos(theta) * rho, torch.sin(theta) * rho
                self.weight.copy_(torch.stack([torch.stack([c, s], -1),
                                               torch.stack([-s, c], -1)], -2))

    @classmethod
    def validate(cls, hidden, gates=1):
        if hidden < 2 or hidden & (hidden - 1):
            lo = 1 << max(1, hidden.bit_length() - 1)
            raise SpecError(
                f"butterfly: hidden={hidden} must be a power of two >= 2 "
                f"(nearest: {lo} or {lo * 2})"
            )

    # the plain (B, H) layout when the dense product is used
    def to_state(self, x):
        return super().to_state(x) if self.factored else x

    def from_state(self, s):
        return super().from_state(s) if self.factored else s

    def to_gates(self, u):
        return super().to_gates(u) if self.factored else u

    def from_gates(self, p):
        return super().from_gates(p) if self.factored else p

    def dense(self):
        H = self.hidden
        x = torch.eye(H, dtype=self.weight.dtype, device=self.weight.device)
        x = x.expand(self.gates, H, H)
        for s in range(self.stages):
            x = _apply_stage(x, self.weight[s], s)
        return _per_gate_blocks(list(x))

    def mask(self):
        return torch.ones(self.hidden, self.gates * self.hidden, dtype=torch.bool)

    def flops(self, batch):
        if not self.factored:
            return 2.0 * batch * self.gates * self.hidden * self.hidden
        return 2.0 * batch * self.gates * self.hidden * (self.nlow + self.nhigh)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Monarch factors: W1 (nhigh, nlow, gates·nlow), W2 (gates·nlow, nhigh, nhigh)."""
        H, G, nl, nh = self.hidden, self.gates, self.nlow, self.nhigh
        eye = torch.eye(nl, dtype=self.weight.dtype, device=self.weight.device)
        r1 = eye.repeat(1, nh).expand(G, nl, H)  # row lo' = Σ_hi e(hi·nl + lo')
        for s in range(self.low):
            r1 = _apply_stage(r1, self.weight[s], s)
        # r1[c, lo', hi·nl + lo] = block hi of gate c, entry (lo', lo)
        w1 = r1.unflatten(-1, (nh, nl)).permute(2, 1, 0, 3).reshape(nh, nl, G * nl)
        eye_h = torch.eye(nh, dtype=self.weight.dtype, device=self.weight.device)
        r2 = eye_h.repeat_interleave(nl, dim=1).expand(G, nh, H)  # row hi' = Σ_lo e(hi'·nl+lo)
        for s in range(self.low, self.stages):
            r2 = _apply_stage(r2, self.weight[s], s)
        # r2[c, hi', hi·nl + lo] = strided block lo of gate c, entry (hi', hi)
        w2 = r2.unflatten(-1, (nh, nl)).permute(0, 3, 1, 2).reshape(G * nl, nh, nh)
        return w1.contiguous(), w2.contiguous()

    def stepper(self):
        if not self.factored:
            # stored (out, in) like full's weight: addmm is 10-20 % faster that way
            return _dense_stepper(self.dense().t().contiguous().t())
        w1, w2 = self.factors()
        G, nl, nh = self.gates, self.nlow, self.nhigh

        def step(h, u):
            B = h.shape[1]
            y1 = torch.bmm(h, w1)  # (nh, B, G·nl)
            y1 = permute_contiguous(y1.view(nh, B, G, nl), (2, 3, 1, 0)).view(G * nl, B, nh)
            z = torch.bmm(y1, w2)  # (G·nl, B, nh)
            z = permute_contiguous(z.view(G, nl, B, nh), (3, 2, 0, 1)).view(nh, B, G * nl)
            return z if u is None else torch.add(u, z)

        return step


# --------------------------------------------------------------------------------------
class _CSRMatmul(torch.autograd.Function):
    """y = h·W for a fixed sparsity pattern, with a hand-written backward.

    torch.sparse's own autograd backward is 2–4× slower than dense (PERF_NOTES 3);
    here grad_h goes through the transposed CSR and grad of the stored values is a
    sampled dense-dense product (SDDMM) over the nonzeros only.
    """

    @staticmethod
    def forward(ctx, h, values, kernel):
        ctx.save_for_backward(h)
        ctx.kernel = kernel
        # sparse @ dense runs ~2x faster with a contiguous dense operand
        return torch.sparse.mm(kernel.wt, h.t().contiguous()).t()

    @staticmethod
    def backward(ctx, grad_y):
        (h,) = ctx.saved_tensors
        k = ctx.kernel
        grad_h = grad_values = None
        grad_y = grad_y.contiguous()
        if ctx.needs_input_grad[0]:
            grad_h = torch.sparse.mm(k.w, grad_y.t().contiguous()).t()
        if ctx.needs_input_grad[1]:
            sampled = torch.sparse.sampled_addmm(k.pattern, grad_y.t().contiguous(), h, beta=0.0)
            grad_values = sampled.values()
        return grad_h, grad_values, None


class _CSRKernel:
    """The per-sequence CSR tensors of a RandomRecurrence (W^T and W)."""

    def __init__(self, rec: RandomRecurrence):
        v = rec.weight.detach()
        size_t = (rec.gates * rec.hidden, rec.hidden)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self.wt = _csr(rec.crow_t, rec.col_t, v, size_t)
            self.pattern = _csr(rec.crow_t, rec.col_t, torch.zeros_like(v), size_t)
            self.w = _csr(rec.crow, rec.col, v[rec.to_w_order], size_t[::-1])


def _csr(crow, col, values, size):
    return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


@REGISTRY.register(
    "random", "fixed random sparsity mask of the given density (seeded)",
    [
        Option("density", float, 0.1, "fraction of nonzero entries, in (0, 1]"),
        Option("seed", int, 0, "seed of the mask"),
        _INIT,
    ],
)
class RandomRecurrence(Recurrence):
    """Unstructured sparse W with a fixed seeded mask; stores only the nonzeros.

    From H ≥ ``csr_min_hidden`` the step is a CSR kernel with a custom backward; below
    it the masked dense matrix, materialised once per sequence (not per step), is
    faster because sparse kernels are overhead-bound at small sizes.
    """

    name = "random"
    csr_min_hidden = 512

    def __init__(self, hidden, gates=1, init="default", density=0.1, seed=0):
        super().__init__(hidden, gates, init)
        self.density, self.seed = density, seed
        gen = torch.Generator().manual_seed(seed)
        mask_t = torch.rand(gates * hidden, hidden, generator=gen) < density  # (out, in)
        rows_t, cols_t = mask_t.nonzero(as_tuple=True)  # row-major = CSR order of W^T
        self.register_buffer("rows_t", rows_t, persistent=False)
        self.register_buffer("cols_t", cols_t, persistent=False)
        self.register_buffer("crow_t", _crow(rows_t, gates * hidden), persistent=False)
        self.register_buffer("col_t", cols_t.clone(), persistent=False)
        # the same entries in CSR order of W (in, out)
        order = torch.argsort(cols_t * (gates * hidden) + rows_t)
        self.register_buffer("to_w_order", order, persistent=False)
        self.register_buffer("crow", _crow(cols_t[order], hidden), persistent=False)
        self.register_buffer("col", rows_t[order].clone(), persistent=False)
        self.weight = nn.Parameter(torch.empty(rows_t.numel()))
        fan_in = max(1.0, density * hidden)
        _uniform_(self.weight, 1.0 if init == "uniform" else 1.0 / math.sqrt(fan_in))

    @classmethod
    def validate(cls, hidden, gates=1, density=0.1, seed=0):
        if not (0.0 < density <= 1.0) or math.isnan(density):
            raise SpecError(f"random: density={density} must be in (0, 1]")

    @property
    def effective_params(self):
        return self.weight.numel()

    def dense(self):
        H = self.hidden
        wt = torch.zeros(self.gates * H, H, dtype=self.weight.dtype, device=self.weight.device)
        return wt.index_put((self.rows_t, self.cols_t), self.weight).t()

    def mask(self):
        m = torch.zeros(self.gates * self.hidden, self.hidden, dtype=torch.bool)
        m[self.rows_t, self.cols_t] = True
        return m.t()

    def stepper(self):
        if self.hidden < self.csr_min_hidden or self.weight.device.type != "cpu":
            return _dense_stepper(self.dense())
        kernel = _CSRKernel(self)
        values = self.weight

        def step(h, u):
            y = _CSRMatmul.apply(h, values, kernel)
            return y if u is None else torch.add(u, y)

        return step


def _crow(rows: torch.Tensor, nrows: int) -> torch.Tensor:
    counts = torch.bincount(rows, minlength=nrows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _dense_stepper(w: torch.Tensor) -> Step:
    def step(h, u):
        return h.mm(w) if u is None else torch.addmm(u, h, w)

    return step



@REGISTRY.register(
    "lowrank", "W = U·V of rank r (a factorisation control)",
    [Option("rank", int, 8, "rank r, in [1, H]"), _INIT],
)
class LowRankRecurrence(Recurrence):
    """W = U (H, r) · V (r, gates·H).

    Init: U and V uniform with the bound that gives W the per-entry variance of
    ``full``'s default (1/(3H)).
    """

    name = "lowrank"

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

    def mask(self):
        return torch.ones(self.hidden, self.gates * self.hidden, dtype=torch.bool)

    def flops(self, batch):
        return 2.0 * batch * self.rank * (self.hidden + self.gates * self.hidden)

    def stepper(self):
        U, V = self.u, self.v

        def step(h, u):
            return h.mm(U).mm(V) if u is None else torch.addmm(u, h.mm(U), V)

        return step
