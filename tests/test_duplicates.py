"""Near-duplicates: the same recording in other files (format, bit rate, sample rate, trimmed
ends, gain) is found by embedding, length and fingerprint, and never by another song of the same
artist; every list answer drops near-duplicates unless ``dedupe`` is false. Generated audio."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import soundfile as sf

from .helpers import run_cli, serve_catalog
from .test_web import browser  # noqa: F401 - the module fixture that drives Chromium

SR = 22_050
SECONDS = 12.0


def song(artist: int, number: int) -> np.ndarray:
    """A generated song: the artist fixes the timbre and tempo, the song the melody."""
    timbre = np.random.default_rng(artist)
    harmonics = timbre.uniform(0.2, 1.0, size=5)
    beat = timbre.uniform(0.18, 0.3)
    melody = np.random.default_rng(1000 * artist + number)
    t_note = np.arange(int(beat * SR)) / SR
    envelope = np.exp(-t_note * timbre.uniform(3, 8))
    notes = []
    for _ in range(int(SECONDS / beat) + 1):
        f0 = 110.0 * 2 ** (melody.integers(0, 24) / 12)
        notes.append(envelope * sum(h * np.sin(2 * np.pi * f0 * (k + 1) * t_note) for k, h in enumerate(harmonics)))
    y = np.concatenate(notes)[: int(SECONDS * SR)]
    y = y + 0.01 * melody.normal(size=len(y))
    return (0.4 * y / np.abs(y).max()).astype(np.float32)


def _encoded(y: np.ndarray, sr: int, fmt: str, subtype: str | None = None, **kw) -> bytes:
    b = io.BytesIO()
    sf.write(b, y, sr, format=fmt, subtype=subtype, **kw)
    return b.getvalue()


def variants(y: np.ndarray) -> dict[str, bytes]:
    """The same recording as other files would hold it."""
    import librosa

    y44 = librosa.resample(y, orig_sr=SR, target_sr=44_100)
    return {
        "flac-44k.flac": _encoded(y44, 44_100, "FLAC"),
        "mp3.mp3": _encoded(y44, 44_100, "MP3", "MPEG_LAYER_III", compression_level=0.7),
        "vorbis.ogg": _encoded(y, SR, "OGG", "VORBIS", compression_level=0.6),
        "trimmed.wav": _encoded(y[int(1.0037 * SR): -int(0.71 * SR)], SR, "WAV"),
        "quieter.wav": _encoded(0.5 * y, SR, "WAV"),
        "32k.wav": _encoded(librosa.resample(y, orig_sr=SR, target_sr=32_000), 32_000, "WAV", "PCM_16"),
    }


@pytest.fixture(scope="module")
def dupes(tmp_path_factory, tiny_bundle, redis_url):
    from recommender.cache import PredictionCache
    from recommender.config import Settings
    from recommender.ingest import ingest
    from recommender.library import Library

    root = tmp_path_factory.mktemp("duplicates")
    music = root / "music"
    music.mkdir()
    names: dict[str, str] = {}  # file stem → recording
    for artist, number in ((1, 0), (1, 1), (2, 0), (2, 1)):
        y = song(artist, number)
        rec = f"a{artist}s{number}"
        sf.write(music / f"{rec}.wav", y, SR)
        names[rec] = rec
        wanted = variants(y) if rec == "a1s0" else ({k: v for k, v in variants(y).items() if k in ("mp3.mp3", "trimmed.wav")}
                                                    if rec == "a2s0" else {})
        for suffix, data in wanted.items():
            (music / f"{rec}-{suffix}").write_bytes(data)
            names[f"{rec}-{suffix.split('.')[0]}"] = rec
    lib = Library(Settings(home=root / "home"), bundle=tiny_bundle, cache=PredictionCache(None))
    assert ingest(lib, [music], workers=0).added == len(names)
    lib.close()
    for srv in serve_catalog(root / "home", tiny_bundle, redis_url):
        tracks = srv.get("/v1/tracks", params={"limit": 100}).json()["items"]
        srv.recording = {t["id"]: names[t["title"]] for t in tracks}
        srv.id_of = {t["title"]: t["id"] for t in tracks}
        srv.home = root / "home"
        srv.service.users.add("ann", "ann-password")
        yield srv


def _expected_groups(srv) -> set[frozenset[int]]:
    by: dict[str, set[int]] = {}
    for tid, rec in srv.recording.items():
        by.setdefault(rec, set()).add(tid)
    return {frozenset(ids) for ids in by.values() if len(ids) > 1}


def _no_recording_twice(srv, ids):
    recs = [srv.recording[i] for i in ids]
    assert len(recs) == len(set(recs)), recs


def test_the_fingerprint_tells_a_re_encoded_file_from_another_song_of_the_artist():
    from embedding import fingerprint as fp
    from embedding.audio import load_audio

    y = song(1, 0)
    base = fp.fingerprint(load_audio(_encoded(y, SR, "WAV"), sr=16_000))
    for name, data in variants(y).items():
        d = fp.distance(base, fp.fingerprint(load_audio(data, sr=16_000)))
        assert d <= fp.SAME_RECORDING, (name, d)
    other = fp.fingerprint(load_audio(_encoded(song(1, 1), SR, "WAV"), sr=16_000))
    assert fp.distance(base, other) > 0.4
    assert fp.fingerprint(load_audio(_encoded(np.zeros(SR * 3, np.float32), SR, "WAV"), sr=16_000)) is None


def test_the_groups_are_the_recordings_and_nothing_else(dupes):
    r = dupes.get("/v1/duplicates")
    assert r.status_code == 200, r.text
    body = r.json()
    got = {frozenset(g["ids"]) for g in body["groups"]}
    assert got == _expected_groups(dupes)  # recall 1 and precision 1: the same artist's other songs stay apart
    for g in body["groups"]:
        assert g["ids"] == sorted(g["ids"]) and [t["id"] for t in g["tracks"]] == g["ids"]
        assert 0 <= g["distance"] <= 0.3
    page = dupes.get("/v1/duplicates", params={"limit": 1}).json()
    assert len(page["groups"]) == 1 and page["next_cursor"]
    rest = dupes.get("/v1/duplicates", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert {frozenset(g["ids"]) for g in page["groups"] + rest["groups"]} == got and rest["next_cursor"] is None
    assert dupes.get("/v1/duplicates", params={"limit": 0}).status_code == 400


def test_similar_tracks_drop_the_querys_duplicates_unless_asked(dupes):
    seed = dupes.id_of["a1s0"]
    same = [i for i, rec in dupes.recording.items() if rec == "a1s0" and i != seed]
    deduped = [t["id"] for t in dupes.get(f"/v1/tracks/{seed}/similar", params={"k": 10}).json()["items"]]
    assert not set(deduped) & set(same)
    _no_recording_twice(dupes, deduped)
    assert len(deduped) == 3  # the catalog's other recordings: a1s1, a2s0 (one of its files), a2s1
    kept = [t["id"] for t in dupes.get(f"/v1/tracks/{seed}/similar",
                                       params={"k": 20, "dedupe": "false"}).json()["items"]]
    assert set(same) <= set(kept)
    r = dupes.get(f"/v1/tracks/{seed}/similar", params={"dedupe": "yes"})
    assert r.status_code == 400 and "dedupe" in r.json()["detail"]


def test_playlists_paths_queues_alchemy_and_mixes_place_each_recording_once(dupes):
    seed, other = dupes.id_of["a1s0"], dupes.id_of["a2s1"]
    recordings = len(set(dupes.recording.values()))
    pl = dupes.post("/v1/playlists", json={"seeds": [seed], "length": 12, "artist_cap": 12}).json()
    ids = [t["id"] for t in pl["items"]]
    assert len(ids) == recordings and pl["truncated"]
    _no_recording_twice(dupes, ids)
    full = dupes.post("/v1/playlists", json={"seeds": [seed], "length": 12, "artist_cap": 12, "dedupe": False}).json()
    assert len(full["items"]) == len(dupes.recording)

    path = [t["id"] for t in dupes.post("/v1/paths", json={"from": seed, "to": other, "length": 8}).json()["items"]]
    _no_recording_twice(dupes, path)
    assert path[0] == seed and path[-1] == other

    q = dupes.post("/v1/queue/next", json={"queue": [seed], "count": 10, "no_repeat_artist": 0,
                                            "no_repeat_album": 0}).json()
    got = [t["id"] for t in q["items"]]
    _no_recording_twice(dupes, [seed] + got)
    assert len(got) == recordings - 1
    q_all = dupes.post("/v1/queue/next", json={"queue": [seed], "count": 20, "no_repeat_artist": 0,
                                                "no_repeat_album": 0, "dedupe": False}).json()
    assert len(q_all["items"]) == len(dupes.recording) - 1

    al = [t["id"] for t in dupes.post("/v1/alchemy", json={"add": [seed], "subtract": [other], "count": 10}).json()["items"]]
    _no_recording_twice(dupes, [seed, other] + al)
    assert dupes.post("/v1/alchemy", json={"add": [seed], "dedupe": "no"}).status_code == 400

    import time

    dupes.service.record_plays("ann", [seed], [time.time() - 3 * 86_400])  # the mix may not repeat it in another file
    mix = [t["id"] for t in dupes.get("/v1/mix", params={"user": "ann", "count": 10, "artist_cap": 10}).json()["items"]]
    _no_recording_twice(dupes, mix)
    mix_all = dupes.get("/v1/mix", params={"user": "ann", "count": 20, "artist_cap": 20, "dedupe": "false"}).json()
    assert len(mix_all["items"]) > len(mix)


def test_the_cli_lists_the_groups_and_keeps_duplicates_on_request(dupes, tiny_bundle):
    import json

    env = dict(os.environ, SONICSORT_HOME=str(dupes.home), SONICSORT_MODEL_DIR=str(tiny_bundle.directory),
               SONICSORT_REDIS_URL="none")
    p = run_cli(["duplicates", "--json"], env)
    assert p.returncode == 0, p.stderr
    assert {frozenset(g["ids"]) for g in json.loads(p.stdout)["groups"]} == _expected_groups(dupes)
    p = run_cli(["duplicates"], env)
    assert p.returncode == 0 and "a1s0-mp3" in p.stdout and "fingerprint distance" in p.stdout
    seed = str(dupes.id_of["a1s0"])
    same = {i for i, rec in dupes.recording.items() if rec == "a1s0" and str(i) != seed}
    p = run_cli(["similar", seed, "-k", "20", "--json", "--keep-duplicates"], env)
    assert p.returncode == 0, p.stderr
    assert same <= {r["id"] for r in json.loads(p.stdout)["results"]}
    p = run_cli(["similar", seed, "-k", "20", "--json"], env)
    assert not same & {r["id"] for r in json.loads(p.stdout)["results"]}


def test_tracks_from_before_fingerprints_are_scanned_from_their_files(dupes, tiny_bundle, tmp_path):
    from recommender.catalog import Catalog
    from recommender.catalog.copy import copy_catalog

    home = tmp_path / "home"
    copy_catalog(dupes.home / "catalog.sqlite3", home / "catalog.sqlite3")
    cat = Catalog(home / "catalog.sqlite3")
    with cat._tx() as db:  # noqa: SLF001 - what a catalog ingested before fingerprints holds
        db.exec_driver_sql("UPDATE tracks SET fingerprint = NULL")
        db.exec_driver_sql("DELETE FROM duplicates")
        db.exec_driver_sql("DELETE FROM meta WHERE key = 'duplicates_through'")
    cat.close()
    env = dict(os.environ, SONICSORT_HOME=str(home), SONICSORT_MODEL_DIR=str(tiny_bundle.directory),
               SONICSORT_REDIS_URL="none")
    import json

    p = run_cli(["duplicates", "--json"], env)
    assert p.returncode == 0 and json.loads(p.stdout)["groups"] == []
    p = run_cli(["duplicates", "--scan", "--json"], env)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["fingerprinted"] == len(dupes.recording)
    assert {frozenset(g["ids"]) for g in out["groups"]} == _expected_groups(dupes)


def test_the_pages_duplicates_view_lists_the_groups(dupes, browser):  # noqa: F811 - the fixture imported above
    from .test_web import Page, wait_until

    p = Page(browser, dupes.url)
    pg = p.open("#/identify")
    pg.click("nav a[data-view=duplicates]")
    wait_until(pg, "() => document.querySelector('#duplicates-groups').dataset.count")
    shown = pg.eval_on_selector_all("#duplicates-groups .dup-group",
                                    "els => els.map(e => e.querySelectorAll('ol > li').length + ':' + e.dataset.ids)")
    want = dupes.get("/v1/duplicates").json()["groups"]
    assert shown == [f"{len(g['ids'])}:{','.join(map(str, g['ids']))}" for g in want] and len(want) == 2
    assert pg.is_hidden("#duplicates-empty")
    p.check_and_close()
