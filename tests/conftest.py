"""Shared fixtures: generated audio (never real music), tiny models, a real Redis."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import csv
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 22_050
GENRES = ("drone", "clicks", "chirp")


def synth(genre: str, seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    """Three synthetic "genres" with different spectra and rhythm, varied by seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    if genre == "drone":  # low sustained harmonics
        f0 = rng.uniform(80, 160)
        y = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 5))
    elif genre == "clicks":  # broadband percussive pulses
        y = np.zeros_like(t)
        period = int(sr / rng.uniform(3, 6))
        for s in range(0, len(t), period):
            n = min(800, len(t) - s)
            y[s : s + n] += rng.normal(size=n) * np.exp(-np.arange(n) / 120)
    else:  # high sweeping tones
        f = rng.uniform(2000, 3000) + 1500 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t)
        y = np.sin(2 * np.pi * np.cumsum(f) / sr)
    y = y + 0.02 * rng.normal(size=len(t))
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


def set_flac_length(data: bytes, frames: int) -> bytes:
    """The same FLAC with STREAMINFO's 36-bit total-samples field set to ``frames`` (0: unknown,
    as the format allows)."""
    assert data[:4] == b"fLaC"
    head = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1) | frames
    return data[:18] + head.to_bytes(8, "big") + data[26:]


def write_clip(path: Path, genre: str, seconds: float = 2.0, seed: int = 0, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, synth(genre, seconds, seed), SR, **kw)
    return path


def ingest_tagged_library(root: Path, bundle, n: int, *, seed: int, title: str, artists: list[str]) -> Path:
    """``n`` tagged FLAC clips (genres in turn, artists in turn) under ``root/music``, ingested
    into a catalog at ``root/home`` with ``bundle``. Returns the home folder."""
    import mutagen

    from recommender.cache import PredictionCache
    from recommender.config import Settings
    from recommender.ingest import ingest
    from recommender.library import Library

    music = root / "music"
    for i in range(n):
        g = GENRES[i % 3]
        p = write_clip(music / g / f"{g}-{i:02d}.flac", g, seconds=2.0, seed=seed + i)
        f = mutagen.File(p, easy=True)
        f["title"], f["artist"], f["album"] = f"{title} {i}", artists[i % len(artists)], f"Album {g}"
        f.save()
    lib = Library(Settings(home=root / "home"), bundle=bundle, cache=PredictionCache(None))
    assert ingest(lib, [music], workers=0).added == n
    lib.close()
    return root / "home"


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


# v1: the frame BiLSTM on small log-mel segments
TINY_FEATURES = dict(n_mels=24, segment_seconds=1.0, segment_hop_seconds=0.5, n_fft=1024, hop_length=512)
TINY_MODEL = dict(lstm_units=(8,), embedding_dim=16, time_pool=2, segments_per_track=8, max_epochs=12, patience=12,
                  batch_size=16, learning_rate=3e-3)
# v2: the real musicnn front end under a tiny BiLSTM head (one: the shipped recipe's ensemble
# of heads has a test of its own)
TINY_HEAD = dict(lstm_units=(8,), embedding_dim=16, segments_per_track=8, max_epochs=12, patience=12,
                 batch_size=16, learning_rate=3e-3, ensemble=1)


@pytest.fixture(scope="session")
def tiny_bundle(toy_dataset, tmp_path_factory):
    """The v2 model shape, tiny: the real frozen musicnn front end under a tiny BiLSTM head
    trained on the toy dataset, saved and loaded back from disk."""
    from embedding import FeatureConfig, ModelBundle, ModelConfig
    from embedding.data import load_dataset
    from embedding.train import train_bundle

    ds = load_dataset(toy_dataset / "manifest.csv", seed=3)
    bundle = train_bundle(ds, feature_config=FeatureConfig.musicnn(), model_config=ModelConfig.sequence(**TINY_HEAD),
                          workers=1)
    out = bundle.save(tmp_path_factory.mktemp("models") / "tiny")
    return ModelBundle.load(out)


@pytest.fixture(scope="session")
def tiny_v1_bundle(toy_dataset, tmp_path_factory):
    """A tiny v1 frame BiLSTM (log-mel segments, no front end), saved and loaded back."""
    from embedding import FeatureConfig, ModelBundle, ModelConfig
    from embedding.data import load_dataset
    from embedding.train import train_bundle

    ds = load_dataset(toy_dataset / "manifest.csv", seed=3)
    bundle = train_bundle(ds, feature_config=FeatureConfig(**TINY_FEATURES), model_config=ModelConfig(**TINY_MODEL),
                          workers=1)
    out = bundle.save(tmp_path_factory.mktemp("models") / "tiny-v1")
    return ModelBundle.load(out)


