"""Ingest with real parts: generated audio decoded from disk, the real front end under a tiny
head, real hnswlib/Annoy indexes and SQLite. No cache unless a test is about it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from .helpers import CLI, CountingBundle, agree, music, run_cli, write_clip
from recommender.cache import PredictionCache
from recommender.errors import BadRequest
from recommender.ingest import ingest


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


@pytest.mark.slow
def test_killed_ingest_loses_and_duplicates_nothing(tmp_path, cli_env):
    files = music(tmp_path / "music", n=60, seconds=3.0)
    p = subprocess.Popen(CLI + ["ingest", str(tmp_path / "music"), "--workers", "0", "--batch", "2"],
                         env=cli_env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
