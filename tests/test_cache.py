"""The prediction cache on a real Redis (the shared one, or a private one where a test stops it)."""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from .helpers import write_clip
from recommender.cache import PredictionCache
from recommender.config import Settings
from recommender.library import Library

# the Redis tests carry the ``redis`` marker through their fixtures (conftest); memory:// needs none


def test_cache_hit_is_exact_and_counted(tmp_path, make_library, redis_url, cache_prefix):
    import redis

    clip = write_clip(tmp_path / "c.wav", "chirp", seconds=2.0).read_bytes()
    lib = make_library(cache=PredictionCache(redis_url, prefix=cache_prefix, ttl_s=600))
    p1, sha, cached1 = lib.predict_bytes(clip)
    p2, _, cached2 = lib.predict_bytes(clip)
    assert (cached1, cached2) == (False, True) and (lib.cache.hits, lib.cache.misses) == (1, 1)
    assert p1.genre == p2.genre and p1.probabilities == p2.probabilities
    np.testing.assert_array_equal(p1.embedding, p2.embedding)
    r = redis.Redis.from_url(redis_url)
    key = lib.cache.key(sha, lib.bundle.version)
    assert key.startswith(cache_prefix) and 0 < r.ttl(key) <= 600
    json.loads(r.get(key))  # JSON, not pickle


def test_cache_survives_redis_stopping_and_reconnects(tmp_path, tiny_bundle, private_redis, caplog):
    clip = write_clip(tmp_path / "c.wav", "drone", seconds=2.0).read_bytes()
    other = write_clip(tmp_path / "d.wav", "clicks", seconds=2.0).read_bytes()
    cache = PredictionCache(private_redis.url, prefix="t:", retry_s=0.3, local_items=0)  # the Redis level alone
    lib = Library(Settings(home=tmp_path / "home"), bundle=tiny_bundle, cache=cache)
    lib.predict_bytes(clip)
    assert lib.predict_bytes(clip)[2] is True
    private_redis.stop()
    with caplog.at_level(logging.WARNING, logger="recommender.cache"):
        p, _, cached = lib.predict_bytes(clip)
        assert not cached and p.genre in tiny_bundle.genres and cache.degraded and cache.state() == "degraded"
        lib.predict_bytes(other)
        lib.predict_bytes(other)
    assert sum("unreachable" in r.message for r in caplog.records) == 1  # one warning, not one per call
    private_redis.start()  # same port: Redis returns
    time.sleep(0.4)
    lib.predict_bytes(other)  # a miss that reconnects and stores
    assert not cache.degraded
    assert lib.predict_bytes(other)[2] is True


# ---------------------------------------------------------------- memory:// (the demo without Redis): no server needed
def test_memory_cache_stores_exactly_expires_and_stays_bounded(tmp_path, tiny_bundle):
    from recommender.cache import MemoryStore

    clip = write_clip(tmp_path / "c.wav", "drone", seconds=2.0).read_bytes()
    url = "memory://"
    cache = PredictionCache(url, prefix="m:", ttl_s=60, local_items=0)  # the store alone, no first level
    assert cache.enabled and cache.ping() and cache.state() == "memory"
    lib = Library(Settings(home=tmp_path / "home", redis_url=url), bundle=tiny_bundle, cache=cache)
    p1, sha, hit1 = lib.predict_bytes(clip)
    p2, _, hit2 = lib.predict_bytes(clip)
    assert (hit1, hit2) == (False, True) and p2.probabilities == p1.probabilities and p2.tags == p1.tags
    np.testing.assert_array_equal(p1.embedding, p2.embedding)
    many = cache.get_many([sha, "0" * 64], tiny_bundle.version)
    assert list(many) == [sha] and many[sha].genre == p1.genre

    store = MemoryStore(max_items=3)
    store.set("a", "1", ex=1)
    store.set("b", "2")
    assert store.get("a") == "1" and store.mget(["a", "b", "z"]) == ["1", "2", None]
    time.sleep(1.1)  # past a's TTL; b has none
    assert store.get("a") is None and store.get("b") == "2"
    pipe = store.pipeline()
    for k in "cdef":
        pipe.set(k, k.upper())
    assert pipe.execute() == [True] * 4
    assert store.get("b") is None and [store.get(k) for k in "def"] == ["D", "E", "F"]  # least recently used out
