"""Example connbench plugin: the ``toeplitz`` structure and the ``parity`` task."""

from connbench_toeplitz import parity, structure  # noqa: F401  (importing registers them)
