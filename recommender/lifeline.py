"""Child processes that end with their parent, however the parent ends (``kill -9`` included).

A process pool's workers, the index preparer and the milvus-lite server are children that
hold memory (a decoder, a model, a database) and have no use once their parent is gone.
``die_with_parent`` asks Linux to send the child a signal when its parent dies
(``PR_SET_PDEATHSIG``); elsewhere a daemon thread notices within a second that the parent
changed and signals the child itself. Either way, a parent that died before the call is
noticed at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGTERM) -> None:
    """Make this process receive ``sig`` when its parent dies. ``parent_pid``: the parent it
    should have (default: the current one); if that one is gone already, ``sig`` comes now.

    Call it first thing in the child (a pool's initializer, ``preexec_fn``, a process target).
    On Linux the signal follows the death of the parent *thread* that started the child, so
    start such children from a thread that lives as long as they should."""
    parent = os.getppid() if parent_pid is None else parent_pid
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0:
            if os.getppid() != parent:
                os.kill(os.getpid(), sig)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), sig)

    threading.Thread(target=watch, daemon=True, name="sonicsort-parent-watch").start()


__all__ = ["die_with_parent"]
