"""Running parity: after every bit of a random bit stream, is the count of ones odd?

Input (B, T, 1) bits; target (B, T) the parity of the bits so far. Every step is
scored; chance is 0.5. It needs memory of one bit, flipped by every 1.
"""

import torch
import torch.nn.functional as F

import connbench


@connbench.register_task("parity", "running parity of a bit stream, scored at every step",
                         options=[connbench.Option("length", int, 8, "bits per sequence")])
class Parity(connbench.Task):
    version = 1
    input_size = 1
    output_size = 1
    vocab = False
    readout = "every_step"
    metrics_info = {"accuracy": True}
    primary_metric = "accuracy"
    defaults = connbench.TrainDefaults(optimizer="adam", lr=1e-2, batch=32, steps=500,
                                       clip=1.0, eval_every=50, eval_size=256)

    def __init__(self, length=8):
        if length < 1:
            raise connbench.SpecError(f"parity: length={length} must be at least 1")
        super().__init__(length=length)
        self.seq_len = length
        self.chance = {"accuracy": 0.5}

    def sample(self, batch, generator):
        bits = torch.randint(0, 2, (batch, self.seq_len), generator=generator)
        return bits.unsqueeze(-1).float(), (bits.cumsum(1) % 2).float()

    def loss(self, output, y):
        return F.binary_cross_entropy_with_logits(output.squeeze(-1), y)

    def metrics(self, output, y):
        return {"accuracy": ((output.squeeze(-1) > 0).float() == y).float().mean().item()}

    def solved(self, metrics):
        return metrics["accuracy"] > 0.99
