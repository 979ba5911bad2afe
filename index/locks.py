"""The locks of an index: many searches or one writer in a process, and one saver at a time
of a saved index across processes."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path


class RWLock:
    """Many concurrent searches, or one writer. Writer-preferring: a waiting writer holds
    back new readers, so a steady stream of searches cannot starve an add."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    # The read path is every search's, so its common case (no writer around) takes the
    # bare mutex with C-level calls and never touches the Condition's Python methods.
    def acquire_read(self) -> None:
        mutex = self._mutex
        mutex.acquire()
        try:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        finally:
            mutex.release()

    def release_read(self) -> None:
        mutex = self._mutex
        mutex.acquire()
        try:
            self._readers -= 1
            if self._readers == 0 and self._writers_waiting:
                self._cond.notify_all()
        finally:
            mutex.release()

    @contextmanager
    def read(self):
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@contextmanager
def _save_lock(path: Path):
    """An exclusive ``flock`` on ``.<name>.lock`` beside the index folder: two savers (workers of
    one server, or a server and ``sonicsort reindex``) would otherwise move the folder away
    under each other, and the second rename onto a non-empty folder fails."""
    import fcntl

    with open(path.with_name(f".{path.name}.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
