import pytest
import torch

from connbench.nn.model import SequenceModel
from connbench.registry import SpecError


def test_recurrent_layers_formula_28():
    m = SequenceModel(4, 3, 1, cell="rnn_tanh", structure="full")
    counts = m.param_counts()
    assert counts["total"] == 28 == sum(p.numel() for p in m.parameters())
    assert counts == {"input": 12, "recurrent_stored": 9, "recurrent_effective": 9, "bias": 3,
                      "readout": 4, "total": 28}


@pytest.mark.parametrize("spec", ["full", "none", "diagonal", "banded", "jordan",
                                  "block:groups=4", "block_shuffle:groups=4", "butterfly",
                                  "random", "lowrank:rank=4"])
@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_param_counts_add_up(spec, cell):
    m = SequenceModel(5, 16, 3, cell=cell, structure=spec, layers=2, bidirectional=True)
    c = m.param_counts()
    assert c["total"] == sum(p.numel() for p in m.parameters())
    assert c["recurrent_stored"] == sum(r.stored_params for r in m.recurrences())
    assert c["recurrent_effective"] == sum(int(torch.count_nonzero(r.dense()))
                                           for r in m.recurrences())
    assert len(m.recurrences()) == 4
    assert m.flops_per_step(8) == sum(r.flops(8) for r in m.recurrences())


def test_no_bias_trask_shape():
    m = SequenceModel(2, 16, 1, cell="rnn_sigmoid", bias=False, init="uniform")
    assert m.param_counts() == {"input": 32, "recurrent_stored": 256, "recurrent_effective": 256,
                                "bias": 0, "readout": 16, "total": 304}
    assert all(p.abs().max() <= 1 for p in m.parameters())


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (3, False), (2, True)])
@pytest.mark.parametrize("spec", ["full", "block:groups=4", "butterfly"])
def test_shapes(layers, bidirectional, spec):
    m = SequenceModel(5, 16, 3, structure=spec, layers=layers, bidirectional=bidirectional)
    assert m(torch.randn(4, 7, 5)).shape == (4, 7, 3)
    m = SequenceModel(5, 16, 3, structure=spec, layers=layers, bidirectional=bidirectional,
                      readout="last_step")
    assert m(torch.randn(4, 7, 5)).shape == (4, 3)
    m = SequenceModel(11, 16, 11, cell="lstm", structure=spec, layers=layers,
                      bidirectional=bidirectional, vocab=True)
    y = m(torch.randint(0, 11, (4, 7)))
    assert y.shape == (4, 7, 11)
    y.sum().backward()


def test_last_step_equals_every_step_at_the_end():
    torch.manual_seed(0)
    a = SequenceModel(3, 8, 2, structure="banded", readout="every_step")
    b = SequenceModel(3, 8, 2, structure="banded", readout="last_step")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(a(x)[:, -1], b(x))


def test_vocab_equals_one_hot_input():
    torch.manual_seed(0)
    a = SequenceModel(6, 8, 2, vocab=True)
    b = SequenceModel(6, 8, 2)
    sd = a.state_dict()
    sd["layers.0.0.weight_ih"] = sd["layers.0.0.weight_ih"].t()
    b.load_state_dict(sd)
    ids = torch.randint(0, 6, (3, 4))
    torch.testing.assert_close(a(ids), b(torch.nn.functional.one_hot(ids, 6).float()))


@pytest.mark.parametrize("kwargs,needle", [
    ({"cell": "lstn"}, "did you mean 'lstm'"),
    ({"readout": "final"}, "readout='final' is not allowed"),
    ({"layers": 0}, "layers=0 must be a positive integer"),
    ({"structure": "butterfly"}, "hidden=12 must be a power of two"),
    ({"init": "xavier"}, "init='xavier' is not allowed"),
])
def test_bad_arguments(kwargs, needle):
    with pytest.raises(SpecError, match=needle):
        SequenceModel(3, 12, 2, **kwargs)


def test_bad_input_shape():
    m = SequenceModel(3, 8, 2)
    with pytest.raises(SpecError, match=r"expected input of shape \(B, T, 3\), got \(2, 5, 4\)"):
        m(torch.randn(2, 5, 4))


def test_structure_init_option_is_kept_unless_model_overrides():
    m = SequenceModel(2, 16, 1, structure="full:init=uniform")
    assert m.recurrences()[0].spec == "full:init=uniform"
    assert m.recurrences()[0].weight.abs().max() > 0.5  # default bound would be 0.25
    m = SequenceModel(2, 16, 1, structure="full", init="uniform")
    assert m.recurrences()[0].spec == "full:init=uniform"
