"""pytest-benchmark setup for the perf suite (run by `make perf`, never by `make test`).

Threads: $CONNBENCH_THREADS, default 1. One thread makes absolute times far more
repeatable on a shared 2-core machine (two-thread OpenMP regions straggle whenever
another process holds a core); the thread count is part of the machine fingerprint,
so runs at different counts are never compared.
"""

import os

import torch

from connbench.perf.gate import fingerprint, machine

THREADS = int(os.environ.get("CONNBENCH_THREADS", "1"))
torch.set_num_threads(THREADS)


def pytest_benchmark_update_machine_info(config, machine_info):
    info = machine()
    machine_info["torch_version"] = info["torch"]
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_model"] = info["cpu"]
    machine_info["cpu_id"] = info["cpu_id"]
    machine_info["cpu_cores"] = info["cores"]
    machine_info["gpu_model"] = info["gpu"]
    machine_info["cuda"] = torch.version.cuda
    machine_info["connbench_fingerprint"] = fingerprint(info)
    # the hostname of a CI container changes every run; keeping it would make
    # pytest-benchmark warn "machine_info is different" on every comparison
    machine_info.pop("node", None)
    for volatile in ("hz_actual", "hz_actual_friendly"):  # the clock of the moment
        machine_info.get("cpu", {}).pop(volatile, None)
