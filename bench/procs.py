"""Child processes that die with their parent.

A driver killed with SIGKILL cannot clean up, so each child asks the kernel to kill it
when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``). Used as the
``preexec_fn`` of the memory subprocess and the ``initializer`` of pool workers.
Elsewhere (macOS, Windows) it does nothing. Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no prctl (e.g. a non-glibc libc): best effort
        return None


# Resolved once in the parent: a preexec_fn runs between fork and exec of a threaded
# process, where loading a library (dlopen takes a lock) could deadlock.
_PRCTL = _load_prctl()


def die_with_parent() -> None:
    """Make the calling process receive SIGKILL when its parent exits."""
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    # The parent may have died between fork and prctl: then nobody would signal us.
    if os.getppid() == 1:
        os._exit(1)
