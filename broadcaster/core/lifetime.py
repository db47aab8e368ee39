"""Helper processes that end with the process that started them.

A server killed with kill -9 must take its core processes and workers with it
(Linux: PR_SET_PDEATHSIG) rather than leave them orphaned, holding memory, the
UDP port and the server's stderr, for good.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """In the child (a worker's initializer, a subprocess's preexec_fn): SIGKILL when ``parent`` dies."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before the line above ran
        os._exit(1)
