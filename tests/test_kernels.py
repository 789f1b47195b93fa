"""Fused C++ kernels against the eager reference: values and every gradient.

Parametrised over the structure registry and the cell registry, so a new structure or
cell is covered without editing this file. A structure whose ``fused_plan()`` is None
runs eager on both sides; the test then checks that it really did.
"""

import warnings

import pytest
import torch

from connbench.nn import cells, structures
from connbench.nn.kernels import build, fused
from connbench.nn.model import SequenceModel

# every registered structure with its default options, plus the variants whose code
# paths differ (cyclic wrap, wider bands, more gates per block)
VARIANTS = {"banded": ["banded:width=5,cyclic=true", "banded:width=7"],
            "block": ["block:groups=2"]}
SPECS = [s for name in structures.names() for s in [name, *VARIANTS.get(name, [])]]
CELLS = cells.CELLS.names()


def grads_of(layer, x, implementation, seed=0):
    layer.implementation = implementation
    params = [x, *layer.parameters()]
    out, last = layer(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    grads = torch.autograd.grad(out, params, g)
    names = ["input", *(n for n, _ in layer.named_parameters())]
    return out, last, dict(zip(names, grads, strict=True))


def ran_kernel(out, depth=6):
    """Whether a fused kernel's autograd node is among the last few that made ``out``
    (layout conversions such as block's (G, B, n) → (B, H) sit after it)."""
    frontier = [out.grad_fn]
    for _ in range(depth):
        if any(f is not None and "Sequence" in type(f).__name__ for f in frontier):
            return True
        frontier = [n for f in frontier if f is not None for n, _ in f.next_functions]
    return False


def assert_close_rel(a, b, rtol, what):
    """|a − b| <= rtol · max|b| (relative to the tensor's scale, so sums over time of
    large and small terms are judged alike)."""
    a, b = a.detach(), b.detach()
    scale = float(b.abs().max()) if b.numel() else 0.0
    err = float((a - b).abs().max()) if b.numel() else 0.0
    assert err <= rtol * max(scale, 1e-6), (
        f"{what}: fused differs from eager by {err:.3g} (max |eager| {scale:.3g}); "
        f"allowed {rtol:g} relative")


def compare(cell, spec, hidden, T, B, dtype=torch.float32, rtol=1e-5, x_transform=None,
            features=3):
    torch.manual_seed(1)
    if not _buildable(spec, hidden):
        pytest.skip(f"{spec} cannot be built at H={hidden}")
    layer = cells.make(cell, features, hidden, spec).to(dtype)
    x = torch.randn(T, B, features, dtype=dtype)
    if x_transform is not None:
        x = x_transform(x)
    x.requires_grad_(True)
    out, last, grads = grads_of(layer, x, "fused")
    uses_kernel = ran_kernel(out)
    assert uses_kernel == (layer.rec.fused_plan() is not None), (
        f"{spec}/{cell}: fused_plan() is {layer.rec.fused_plan()!r} but the kernel "
        f"{'ran' if uses_kernel else 'did not run'}")
    out_ref, last_ref, grads_ref = grads_of(layer, x, "eager")
    where = f"{cell} {spec} H={hidden} T={T} B={B} {dtype}"
    assert_close_rel(out, out_ref, rtol, f"{where}: outputs")
    assert_close_rel(last, last_ref, rtol, f"{where}: last state")
    for name in grads_ref:
        assert_close_rel(grads[name], grads_ref[name], rtol, f"{where}: grad of {name}")


def _buildable(spec, hidden):
    try:
        structures.check(spec, hidden)
    except structures.base.SpecError:
        return False
    return True


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("cell", CELLS)
def test_fused_equals_eager(cell, spec):
    compare(cell, spec, hidden=8, T=6, B=5)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("cell", CELLS)
def test_fused_equals_eager_wide_input(cell, spec):
    # above PROJECT_IN_KERNEL features the input is projected by one matmul before the
    # kernel (the path below it projects row by row inside the kernel)
    compare(cell, spec, hidden=8, T=5, B=3, features=fused.PROJECT_IN_KERNEL + 1)


@pytest.mark.parametrize("features,inside", [(1, True), (fused.PROJECT_IN_KERNEL, True),
                                             (fused.PROJECT_IN_KERNEL + 1, False)])
def test_which_inputs_the_kernel_projects(features, inside):
    layer = cells.make("rnn_tanh", features, 8, "diagonal")
    assert fused.projects_in_kernel(layer, layer.rec.fused_plan()) is inside
    vocab = cells.make("rnn_tanh", features, 8, "diagonal", vocab=True)
    assert not fused.projects_in_kernel(vocab, vocab.rec.fused_plan())  # a lookup, not a matmul
    full = cells.make("rnn_tanh", features, 8, "full")
    assert fused.projects_in_kernel(full, full.rec.fused_plan()) is inside
    block = cells.make("rnn_tanh", features, 8, "block:groups=2")  # (G, B, n) layout
    assert not fused.projects_in_kernel(block, block.rec.fused_plan())


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm"])
def test_fused_equals_eager_large_hidden(cell, spec):
    # H=512: butterfly's two-factor Monarch product and random's CSR path switch on here
    compare(cell, spec, hidden=512, T=4, B=3)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("cell", CELLS)
def test_inference_without_grad_equals_eager(cell, spec):
    """Under no_grad, or with nothing requiring grad, the kernels keep no gates or cell
    states for a backward (rolling buffers instead): same outputs as the eager loop."""
    if not _buildable(spec, 8):
        pytest.skip(f"{spec} cannot be built at H=8")
    torch.manual_seed(2)
    layer = cells.make(cell, 3, 8, spec)
    x = torch.randn(7, 4, 3)
    with torch.no_grad():
        layer.implementation = "eager"
        ref, ref_last = layer(x)
        layer.implementation = "fused"
        out, last = layer(x)
    assert_close_rel(out, ref, 1e-5, f"{cell} {spec} no_grad: outputs")
    assert_close_rel(last, ref_last, 1e-5, f"{cell} {spec} no_grad: last state")
    layer.requires_grad_(False)  # grad mode on, but nothing to differentiate
    frozen, _ = layer(x)
    assert not frozen.requires_grad
    assert_close_rel(frozen, ref, 1e-5, f"{cell} {spec} frozen: outputs")


@pytest.mark.parametrize("spec", ["full", "diagonal", "banded:width=3", "block:groups=3",
                                  "lowrank:rank=2", "banded:width=3,cyclic=true"])
@pytest.mark.parametrize("T,B,H", [(1, 1, 6), (7, 1, 9), (1, 3, 6)])
def test_odd_sizes_single_step_single_row(spec, T, B, H):
    for cell in ("rnn_tanh", "gru", "lstm"):
        compare(cell, spec, hidden=H, T=T, B=B)


@pytest.mark.parametrize("spec", ["full", "diagonal", "block:groups=2"])
def test_non_contiguous_input(spec):
    # (B, T, F) memory read time-major: every time slice is strided
    compare("gru", spec, hidden=8, T=5, B=4,
            x_transform=lambda x: x.transpose(0, 1).contiguous().transpose(0, 1))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_float64(cell, spec):
    if not _buildable(spec, 4):
        pytest.skip(f"{spec} cannot be built at H=4")
    torch.manual_seed(0)
    layer = cells.make(cell, 2, 4, spec).double()
    layer.implementation = "fused"
    x = torch.randn(3, 2, 2, dtype=torch.double, requires_grad=True)
    params = list(layer.parameters())

    def run(x, *ps):
        # gradcheck perturbs the tensors it is given in place: ps are the layer's own
        return layer(x)[0]

    assert torch.autograd.gradcheck(run, (x, *params), eps=1e-6, atol=1e-7)


def test_fast_tanh_accuracy():
    # the "none" structure makes h_t = tanh(u_t): the kernel's tanh, nothing else
    layer = cells.make("rnn_tanh", 1, 1, "none", bias=False)
    with torch.no_grad():
        layer.weight_ih.fill_(1.0)
    x = torch.linspace(-12, 12, 200001).view(-1, 1, 1)
    with torch.no_grad():
        out = layer(x)[0].double().flatten()
    ref = torch.tanh(x.double().flatten())
    rel = ((out - ref).abs() / ref.abs().clamp_min(1e-30)).max().item()
    assert rel <= 1e-6, f"fp32 fast tanh: max relative error {rel:.3g}, allowed 1e-6"
    with torch.no_grad():
        out64 = layer.double()(x.double())[0].flatten()
    err64 = (out64 - ref).abs().max().item()
    assert err64 <= 1e-15, f"fp64 tanh: max error {err64:.3g}, allowed 1e-15"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("spec", ["diagonal", "block:groups=2", "full"])
def test_model_layers_and_directions(cell, spec):
    torch.manual_seed(0)
    model = SequenceModel(3, 8, 2, cell, spec, layers=2, bidirectional=True)
    x = torch.randn(4, 6, 3)
    g = torch.randn(4, 6, 2)
    results = {}
    for impl in fused.IMPLEMENTATIONS:
        with fused.implementation(impl):
            model.zero_grad()
            out = model(x)
            out.backward(g)
            results[impl] = (out.detach(), [p.grad.clone() for p in model.parameters()])
    (o1, g1), (o2, g2) = results["fused"], results["eager"]
    assert_close_rel(o1, o2, 1e-5, f"{cell} {spec} 2-layer bidirectional output")
    for (n, _), a, b in zip(model.named_parameters(), g1, g2, strict=True):
        assert_close_rel(a, b, 1e-5, f"{cell} {spec} 2-layer bidirectional grad of {n}")


def test_implementation_switch():
    layer = cells.make("rnn_tanh", 1, 4, "diagonal")
    x = torch.randn(3, 2, 1, requires_grad=True)
    with fused.implementation("eager"):
        assert not ran_kernel(layer(x)[0])
    assert fused.current() == "fused"
    assert ran_kernel(layer(x)[0])
    layer.implementation = "eager"  # the layer's own setting beats the global one
    assert not ran_kernel(layer(x)[0])
    with pytest.raises(ValueError, match="implementation='fast'.*fused.*eager"):
        with fused.implementation("fast"):
            pass


def test_no_compiler_falls_back_to_eager_with_one_warning(monkeypatch):
    saved = dict(build._state)

    def broken(verbose):
        raise RuntimeError("Error building extension: no compiler")

    monkeypatch.setattr(build, "_build_and_load", broken)
    build._state.clear()
    try:
        with pytest.warns(RuntimeWarning, match="fused kernels unavailable.*eager"):
            assert build.load() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once, not on every layer call
            layer = cells.make("rnn_tanh", 1, 4, "diagonal")
            out, _ = layer(torch.randn(3, 2, 1, requires_grad=True))
        assert not ran_kernel(out)
    finally:
        build._state.clear()
        build._state.update(saved)


def test_build_dir_is_keyed_by_torch_version_and_sources(monkeypatch, tmp_path):
    monkeypatch.setenv("CONNBENCH_CACHE", str(tmp_path))
    d = build.build_dir()
    assert d.parent == tmp_path / "kernels"
    assert d.name.startswith(torch.__version__) and d.name.endswith(build.source_hash())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_keeps_the_eager_path():
    layer = cells.make("lstm", 2, 8, "diagonal").cuda()
    out, _ = layer(torch.randn(3, 2, 2, device="cuda", requires_grad=True))
    assert not ran_kernel(out)


@pytest.mark.parametrize("spec,asked,ran,planless", [
    ("diagonal", None, "fused", False), ("diagonal", "eager", "eager", False),
    ("block_shuffle:groups=2", "fused", "fused", False),
    # a structure without a fused plan (a plugin's, say): rows must say eager
    ("block_shuffle:groups=2", "fused", "eager", True),
])
def test_rows_record_the_implementation_that_ran(spec, asked, ran, planless, monkeypatch):
    from connbench.measure.rows import accounting

    model = SequenceModel(2, 8, 1, "rnn_tanh", spec, implementation=asked)
    if planless:
        monkeypatch.setattr(type(model.layers[0][0].rec), "fused_plan", lambda self: None)
    assert accounting(model, 4)["implementation"] == ran


def test_model_rejects_an_unknown_implementation():
    with pytest.raises(ValueError, match="implementation='compiled'.*fused.*eager"):
        SequenceModel(2, 8, 1, implementation="compiled")


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("hidden", [8, 512])
def test_steps_as_rows_equals_the_route_through_the_plain_layout(spec, hidden):
    """A structure's own ``steps_as_rows`` (one copy) gives what the generic route
    through the plain (B, k) layout gives, for states and for gates."""
    if not _buildable(spec, hidden):
        pytest.skip(f"{spec} cannot be built at H={hidden}")
    rec = cells.make("lstm", 2, hidden, spec).rec
    T, B = 3, 2
    plain_states = torch.randn(T, B, hidden)
    plain_gates = torch.randn(T, B, rec.gates * hidden)
    generic = structures.base.Structure.steps_as_rows
    for plain, gates in ((plain_states, False), (plain_gates, True)):
        to = rec.to_gates if gates else rec.to_state
        steps = torch.stack([to(p) for p in plain])  # (T, …layout with batch B)
        assert torch.equal(rec.steps_as_rows(steps, gates), generic(rec, steps, gates))
        back = rec.from_gates if gates else rec.from_state
        assert torch.equal(back(rec.steps_as_rows(steps, gates)), plain.reshape(T * B, -1))
