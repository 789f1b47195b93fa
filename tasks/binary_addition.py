"""Binary addition, as in Andrew Trask's numpy RNN demo (the Stack Exchange experiment).

Two operands a, b uniform in [0, 2^(bits-1)), so the sum fits in `bits` bits, fed least
significant bit first: at step t the input is (a_t, b_t), the target bit t of a+b.
Every step is scored.

Loss: `loss=bce` (default) is binary cross-entropy on the logits, averaged over bits.
`loss=squared` is Trask's: 0.5 * sum over bits of (sigmoid(o) - y)^2, averaged over
the batch, whose gradient at batch 1 is exactly the update of the numpy demo (its
output delta is (y - s) * s * (1 - s), summed over time, no averaging).

Chance: 50 % per bit. The memoryless a_t XOR b_t predictor is also given: it is wrong
exactly where a carry comes in, which happens at bit t with probability
1/2 - 2^-(t+1), and it gets the whole sum right only if no bit generates a carry,
probability (3/4)^(bits-1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from connbench.registry import Option, SpecError
from connbench.tasks.base import Preset, Task, TrainDefaults, register_task

TRASK = Preset(
    name="trask",
    description=(
        "Trask's demo: hidden 16, sigmoid units, no biases, weights uniform in [-1, 1), "
        "squared error on sigmoid outputs, SGD lr 0.1, batch 1, 10,000 iterations"
    ),
    model={"hidden": 16, "cell": "rnn_sigmoid", "bias": False, "init": "uniform"},
    train={"optimizer": "sgd", "lr": 0.1, "batch": 1, "steps": 10_000, "clip": None},
    task={"loss": "squared"},
)


@register_task(
    "binary_addition",
    "add two binary numbers fed LSB first (Trask's demo); every bit scored",
    options=[
        Option("bits", int, 8, "bits of the sum; operands are < 2^(bits-1)"),
        Option("loss", str, "bce", "bce on logits, or squared: Trask's error", ("bce", "squared")),
    ],
)
class BinaryAddition(Task):
    name = "binary_addition"
    version = 1
    input_size = 2
    output_size = 1
    vocab = False
    readout = "every_step"
    metrics_info = {"bit_accuracy": True, "sequence_accuracy": True}
    primary_metric = "sequence_accuracy"
    presets = {"trask": TRASK}
    defaults = TrainDefaults(
        optimizer="adam", lr=0.01, batch=32, steps=2000, clip=1.0, eval_every=50, eval_size=1000
    )

    def __init__(self, bits: int = 8, loss: str = "bce"):
        if not 2 <= bits <= 62:
            # randint needs 2^(bits-1) to fit int64 with room for the sum
            raise SpecError(f"binary_addition: bits={bits} is out of range; allowed 2..62")
        super().__init__(bits=bits, loss=loss)
        self.bits = bits
        self.loss_kind = loss
        self.seq_len = bits
        xor_bits = 0.5 + (1.0 - 2.0**-bits) / bits
        self.chance = {
            "bit_accuracy": 0.5,
            "sequence_accuracy": 2.0**-bits,
            "xor_bit_accuracy": xor_bits,
            "xor_sequence_accuracy": 0.75 ** (bits - 1),
        }

    def operands(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer operands a, b of one batch (the sampler's first draw)."""
        high = 2 ** (self.bits - 1)
        a = torch.randint(0, high, (batch,), generator=generator)
        b = torch.randint(0, high, (batch,), generator=generator)
        return a, b

    def sample(self, batch, generator):
        a, b = self.operands(batch, generator)
        shifts = torch.arange(self.bits)
        a_bits = (a[:, None] >> shifts) & 1  # (B, bits), LSB first
        b_bits = (b[:, None] >> shifts) & 1
        s_bits = ((a + b)[:, None] >> shifts) & 1
        x = torch.stack([a_bits, b_bits], dim=-1).float()
        return x, s_bits.float()

    def loss(self, output, y):
        logits = output.squeeze(-1)
        if self.loss_kind == "squared":
            return 0.5 * (torch.sigmoid(logits) - y).pow(2).sum(dim=1).mean()
        return F.binary_cross_entropy_with_logits(logits, y)

    def metrics(self, output, y):
        correct = (output.squeeze(-1) > 0).float() == y  # sigmoid(o) > 0.5 <=> o > 0
        return {
            "bit_accuracy": correct.float().mean().item(),
            "sequence_accuracy": correct.all(dim=1).float().mean().item(),
        }

    def solved(self, metrics):
        return metrics["sequence_accuracy"] >= 0.99
