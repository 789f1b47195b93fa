"""Every structured fast path against its dense reference: values and gradients.

The specs come from the registry (each entry's example spec), plus variants of the
shipped structures: a newly registered structure gets these tests with no edit here.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from connbench.nn import structures as C
from connbench.nn.contract import check_structure, compare_with_dense
from connbench.nn.structures.butterfly import _apply_stage as butterfly_apply_stage
from connbench.registry import SpecError

ENTRIES = C.REGISTRY.entries()
# Variants of shipped structures beyond their registered examples.
VARIANTS = ["banded:width=5", "banded:width=3,cyclic=true", "block:groups=4",
            "block_shuffle:groups=4", "block_shuffle:groups=2", "random:density=0.2,seed=1",
            "lowrank:rank=3"]
SPECS = [e.example for e in ENTRIES] + VARIANTS


def _check_against_dense(rec, batch=5, tol=1e-10):
    assert compare_with_dense(rec, batch, tol) == []


def _sizes(spec):
    """The contract size and its double and quadruple, where the spec is valid."""
    base = C.REGISTRY.get(spec.split(":")[0]).size
    out = []
    for h in (base // 2, base, base * 4):
        try:
            C.check(spec, h)
            out.append(h)
        except SpecError:
            pass
    return out


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_registered_structure_keeps_the_contract(entry):
    assert check_structure(entry.example, entry.size) == []


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("gates", [1, 3, 4])
def test_fast_path_matches_dense(spec, gates):
    sizes = _sizes(spec)
    assert sizes, f"{spec} is valid at no size around its registered size"
    for hidden in sizes:
        torch.manual_seed(hidden * 10 + gates)
        _check_against_dense(C.make(spec, hidden, gates=gates))


def test_shipped_structures_are_registered():
    assert {"full", "none", "diagonal", "banded", "jordan", "block", "block_shuffle",
            "butterfly", "random", "lowrank"} <= set(C.names())


def test_contract_names_what_differs():
    class Wrong(C.Structure):  # forward says diagonal, dense() says identity + weight
        def __init__(self, hidden, gates=1, **options):
            super().__init__(hidden, gates, **options)
            self.weight = torch.nn.Parameter(torch.ones(hidden))

        def dense(self):
            return torch.diag(self.weight).repeat(1, self.gates)

        def stepper(self):
            w = self.weight.repeat(self.gates)

            def step(h, u):
                y = 2 * h.repeat(1, self.gates) * w
                return y if u is None else u + y

            return step

    entry = C.register_structure("wrong_for_test", "test only")(Wrong)
    try:
        problems = check_structure("wrong_for_test", 8, cells=["rnn_tanh"])
    finally:
        C.REGISTRY._entries.pop("wrong_for_test")
    assert entry is Wrong
    assert any("forward differs from h @ dense()" in p for p in problems), problems
    assert any("gradient of weight differs" in p for p in problems), problems


def test_dense_only_structure_gets_every_default():
    class Ring(C.Structure):  # each unit sees its left neighbour: only __init__ and dense()
        def __init__(self, hidden, gates=1, **options):
            super().__init__(hidden, gates, **options)
            self.weight = torch.nn.Parameter(torch.randn(gates, hidden))

        def dense(self):
            eye = torch.eye(self.hidden).roll(1, dims=1)
            return torch.cat([eye * w for w in self.weight], dim=1)

    C.register_structure("ring_for_test", "test only")(Ring)
    try:
        rec = C.make("ring_for_test", 8, gates=2)
        assert rec.spec == "ring_for_test:init=default"
        assert rec.stored_params == 16 and rec.effective_params == 16
        assert rec.flops(3) == 2 * 3 * 16
        assert check_structure("ring_for_test", 8) == []
    finally:
        C.REGISTRY._entries.pop("ring_for_test")


@pytest.mark.parametrize("spec", ["full", "none", "diagonal", "banded:width=5", "jordan",
                                  "block:groups=8", "butterfly", "lowrank:rank=4"])
def test_counting_is_analytic(spec, monkeypatch):
    # counting a structure never builds its dense matrix (think H = 10^6)
    rec = C.make(spec, 64)
    expected = int(torch.count_nonzero(rec.mask()))
    monkeypatch.setattr(type(rec), "dense", lambda self: pytest.fail("dense() was built"))
    monkeypatch.setattr(type(rec), "mask", lambda self: pytest.fail("mask() was built"))
    assert rec.effective_params == expected
    rec.flops(2)


@pytest.mark.parametrize("gates", [1, 4])
def test_butterfly_factored_path_matches_dense(monkeypatch, gates):
    # the two-bmm (Monarch) path, forced at small sizes; H=2 and 8 have odd/even stages
    monkeypatch.setattr(C.ButterflyStructure, "factored_min_hidden", 1)
    for hidden in (2, 8, 16, 64):
        torch.manual_seed(hidden)
        rec = C.make("butterfly", hidden, gates=gates)
        assert rec.factored
        _check_against_dense(rec)


@pytest.mark.parametrize("gates", [1, 4])
def test_random_csr_kernel_matches_dense(monkeypatch, gates):
    # the CSR kernel with the hand-written backward, forced at a small size
    monkeypatch.setattr(C.RandomStructure, "csr_min_hidden", 1)
    torch.manual_seed(0)
    _check_against_dense(C.make("random:density=0.15,seed=4", 32, gates=gates))


def test_fast_path_float32_tolerance():
    for spec in SPECS:
        rec = C.make(spec, 128, gates=1)
        h = torch.randn(32, 128)
        torch.testing.assert_close(rec(h), h @ rec.dense(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", SPECS)
def test_effective_params_counts_nonzeros(spec):
    rec = C.make(spec, 16, gates=2)
    assert rec.effective_params == int(torch.count_nonzero(rec.dense()))
    assert torch.equal(rec.mask(), rec.dense() != 0)


@pytest.mark.parametrize("spec,expected", [
    ("full", lambda H: H * H),
    ("none", lambda H: 0),
    ("diagonal", lambda H: H),
    ("banded:width=3", lambda H: 3 * H - 2),
    ("banded:width=5", lambda H: 5 * H - 6),
    ("banded:width=3,cyclic=true", lambda H: 3 * H),
    ("jordan", lambda H: 2 * H - 1),
    ("block:groups=4", lambda H: H * H // 4),
    ("block_shuffle:groups=8", lambda H: H * H // 8),
    ("butterfly", lambda H: 2 * H * int(math.log2(H))),
    ("lowrank:rank=5", lambda H: 2 * 5 * H),
])
@pytest.mark.parametrize("hidden", [16, 64])
def test_stored_param_formulas(spec, expected, hidden):
    rec = C.make(spec, hidden)
    assert rec.stored_params == expected(hidden)
    assert rec.stored_params == sum(p.numel() for p in rec.parameters())
    # gates multiply the stored weights, except lowrank whose U is shared
    if not spec.startswith("lowrank"):
        assert C.make(spec, hidden, gates=3).stored_params == 3 * expected(hidden)


def test_random_density_and_seed():
    a = C.make("random:density=0.1,seed=3", 256)
    b = C.make("random:density=0.1,seed=3", 256)
    c = C.make("random:density=0.1,seed=4", 256)
    assert torch.equal(a.mask(), b.mask())
    assert not torch.equal(a.mask(), c.mask())
    assert abs(a.stored_params / 256**2 - 0.1) < 0.01


def test_butterfly_connects_everything_in_log2_stages():
    rec = C.make("butterfly", 32)
    assert torch.count_nonzero(rec.dense()) == 32 * 32
    # but fewer stages do not: the first 4 stages mix only within blocks of 16
    x = torch.eye(32).expand(1, 32, 32)
    for s in range(4):
        x = butterfly_apply_stage(x, rec.weight[s], s)
    assert torch.count_nonzero(x[0]) == 32 * 16


def test_banded_has_no_wraparound_and_structure():
    rec = C.make("banded:width=3", 8)
    d = rec.dense()
    assert d[0, 7] == 0 and d[7, 0] == 0
    i, j = torch.nonzero(d, as_tuple=True)
    assert ((i - j).abs() <= 1).all()
    cyc = C.make("banded:width=3,cyclic=true", 8).dense()
    assert cyc[0, 7] != 0 and cyc[7, 0] != 0


def test_jordan_is_diagonal_plus_superdiagonal():
    d = C.make("jordan", 6).dense()
    i, j = torch.nonzero(d, as_tuple=True)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == {(k, k) for k in range(6)} | {
        (k, k + 1) for k in range(5)}


def test_block_shuffle_mixes_groups_over_two_steps():
    rec = C.make("block_shuffle:groups=4", 16)
    one = rec.dense() != 0
    assert int(one.sum()) == 64
    two = (one.double() @ one.double()) != 0
    assert bool(two.all()), "after two steps every unit should reach every other"


@pytest.mark.parametrize("spec", [s for s in SPECS if s != "none"])
def test_default_init_is_stable(spec):
    torch.manual_seed(0)
    rho = torch.linalg.eigvals(C.make(spec, 64).dense().double()).abs().max().item()
    assert rho < 1.05, f"{spec}: spectral radius {rho:.2f} at init"


@pytest.mark.parametrize("spec", [s for s in SPECS if s != "none"])
def test_uniform_init_is_in_range(spec):
    rec = C.make(spec, 32, init="uniform")
    for p in rec.parameters():
        assert p.min() >= -1 and p.max() <= 1 and p.std() > 0.4
    assert rec.spec.endswith("init=uniform") or "init=uniform" in rec.spec


@pytest.mark.parametrize("spec,hidden,needle", [
    ("banded:width=4", 16, "width=4 must be an odd integer"),
    ("banded:width=0", 16, "width=0 must be an odd integer"),
    ("banded:width=33", 16, r"allowed: odd widths in \[1, 31\]"),
    ("banded:width=17,cyclic=true", 16, r"allowed: odd widths in \[1, 16\]"),
    ("block:groups=3", 16, "groups=3 must divide hidden=16; allowed: 1, 2, 4, 8, 16"),
    ("block_shuffle:groups=0", 16, "groups=0 must divide"),
    ("butterfly", 100, "hidden=100 must be a power of two >= 2 \\(nearest: 64 or 128\\)"),
    ("random:density=0", 16, r"density=0.0 must be in \(0, 1\]"),
    ("random:density=1.5", 16, r"density=1.5 must be in \(0, 1\]"),
    ("lowrank:rank=0", 16, r"rank=0 must be in \[1, hidden=16\]"),
    ("lowrank:rank=17", 16, r"rank=17 must be in \[1, hidden=16\]"),
    ("full", 0, "hidden=0 must be a positive integer"),
    ("ful", 16, "did you mean 'full'"),
    ("banded:widht=3", 16, "did you mean 'width'"),
])
def test_validation_errors(spec, hidden, needle):
    with pytest.raises(SpecError, match=needle):
        C.make(spec, hidden)
    with pytest.raises(SpecError, match=needle):
        C.check(spec, hidden)


def test_public_api():
    rec = C.make("banded", 32, width=5)
    assert rec.spec == "banded:cyclic=false,init=default,width=5"
    assert C.canonical("block:groups=8") == "block:groups=8,init=default"
    assert rec.flops(4) == 2 * 4 * rec.effective_params
    assert C.make("lowrank:rank=2", 8).flops(1) == 2 * 2 * 16


@settings(max_examples=25, deadline=None)
@given(
    spec=st.sampled_from(["diagonal", "banded", "jordan", "block", "block_shuffle", "butterfly",
                          "random", "lowrank", "full"]),
    log_h=st.integers(1, 6), gates=st.integers(1, 4), batch=st.integers(1, 4),
    width=st.sampled_from([1, 3, 5, 7]), cyclic=st.booleans(), seed=st.integers(0, 50),
)
def test_property_fast_equals_dense(spec, log_h, gates, batch, width, cyclic, seed):
    H = 1 << log_h
    torch.manual_seed(seed)
    opts = {"banded": f"banded:width={width},cyclic={cyclic}",
            "block": f"block:groups={min(4, H)}",
            "block_shuffle": f"block_shuffle:groups={min(2, H)}",
            "random": f"random:density=0.3,seed={seed}", "lowrank": f"lowrank:rank={min(2, H)}"}
    s = opts.get(spec, spec)
    try:
        C.check(s, H)
    except SpecError:
        return  # e.g. a band wider than a tiny H: covered by the validation tests
    _check_against_dense(C.make(s, H, gates=gates), batch=batch)
