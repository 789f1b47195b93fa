"""Memory trials: extra peak memory of one forward+backward.

CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
allocated before. CPU: a fresh subprocess per trial (``python -m
connbench.measure.memory``, the trial as JSON on stdin) that loads the plugins of the
run, builds the model and a batch, resets the kernel's peak-RSS counter
(``/proc/self/clear_refs`` = 5, Linux ≥ 4.0), runs one forward+backward and reports
``VmHWM − VmRSS before``. Where the counter cannot be reset it falls back to
``ru_maxrss`` growth, which is still right because the process is fresh
(``ru_maxrss`` only ever rises, so a shared process would report the largest earlier
trial instead).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from connbench.measure.rows import ACCOUNTING, base_row
from connbench.measure.workload import build, threads_for
from connbench.plan.sweep import Trial
from connbench.procs import die_with_parent
from connbench.results.schema import MEMORY_METRIC

MEMORY_TIMEOUT_S = 900


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory_here(trial: Trial, threads: int) -> dict[str, Any]:
    """Extra peak bytes of one forward+backward, measured in this process.

    Call it on CPU only in a fresh process (``python -m connbench.measure.memory``).
    """
    import resource

    import torch

    torch.set_num_threads(threads)
    w = build(trial)
    params = [p for p in w.model.parameters() if p.requires_grad]
    out: dict[str, Any] = dict(w.accounting, threads=threads, seq_len=int(w.x.shape[1]))
    if trial.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        grads = torch.autograd.grad(w.task.loss(w.model(w.x), w.y), params)
        torch.cuda.synchronize()
        out.update(peak_bytes=int(torch.cuda.max_memory_allocated() - before),
                   method="cuda.max_memory_allocated")
        del grads
        return out
    rss_before = _proc_status_kb("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    reset = rss_before is not None and _reset_peak_rss()
    grads = torch.autograd.grad(w.task.loss(w.model(w.x), w.y), params)
    if reset:
        hwm = _proc_status_kb("VmHWM") or 0
        out.update(peak_bytes=max(0, hwm - rss_before) * 1024, method="VmHWM after clear_refs")
    else:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        base = rss_before if rss_before is not None else maxrss_before
        out.update(peak_bytes=max(0, maxrss - base) * 1024, method="ru_maxrss growth")
    del grads
    return out


def measure_memory(trial: Trial, sweep: str | None = None, *,
                   threads: int | None = None) -> list[dict]:
    threads = threads_for(trial, threads)
    t0 = time.perf_counter()
    if trial.device.startswith("cuda"):
        res = peak_memory_here(trial, threads)
    else:
        res = _in_fresh_process(trial, threads)
    row = base_row(trial, sweep)
    row.update({k: res[k] for k in ACCOUNTING})
    row["implementation"] = res.get("implementation", row["implementation"])  # what ran
    row.update(kind="memory", metric=MEMORY_METRIC, value=float(res["peak_bytes"]),
               seq_len=res["seq_len"], threads=res["threads"],
               wall_time_s=time.perf_counter() - t0)
    row["pass"] = "fwd+bwd"
    return [row]


def _in_fresh_process(trial: Trial, threads: int) -> dict[str, Any]:
    # the child inherits CONNBENCH_PLUGINS (connbench.plugins exports it), so it
    # knows the plugin structures and tasks this process knows
    proc = subprocess.run(
        [sys.executable, "-m", "connbench.measure.memory"],
        input=json.dumps({"trial": trial.to_dict(), "threads": threads}),
        capture_output=True, text=True, timeout=MEMORY_TIMEOUT_S,
        preexec_fn=die_with_parent,  # a SIGKILLed driver leaves no measuring orphan
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        msg = tail[-1] if tail else f"exit code {proc.returncode}"
        raise RuntimeError(f"memory subprocess failed: {msg}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _main() -> int:
    from connbench import plugins

    plugins.load()
    request = json.loads(sys.stdin.read())
    print(json.dumps(peak_memory_here(Trial.from_dict(request["trial"]), request["threads"])))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
