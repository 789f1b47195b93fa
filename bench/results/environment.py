"""The environment a measurement ran in, as results-row columns.

:func:`environment` returns the ``connbench.results.schema`` environment columns plus ``threads``.
What cannot change within a process (versions, CPU model, host, git state) is
computed once; the thread count, GPU name (per device) and timestamp are read on
every call. Nothing here ever raises: an unknown value is an empty string (or NA
for ``git_dirty``), so capturing the environment never fails a cell.
"""

from __future__ import annotations

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


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second: 2026-11-22T03:40:00+00:00."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # first processor only
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux)."""
    for key, value in _cpuinfo().items():
        # x86 says "model name"; some ARM kernels say "Model" or "Processor"
        if key.lower() in ("model name", "model", "processor") and not value.isdigit():
            return value
    return platform.processor() or platform.machine()


def cpu_id() -> str:
    """Family and model numbers ("f25m17"): VMs often hide the model from the name
    ("AMD EPYC"), and these still tell CPU generations apart."""
    info = _cpuinfo()
    if "cpu family" in info and "model" in info:
        return f"f{info['cpu family']}m{info['model']}"
    return ""


def machine() -> dict[str, Any]:
    """Where timings come from, for the gate's and the benchmarks' headers and JSON."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cpu_id": cpu_id(), "cores": os.cpu_count(),
        "gpu": gpu_name("cuda") or None, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "python": platform.python_version(),
    }
    try:
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        pass
    return info


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
    exist (results/ and the venv are ignored, so a run never dirties its own tree).
    """
    if not (SOURCE_ROOT / ".git").exists():
        return "", None
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return "", None
    status = _git("status", "--porcelain")
    return commit, None if status is None else bool(status)


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
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "cudnn_version": cudnn,
        "cpu_model": cpu_model(),
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
    except Exception:  # noqa: BLE001 - never fail a cell for its metadata
        env = {"connbench_version": connbench.__version__}
    env["gpu_name"] = gpu_name(str(device))
    env["threads"] = torch.get_num_threads()
    env["timestamp"] = now_utc()
    return env


def summary() -> str:
    """One line for logs: host, CPU, threads, torch, git."""
    env = environment()
    dirty = {True: " (dirty)", False: "", None: ""}[env.get("git_dirty")]
    return (f"{env.get('host')} | {env.get('cpu_model')} | {env['threads']} threads | "
            f"torch {env.get('torch_version')} | git {env.get('git_commit', '')[:10]}{dirty}"
            f" | pid {os.getpid()}")
