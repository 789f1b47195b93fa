"""The environment a measurement ran in: the one collector of machine and software facts.

:func:`environment` returns the ``connbench.results.schema`` environment columns plus
``threads`` for results rows; :func:`machine` returns the same facts in the shape the CI
timing gate prints and stores (``connbench.perf.gate``), and the sweep manifest records.
What cannot change within a process (versions, CPU, host, git state, the load average
when the process first looked) is computed once; the thread count, GPU name (per
device) and timestamp are read on every call. Nothing here ever raises: an unknown
value is an empty string (or NA), so capturing the environment never fails a trial.

The CPU comes from ``/proc/cpuinfo`` (first processor block, a dozen lines below):
``py-cpuinfo`` 9.0 gives the same name, family and model here but spawns a subprocess
and took 2.1 s per process on the development VM, which every pool worker would pay.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import connbench

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout: bench/results/ -> ..
CPUINFO = Path("/proc/cpuinfo")


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second: 2026-11-22T03:40:00+00:00."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_cpuinfo(text: str) -> tuple[str, str]:
    """(model name, family/model id) of the first processor in a /proc/cpuinfo text.

    x86 says ``model name``; some ARM kernels say ``Model`` or ``Processor`` (and a
    numeric ``processor`` is the CPU index, not a name). The id ``f25m1`` (cpu family,
    model) tells CPU generations apart where a VM hides the model from the name.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if not key.strip():
            if fields:
                break  # first processor only
            continue
        fields.setdefault(key.strip().lower(), value.strip())
    name = next((fields[k] for k in ("model name", "model", "processor")
                 if fields.get(k) and not fields[k].isdigit()), "")
    cpu_id = ""
    if fields.get("cpu family", "").isdigit() and fields.get("model", "").isdigit():
        cpu_id = f"f{fields['cpu family']}m{fields['model']}"
    return name, cpu_id


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, str]:
    """(CPU model name, family/model id) of this machine; the name falls back to platform."""
    name, cpu_id = "", ""
    with contextlib.suppress(OSError):
        name, cpu_id = parse_cpuinfo(CPUINFO.read_text())
    return name or platform.processor() or platform.machine(), cpu_id


def cpu_model() -> str:
    """The CPU's marketing name."""
    return cpu_info()[0]


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(SOURCE_ROOT), *args], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state() -> tuple[str, bool | None]:
    """(commit, dirty) of the connbench source tree; ("", None) outside a git checkout.

    Dirty means tracked files differ from the commit or untracked, unignored files
    exist (results/ and reports/ are ignored, so a run never dirties its own tree).
    """
    if not (SOURCE_ROOT / ".git").exists():
        return "", None
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return "", None
    status = _git("status", "--porcelain")
    return commit, None if status is None else bool(status)


def _numpy_version() -> str:
    try:
        import numpy

        return numpy.__version__
    except ImportError:
        return ""


@functools.lru_cache(maxsize=1)
def _static() -> dict[str, Any]:
    import torch

    commit, dirty = git_state()
    cudnn = ""
    try:
        if torch.backends.cudnn.is_available():
            cudnn = str(torch.backends.cudnn.version() or "")
    except Exception:  # noqa: BLE001 - a broken CUDA install still gets a row
        pass
    return {
        "python_version": platform.python_version(),
        "numpy_version": _numpy_version(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "cudnn_version": cudnn,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_avg": load_average(),  # at the process's first look: what else was running
        "host": socket.gethostname(),
        "git_commit": commit,
        "git_dirty": dirty,
        "connbench_version": connbench.__version__,
    }


@functools.lru_cache(maxsize=8)
def gpu_name(device: str = "cuda") -> str:
    """The GPU's name for a cuda device, "" for cpu or when CUDA is unavailable."""
    if not str(device).startswith("cuda"):
        return ""
    try:
        import torch

        if not torch.cuda.is_available():
            return ""
        return torch.cuda.get_device_name(torch.device(device))
    except Exception:  # noqa: BLE001
        return ""


def environment(device: str = "cpu") -> dict[str, Any]:
    """Environment columns for a row measured on ``device`` (cpu, cuda, cuda:N)."""
    import torch

    try:
        env = dict(_static())
    except Exception:  # noqa: BLE001 - never fail a trial for its metadata
        env = {"connbench_version": connbench.__version__}
    env["gpu_name"] = gpu_name(str(device))
    env["threads"] = torch.get_num_threads()
    env["timestamp"] = now_utc()
    return env


def machine() -> dict[str, Any]:
    """The machine as the timing gate and the manifest show it (short keys, JSON-ready).

    The load average here is read now (the gate reports it per run), not at process start.
    """
    env = environment("cuda")
    return {"cpu": env.get("cpu_model", ""), "cpu_id": cpu_info()[1],
            "cores": env.get("cpu_count"), "gpu": env.get("gpu_name") or None,
            "torch": env.get("torch_version", ""), "threads": env["threads"],
            "python": env.get("python_version", platform.python_version()),
            "numpy": env.get("numpy_version", ""), "cuda": env.get("cuda_version", ""),
            "cudnn": env.get("cudnn_version", ""), "host": env.get("host", ""),
            "git_commit": env.get("git_commit", ""), "git_dirty": env.get("git_dirty"),
            "connbench": connbench.__version__,
            **({"loadavg": [round(x, 2) for x in os.getloadavg()]}
               if hasattr(os, "getloadavg") else {})}


def summary() -> str:
    """One line for logs: host, CPU, threads, torch, git."""
    env = environment()
    dirty = {True: " (dirty)", False: "", None: ""}[env.get("git_dirty")]
    return (f"{env.get('host')} | {env.get('cpu_model')} | {env['threads']} threads | "
            f"torch {env.get('torch_version')} | git {env.get('git_commit', '')[:10]}{dirty}"
            f" | pid {os.getpid()}")