# ---------------------------------------------------------------- Redis
REDIS_URL = os.environ.get("SONICSORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis server (make test / .ci/run make sure one answers). Never stopped by tests."""
    import redis

    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    return REDIS_URL


class PrivateRedis:
    """A redis-server of our own on a free port, for tests that stop and restart Redis."""

    def __init__(self, folder: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder = folder
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        import shutil
        import subprocess
        import time

        import redis

        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temporary folder, ``pg_ctl`` on a free port,
    run as the ``postgres`` user when the tests run as root), for tests that stop the server.
    ``url``: its ``postgres`` database."""

    def __init__(self) -> None:
        import glob
        import socket
        import tempfile

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            pytest.skip("no PostgreSQL server binaries (Debian's postgresql package)")
        self.bin = Path(found[-1]).parent
        # its own folder under /tmp: the postgres user cannot enter pytest's private ones
        self.root = Path(tempfile.mkdtemp(prefix="sonicsort-pg-"))
        self.folder = self.root / "pgdata"
        self.running = False
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        import subprocess

        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> "PrivatePostgres":
        import shutil

        self.folder.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            os.chmod(self.root, 0o755)
        self._run("initdb", "-D", str(self.folder), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self.start()

    def start(self) -> "PrivatePostgres":
        self._run("pg_ctl", "-D", str(self.folder), "-w", "-l", str(self.folder / "log"), "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        self.running = True
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder), "-w", "-m", "fast", "stop")
        self.running = False

    def close(self) -> None:
        """Stop it if it runs and delete its folder."""
        import shutil

        if self.running:
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


POSTGRES_ADMIN_URL = os.environ.get("SONICSORT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_db():
    """A database of this test session's own on the machine's PostgreSQL server (make test /
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


def postgres_schema(database_url: str) -> str:
    """A new schema in the database at ``database_url``: the URL of a catalog that lives in it."""
    import uuid

    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    from recommender.catalog import catalog_url

    eng = sa.create_engine(catalog_url(database_url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with eng.connect() as c:
        c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    eng.dispose()
    return f"{database_url}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_at(request, tmp_path):
    """``catalog_at(name)``: where the catalog ``name`` of this test lives, in each database in
    turn: a SQLite file in the test's folder, or a schema of its own in the session's
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


# ---------------------------------------------------------------- a real HTTP server around the app
class Server:
    """A real HTTP server (werkzeug, threaded) around an app, on a free port."""

    def __init__(self, app) -> None:
        from werkzeug.serving import make_server as werkzeug_server

        self.app = app
        self.httpd = werkzeug_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        import requests

        self.http = requests.Session()

    @property
    def service(self):
        return self.app.extensions["sonicsort"]

    def get(self, path, **kw):
        return self.http.get(self.url + path, timeout=30, **kw)

    def post(self, path, **kw):
        return self.http.post(self.url + path, timeout=30, **kw)

    def delete(self, path, **kw):
        return self.http.delete(self.url + path, timeout=30, **kw)

    def close(self) -> None:
        self.httpd.shutdown()
        self.service.close()


def make_server(home: Path, bundle, redis_url: str | None, prefix: str = "sonicsort-test:", *, start: str = "now",
                **settings) -> Server:
    """The app on ``home``'s catalog with ``bundle``, behind a real HTTP server (``start`` as
    create_app's START)."""
    from api import create_app
    from recommender.config import Settings

    s = Settings(home=home, redis_url=redis_url or "", cache_prefix=prefix, **settings)
    return Server(create_app({"SETTINGS": s, "BUNDLE": bundle, "START": start}))


def serve_catalog(home: Path, bundle, redis_url: str):
    """For module fixtures (``yield from``): a ready server on ``home``'s catalog with Redis keys
    under a prefix of its own, removed afterwards."""
    import uuid

    import redis

    prefix = f"sonicsort-test-{uuid.uuid4().hex[:10]}:"
    srv = make_server(home, bundle, redis_url, prefix)
    assert srv.service.state == "ready", srv.service.error
    try:
        yield srv
    finally:
        srv.close()
        r = redis.Redis.from_url(redis_url)
        for k in r.scan_iter(prefix + "*"):
            r.delete(k)


# ---------------------------------------------------------------- catalogs, libraries and the CLI
CLI = [sys.executable, "-m", "api.cli"]


def music(folder: Path, n: int = 9, seconds: float = 2.0, offset: int = 0) -> list[Path]:
    return [write_clip(folder / GENRES[i % 3] / f"track-{i + offset:03d}.wav", GENRES[i % 3], seconds=seconds,
                       seed=1000 + i + offset) for i in range(n)]


class CountingBundle:
    """The real bundle, counting model calls (to prove a second ingest does no model work)."""

    def __init__(self, bundle) -> None:
        self._b, self.calls = bundle, 0

    def __getattr__(self, name):
        return getattr(self._b, name)

    def predict_features(self, *a, **kw):
        self.calls += 1
        return self._b.predict_features(*a, **kw)


def agree(lib) -> bool:
    """The library's index holds exactly the catalog's tracks."""
    return sorted(lib.index.ids().tolist()) == lib.catalog.ids().tolist()


def run_cli(args, env, **kw):
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=300, **kw)


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
