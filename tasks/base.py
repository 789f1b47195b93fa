"""What every task shares: the registry, training defaults, presets and the Task base.

A task produces seeded batches, scores model outputs and knows its chance level. It
never builds a model or an optimizer: `connbench.measure.training` does that from `defaults` and
`presets`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from connbench.registry import Option, Registry, format_spec

REGISTRY = Registry("task")


def register_task(name: str, description: str,
                  options: Iterable[Option] = ()) -> Callable[[type], type]:
    """Class decorator: register a ``Task`` subclass under ``name``."""
    register = REGISTRY.register(name, description, options)

    def deco(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"register_task({name!r}): {cls!r} is not a connbench.Task "
                            "subclass")
        cls.name = name
        return register(cls)

    return deco

# Optimizers connbench.measure.training knows how to build; tasks may only name these.
OPTIMIZERS = ("sgd", "adam", "rmsprop")


@dataclass(frozen=True)
class TrainDefaults:
    """Training hyperparameters a task recommends; connbench.measure.training may override each."""

    optimizer: str  # one of OPTIMIZERS
    lr: float
    batch: int
    steps: int
    clip: float | None  # max gradient norm, None = no clipping
    eval_every: int  # evaluate on the fixed evaluation set every N steps
    eval_size: int  # sequences (or windows) in the fixed evaluation set

    def updated(self, **changes: Any) -> TrainDefaults:
        """A copy with the non-None entries of `changes` applied."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class Preset:
    """A named, published configuration: model, training and task-option overrides."""

    name: str
    description: str
    model: dict[str, Any] = field(default_factory=dict)  # hidden, cell, bias, init ...
    train: dict[str, Any] = field(default_factory=dict)  # TrainDefaults fields
    task: dict[str, Any] = field(default_factory=dict)  # task options, e.g. loss


def eval_generator(seed: int) -> torch.Generator:
    """The generator of the fixed evaluation set for `seed`.

    Derived from the seed but distinct from the training generator (which connbench.measure.training
    seeds with `seed` itself), so the evaluation set is not the first training batches.
    """
    return torch.Generator().manual_seed((int(seed) * 0x9E3779B1 + 0x5EED) % 2**63)


class Task:
    """Base of every task; subclasses set the attributes and implement the methods.

    Attributes (see docs/API.md): name, spec, version, input_size, output_size, vocab,
    readout, seq_len, chance, metrics_info, primary_metric, defaults, presets.
    """

    name: str = ""
    version: int = 1
    vocab: bool = False  # True: inputs are int64 token ids and input_size is the vocabulary
    readout: str = "every_step"
    metrics_info: dict[str, bool] = {}
    primary_metric: str = ""
    presets: dict[str, Preset] = {}

    def __init__(self, **options: Any):
        self.options = dict(options)
        self.spec = format_spec(self.name, self.options)

    def __repr__(self) -> str:
        return f"<task {self.spec}>"

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch (x, y) drawn with `generator`."""
        raise NotImplementedError

    def eval_set(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed evaluation set for `seed`: the same tensors on every call."""
        return self.sample(self.defaults.eval_size, eval_generator(seed))

    def loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of the raw model output."""
        raise NotImplementedError

    def metrics(self, output: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Evaluation metrics (plain floats) of the raw model output."""
        raise NotImplementedError

    def solved(self, metrics: dict[str, float]) -> bool:
        """Whether `metrics` meet this task's solved criterion."""
        raise NotImplementedError
