"""The sequence model: input projection → recurrent layers → linear readout."""

from __future__ import annotations

import torch
from torch import nn

from connbench.nn import cells
from connbench.nn.kernels import fused
from connbench.registry import SpecError

READOUTS = ("every_step", "last_step")
INITS = ("default", "uniform")


class SequenceModel(nn.Module):
    """A stack of structured recurrent layers with a linear readout.

    ``forward(x)`` takes float inputs (B, T, input_size), or int64 token ids (B, T)
    when ``vocab=True`` (then ``input_size`` is the vocabulary size). It returns the
    raw readout, (B, T, output_size) for ``every_step`` or (B, output_size) for
    ``last_step``; the task applies its own output function and loss.
    """

    def __init__(self, input_size: int, hidden: int, output_size: int, cell: str = "rnn_tanh",
                 structure: str = "full", layers: int = 1, bidirectional: bool = False,
                 bias: bool = True, readout: str = "every_step", vocab: bool = False,
                 init: str = "default", implementation: str | None = None):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden", hidden),
                            ("output_size", output_size), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name}={value!r} must be a positive integer")
        if readout not in READOUTS:
            raise SpecError(f"readout={readout!r} is not allowed; choose one of {READOUTS}")
        if init not in INITS:
            raise SpecError(f"init={init!r} is not allowed; choose one of {INITS}")
        cells.CELLS.get(cell)  # did-you-mean on a bad cell name
        self.input_size, self.hidden, self.output_size = input_size, hidden, output_size
        self.cell, self.structure, self.readout_mode = cell, structure, readout
        self.vocab, self.bidirectional = vocab, bidirectional
        directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            nn.ModuleList(
                cells.make(cell, input_size if i == 0 else hidden * directions, hidden,
                           structure, bias=bias, init=init, vocab=vocab and i == 0)
                for _ in range(directions)
            )
            for i in range(layers)
        )
        if implementation is not None:
            self.set_implementation(implementation)
        self.readout = nn.Linear(hidden * directions, output_size, bias=bias)
        if init == "uniform":
            with torch.no_grad():
                for p in self.readout.parameters():
                    p.uniform_(-1.0, 1.0)

    @classmethod
    def for_task(cls, task, *, hidden: int, structure: str = "full", cell: str = "rnn_tanh",
                 layers: int = 1, **options) -> SequenceModel:
        """The model for ``task``: its input and output sizes, readout and vocabulary.

        ``task`` is anything with ``input_size``, ``output_size``, ``readout`` and
        ``vocab`` (a ``connbench.Task``); ``options`` are the other constructor
        arguments (bias, init, bidirectional).
        """
        return cls(task.input_size, hidden, task.output_size, cell=cell, structure=structure,
                   layers=layers, readout=task.readout, vocab=task.vocab, **options)

    def set_implementation(self, name: str | None) -> None:
        """Run every layer ``fused`` (C++ kernels) or ``eager`` (the autograd loop); None
        follows ``connbench.nn.kernels.fused.implementation()`` (default fused)."""
        if name is not None:
            fused.check_implementation(name)
        for layer in self.layers:
            for c in layer:
                c.implementation = name

    def implementation_used(self) -> str:
        """What a forward runs now: ``fused`` when every layer has a fused plan here
        (structure, device, compiler), else ``eager`` (results rows record this)."""
        cells_ = [c for layer in self.layers for c in layer]
        return "fused" if all(fused.plan_for(c) is not None for c in cells_) else "eager"

    def recurrences(self):
        """Every structured W_hh in the model (all layers and directions)."""
        return [c.rec for layer in self.layers for c in layer]

    def _check_input(self, x: torch.Tensor) -> None:
        if self.vocab:
            if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
                raise SpecError(f"expected int64 token ids of shape (B, T), got {tuple(x.shape)} "
                                f"{x.dtype}")
        elif x.dim() != 3 or x.shape[-1] != self.input_size:
            raise SpecError(f"expected input of shape (B, T, {self.input_size}), "
                            f"got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        seq = x.transpose(0, 1)  # time-major from here on
        last_only = self.readout_mode == "last_step"
        for i, layer in enumerate(self.layers):
            keep = not (last_only and i == len(self.layers) - 1)
            outs, finals = [], []
            for d, cell in enumerate(layer):
                out, h = cell(seq if d == 0 else seq.flip(0), return_sequence=keep)
                outs.append(out if d == 0 or out is None else out.flip(0))
                finals.append(h)
            if keep:
                seq = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        if last_only:
            return self.readout(finals[0] if len(finals) == 1 else torch.cat(finals, dim=-1))
        return self.readout(seq).transpose(0, 1)

    def param_counts(self) -> dict[str, int]:
        """Parameter accounting; total = input + recurrent_stored + bias + readout.

        For input 4, hidden 3, output 1 and a full Elman RNN this is the "Recurrent
        Layers" formula ((4×3) + (3×3 + 3)) + (3×1 + 1) = 28.
        """
        all_cells = [c for layer in self.layers for c in layer]
        counts = {
            "input": sum(c.input_params() for c in all_cells),
            "recurrent_stored": sum(c.rec.stored_params for c in all_cells),
            "recurrent_effective": sum(c.rec.effective_params for c in all_cells),
            "bias": sum(c.bias_params() for c in all_cells),
            "readout": sum(p.numel() for p in self.readout.parameters()),
        }
        counts["total"] = (counts["input"] + counts["recurrent_stored"] + counts["bias"]
                           + counts["readout"])
        return counts

    def flops_per_step(self, batch: int) -> float:
        """Recurrent FLOPs per time step for the whole batch, all layers and directions."""
        return float(sum(r.flops(batch) for r in self.recurrences()))
