"""Knowing when rows read before are still good: this process's writes, other processes'
(SQLite's ``PRAGMA data_version``; PostgreSQL's ``writes`` counter, or, while connected,
the notifications its change listener hears), asked once per request at most."""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import CatalogUnavailable
from .database import RETRY_S, reason

log = logging.getLogger("recommender.catalog")
LISTEN_POLL_S = 0.5  # how often the change listener's thread looks up from waiting (to stop)

_scope = threading.local()  # one_check_per_thread's: catalog id → this process's writes when checked


@contextmanager
def one_check_per_thread():
    """Within the block, each catalog asks its database whether another process wrote at most
    once on this thread (writes of this process are always seen). An API request runs in one:
    a request reads the catalog several times (the generation, the query track, the
    neighbours' rows), where one answer is enough; on PostgreSQL it is a round trip, or none
    while the change listener has heard no write (``Catalog._fresh``)."""
    outer = getattr(_scope, "checked", None)
    if outer is None:
        _scope.checked = {}
    try:
        yield
    finally:
        if outer is None:
            _scope.checked = None


class _ChangeListener:
    """PostgreSQL's LISTEN on the catalog's channel, in a thread with a connection of its own.

    Every write transaction sends ``NOTIFY`` on the channel (delivered when it commits), and
    each notification bumps ``count``. While the listener is connected, ``token()`` is what a
    catalog compares to know whether anything was written, with no round trip; when it is
    not (starting, or the server went away) ``token()`` is None and the catalog asks the
    database instead. Each (re)connection bumps ``count`` too: what was written while nobody
    listened is never taken for nothing."""

    def __init__(self, connect_args: tuple[tuple, dict], channel: str) -> None:
        self._args, self.channel = connect_args, channel
        self.count, self.live, self.pid = 0, False, os.getpid()
        self.backend_pid: int | None = None  # the server process of its connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sonicsort-catalog-listen", daemon=True)
        self._thread.start()

    def token(self) -> tuple[str, int] | None:
        """None while not listening, and in a forked child (the thread did not come along)."""
        return ("notified", self.count) if self.live and self.pid == os.getpid() else None

    def stop(self) -> None:
        self._stop.set()  # the thread sees it within LISTEN_POLL_S and closes its connection

    def _run(self) -> None:
        import psycopg
        from psycopg import sql

        warned = False
        while not self._stop.is_set():
            try:
                cargs, cparams = self._args
                with psycopg.connect(*cargs, **{**cparams, "autocommit": True, "keepalives": 1,
                                                "keepalives_idle": 10, "keepalives_interval": 5,
                                                "keepalives_count": 3}) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.backend_pid = conn.info.backend_pid
                    self.count += 1
                    self.live, warned = True, False
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=LISTEN_POLL_S):
                            self.count += 1
            except Exception as exc:  # the server stopped, or the connection broke: poll, and try again
                if not warned and not self._stop.is_set():
                    log.warning("the catalog's change listener lost its connection (%s); polling meanwhile",
                                reason(exc))
                    warned = True
            finally:
                self.live = False
            self._stop.wait(RETRY_S)


class Freshness:
    """The row and vector cache of a ``Catalog`` and when to drop it (a mixin of ``Catalog``:
    it uses the ``Database`` side's connection, lock and write count).

    Rows and vectors already read are kept while nothing was written: by this connection
    (``_writes``) or by any other (``Dialect.others_token``). A server answers most requests
    from here instead of parsing the same rows again."""

    def _init_freshness(self, row_cache: int) -> None:
        self._row_cache = int(row_cache)
        self._rows: dict[int, Any] = {}
        self._vecs: dict[int, np.ndarray] = {}
        self._gen: int | None = None
        self._seen: tuple[Any, int] | None = None
        self._listener: _ChangeListener | None = None
        self._note: tuple[str, int] | None = None  # the listener's token at the last check

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.stop()

    def _fresh(self) -> None:
        """Drop the cached rows, vectors and generation if anything was written since they were read.

        Inside ``one_check_per_thread`` (one API request) the database is asked once per
        catalog and thread; this process's own writes meanwhile make it ask again. On
        PostgreSQL a request asks no database at all while the catalog's change listener
        (``LISTEN``, in a thread) is connected and has heard of no write: the notifications
        say when to ask again."""
        scope = getattr(_scope, "checked", None)
        if scope is not None and scope.get(id(self)) == self._writes:
            return
        with self._lock:
            if not self.sql.listens:
                other = self.sql.others_token(self._db)
            else:
                # In a request the change listener (started here) spares the round trip: while it
                # is connected and no notification came since the last check, nothing was written
                # (another process's write is known a moment after its COMMIT). Elsewhere, or
                # after a notification, ask: that sees every write committed before this read.
                listener = self._listening() if scope is not None else self._listener
                note = listener.token() if listener is not None else None
                if (scope is not None and note is not None and note == self._note and self._seen is not None
                        and self._seen[1] == self._writes):
                    scope[id(self)] = self._writes
                    return
                try:
                    with self._guard():
                        other = self.sql.others_token(self._db)
                except CatalogUnavailable:
                    if self._seen is None:
                        raise
                    return  # the server is away: what was read stays good to answer from
                self._note = note  # read before the question: a write after it notifies again
            seen = (other, self._writes)
            if seen != self._seen:
                self._rows.clear()
                self._vecs.clear()
                self._gen = None
                self._seen = seen
            if scope is not None:
                scope[id(self)] = self._writes

    def _remember(self, store: dict, key: int, value: Any) -> None:
        if len(store) >= self._row_cache:
            store.pop(next(iter(store)))  # the oldest first
        store[key] = value

    def _listening(self) -> _ChangeListener:
        """This process's change listener, started on first use (a forked worker starts its own)."""
        listener = self._listener
        if listener is None or listener.pid != os.getpid():
            self._listener = listener = _ChangeListener(
                self._engine.dialect.create_connect_args(self._engine.url), self._channel)
        return listener
