"""Catalog, ingest, index sync and the Redis prediction cache, with real parts throughout:
generated audio decoded from disk, a tiny real BiLSTM, real hnswlib/Annoy indexes, SQLite,
and a real Redis server (the shared one, or a private one where a test stops Redis)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import GENRES, write_clip
from recommender.cache import PredictionCache
from recommender.config import Settings
from recommender.errors import BadRequest, ModelMismatch
from recommender.ingest import ingest
from recommender.library import Library

CLI = [sys.executable, "-m", "recommender.cli"]


def music(folder: Path, n: int = 9, seconds: float = 2.0, offset: int = 0) -> list[Path]:
    return [write_clip(folder / GENRES[i % 3] / f"track-{i + offset:03d}.wav", GENRES[i % 3], seconds=seconds,
                       seed=1000 + i + offset) for i in range(n)]


@pytest.fixture
def make_library(tmp_path, tiny_bundle, redis_url, cache_prefix):
    made = []

    def make(backend: str = "hnsw", bundle=None, home: Path | None = None, **settings) -> Library:
        s = Settings(home=home or tmp_path / "home", redis_url=redis_url, cache_prefix=cache_prefix, **settings)
        lib = Library(s, bundle=bundle or tiny_bundle, backend=backend,
                      cache=PredictionCache(redis_url, prefix=cache_prefix, ttl_s=600))
        made.append(lib)
        return lib

    yield make
    for lib in made:
        lib.close()


class CountingBundle:
    """The real bundle, counting model calls (to prove a second ingest does no model work)."""

    def __init__(self, bundle) -> None:
        self._b, self.calls = bundle, 0

    def __getattr__(self, name):
        return getattr(self._b, name)

    def predict_features(self, *a, **kw):
        self.calls += 1
        return self._b.predict_features(*a, **kw)


def agree(lib: Library) -> bool:
    return sorted(lib.index.ids().tolist()) == lib.catalog.ids().tolist()


@pytest.mark.parametrize("backend", ["hnsw", "annoy", "exact"])
def test_ingest_then_second_run_does_no_model_work(tmp_path, make_library, tiny_bundle, backend):
    files = music(tmp_path / "music")
    counting = CountingBundle(tiny_bundle)
    lib = make_library(backend, bundle=counting)
    rep = ingest(lib, [tmp_path / "music"], workers=0, batch_tracks=4)
    assert (rep.added, rep.failed, rep.unchanged) == (9, [], 0)
    assert len(lib.catalog) == 9 and agree(lib) and counting.calls >= 3
    t = lib.catalog.get(lib.catalog.ids()[0], with_embedding=True)
    assert t.title.startswith("track-") and t.genre in tiny_bundle.genres and t.model_version == tiny_bundle.version
    assert t.embedding.shape == (tiny_bundle.embedding_dim,) and abs(np.linalg.norm(t.embedding) - 1) < 1e-4
    assert t.sha256 and Path(t.path) in files and abs(sum(t.probabilities.values()) - 1) < 1e-4
    # the stored embedding is the model's own output for that file
    np.testing.assert_allclose(t.embedding, tiny_bundle.predict(t.path).embedding, atol=1e-5)

    calls = counting.calls
    rep2 = ingest(lib, [tmp_path / "music"], workers=0)
    assert (rep2.added, rep2.unchanged, counting.calls) == (0, 9, calls)
    # a fresh process's view: the index on disk holds the catalog
    lib2 = make_library(backend, bundle=tiny_bundle)
    assert len(lib2.index) == 9 and agree(lib2)


def test_moved_renamed_and_duplicated_files(tmp_path, make_library):
    files = music(tmp_path / "music", n=6)
    lib = make_library()
    ingest(lib, [tmp_path / "music"], workers=0)
    ids_before = lib.catalog.ids().tolist()
    moved = tmp_path / "music" / "elsewhere" / "renamed.wav"
    moved.parent.mkdir()
    tid = lib.catalog.path_state(str(files[0]))[0]
    os.replace(files[0], moved)
    (tmp_path / "music" / "copy.wav").write_bytes(files[1].read_bytes())
    rep = ingest(lib, [tmp_path / "music"], workers=0)
    assert (rep.added, rep.skipped, rep.missing, rep.unchanged) == (0, 2, 1, 5)
    assert lib.catalog.ids().tolist() == ids_before  # no new track: same audio, same track
    assert lib.catalog.get(tid).paths == [str(moved)]
    assert len(lib.catalog.get(lib.catalog.path_state(str(files[1]))[0]).paths) == 2
    # a file whose content changed under the same path becomes a new track, the old one goes
    old = lib.catalog.path_state(str(files[2]))[0]
    write_clip(files[2], "chirp", seconds=2.0, seed=99)
    rep = ingest(lib, [tmp_path / "music"], workers=0)
    assert rep.added == 1 and old not in lib.catalog.ids().tolist() and len(lib.catalog) == 6 and agree(lib)
    # --prune: tracks whose files are all gone
    files[3].unlink()
    rep = ingest(lib, [tmp_path / "music"], workers=0, prune=True)
    assert rep.missing == 1 and rep.pruned == 1 and len(lib.catalog) == 5 and agree(lib)


def test_bad_files_are_reported_and_skipped(tmp_path, make_library):
    music(tmp_path / "music", n=3)
    (tmp_path / "music" / "notes.mp3").write_text("this is not audio\n" * 20)
    good = write_clip(tmp_path / "x.wav", "drone", seconds=2.0)
    (tmp_path / "music" / "cut.wav").write_bytes(good.read_bytes()[:30])
    (tmp_path / "music" / "empty.flac").write_bytes(b"")
    (tmp_path / "music" / "readme.txt").write_text("ignored: not an audio extension")
    lib = make_library()
    rep = ingest(lib, [tmp_path / "music"], workers=0)
    assert rep.added == 3 and len(rep.failed) == 3
    reasons = dict((Path(p).name, r) for p, r in rep.failed)
    assert "text" in reasons["notes.mp3"] and "empty" in reasons["empty.flac"]
    with pytest.raises(BadRequest, match="no such file"):
        ingest(lib, [tmp_path / "nowhere"], workers=0)


def test_worker_processes_give_the_same_embeddings(tmp_path, make_library, tiny_bundle):
    music(tmp_path / "music", n=8)
    a = make_library(home=tmp_path / "a")
    ingest(a, [tmp_path / "music"], workers=2, batch_tracks=3)
    b = make_library(home=tmp_path / "b")
    b.cache = PredictionCache(None)  # no cache: b's embeddings come from its own model run
    ingest(b, [tmp_path / "music"], workers=0)
    va, vb = a.catalog.vectors(a.catalog.ids()), b.catalog.vectors(b.catalog.ids())
    shas_a = {t.sha256: va[i] for i, t in a.catalog.get_many(a.catalog.ids()).items()}
    shas_b = {t.sha256: vb[i] for i, t in b.catalog.get_many(b.catalog.ids()).items()}
    assert shas_a.keys() == shas_b.keys() and len(shas_a) == 8
    for s in shas_a:
        np.testing.assert_allclose(shas_a[s], shas_b[s], atol=1e-5)


def test_model_mismatch_refuses_or_reembeds(tmp_path, make_library, tiny_bundle):
    from embedding import ModelBundle

    music(tmp_path / "music", n=4)
    lib = make_library()
    ingest(lib, [tmp_path / "music"], workers=0)
    other = ModelBundle.load(tiny_bundle.directory)
    # the same weights re-initialised: a genuinely different model with another version
    rng = np.random.default_rng(0)
    other.model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in other.model.get_weights()])
    other.save(tmp_path / "other-model")
    other = ModelBundle.load(tmp_path / "other-model")
    assert other.version != tiny_bundle.version
    refusing = make_library(bundle=other)
    with pytest.raises(ModelMismatch, match="reembed"):
        ingest(refusing, [tmp_path / "music"], workers=0)
    reembedding = make_library(bundle=other, on_model_mismatch="reembed")
    rep = ingest(reembedding, [tmp_path / "music"], workers=0)
    assert rep.unchanged == 4 and reembedding.catalog.model_version == other.version
    assert reembedding.catalog.ids_not_from(other.version) == [] and agree(reembedding)
    assert reembedding.index.tag == other.version


def test_index_rebuilt_when_missing_or_corrupt(tmp_path, make_library):
    music(tmp_path / "music", n=5)
    lib = make_library()
    ingest(lib, [tmp_path / "music"], workers=0)
    (lib.index_path / "hnsw.bin").write_bytes(b"garbage")
    fresh = make_library()
    assert len(fresh.index) == 5 and agree(fresh)
    import shutil

    shutil.rmtree(fresh.index_path)
    assert len(make_library().index) == 5


def run_cli(args, env, **kw):
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture
def cli_env(tmp_path, tiny_bundle, redis_url, cache_prefix):
    env = dict(os.environ, SONICSORT_HOME=str(tmp_path / "home"), SONICSORT_MODEL_DIR=str(tiny_bundle.directory),
               SONICSORT_REDIS_URL=redis_url, SONICSORT_CACHE_PREFIX=cache_prefix, TF_CPP_MIN_LOG_LEVEL="3")
    return env


def test_cli_ingest_stats_reindex(tmp_path, cli_env):
    music(tmp_path / "music", n=6)
    r = run_cli(["ingest", str(tmp_path / "music"), "--json", "--workers", "0"], cli_env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["added"] == 6 and d["failed"] == 0
    r = run_cli(["stats", "--json"], cli_env)
    s = json.loads(r.stdout)
    assert s["tracks"] == 6 and sum(s["per_genre"].values()) == 6 and s["index"]["count"] == 6
    assert s["cache"]["state"] == "ok"
    r = run_cli(["reindex", "--backend", "annoy"], cli_env)
    assert r.returncode == 0 and "6 tracks" in r.stdout
    r = run_cli(["stats", "--backend", "annoy"], cli_env)
    assert "annoy, 6 vectors" in r.stdout
    r = run_cli(["ingest", str(tmp_path / "nowhere")], cli_env)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr


def test_killed_ingest_loses_and_duplicates_nothing(tmp_path, cli_env):
    files = music(tmp_path / "music", n=60, seconds=3.0)
    p = subprocess.Popen(CLI + ["ingest", str(tmp_path / "music"), "--workers", "0", "--batch", "2"],
                         env=dict(cli_env, SONICSORT_CACHE_PREFIX=cli_env["SONICSORT_CACHE_PREFIX"] + "k:"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import sqlite3

    db = tmp_path / "home" / "catalog.sqlite3"
    deadline = time.monotonic() + 120
    n = 0
    while time.monotonic() < deadline and p.poll() is None:
        if db.exists():
            try:
                n = sqlite3.connect(db).execute("SELECT COUNT(*) FROM tracks").fetchone()[0]
            except sqlite3.Error:
                n = 0
            if n >= 6:
                break
        time.sleep(0.05)
    assert p.poll() is None, "ingest finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert 0 < n < 60
    r = run_cli(["ingest", str(tmp_path / "music"), "--json", "--workers", "0"], cli_env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["unchanged"] + d["added"] == 60 and d["unchanged"] >= n
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM tracks").fetchone() == (60, 60)
    assert con.execute("SELECT COUNT(*) FROM paths").fetchone()[0] == 60
    ids = sorted(r[0] for r in con.execute("SELECT id FROM tracks"))
    from index import load_index

    assert sorted(load_index(tmp_path / "home" / "index" / "hnsw").ids().tolist()) == ids
    assert len(files) == 60


# ---------------------------------------------------------------- the cache
def test_cache_hit_is_exact_and_counted(tmp_path, make_library, redis_url, cache_prefix):
    import redis

    clip = write_clip(tmp_path / "c.wav", "chirp", seconds=2.0).read_bytes()
    lib = make_library()
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


def test_queue_ingest_with_two_workers(tmp_path, cli_env, private_redis):
    from .conftest import synth
    import soundfile as sf

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(200):
        g = GENRES[i % 3]
        sf.write(folder / f"{g}-{i:03d}.wav", synth(g, 1.0, 5000 + i), 22_050)
    env = dict(cli_env, SONICSORT_REDIS_URL=private_redis.url, SONICSORT_CACHE_PREFIX="q:")
    workers = [subprocess.Popen(CLI + ["worker", "--queue", private_redis.url, "--name", f"w{i}"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        r = run_cli(["ingest", str(folder), "--queue", private_redis.url, "--batch", "8", "--json"], env)
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        assert d["added"] == 200 and d["failed"] == 0
        from rq import Worker

        import redis

        conn = redis.Redis.from_url(private_redis.url)
        done = {w.name: w.successful_job_count for w in Worker.all(connection=conn)}
        assert set(done) == {"w0", "w1"} and all(n > 0 for n in done.values()) and sum(done.values()) == 25
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(30)
    r = run_cli(["stats", "--json"], env)
    assert json.loads(r.stdout)["tracks"] == 200


def test_row_cache_follows_every_write_of_any_connection(tmp_path):
    """Catalog keeps rows and vectors it has read; a write by itself or by another connection
    (another process, say) is seen on the next read."""
    from recommender.catalog import Catalog, NewTrack
    from recommender.errors import UnknownTrack

    def rec(i: int) -> NewTrack:
        v = np.random.default_rng(i).normal(size=8).astype(np.float32)
        return NewTrack(path=f"/m/{i}.wav", size=1, mtime_ns=1, sha256=f"h{i}", title=f"T{i}", artist="A",
                        album=None, duration_s=1.0, genre="drone", probabilities={"drone": 1.0}, embedding=v,
                        model_version="m1")

    a, b = Catalog(tmp_path / "c.sqlite3"), Catalog(tmp_path / "c.sqlite3")
    t1, t2 = a.add([rec(1), rec(2)])
    assert a.get(t1).title == "T1" and a.generation == 1
    v1 = a.vectors([t1])[t1]
    assert not v1.flags.writeable  # shared between callers: nobody may change it in place
    got = a.get(t1, with_embedding=True)
    got.title = "changed by a caller"
    got.embedding[:] = 0
    assert a.get(t1).title == "T1" and np.array_equal(a.vectors([t1])[t1], v1)  # callers get copies
    # writes through the other connection
    b.replace_embeddings([(t1, "clicks", {"clicks": 1.0}, np.ones(8, np.float32), False, {"mellow": 0.5})], "m1")
    assert a.get(t1).genre == "clicks" and np.array_equal(a.vectors([t1])[t1], np.ones(8)) and a.generation == 2
    assert a.get(t1).tags == {"mellow": 0.5} and [t.id for t in a.search(tag="Mellow")] == [t1]
    b.add([], links=[("/m/1-copy.wav", t1, 1, 1)])
    assert a.get(t1).paths == ["/m/1.wav", "/m/1-copy.wav"]
    b.forget_paths(["/m/1.wav"])
    assert a.get(t1).paths == ["/m/1-copy.wav"]
    b.remove([t2])
    with pytest.raises(UnknownTrack):
        a.get(t2)
    assert set(a.get_many([t1, t2])) == {t1} and a.generation == 3
    # and through its own
    a.remove([t1])
    assert a.get_many([t1]) == {} and a.vectors([t1]) == {} and a.generation == 4
    # a small cache still answers every id of a large request
    c = Catalog(tmp_path / "d.sqlite3", row_cache=2)
    ids = c.add([rec(i) for i in range(5)])
    assert sorted(c.get_many(ids)) == sorted(ids) and sorted(c.vectors(ids)) == sorted(ids)
    a.close(), b.close(), c.close()


def test_v1_catalog_upgrades_in_place_and_reembeds_to_the_v2_model(tmp_path, make_library, tiny_bundle,
                                                                    tiny_v1_bundle):
    """A catalog of schema 1 built with a v1 model: opened by this sonicsort it gains the tags
    column, refuses the v2 model until re-embedded, and after `reembed` its tracks carry tags."""
    import sqlite3

    music(tmp_path / "music", n=6)
    old = make_library(bundle=tiny_v1_bundle)
    ingest(old, [tmp_path / "music"], workers=0)
    assert all(t.tags == {} for t in old.catalog.get_many(old.catalog.ids()).values())
    old.close()
    db = sqlite3.connect(tmp_path / "home" / "catalog.sqlite3")  # make it a schema-1 file, as 0.1 wrote them
    db.executescript("DROP TABLE track_tags; ALTER TABLE tracks DROP COLUMN tags; "
                     "UPDATE meta SET value='1' WHERE key='schema_version';")
    db.close()

    refusing = make_library()  # the v2 model on the v1 model's catalog
    assert refusing.catalog.get_meta("schema_version") == "2"
    with pytest.raises(ModelMismatch, match="sonicsort reembed"):
        refusing.check_model()
    refusing.close()
    lib = make_library(on_model_mismatch="reembed")
    lib.check_model()
    tracks = lib.catalog.get_many(lib.catalog.ids())
    assert len(tracks) == 6 and lib.catalog.ids_not_from(tiny_bundle.version) == []
    assert all(len(t.tags) == 50 for t in tracks.values())
    top = tracks[min(tracks)].top_tags(1)[0][0]
    found = lib.catalog.search(tag=top.upper())  # tags match case-insensitively
    assert min(tracks) in [t.id for t in found]
    assert {t.id for t in tracks.values() if top in dict(t.top_tags())} <= {t.id for t in found}
    assert lib.catalog.search(tag="no such tag") == []


def test_tracks_are_found_by_tags_that_stand_out_against_the_model_priors(tmp_path):
    """A mood's probability rarely ranks in a track's top 5 (frequent MSD tags such as rock
    do); at 3x its prior it still makes the track findable, and below that it does not."""
    from recommender.catalog import Catalog, NewTrack

    def rec(i: int, mellow: float) -> NewTrack:
        tags = {"rock": 0.4, "pop": 0.3, "indie": 0.2, "jazz": 0.15, "soul": 0.12, "Mellow": mellow}
        return NewTrack(path=f"/m/{i}.wav", size=1, mtime_ns=1, sha256=f"h{i}", title=f"T{i}", artist="A",
                        album=None, duration_s=1.0, genre="drone", probabilities={"drone": 1.0},
                        embedding=np.ones(4, np.float32), model_version="m1", tags=tags)

    priors = {"rock": 0.13, "pop": 0.13, "indie": 0.05, "jazz": 0.16, "soul": 0.07, "Mellow": 0.012}
    c = Catalog(tmp_path / "c.sqlite3")
    mellow, plain = c.add([rec(1, 0.07), rec(2, 0.02)], tag_priors=priors)
    assert [t.id for t in c.search(tag="mellow")] == [mellow]
    assert [t for t, _ in c.get(mellow).top_tags()] == ["rock", "pop", "indie", "jazz", "soul"]
    assert {t.id for t in c.search(tag="rock")} == {mellow, plain}
    no_priors = Catalog(tmp_path / "d.sqlite3")
    (only,) = no_priors.add([rec(3, 0.07)])
    assert no_priors.search(tag="mellow") == []  # top 5 only, without the model's priors
