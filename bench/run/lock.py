"""One run per results directory and sweep: an advisory lock on ``<sweep>/.lock``.

Two runs on the same parts would compute every trial twice and time their speed trials
while competing for the cores. The lock is ``fcntl.flock`` on a file that holds who
has it (pid, host, start time, command) for the message of a refused run. The kernel
drops the lock when its holder dies, even by SIGKILL, so a stale lock file of a dead
run is simply taken over; the file itself is never deleted (deleting it would let two
runs lock two different files). Shared network filesystems may not honour flock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from connbench.registry import SpecError

LOCK_NAME = ".lock"


class LockHeld(SpecError):
    """Another run holds the lock."""


class RunLock:
    """``with RunLock(sweep_dir, wait=False):`` holds the lock for the block."""

    def __init__(self, directory: Path, *, wait: bool = False, command: str = "",
                 on_wait=None):
        self.path = Path(directory) / LOCK_NAME
        self.wait = wait
        self.command = command
        self.on_wait = on_wait or (lambda holder: None)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = describe_holder(self.path)
                if not self.wait:
                    raise LockHeld(
                        f"{self.path.parent} is in use by another run ({holder}); wait for "
                        "it to finish, or pass --wait to start when it does") from None
                self.on_wait(holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "command": self.command}
            os.write(fd, json.dumps(info).encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def describe_holder(path: Path) -> str:
    """``pid 123 on host since 2026-…: connbench run smoke``, from the lock file."""
    try:
        info = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    text = f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}"
    return text + (f": {info['command']}" if info.get("command") else "")


def waiting_message(holder: str) -> None:
    print(f"connbench run: waiting for another run to finish ({holder})", file=sys.stderr)
