"""Argument types shared by every command: a bad value fails at parse time, in one line.

Each function is an argparse ``type=``: it returns the converted value or raises
``argparse.ArgumentTypeError``, which argparse prints as
``connbench CMD: error: argument --flag: <message>`` (exit 2) before any work starts.
The messages say what was given and what is allowed. Standard library only, so that
parsing stays fast; the device check imports torch only for ``cuda``/``mps``.
"""

from __future__ import annotations

import argparse
import math
import re

DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
DEVICES_ALLOWED = "cpu, cuda, cuda:N or mps"


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (sizes, steps, counts)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be a positive integer (1 or more)")
    return value


def thread_count(text: str) -> int:
    """A torch thread count: 1 to 4 per core of this machine."""
    import os

    value = positive_int(text)
    limit = 4 * (os.cpu_count() or 1)
    if value > limit:
        raise argparse.ArgumentTypeError(
            f"{value} is more threads than this machine can use; allowed: 1 to {limit} "
            f"(4 per core, {os.cpu_count()} cores)")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be an integer >= 0")
    return value


def bounded_int(low: int, high: int):
    """An integer in [low, high], e.g. ``--dpi``."""
    def parse(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range; allowed: {low} to {high}")
        return value
    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def finite_positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, time limits, run times); not nan or inf."""
    value = _float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    value = _float(text)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number in (0, 1]")
    return value


def non_empty_path(text: str) -> str:
    """A path that is not empty (``--results ""`` would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path is not allowed; give a directory name")
    return text


def device(text: str) -> str:
    """A torch device this machine has: cpu, cuda, cuda:N or mps."""
    if not DEVICE_RE.match(text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; allowed: {DEVICES_ALLOWED}")
    from connbench.plan.resources import device_problem

    problem = device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text
