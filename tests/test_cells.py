"""Cells against torch.nn.RNN/GRU/LSTM, and structured cells against masked-dense cells."""

import pytest
import torch
from torch_reference import matching_grads, torch_twin

from connbench.nn import cells
from connbench.nn.kernels import activations
from connbench.nn.model import SequenceModel


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "gru", "lstm"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_full_cells_equal_torch(cell, layers, bidirectional):
    torch.manual_seed(0)
    model = SequenceModel(5, 24, 2, cell=cell, layers=layers, bidirectional=bidirectional).double()
    ref = torch_twin(model)
    x = torch.randn(9, 3, 5, dtype=torch.double)  # time-major
    seq = x
    for layer in model.layers:
        outs = []
        for d, c in enumerate(layer):
            o, _ = c(seq if d == 0 else seq.flip(0))
            outs.append(o if d == 0 else o.flip(0))
        seq = torch.cat(outs, -1)
    out_ref, _ = ref(x)
    torch.testing.assert_close(seq, out_ref, atol=1e-12, rtol=0)
    g = torch.randn_like(seq)
    seq.backward(g)
    out_ref.backward(g)
    for ours, theirs in matching_grads(model, ref):
        torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)


def test_sigmoid_cell_equations():
    torch.manual_seed(0)
    c = cells.make("rnn_sigmoid", 2, 4, "full", bias=False).double()
    x = torch.randn(6, 1, 2, dtype=torch.double)
    out, last = c(x)
    h = torch.zeros(1, 4, dtype=torch.double)
    for t in range(6):
        h = torch.sigmoid(x[t] @ c.weight_ih.t() + h @ c.rec.dense())
        torch.testing.assert_close(out[t], h)
    torch.testing.assert_close(last, h)


def test_fast_tanh_matches_torch_tanh():
    x = torch.randn(64, 512, requires_grad=True)
    assert x.numel() >= activations.FAST_TANH_MIN_NUMEL
    y = activations.tanh(x)
    assert y.grad_fn is not None and "SigmoidTanh" in type(y.grad_fn).__name__
    torch.testing.assert_close(y, torch.tanh(x), atol=2e-7, rtol=0)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    (gx_ref,) = torch.autograd.grad(torch.tanh(x), x, g)
    torch.testing.assert_close(gx, gx_ref, atol=1e-6, rtol=0)


STRUCTURES = ["none", "diagonal", "banded:width=3", "banded:width=5,cyclic=true", "jordan",
              "block:groups=4", "block_shuffle:groups=2", "butterfly", "random:density=0.3",
              "lowrank:rank=3"]


@pytest.fixture(params=["small-size paths", "large-size paths"])
def kernel_paths(request, monkeypatch):
    """Run a test with the small-H kernels (as built at H=16) and with the large-H ones
    (butterfly's two-bmm form, random's CSR kernel) forced on."""
    if request.param == "large-size paths":
        from connbench.nn import structures as C
        monkeypatch.setattr(C.ButterflyStructure, "factored_min_hidden", 1)
        monkeypatch.setattr(C.RandomStructure, "csr_min_hidden", 1)
    return request.param


@pytest.mark.parametrize("spec", STRUCTURES)
@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_structured_cell_equals_masked_dense_cell(spec, cell, kernel_paths):
    """The whole time loop (state layouts, gate splits) against a full cell whose W_hh is
    the structure's dense() matrix."""
    torch.manual_seed(1)
    fast = cells.make(cell, 3, 16, spec).double()
    ref = cells.make(cell, 3, 16, "full").double()
    with torch.no_grad():
        ref.weight_ih.copy_(fast.weight_ih)
        ref.bias_ih.copy_(fast.bias_ih)
        if cell == "gru":
            ref.bias_hn.copy_(fast.bias_hn)
        ref.rec.weight.copy_(fast.rec.dense().t())
    x = torch.randn(7, 4, 3, dtype=torch.double, requires_grad=True)
    out, last = fast(x)
    out_ref, last_ref = ref(x)
    torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(last, last_ref, atol=1e-10, rtol=0)
    g = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, [x, fast.weight_ih], g)
    gx_ref, gw_ref = torch.autograd.grad(out_ref, [x, ref.weight_ih], g)
    torch.testing.assert_close(gx, gx_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(gw, gw_ref, atol=1e-10, rtol=0)


def test_gates_registry():
    assert cells.CELLS.names() == ["rnn_tanh", "rnn_relu", "rnn_sigmoid", "gru", "lstm"]
    assert cells.GATES == {"rnn_tanh": 1, "rnn_relu": 1, "rnn_sigmoid": 1, "gru": 3, "lstm": 4}
    assert cells.make("lstm", 2, 8, "diagonal").rec.gates == 4
