"""What one request may cost: a time budget, and how many long requests run at once.

Most requests cost milliseconds. A few can cost much more (a 1,000-track playlist, a long
path, re-ranking the largest ``k``): each such request runs under a ``Deadline`` of
``SONICSORT_REQUEST_BUDGET_S`` and through a ``Gate`` that lets ``SONICSORT_HEAVY_REQUESTS``
of them run at once in a process. Past the budget, or when the gate is shut, the request is
answered ``Overloaded`` (HTTP 503 with Retry-After; the serving front holds that answer in
its event loop for ``api.errors.OVERLOAD_HOLD_S``): the thread is free again at once, and
the short requests of everyone else keep their latency. Long loops also
call ``yield_gil`` between steps, so the short requests of the same process get the
interpreter promptly instead of after a switch interval.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from .errors import Overloaded


class Deadline:
    """The moment a request's work must stop; ``None`` seconds: never."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.end = math.inf if not seconds else time.monotonic() + float(seconds)

    def check(self, what: str) -> None:
        """Raise ``Overloaded`` once the budget is spent."""
        if time.monotonic() > self.end:
            raise Overloaded(f"{what} needs more than this server's budget for one request "
                             f"({self.seconds:g} s, SONICSORT_REQUEST_BUDGET_S); ask for fewer tracks")


class Gate:
    """At most ``slots`` heavy requests at once in this process; one more is refused at once
    (a caller that waited would hold its thread from other requests)."""

    def __init__(self, slots: int) -> None:
        self.slots = max(1, int(slots))
        self._sem = threading.BoundedSemaphore(self.slots)

    @contextmanager
    def enter(self, what: str) -> Iterator[None]:
        if not self._sem.acquire(blocking=False):
            raise Overloaded(f"the server is busy with other long requests ({self.slots} at once, "
                             f"SONICSORT_HEAVY_REQUESTS); retry {what} in a moment")
        try:
            yield
        finally:
            self._sem.release()


def lower_priority(nice: int = 10) -> None:
    """Make the calling thread yield the CPU to the process's other threads (Linux: a thread's
    own nice value; elsewhere nothing). For threads that only ever do long work: an
    unprivileged thread cannot raise its priority again."""
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        pass


def yield_gil() -> None:
    """Let another thread of this process run now (a long request's loop calls it between steps)."""
    time.sleep(0)


__all__ = ["Deadline", "Gate", "lower_priority", "yield_gil"]
