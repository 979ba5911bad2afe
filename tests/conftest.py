"""Shared fixtures: generated audio (never real music), tiny models, a real Redis."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import csv
from pathlib import Path

import pytest

from .helpers import (GENRES, write_clip, TINY_HEAD, postgres_schema, POSTGRES_ADMIN_URL, REDIS_URL, PrivateRedis)











@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> Path:
    """<genre>/<clip>.wav: 8 clips per genre, 2 s each, plus a manifest with artists."""
    root = tmp_path_factory.mktemp("toy")
    rows = []
    for g in GENRES:
        for i in range(8):
            p = write_clip(root / g / f"{g}.{i:03d}.wav", g, seconds=2.0, seed=hash((g, i)) % 10_000)
            rows.append({"path": f"{g}/{p.name}", "genre": g, "artist": f"{g}-artist-{i // 2}"})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "genre", "artist"])
        w.writeheader()
        w.writerows(rows)
    return root




@pytest.fixture(scope="session")
def tiny_bundle(toy_dataset, tmp_path_factory):
    """The model's shape, tiny: the real frozen musicnn front end under a tiny BiLSTM head
    trained on the toy dataset, saved and loaded back from disk."""
    from embedding import FeatureConfig, ModelBundle, ModelConfig
    from embedding.data import load_dataset
    from embedding.train import train_bundle

    ds = load_dataset(toy_dataset / "manifest.csv", seed=3)
    bundle = train_bundle(ds, feature_config=FeatureConfig(), model_config=ModelConfig(**TINY_HEAD),
                          workers=1)
    out = bundle.save(tmp_path_factory.mktemp("models") / "tiny")
    return ModelBundle.load(out)


@pytest.fixture(scope="session")
def other_bundle(tiny_bundle, tmp_path_factory):
    """A second model of the same shape: the tiny bundle with its genre layer's weights
    scaled, saved as a bundle of its own (so of another version)."""
    from embedding import ModelBundle

    b = ModelBundle.load(tiny_bundle.directory)
    layer = b.model.get_layer("genre")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 1.5, bias])
    return ModelBundle.load(b.save(tmp_path_factory.mktemp("models") / "other"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis server (make test / .ci/run make sure one answers). Never stopped by tests."""
    import redis

    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    return REDIS_URL








@pytest.fixture(scope="session")
def postgres_db():
    """A database of the test run's own on the machine's PostgreSQL server (make test /
    .ci/run make sure one answers), dropped at the end; no other database is touched.
    Yields its URL."""
    import uuid

    import sqlalchemy as sa

    name = f"sonicsort_test_{uuid.uuid4().hex[:10]}"
    from recommender.catalog import catalog_url

    admin = sa.create_engine(catalog_url(POSTGRES_ADMIN_URL), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()




@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_at(request, tmp_path):
    """``catalog_at(name)``: where the catalog ``name`` of this test lives, in each database in
    turn: a SQLite file in the test's folder, or a schema of its own in the test run's
    PostgreSQL database (a URL whose search_path is that schema)."""
    if request.param == "sqlite":
        return lambda name: tmp_path / f"{name}.sqlite3"
    base = request.getfixturevalue("postgres_db")
    made: dict[str, str] = {}

    def at(name: str) -> str:
        if name not in made:
            made[name] = postgres_schema(base)
        return made[name]

    return at


@pytest.fixture
def private_redis(tmp_path):
    r = PrivateRedis(tmp_path).start()
    yield r
    r.stop()


@pytest.fixture
def cache_prefix(redis_url):
    """A key prefix of this test's own on the shared Redis, cleaned up afterwards."""
    import uuid

    import redis

    prefix = f"sonicsort-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    r = redis.Redis.from_url(redis_url)
    for k in r.scan_iter(prefix + "*"):
        r.delete(k)


















@pytest.fixture
def make_library(tmp_path, tiny_bundle):
    """Libraries on the tiny model, without a prediction cache unless a test passes ``cache=``."""
    from recommender.cache import PredictionCache
    from recommender.config import Settings
    from recommender.library import Library

    made = []

    def make(backend: str = "hnsw", bundle=None, home: Path | None = None, cache=None, **settings):
        s = Settings(home=home or tmp_path / "home", redis_url="", **settings)
        lib = Library(s, bundle=bundle or tiny_bundle, backend=backend,
                      cache=cache if cache is not None else PredictionCache(None))
        made.append(lib)
        return lib

    yield make
    for lib in made:
        lib.close()


@pytest.fixture
def cli_env(tmp_path, tiny_bundle):
    """The environment of a ``sonicsort`` process on a catalog of this test's own, with the tiny
    model and no cache (a test that wants Redis adds ``SONICSORT_REDIS_URL``)."""
    return dict(os.environ, SONICSORT_HOME=str(tmp_path / "home"), SONICSORT_MODEL_DIR=str(tiny_bundle.directory),
                SONICSORT_REDIS_URL="", TF_CPP_MIN_LOG_LEVEL="3")


# ---------------------------------------------------------------- tiers
REDIS_FIXTURES = {"redis_url", "cache_prefix", "private_redis"}


def pytest_collection_modifyitems(config, items):
    """``redis`` and ``browser`` markers follow from the fixtures a test uses, so the quick tier
    (``-m "not redis and not browser"``) never needs a Redis server or Chromium."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & REDIS_FIXTURES:
            item.add_marker(pytest.mark.redis)
        if "browser" in names:
            item.add_marker(pytest.mark.browser)
