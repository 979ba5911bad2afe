"""Prediction cache in Redis, keyed by the audio's content hash and the model version.

A repeated prediction of the same audio costs one Redis round trip instead of decoding,
features and the model. Values are JSON (the embedding as base64 of little-endian float32,
so it comes back bit for bit), never pickle.

When Redis does not answer, the cache steps aside: lookups miss, stores are dropped, one
warning is logged, ``degraded`` is true, and it tries Redis again after ``retry_s``. It
reconnects by itself when Redis returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import redis

from embedding import Prediction

log = logging.getLogger(__name__)


class MemoryStore:
    """The few Redis commands the cache uses, in this process's memory (LRU, TTL honoured).

    For ``memory://`` (the demo when no Redis answers): not shared between processes and
    lost at exit, so a real service uses Redis.
    """

    def __init__(self, max_items: int = 10_000) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def ping(self) -> bool:
        return True

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] and item[0] < time.monotonic():
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[1]

    def mget(self, keys: list[str]) -> list[str | None]:
        return [self.get(k) for k in keys]

    def set(self, key: str, value: str, ex: int | None = None) -> bool:
        with self._lock:
            self._items[key] = (time.monotonic() + ex if ex else 0.0, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return True

    def pipeline(self, transaction: bool = False) -> "_MemoryPipeline":
        return _MemoryPipeline(self)


class _MemoryPipeline:
    def __init__(self, store: MemoryStore) -> None:
        self.store, self.calls = store, []

    def set(self, *args, **kw) -> None:
        self.calls.append((args, kw))

    def execute(self) -> list[bool]:
        return [self.store.set(*a, **kw) for a, kw in self.calls]


class PredictionCache:
    """Redis-backed; ``url=None`` gives a disabled cache (always misses, never degraded);
    ``url="memory://"`` keeps predictions in this process (see ``MemoryStore``)."""

    def __init__(self, url: str | None, *, prefix: str = "sonicsort:", ttl_s: int = 30 * 86400,
                 retry_s: float = 2.0, socket_timeout_s: float = 0.5, local_items: int = 1024) -> None:
        if url and url.strip().lower() in ("none", "off", "disabled"):
            url = None  # SONICSORT_REDIS_URL=none: no cache at all
        self.url, self.prefix, self.ttl_s, self.retry_s = url, prefix, int(ttl_s), retry_s
        self.hits = self.misses = self.errors = 0
        self._retry_at = 0.0
        self._degraded = False
        self._lock = threading.Lock()
        self._redis = None
        # a small first level in this process: a prediction of the same bytes by the same model
        # never changes, so it needs no invalidation, and a repeat skips the Redis round trip
        self._local: "OrderedDict[str, Prediction]" = OrderedDict()
        self._local_items = local_items if url else 0
        if url and url.startswith("memory://"):
            self._redis = MemoryStore()
        elif url:
            self._redis = redis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                               socket_connect_timeout=socket_timeout_s,
                                               health_check_interval=30)

    @classmethod
    def from_settings(cls, settings) -> "PredictionCache":
        """The cache ``settings`` describe (``redis_url``, ``cache_prefix``, ``cache_ttl_s``)."""
        return cls(settings.redis_url or None, prefix=settings.cache_prefix, ttl_s=settings.cache_ttl_s)

    def key(self, sha256: str, model_version: str) -> str:
        return f"{self.prefix}pred:{model_version}:{sha256}"

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    @property
    def degraded(self) -> bool:
        return self._degraded

    def state(self) -> str:
        if self._redis is None:
            return "disabled"
        if isinstance(self._redis, MemoryStore):
            return "memory"
        return "degraded" if self._degraded else "ok"

    def _usable(self) -> bool:
        return self._redis is not None and (not self._degraded or time.monotonic() >= self._retry_at)

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self.errors += 1
            if not self._degraded:
                log.warning("Redis at %s is unreachable (%s); predictions are served uncached until it returns",
                            self.url, exc)
            self._degraded = True
            self._retry_at = time.monotonic() + self.retry_s

    def _ok(self) -> None:
        if self._degraded:
            with self._lock:
                if self._degraded:
                    log.warning("Redis at %s answers again; the prediction cache is back", self.url)
                self._degraded = False

    def _call(self, fn, *args, **kw) -> Any:
        try:
            out = fn(*args, **kw)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            self._failed(exc)
            return _FAILED
        self._ok()
        return out

    def ping(self) -> bool:
        """Check Redis now (ignoring the retry delay); updates ``degraded``."""
        if self._redis is None:
            return False
        return self._call(self._redis.ping) is True

    def _remember(self, key: str, p: Prediction) -> None:
        if self._local_items:
            with self._lock:
                self._local[key] = p
                self._local.move_to_end(key)
                while len(self._local) > self._local_items:
                    self._local.popitem(last=False)

    def get(self, sha256: str, model_version: str) -> Prediction | None:
        key = self.key(sha256, model_version)
        p = self._local.get(key)
        if p is not None:
            self.hits += 1
            return p
        if not self._usable():
            self.misses += 1
            return None
        raw = self._call(self._redis.get, key)
        if raw is _FAILED or raw is None:
            self.misses += 1
            return None
        try:
            p = Prediction.from_json(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable cache entry for %s", sha256)
            self.misses += 1
            return None
        self._remember(key, p)
        self.hits += 1
        return p

    def get_many(self, sha256s: list[str], model_version: str) -> dict[str, Prediction]:
        """One round trip for many hashes; counts hits and misses like ``get``."""
        if not sha256s:
            return {}
        if not self._usable():
            self.misses += len(sha256s)
            return {}
        raws = self._call(self._redis.mget, [self.key(s, model_version) for s in sha256s])
        if raws is _FAILED:
            self.misses += len(sha256s)
            return {}
        out = {}
        for s, raw in zip(sha256s, raws):
            if raw is not None:
                try:
                    out[s] = Prediction.from_json(raw)
                except (ValueError, KeyError, TypeError):
                    pass
        self.hits += len(out)
        self.misses += len(sha256s) - len(out)
        return out

    def put(self, sha256: str, prediction: Prediction) -> bool:
        key = self.key(sha256, prediction.model_version)
        self._remember(key, prediction)
        if not self._usable():
            return False
        out = self._call(self._redis.set, key,
                         prediction.to_json(), ex=self.ttl_s if self.ttl_s > 0 else None)
        return out is not _FAILED

    def put_many(self, items: list[tuple[str, Prediction]]) -> bool:
        if not items or not self._usable():
            return False
        pipe = self._redis.pipeline(transaction=False)
        for sha, p in items:
            pipe.set(self.key(sha, p.model_version), p.to_json(), ex=self.ttl_s if self.ttl_s > 0 else None)
        return self._call(pipe.execute) is not _FAILED

    def stats(self) -> dict[str, Any]:
        return {"state": self.state(), "url": self.url, "hits": self.hits, "misses": self.misses,
                "errors": self.errors, "ttl_s": self.ttl_s, "prefix": self.prefix}


_FAILED = object()
