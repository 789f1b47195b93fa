"""Copy task (Hochreiter & Schmidhuber 1997; Arjovsky, Shah & Bengio 2016).

Alphabet of 10 symbols: 0 is the blank, 1..8 the data symbols, 9 the delimiter.
Input (length T + 20): 10 data symbols, T - 1 blanks, the delimiter, 10 blanks, fed
one-hot (10 features). Target: T + 10 blanks, then the 10 data symbols in order.
Loss: cross-entropy averaged over all T + 20 steps. The memoryless baseline (blanks,
then uniform guesses among the 8 data symbols) scores 10 ln 8 / (T + 20) nats.
Metric beside the loss: accuracy on the 10 recalled symbols (chance 1/8).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from connbench.registry import Option, SpecError
from connbench.tasks.base import Task, TrainDefaults, register_task

N_DATA = 10  # symbols to remember
N_SYMBOLS = 8  # data alphabet
BLANK, DELIMITER = 0, 9
ALPHABET = 10


@register_task(
    "copy",
    "remember 10 symbols over a delay of T steps, then reproduce them",
    options=[Option("length", int, 100, "delay T between the data and the recall")],
)
class Copy(Task):
    name = "copy"
    version = 1
    input_size = ALPHABET
    output_size = ALPHABET
    vocab = False
    readout = "every_step"
    metrics_info = {"loss": False, "recall_accuracy": True}
    primary_metric = "loss"
    # RMSprop lr 1e-3 as in the uRNN paper; batch and steps sized for a CPU.
    defaults = TrainDefaults(
        optimizer="rmsprop", lr=1e-3, batch=32, steps=3000, clip=1.0, eval_every=100, eval_size=256
    )

    def __init__(self, length: int = 100):
        if length < 1:
            raise SpecError(f"copy: length={length} must be at least 1 (the delay T)")
        super().__init__(length=length)
        self.length = length
        self.seq_len = length + 2 * N_DATA
        self.chance = {
            "loss": N_DATA * math.log(N_SYMBOLS) / self.seq_len,
            "recall_accuracy": 1.0 / N_SYMBOLS,
        }

    def sample(self, batch, generator):
        data = torch.randint(1, N_SYMBOLS + 1, (batch, N_DATA), generator=generator)
        ids = torch.full((batch, self.seq_len), BLANK, dtype=torch.long)
        ids[:, :N_DATA] = data
        ids[:, N_DATA + self.length - 1] = DELIMITER
        y = torch.full((batch, self.seq_len), BLANK, dtype=torch.long)
        y[:, -N_DATA:] = data
        x = F.one_hot(ids, ALPHABET).float()
        return x, y

    def loss(self, output, y):
        return F.cross_entropy(output.reshape(-1, ALPHABET), y.reshape(-1))

    def metrics(self, output, y):
        recall = output[:, -N_DATA:].argmax(-1) == y[:, -N_DATA:]
        return {
            "loss": self.loss(output, y).item(),
            "recall_accuracy": recall.float().mean().item(),
        }

    def solved(self, metrics):
        return metrics["recall_accuracy"] >= 0.99
