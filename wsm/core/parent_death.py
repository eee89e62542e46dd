"""Processes that end with their parent, by the kernel's parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG)``).

gunicorn's threaded workers notice a dead master and exit; its uvicorn workers (the ASGI webhook's) do not,
so a master killed by SIGKILL would leave them serving its port. :func:`die_with_master` covers them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None) if sys.platform == "linux" else None
_master: int | None = None  # the process die_with_master was called in


def signal_on_parent_death(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when the thread that forked it ends; False off Linux."""
    return _prctl is not None and _prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def die_with_master(sig: int = signal.SIGTERM) -> None:
    """Every process forked from here from now on (gunicorn's workers) gets ``sig`` when this one dies."""
    global _master
    if _prctl is None or _master == os.getpid():  # once per process, however often main.py is loaded
        return
    master = _master = os.getpid()

    def after_fork() -> None:
        if signal_on_parent_death(sig) and os.getppid() != master:
            os.kill(os.getpid(), sig)  # the master died between the fork and the prctl

    os.register_at_fork(after_in_child=after_fork)
