"""The training loop and `connbench train`, with the real SequenceModel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from connbench import tasks
from connbench.cli import main as cli_main
from connbench.measure.training import TrainResult, train
from connbench.nn.model import SequenceModel
from connbench.registry import SpecError
from connbench.tasks.adding import Adding


@pytest.fixture(autouse=True)
def one_thread():
    # small models: a second thread only adds contention, and results stay comparable
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------- real learning


def test_full_rnn_solves_8_bit_binary_addition():
    r = train("binary_addition:bits=8", cell="rnn_tanh", structure="full", hidden=16,
              steps=1500, seed=0)
    assert r.status == "ok" and r.solved, r.metrics
    assert r.stop_reason == "solved" and r.steps == r.steps_to_solve <= 1500
    assert r.validation["sequence_accuracy"] >= 0.99  # early stopping looks at validation
    assert r.metrics["sequence_accuracy"] >= 0.9  # the held-out test set, scored after
    assert r.history[0]["step"] == 0 and r.history[-1]["step"] == r.steps


def test_no_recurrence_stays_near_chance_on_binary_addition():
    r = train("binary_addition:bits=8", cell="rnn_tanh", structure="none", hidden=16,
              steps=600, seed=0)
    assert r.status == "ok" and not r.solved and r.steps == 600
    # without memory the best is the XOR predictor: wrong wherever a carry comes in
    assert r.metrics["sequence_accuracy"] <= r.chance["xor_sequence_accuracy"] + 0.05
    assert r.metrics["bit_accuracy"] <= r.chance["xor_bit_accuracy"] + 0.03


def test_full_rnn_solves_short_adding_problem():
    r = train("adding:length=20", cell="rnn_tanh", structure="full", hidden=16, lr=1e-2,
              steps=2500, seed=0)
    assert r.status == "ok" and r.solved, r.history[-1]
    # solved is judged on the validation set (MSE < 0.01 there); the final metric comes
    # from a separate test set, so it sits near the criterion, far below chance
    assert r.metrics["mse"] < 0.02 < 0.1 < r.chance["mse"]


# ---------------------------------------------------------------------- loop behaviour


def test_same_seed_same_run_and_other_seed_differs():
    kw = dict(cell="rnn_tanh", structure="banded:width=3", hidden=8, steps=40)
    a = train("binary_addition:bits=6", seed=3, **kw)
    b = train("binary_addition:bits=6", seed=3, **kw)
    c = train("binary_addition:bits=6", seed=4, **kw)
    assert a.history == b.history
    assert a.history != c.history


def test_evaluates_every_n_steps_and_at_the_end_and_reports_progress():
    seen = []
    r = train("copy:length=5", cell="gru", hidden=8, steps=25, eval_every=10,
              progress=lambda step, total, loss, m: seen.append((step, total, set(m))))
    assert [h["step"] for h in r.history] == [0, 10, 20, 25]
    assert [s for s, _, _ in seen] == [0, 10, 20, 25]
    assert all(total == 25 and names == {"loss", "recall_accuracy"} for _, total, names in seen)
    # the last evaluation is the validation score; the final metrics come from the
    # separate test set (same metrics, other sequences, so other values)
    assert r.validation == {k: r.history[-1][k] for k in ("loss", "recall_accuracy")}
    assert set(r.metrics) == set(r.validation) and r.metrics != r.validation
    assert r.stop_reason == "steps" and r.config["optimizer"] == "rmsprop"
    assert r.primary_metric == "loss" and r.higher_is_better is False


def test_time_budget_stops_with_status_ok():
    r = train("adding:length=10", hidden=8, steps=10_000, max_time_s=0.0)
    assert r.status == "ok" and r.stop_reason == "time" and r.steps == 1
    assert r.history[-1]["step"] == 1


class NaNAdding(Adding):
    def loss(self, output, y):
        return super().loss(output, y) * float("nan")


class BrokenAdding(Adding):
    def __init__(self):
        super().__init__(length=5)
        self.calls = 0

    def sample(self, batch, generator):
        self.calls += 1
        if self.calls > 4:  # the evaluation set is the first call
            raise RuntimeError("sampler exploded")
        return super().sample(batch, generator)


def test_nan_loss_gives_diverged_without_raising():
    r = train(NaNAdding(length=5), hidden=4, steps=30, eval_every=10)
    assert r.status == "diverged" and not r.solved
    assert r.steps == 10 and "step 10" in r.error
    assert json.dumps(r.to_dict())  # NaN became null: still valid JSON
    assert r.to_dict()["history"][-1]["train_loss"] is None
    assert r.history[0]["train_loss"] is None  # step 0: nothing trained yet


def test_exception_during_training_gives_failed_with_message():
    r = train(BrokenAdding(), hidden=4, steps=30)
    assert r.status == "failed" and "sampler exploded" in r.error and r.steps == 3


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(cell="lstn", hidden=4), ["lstn", "lstm"]),
        (dict(structure="bandd", hidden=4), ["bandd", "banded"]),
        (dict(hidden=4, preset="nope"), ["no preset 'nope'"]),
        (dict(cell="rnn_tanh"), ["hidden"]),
        (dict(hidden=4, steps=0), ["steps=0"]),
        (dict(hidden=4, lr=-1.0), ["lr=-1.0"]),
        (dict(hidden=4, optimizer="adagrad"), ["adagrad", "sgd"]),
    ],
)
def test_user_mistakes_raise_spec_error_before_training(kwargs, words):
    with pytest.raises(SpecError) as err:
        train("adding:length=5", **kwargs)
    for word in words:
        assert word in str(err.value)


# ---------------------------------------------------------------------- Trask preset


def test_trask_preset_builds_trasks_network_and_settings():
    r = train("binary_addition", structure="full", preset="trask", steps=20)
    assert r.task == "binary_addition:bits=8,loss=squared"
    assert (r.cell, r.hidden) == ("rnn_sigmoid", 16)
    assert r.structure == "full:init=uniform"  # the structure as built
    assert r.config["optimizer"] == "sgd" and r.config["lr"] == 0.1
    assert r.config["batch"] == 1 and r.config["clip"] is None
    assert r.config["bias"] is False and r.config["init"] == "uniform"
    # synapse_0 (2x16) + synapse_h (16x16) + synapse_1 (16x1), nothing else
    assert r.params["total"] == 2 * 16 + 16 * 16 + 16 == 304
    assert train("binary_addition", preset="trask", steps=1).config["steps"] == 1


def test_trask_architecture_matches_the_numpy_demo():
    """Same weights, same outputs as Trask's forward pass (sigmoid everywhere, no bias)."""
    torch.manual_seed(0)
    model = SequenceModel(2, 16, 1, cell="rnn_sigmoid", bias=False, init="uniform")
    params = dict(model.named_parameters())
    assert all(((p >= -1) & (p < 1)).all() for p in params.values())
    assert all(p.abs().max() > 0.5 for p in params.values())  # really [-1, 1), not default
    cell = model.layers[0][0]
    syn0 = cell.weight_ih.detach().numpy().T  # (2, 16)
    synh = cell.rec.dense().detach().numpy()  # (16, 16), h_t = s(x W0 + h_{t-1} Wh)
    syn1 = model.readout.weight.detach().numpy().T  # (16, 1)
    task = tasks.make("binary_addition")
    x, _ = task.sample(4, torch.Generator().manual_seed(0))

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    h = np.zeros((4, 16))
    expected = []
    for t in range(8):
        h = sigmoid(x[:, t].numpy() @ syn0 + h @ synh)
        expected.append(sigmoid(h @ syn1))
    got = torch.sigmoid(model(x)).detach().numpy()
    np.testing.assert_allclose(got, np.stack(expected, axis=1), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- CLI


def test_cli_json_result(capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # progress only on a terminal
    code = cli_main(["train", "--task", "binary_addition:bits=4", "--cell", "rnn_tanh",
                     "--structure", "diagonal", "--hidden", "8", "--steps", "30",
                     "--seed", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("task", "structure", "cell", "hidden", "seed", "steps", "status", "solved",
                "steps_to_solve", "metrics", "chance", "params"):
        assert key in result
    assert result["task"] == "binary_addition:bits=4,loss=bce"
    assert result["structure"].startswith("diagonal")
    assert (result["hidden"], result["seed"], result["status"]) == (8, 2, "ok")
    assert set(result["metrics"]) == {"bit_accuracy", "sequence_accuracy"}
    assert result["params"]["total"] > 0
    assert "\rstep" in err and err.endswith("\n")  # the progress line, then a newline
    assert "loss nan" not in err  # step 0 has no training loss yet


def test_cli_human_summary_and_spec_error_exit_code(capsys):
    assert cli_main(["train", "--task", "adding:length=5", "--hidden", "4", "--steps", "3"]) == 0
    out, _ = capsys.readouterr()
    assert "status ok" in out and "mse" in out and "chance" in out
    assert cli_main(["train", "--task", "adding:lenght=5", "--hidden", "4"]) == 2
    _, err = capsys.readouterr()
    assert "lenght" in err and "error" in err


def test_train_result_round_trips_through_json():
    r = train("adding:length=5", hidden=4, steps=3)
    assert isinstance(r, TrainResult)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["steps"] == 3 and d["status"] == "ok" and d["history"][-1]["step"] == 3


def test_adam_is_torchs_fused_step_and_moves_weights_like_the_foreach_step():
    from connbench.measure.training import _build_optimizer

    torch.manual_seed(0)
    model = SequenceModel(2, 8, 1, "rnn_tanh", "full")
    twin = SequenceModel(2, 8, 1, "rnn_tanh", "full")
    twin.load_state_dict(model.state_dict())
    opt = _build_optimizer("adam", model.parameters(), 0.01)
    assert opt.defaults["fused"] is True
    ref = torch.optim.Adam(twin.parameters(), lr=0.01, foreach=True)
    x = torch.randn(5, 3, 2)
    for m, o in ((model, opt), (twin, ref)):
        for _ in range(3):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name
