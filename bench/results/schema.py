"""The results schema: one tidy (long) row per measurement.

This module is the contract between the runner (which writes rows), the store (which
validates and persists them) and the report (which reads them). It imports nothing
from torch so that the store and the report stay torch-free.

Kinds of work (column ``kind``) and the metrics they carry:

* ``speed``, one row per measured pass (column ``pass``: ``fwd``, ``bwd``,
  ``fwd+bwd``) — metric ``time_per_step_s``: ``value`` is the median
  seconds per time step, ``iqr`` its interquartile range, ``samples`` the raw
  per-step samples.
* ``memory`` (pass ``fwd+bwd``) — metric ``peak_bytes``: extra peak memory of one
  forward+backward over the whole sequence (CUDA: ``max_memory_allocated``; CPU: peak
  RSS growth of a fresh process).
* ``train`` — one row per final task metric (``sequence_accuracy``, ``bpc`` ...),
  with ``chance``, ``solved``, ``steps_to_solve``, ``higher_is_better``, ``primary``.
* the learning curve: ``train`` rows with ``step`` set, one per (evaluation step,
  metric); the final figures are the ``train`` rows without a step.
* ``skipped`` / failures — a trial that could not run has one row with its ``kind``
  (and the ``pass`` that failed, if any), ``status`` != ``ok`` and ``error`` filled in.
"""

from __future__ import annotations

# (column, pandas dtype, description). Order is the column order of written files.
COLUMNS: list[tuple[str, str, str]] = [
    # identity
    ("trial_id", "string", "stable hash of the canonical trial config and the code versions"),
    ("sweep", "string", "sweep name"),
    ("task", "string", "task name, e.g. copy"),
    ("task_spec", "string", "canonical task spec, e.g. copy:length=100"),
    ("structure", "string", "structure name, e.g. banded"),
    ("structure_spec", "string", "canonical structure spec, e.g. banded:cyclic=false,width=3"),
    ("cell", "string", "cell type: rnn_tanh, rnn_relu, rnn_sigmoid, gru, lstm"),
    ("hidden", "Int64", "hidden size used"),
    ("hidden_request", "string", "what the sweep asked for: a size, or iso_params:N / iso_time:S"),
    ("layers", "Int64", "recurrent layers"),
    ("seq_len", "Int64", "time steps per sequence"),
    ("batch", "Int64", "batch size"),
    ("dtype", "string", "float32 ..."),
    ("device", "string", "cpu or cuda"),
    ("implementation", "string", "what ran: fused (C++ whole-sequence kernels) or eager"),
    ("threads", "Int64", "torch intra-op threads"),
    ("seed", "Int64", "seed"),
    ("kind", "string", "the kind of work: speed, memory or train"),
    ("pass", "string", "the measured pass: fwd, bwd or fwd+bwd (speed, memory); empty for train"),
    ("status", "string", "ok, failed, diverged, skipped"),
    ("error", "string", "error message when status is not ok"),
    # the measurement
    ("metric", "string", "time_per_step_s, peak_bytes, or a task metric"),
    ("value", "float64", "the figure (median for timings)"),
    ("iqr", "float64", "interquartile range of timing samples"),
    ("samples", "object", "raw timing samples (list of float), else empty"),
    ("step", "Int64", "training step of a learning-curve row (empty on final train rows)"),
    # accounting
    ("stored_params", "Int64", "recurrent weights the structure stores (all layers, gates)"),
    ("effective_params", "Int64", "nonzeros of the recurrent matrices it acts as"),
    ("total_params", "Int64", "all trainable parameters of the model"),
    ("flops_per_step", "float64", "recurrent FLOPs per time step for the whole batch"),
    # training outcome
    ("chance", "float64", "chance/baseline level of this metric, NaN if none"),
    ("higher_is_better", "boolean", "direction of the metric"),
    ("primary", "boolean", "the task's headline metric"),
    ("solved", "boolean", "the task's solved criterion was met"),
    ("steps_to_solve", "Int64", "training steps until solved, <NA> if never"),
    ("train_steps", "Int64", "training steps run"),
    ("train_settings", "string", "JSON of the effective training settings (train rows): "
     "steps budget, lr, optimizer, batch, clip, preset, init, bias, max_time_s, eval_every, role"),
    ("wall_time_s", "float64", "wall time of the measurement"),
    # the trial's settings (what a row was measured with; None where they do not apply)
    ("optimizer", "string", "train: optimizer used (sgd, adam, rmsprop), after task defaults"),
    ("lr", "float64", "train: learning rate used, after task defaults and preset"),
    ("steps_budget", "Int64", "train: step budget asked for (train_steps is what ran)"),
    ("max_time_s", "float64", "train: wall-clock cap in seconds, empty if none"),
    ("preset", "string", "train: task preset, e.g. trask, or empty"),
    ("min_run_time", "float64", "speed: seconds each timed pass ran for at least"),
    ("warmup", "Int64", "speed: untimed warm-up calls before timing"),
    # environment (connbench.results.environment)
    ("python_version", "string", "Python version"),
    ("numpy_version", "string", "numpy.__version__"),
    ("torch_version", "string", "torch.__version__"),
    ("cuda_version", "string", "torch.version.cuda or empty"),
    ("cudnn_version", "string", "cuDNN version or empty"),
    ("cpu_model", "string", "CPU model name"),
    ("cpu_count", "Int64", "logical CPUs of the machine (os.cpu_count)"),
    ("load_avg", "float64", "1-minute load average when the measuring process started"),
    ("gpu_name", "string", "GPU name or empty"),
    ("host", "string", "host name"),
    ("git_commit", "string", "git commit of the harness"),
    ("git_dirty", "boolean", "uncommitted changes were present"),
    ("connbench_version", "string", "package version"),
    ("timestamp", "string", "UTC ISO time the row was written"),
]

COLUMN_NAMES = [c for c, _, _ in COLUMNS]
DTYPES = {c: t for c, t, _ in COLUMNS}
KINDS = ("speed", "memory", "train")
PASSES = ("fwd", "bwd", "fwd+bwd")
STATUSES = ("ok", "failed", "diverged", "skipped")
SPEED_METRIC = "time_per_step_s"
MEMORY_METRIC = "peak_bytes"


def markdown_table() -> str:
    """The schema as a Markdown table, for the README."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{c}` | {t} | {d} |" for c, t, d in COLUMNS]
    return "\n".join(lines)
