"""The perf suite: absolute times, saved and compared by `make perf` (benchmarks/perf.py).

- every structure's recurrent layer (Elman tanh; ``torch.nn.RNN`` for reference),
  forward and forward+backward, at a small and a large hidden size;
- one full training step (sample, forward, loss, backward, Adam) per task at H=128.

Times are per call (one sequence of STEPS steps); ``extra_info`` carries the sizes.
Absolute times are compared only against a saved run with the same machine
fingerprint; the CI signal is the ratio gate, ``python -m connbench gate``.
"""

from pathlib import Path

import pytest
import torch

from connbench import tasks
from connbench.nn.model import SequenceModel
from connbench.perf.kernels import DEFAULT_SPECS, TORCH_RNN, layer_callables

SIZES = (128, 1024)
BATCH, STEPS = 32, 32
TRAIN_HIDDEN, TRAIN_BATCH = 128, 32
SONNETS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "sonnets.txt"
TASKS = {
    "binary_addition": "binary_addition",
    "copy": "copy:length=20",
    "adding": "adding:length=20",
    "char_lm": f"char_lm:seq=50,corpus={SONNETS}",
}


@pytest.mark.parametrize("measured", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("hidden", SIZES, ids=lambda h: f"H{h}")
@pytest.mark.parametrize("spec", [TORCH_RNN, *DEFAULT_SPECS])
def test_layer(benchmark, spec, hidden, measured):
    fwd, fwd_bwd = layer_callables(spec, hidden, BATCH, STEPS)
    benchmark.group = f"layer H={hidden} {measured}"
    benchmark.extra_info.update(spec=spec, hidden=hidden, batch=BATCH, steps=STEPS,
                                measured=measured, per="sequence")
    benchmark(fwd if measured == "fwd" else fwd_bwd)


@pytest.mark.parametrize("name", list(TASKS))
def test_train_step(benchmark, name):
    task = tasks.make(TASKS[name])
    torch.manual_seed(0)
    model = SequenceModel.for_task(task, hidden=TRAIN_HIDDEN)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)

    def step():
        x, y = task.sample(TRAIN_BATCH, gen)
        loss = task.loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    benchmark.group = "train step"
    benchmark.extra_info.update(task=task.spec, hidden=TRAIN_HIDDEN, batch=TRAIN_BATCH,
                                seq_len=task.seq_len)
    benchmark(step)
