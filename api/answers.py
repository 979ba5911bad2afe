"""The HTTP answer cache: whole ``/v1/predict`` answers of repeated uploads, per worker.

The view (``api.v1``) stores each answer it computes; ``api.fastpath`` and the view look
them up. An answer is keyed by the request (``answer_key``) and tagged with the service's
``state_token()`` (model version, catalog generation) from before it was computed, so it
is never served once either has changed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


def answer_key(sha256: str, query_string: str, script_root: str) -> tuple[str, str, str]:
    """What names a /v1/predict answer besides the state it came from."""
    return sha256, query_string, script_root


class AnswerCache:
    """Whole serialised answers of repeated requests, in this process, least recently used out.

    A key names the request (the upload's content hash and its parameters); each entry also
    holds the ``token`` of the state it was computed from (model and catalog generation), and a
    lookup with another token misses, so an answer never outlives a catalog change. Bounded
    by the bytes it holds; ``max_bytes=0`` disables it. Thread-safe.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self.bytes = 0
        self.hits = self.misses = 0
        self._items: "OrderedDict[Any, tuple[Any, bytes]]" = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def get(self, key: Any, token: Any) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] != token:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key: Any, token: Any, body: bytes) -> None:
        if len(body) > self.max_bytes // 16:  # no one answer crowds out the rest
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= len(old[1])
            self._items[key] = (token, body)
            self.bytes += len(body)
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)

    def lookup(self, service, key: Any) -> tuple[Any, bytes | None]:
        """(the service's current state token, the answer stored under ``key`` for it or None).
        The token is None (store nothing) while the service is not ready or the cache is off."""
        token = service.state_token() if self.enabled else None
        return token, (self.get(key, token) if token is not None else None)


def init_app(app, max_bytes: int) -> AnswerCache:
    cache = app.extensions["sonicsort_answers"] = AnswerCache(max_bytes)
    return cache
