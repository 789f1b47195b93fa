"""Compile the C++ kernels once per machine and torch version, and load them.

The sources (``*.cpp``, ``cellmath.h`` next to this file) are built with
``torch.utils.cpp_extension.load`` into
``$CONNBENCH_CACHE/kernels/<torch version>-<source hash>/`` (default cache:
``~/.cache/connbench``), so a source change or a torch upgrade builds afresh and
nothing else does. A file lock serialises the build between processes (pool
workers, the memory subprocess): the first one compiles, the others wait and load.

Where no compiler is available the build fails once, ``load()`` returns None with a
one-line warning, and the cells keep the eager path.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).parent
SOURCES = ("elementwise.cpp", "matrix.cpp")
HEADERS = ("cellmath.h",)
# -O3 and the native ISA: the inner loops are written to vectorise (AVX2/AVX-512)
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-std=c++17"]
LDFLAGS = ["-fopenmp"]

_state: dict[str, object] = {}


def source_hash() -> str:
    h = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        h.update(name.encode())
        h.update((HERE / name).read_bytes())
    h.update(" ".join(CFLAGS).encode())
    return h.hexdigest()[:12]


def cpu_tag() -> str:
    """The CPU model and ISA flags: -march=native code is only valid on the same kind
    (an AVX-512 build would crash with SIGILL on a machine without it)."""
    text = ""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        text = "".join(sorted(set(lines)))
    except OSError:
        pass
    return hashlib.sha256((platform.machine() + text).encode()).hexdigest()[:8]


def build_dir() -> Path:
    root = Path(os.environ.get("CONNBENCH_CACHE", Path.home() / ".cache" / "connbench"))
    tag = f"{torch.__version__}-{platform.machine()}-{cpu_tag()}-{source_hash()}"
    return root / "kernels" / tag


def load(verbose: bool = False):
    """The loaded op namespace ``torch.ops.connbench``, or None (no compiler)."""
    if "ops" in _state:
        return _state["ops"]
    ops = None
    try:
        ops = _build_and_load(verbose)
    except Exception as exc:  # noqa: BLE001 - any build failure means: use eager
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"connbench: fused kernels unavailable ({first}); using the eager path",
                      RuntimeWarning, stacklevel=2)
    _state["ops"] = ops
    return ops


def _build_and_load(verbose: bool):
    from torch.utils import cpp_extension

    directory = build_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        try:
            cpp_extension.load(
                name="connbench_kernels_" + source_hash(),
                sources=[str(HERE / s) for s in SOURCES],
                extra_cflags=CFLAGS,
                extra_ldflags=LDFLAGS,
                extra_include_paths=[str(HERE)],
                build_directory=str(directory),
                is_python_module=False,
                verbose=verbose,
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return torch.ops.connbench
