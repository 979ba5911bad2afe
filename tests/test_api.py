"""The HTTP API, through real HTTP: a werkzeug server in a thread (gunicorn in test_serve.py),
a real catalog built by ingest, the tiny model on generated audio, real Redis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests

from .helpers import GENRES, PrivateRedis, Server, ingest_tagged_library, make_server, serve_catalog, write_clip
from recommender.config import Settings

ARTISTS = ["Ada", "Ben", "Cy", "Dee"]
N_TRACKS = 24


def clip_bytes(tmp: Path, genre: str, seed: int, fmt: str = "wav") -> bytes:
    return write_clip(tmp / f"q-{genre}-{seed}.{fmt}", genre, seconds=2.0, seed=seed).read_bytes()


@pytest.fixture(scope="module")
def api_home(tmp_path_factory, tiny_bundle):
    """24 tagged clips ingested into a catalog; its home folder."""
    root = tmp_path_factory.mktemp("api")
    return ingest_tagged_library(root, tiny_bundle, N_TRACKS, seed=700, title="Tune", artists=ARTISTS)


@pytest.fixture(scope="module")
def server(api_home, tiny_bundle, redis_url):
    yield from serve_catalog(api_home, tiny_bundle, redis_url)


def assert_problem(r, status: int, *words: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in r.text
    for w in words:
        assert w.lower() in body["detail"].lower(), body["detail"]
    return body


# ---------------------------------------------------------------- predict
def test_predict_upload_then_cache_hit(server, tmp_path):
    data = clip_bytes(tmp_path, "drone", 9001)
    r = server.post("/v1/predict?k=5", files={"file": ("q.wav", data, "audio/wav")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["genre"] in GENRES and abs(sum(body["probabilities"].values()) - 1) < 1e-3
    assert body["cached"] is False and body["track_id"] is None and len(body["similar"]) == 5
    assert body["model_version"] == server.service.bundle.version
    sims = [s["similarity"] for s in body["similar"]]
    assert sims == sorted(sims, reverse=True)
    assert {"id", "title", "artist", "genre", "similarity", "genre_agreement", "score", "audio_url"} <= set(body["similar"][0])
    # the same audio again, as a raw body this time: from Redis, same answer
    r2 = server.post("/v1/predict?k=5", data=data, headers={"Content-Type": "audio/wav"})
    assert r2.status_code == 200 and r2.json()["cached"] is True
    assert r2.json()["probabilities"] == body["probabilities"]
    assert [s["id"] for s in r2.json()["similar"]] == [s["id"] for s in body["similar"]]
    # the recommendations are the catalog's nearest tracks by cosine
    lib = server.service.library()
    vecs = lib.catalog.vectors(lib.catalog.ids().tolist())
    q = server.service.cache.get(body["sha256"], body["model_version"]).embedding
    best = sorted(vecs, key=lambda i: -float(np.dot(vecs[i], q)))[:5]
    assert [s["id"] for s in body["similar"]] == best


def test_predict_options(server, tmp_path):
    data = clip_bytes(tmp_path, "chirp", 9002)
    r = server.post("/v1/predict?k=4&genre=clicks", data=data, headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200 and len(r.json()["similar"]) == 4
    assert {s["genre"] for s in r.json()["similar"]} == {"clicks"}
    r = server.post("/v1/predict?k=0", data=data, headers={"Content-Type": "audio/wav"})
    assert r.status_code == 200 and r.json()["similar"] == []
    by_backend = {}
    for b in ("hnsw", "annoy", "exact"):
        r = server.post(f"/v1/predict?k=6&backend={b}", data=data, headers={"Content-Type": "audio/x-wav"})
        assert r.status_code == 200 and r.json()["backend"] == b
        by_backend[b] = [s["id"] for s in r.json()["similar"]]
    assert by_backend["hnsw"] == by_backend["exact"] == by_backend["annoy"]  # 24 tracks: every index is exact
    r = server.post("/v1/predict?k=6&genre_mode=boost&boost_weight=1", data=data, headers={"Content-Type": "audio/wav"})
    scores = [s["score"] for s in r.json()["similar"]]
    assert r.status_code == 200 and scores == sorted(scores, reverse=True)
    assert all(abs(s["score"] - s["genre_agreement"]) < 1e-5 for s in r.json()["similar"])
    r = server.post("/v1/predict?k=8&artist_cap=1", data=data, headers={"Content-Type": "audio/wav"})
    artists = [s["artist"] for s in r.json()["similar"]]
    assert len(artists) == len(set(artists)) == 4


@pytest.mark.parametrize("query,words", [
    ("k=-1", ["k must be"]), ("k=101", ["between 0 and 100"]), ("k=abc", ["integer"]),
    ("genre=polka", ["unknown genre", "drone"]), ("genre_mode=loud", ["genre_mode"]), ("backend=nmslib", ["backend"]),
    ("boost_weight=2", ["boost_weight"]), ("mmr_lambda=nan", ["mmr_lambda"]), ("artist_cap=0", ["artist_cap"]),
])
def test_predict_bad_parameters_400(server, tmp_path, query, words):
    data = clip_bytes(tmp_path, "drone", 1)
    assert_problem(server.post(f"/v1/predict?{query}", data=data, headers={"Content-Type": "audio/wav"}), 400, *words)


def test_predict_bad_uploads(server, tmp_path):
    # not audio by its type: 415, before anything is read
    assert_problem(server.post("/v1/predict", data=b"hello", headers={"Content-Type": "text/plain"}), 415, "not audio")
    assert_problem(server.post("/v1/predict", data=b"{}", headers={"Content-Type": "application/json"}), 415)
    assert_problem(server.post("/v1/predict", files={"file": ("notes.txt", b"hello", "text/plain")}), 415, "notes.txt")
    # audio by its type, but not decodable: 422 with the reason
    assert_problem(server.post("/v1/predict", data=b"hello there, I am text", headers={"Content-Type": "audio/mpeg"}),
                   422, "text")
    wav = clip_bytes(tmp_path, "drone", 2)
    assert_problem(server.post("/v1/predict", data=wav[: len(wav) // 50], headers={"Content-Type": "audio/wav"}), 422)
    # missing pieces: 400
    assert_problem(server.post("/v1/predict", files={"audio": ("q.wav", wav, "audio/wav")}), 400, "'file'")
    assert_problem(server.post("/v1/predict", data=b"", headers={"Content-Type": "audio/wav"}), 400, "empty")
    # unknown routes and methods stay problem+json
    assert_problem(server.get("/v1/nothing-here"), 404)
    r = server.get("/v1/predict")
    assert_problem(r, 405)
    assert "POST" in r.headers["Allow"]


def test_upload_over_the_limit_413(api_home, tiny_bundle, tmp_path):
    srv = make_server(api_home, tiny_bundle, None, max_upload_mb=0.05)
    try:
        big = clip_bytes(tmp_path, "drone", 3)  # 2 s of 16-bit wav: ~88 kB
        assert len(big) > 50_000
        assert_problem(srv.post("/v1/predict", data=big, headers={"Content-Type": "audio/wav"}), 413, "0.05 MB")
        assert_problem(srv.post("/v1/predict", files={"file": ("big.wav", big, "audio/wav")}), 413)
        small = write_clip(tmp_path / "small.wav", "drone", seconds=1.0, seed=4, subtype="PCM_U8").read_bytes()
        assert srv.post("/v1/predict", data=small, headers={"Content-Type": "audio/wav"}).status_code == 200

        def chunked(data: bytes):  # a generator body goes out with Transfer-Encoding: chunked, no length
            return (data[i:i + 8192] for i in range(0, len(data), 8192))

        n = len(srv.service.library().catalog)
        for route in ("/v1/predict", "/v1/tracks"):  # never cut at the limit and used, never stored
            assert_problem(srv.post(route, data=chunked(big), headers={"Content-Type": "audio/wav"}), 413, "0.05 MB")
        assert len(srv.service.library().catalog) == n
        assert srv.post("/v1/predict", data=chunked(small), headers={"Content-Type": "audio/wav"}).status_code == 200
    finally:
        srv.close()
    srv = make_server(api_home, tiny_bundle, None)  # the default 50 MB
    try:  # within the byte limit, over the form parser's part limit: its own message, not "larger than"
        many = {f"f{i}": "x" for i in range(2000)}
        body = assert_problem(srv.post("/v1/predict", data=many, files={"file": ("s.wav", b"RIFF", "audio/wav")}),
                              413, "parts")
        assert "MB" not in body["detail"]
    finally:
        srv.close()


# ---------------------------------------------------------------- tracks
def test_track_search_and_cursor_pages(server):
    seen, url = [], "/v1/tracks?limit=5"
    while url:
        r = server.get(url)
        assert r.status_code == 200
        body = r.json()
        assert len(body["items"]) <= 5
        seen += [t["id"] for t in body["items"]]
        url = body["next"]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == N_TRACKS
    r = server.get("/v1/tracks", params={"q": "tune 1"})  # Tune 1, Tune 10..19
    assert sorted(t["title"] for t in r.json()["items"]) == sorted(["Tune 1"] + [f"Tune {i}" for i in range(10, 20)])
    r = server.get("/v1/tracks", params={"q": "ada"})
    assert {t["artist"] for t in r.json()["items"]} == {"Ada"} and len(r.json()["items"]) == N_TRACKS // 4
    genre = server.get("/v1/tracks/1").json()["genre"]
    items = server.get("/v1/tracks", params={"genre": genre, "limit": 200}).json()["items"]
    assert items and {t["genre"] for t in items} == {genre}
    assert server.get("/v1/tracks", params={"q": "no such tune"}).json() == {"items": [], "next_cursor": None, "next": None}
    assert_problem(server.get("/v1/tracks?limit=0"), 400, "limit")
    assert_problem(server.get("/v1/tracks?cursor=abc"), 400, "cursor")
    assert_problem(server.get("/v1/tracks", params={"q": "x" * 201}), 400, "longer")
    assert_problem(server.get("/v1/tracks?genre=polka"), 400, "unknown genre")


def test_tags_on_tracks_and_predictions_and_search_by_tag(server, tmp_path):
    """Every track and prediction carries the front end's tags; ?tag= finds tracks by their top tags."""
    t1 = server.get("/v1/tracks/1").json()
    assert len(t1["tags"]) == 50 and len(t1["top_tags"]) == 5
    top = t1["top_tags"][0]["tag"]
    assert t1["top_tags"][0]["probability"] == max(t1["tags"].values())
    items = server.get("/v1/tracks", params={"tag": top.lower(), "limit": 200}).json()["items"]
    every = server.get("/v1/tracks", params={"limit": 200}).json()["items"]
    # found: every track with the tag among its top 5, and those where it stands out against
    # its prior (the model's mean probability of it), never one where it does neither
    priors = server.service.bundle.tag_priors
    def has(t):
        return top in [x["tag"] for x in t["top_tags"]] or t["tags"][top] >= 3.0 * priors[top]
    assert 1 in [t["id"] for t in items]
    assert {t["id"] for t in items} <= {t["id"] for t in every if has(t)}
    assert {t["id"] for t in every if top in [x["tag"] for x in t["top_tags"]]} <= {t["id"] for t in items}
    assert_problem(server.get("/v1/tracks?tag=polkacore"), 400, "unknown tag", "mellow")
    r = server.post("/v1/predict?k=3", data=clip_bytes(tmp_path, "chirp", 9321), headers={"Content-Type": "audio/wav"})
    body = r.json()
    assert len(body["tags"]) == 50 and [t["tag"] for t in body["top_tags"]] == sorted(
        body["tags"], key=lambda k: -body["tags"][k])[:5]
    assert all(len(s["top_tags"]) == 3 for s in body["similar"])


def test_get_track_and_similar(server):
    t = server.get("/v1/tracks/3").json()
    assert t["id"] == 3 and t["title"].startswith("Tune ") and t["audio_url"] == "/v1/tracks/3/audio"
    assert "path" not in t and "paths" not in t
    assert_problem(server.get("/v1/tracks/99999"), 404, "unknown track")
    assert_problem(server.get("/v1/tracks/abc"), 404)
    r = server.get("/v1/tracks/3/similar?k=7")
    assert r.status_code == 200
    items = r.json()["items"]
    assert len(items) == 7 and 3 not in [s["id"] for s in items] and [s["position"] for s in items] == list(range(1, 8))
    same = server.get("/v1/tracks/3/similar?k=3&genre_mode=same").json()["items"]
    assert {s["genre"] for s in same} == {t["genre"]}
    mmr = server.get("/v1/tracks/3/similar?k=5&mmr_lambda=0.3").json()["items"]
    assert len(mmr) == 5
    assert_problem(server.get("/v1/tracks/99999/similar"), 404)
    assert_problem(server.get("/v1/tracks/3/similar?k=0"), 400, "k must be")


def test_audio_streaming_with_ranges(server, api_home):
    lib = server.service.library()
    path = Path(lib.catalog.get(5).path)
    whole = path.read_bytes()
    r = server.get("/v1/tracks/5/audio")
    assert r.status_code == 200 and r.content == whole and r.headers["Content-Type"].startswith("audio/")
    assert r.headers["Accept-Ranges"] == "bytes"
    r = server.get("/v1/tracks/5/audio", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == whole[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    r = server.get("/v1/tracks/5/audio", headers={"Range": f"bytes={len(whole) + 10}-"})
    assert r.status_code == 416
    etag = server.get("/v1/tracks/5/audio").headers["ETag"]
    assert server.get("/v1/tracks/5/audio", headers={"If-None-Match": etag}).status_code == 304
    assert_problem(server.get("/v1/tracks/424242/audio"), 404)


def test_add_and_delete_tracks_with_api_key(api_home, tiny_bundle, redis_url, cache_prefix, tmp_path):
    srv = make_server(api_home, tiny_bundle, redis_url, cache_prefix, api_key="s3cret")
    try:
        data = clip_bytes(tmp_path, "clicks", 4242, "flac")
        before = srv.get("/v1/tracks?limit=200").json()["items"]
        # reads stay open; changes need the key
        assert srv.get("/v1/tracks/1").status_code == 200
        r = srv.post("/v1/tracks", files={"file": ("My Song.flac", data, "audio/flac")})
        assert_problem(r, 401, "API key")
        assert "Bearer" in r.headers["WWW-Authenticate"]
        assert_problem(srv.post("/v1/tracks", files={"file": ("x.flac", data, "audio/flac")},
                                headers={"X-API-Key": "wrong"}), 403)
        assert_problem(srv.delete("/v1/tracks/1"), 401)
        assert_problem(srv.delete("/v1/tracks/1", headers={"Authorization": "Bearer nope"}), 403)
        # added: 201, visible to the very next query (live index, no restart)
        r = srv.post("/v1/tracks", files={"file": ("My Song.flac", data, "audio/flac")},
                     data={"artist": "Zed"}, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 201, r.text
        t = r.json()
        assert t["title"] == "My Song" and t["artist"] == "Zed" and r.headers["Location"] == f"/v1/tracks/{t['id']}"
        p = srv.post("/v1/predict?k=3", data=data, headers={"Content-Type": "audio/flac"}).json()
        assert p["track_id"] == t["id"] and p["cached"] is True  # the add filled the cache
        near = srv.get(f"/v1/tracks/{before[0]['id']}/similar?k={len(before)}").json()["items"]
        assert t["id"] in [s["id"] for s in near]
        assert srv.get(t["audio_url"]).content == data
        stored = list((api_home / "uploads").rglob("*.flac"))
        assert len(stored) == 1 and stored[0].read_bytes() == data
        # the same audio again: 200, the same track
        r = srv.post("/v1/tracks", data=data, headers={"Content-Type": "audio/flac", "Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["id"] == t["id"]
        # deleted: gone from the catalog, the index and the disk
        assert srv.delete(f"/v1/tracks/{t['id']}", headers={"X-API-Key": "s3cret"}).status_code == 204
        assert_problem(srv.get(f"/v1/tracks/{t['id']}"), 404)
        assert_problem(srv.delete(f"/v1/tracks/{t['id']}", headers={"X-API-Key": "s3cret"}), 404)
        near = srv.get(f"/v1/tracks/{before[0]['id']}/similar?k={len(before) - 1}").json()["items"]
        assert t["id"] not in [s["id"] for s in near]
        assert not list((api_home / "uploads").rglob("*.flac"))
        assert [x["id"] for x in srv.get("/v1/tracks?limit=200").json()["items"]] == [x["id"] for x in before]
    finally:
        srv.close()


def test_repeated_predict_is_answered_whole_until_the_catalog_changes(api_home, tiny_bundle, redis_url,
                                                                      cache_prefix, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    srv = make_server(api_home, tiny_bundle, redis_url, cache_prefix)
    answers = srv.app.extensions["sonicsort_answers"]
    wav = {"Content-Type": "audio/wav"}
    try:
        data = clip_bytes(tmp_path, "chirp", 5150)
        k = N_TRACKS + 5  # more than the catalog holds: every track, so an added one must show
        first = srv.post(f"/v1/predict?k={k}", data=data, headers=wav)
        assert first.status_code == 200 and first.json()["cached"] is False
        assert len(first.json()["similar"]) == N_TRACKS and (answers.hits, len(answers)) == (0, 1)
        # the same raw upload again: the stored answer, before Flask (api.fastpath)
        again = srv.post(f"/v1/predict?k={k}", data=data, headers=wav)
        assert again.status_code == 200 and again.headers["Content-Type"] == "application/json"
        assert again.json() == {**first.json(), "cached": True} and answers.hits == 1
        assert again.headers["X-Content-Type-Options"] == "nosniff"  # answered before Flask, same headers
        assert "app;dur=" in again.headers["Server-Timing"]
        # as multipart: the view finds the same stored answer once it has the file's hash
        multi = srv.post(f"/v1/predict?k={k}", files={"file": ("q.wav", data, "audio/wav")})
        assert multi.content == again.content and answers.hits == 2
        # other parameters are another answer
        three = srv.post("/v1/predict?k=3", data=data, headers=wav).json()
        assert three["cached"] is True and len(three["similar"]) == 3 and answers.hits == 2
        # a track added to the catalog makes every stored answer stale
        other = clip_bytes(tmp_path, "noise", 6160)
        added = srv.post("/v1/tracks", data=other, headers=wav)
        assert added.status_code == 201, added.text
        new_id = added.json()["id"]
        after = srv.post(f"/v1/predict?k={k}", data=data, headers=wav).json()
        assert after["cached"] is True and answers.hits == 2
        assert len(after["similar"]) == N_TRACKS + 1 and new_id in [s["id"] for s in after["similar"]]
        assert srv.delete(f"/v1/tracks/{new_id}").status_code == 204
        gone = srv.post(f"/v1/predict?k={k}", data=data, headers=wav).json()
        assert new_id not in [s["id"] for s in gone["similar"]] and gone["similar"] == first.json()["similar"]
        # each hit is still counted in /metrics
        hits = [s.value for f in text_string_to_metric_families(srv.get("/metrics").text)
                for s in f.samples if s.name == "sonicsort_predictions_total" and s.labels["cache"] == "hit"]
        assert hits == [5.0]
    finally:
        srv.close()
    # SONICSORT_ANSWER_CACHE_MB=0: nothing is stored, and repeats still come from the prediction cache
    srv = make_server(api_home, tiny_bundle, redis_url, cache_prefix, answer_cache_mb=0)
    try:
        for cached in (True, True):
            assert srv.post(f"/v1/predict?k={k}", data=data, headers=wav).json()["cached"] is cached
        assert len(srv.app.extensions["sonicsort_answers"]) == 0 and srv.app.extensions["sonicsort_answers"].hits == 0
    finally:
        srv.close()


def test_failed_writes_leave_catalog_and_index_as_they_were(api_home, tiny_bundle, tmp_path, monkeypatch):
    srv = make_server(api_home, tiny_bundle, None)
    try:
        lib = srv.service.library()
        ids_before = lib.catalog.ids().tolist()
        index_before = sorted(lib.index.ids().tolist())
        # undecodable audio: refused before anything is written
        assert_problem(srv.post("/v1/tracks", data=b"RIFF" + b"\0" * 400, headers={"Content-Type": "audio/wav"}), 422)
        # the catalog write itself fails (a full disk, say): the stored upload is removed again
        from recommender.catalog import Catalog
        from recommender.errors import CatalogError

        def fail(self, *a, **kw):
            raise CatalogError("disk full (simulated)")

        monkeypatch.setattr(Catalog, "add", fail)
        body = assert_problem(srv.post("/v1/tracks", data=clip_bytes(tmp_path, "drone", 77),
                                       headers={"Content-Type": "audio/wav"}), 500)
        assert "disk full" in body["detail"]
        monkeypatch.undo()
        assert lib.catalog.ids().tolist() == ids_before
        assert sorted(lib.index.ids().tolist()) == index_before
        assert not [p for p in (api_home / "uploads").rglob("*") if p.is_file()]
    finally:
        srv.close()


# ---------------------------------------------------------------- playlists, paths, genres
def test_playlists_json_and_m3u8(server):
    r = server.post("/v1/playlists", json={"seeds": [2, 5], "length": 8, "artist_cap": 3})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    ids = [s["id"] for s in items]
    assert len(ids) == 8 and ids[:2] == [2, 5] and len(set(ids)) == 8
    artists = [s["artist"] for s in items]
    assert all(a != b for a, b in zip(artists, artists[1:]))
    # the same request again: the same playlist
    assert [s["id"] for s in server.post("/v1/playlists", json={"seeds": [2, 5], "length": 8, "artist_cap": 3}).json()["items"]] == ids
    r = server.post("/v1/playlists?format=m3u8", json={"seeds": [2, 5], "length": 8, "artist_cap": 3})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("audio/x-mpegurl")
    assert "attachment" in r.headers["Content-Disposition"]
    urls = [line for line in r.text.splitlines() if line and not line.startswith("#")]
    assert urls == [f"{server.url}/v1/tracks/{i}/audio" for i in ids]
    assert requests.get(urls[0], timeout=10).status_code == 200  # a player can fetch every entry
    r = server.post("/v1/playlists", json={"seeds": [2], "length": 3}, headers={"Accept": "audio/x-mpegurl"})
    assert r.text.startswith("#EXTM3U")
    genre = server.get("/v1/tracks/2").json()["genre"]
    r = server.post("/v1/playlists", json={"seeds": [2], "length": 4, "genres": [genre], "artist_cap": 4})
    assert {s["genre"] for s in r.json()["items"][1:]} == {genre}


@pytest.mark.parametrize("body,status,words", [
    ({"seeds": [2], "length": 0}, 400, ["length"]),
    ({"seeds": [2], "length": 1001}, 400, ["length"]),
    ({"seeds": [], "length": 3}, 400, ["seeds"]),
    ({"seeds": ["a"], "length": 3}, 400, ["seeds[0]"]),
    ({"length": 3}, 400, ["seeds"]),
    ({"seeds": [2]}, 400, ["length"]),
    ({"seeds": [99999], "length": 3}, 404, ["unknown track"]),
    ({"seeds": [2], "length": 3, "genres": ["polka"]}, 400, ["unknown genre"]),
    ({"seeds": [2], "length": 3, "genres": "drone"}, 400, ["genres"]),
    ({"seeds": [2, 2], "length": 3}, 400, ["repeat"]),
    ({"seeds": [2], "length": 3, "centre_weight": 3}, 400, ["centre_weight"]),
])
def test_playlist_errors(server, body, status, words):
    assert_problem(server.post("/v1/playlists", json=body), status, *words)


def test_playlist_body_must_be_json(server):
    assert_problem(server.post("/v1/playlists", data="seeds=1", headers={"Content-Type": "text/plain"}), 415, "JSON")
    assert_problem(server.post("/v1/playlists", data="[1, 2]", headers={"Content-Type": "application/json"}), 400, "object")
    assert_problem(server.post("/v1/playlists", data="{not json", headers={"Content-Type": "application/json"}), 400)
    deep = "[" * 100_000 + "]" * 100_000  # 200 kB: Python's json parser recurses once per level
    for route in ("/v1/playlists", "/v1/paths"):
        assert_problem(server.post(route, data=deep, headers={"Content-Type": "application/json"}), 400, "nested")
        assert_problem(server.post(route, data='{"seeds": ' + deep + "}", headers={"Content-Type": "application/json"}),
                       400, "nested")


def test_paths(server):
    r = server.post("/v1/paths", json={"from": 1, "to": 9, "length": 6})
    assert r.status_code == 200
    ids = [s["id"] for s in r.json()["items"]]
    assert len(ids) == 6 and ids[0] == 1 and ids[-1] == 9 and len(set(ids)) == 6
    m3u = server.post("/v1/paths?format=m3u8", json={"from": 1, "to": 9, "length": 6}).text
    assert m3u.startswith("#EXTM3U") and m3u.count("/audio") == 6
    loop = server.post("/v1/paths", json={"from": 1, "to": 1, "length": 4}).json()  # a round trip
    assert [s["id"] for s in loop["items"]][::3] == [1, 1] and loop["truncated"] is False
    n = len(server.service.catalog)
    whole = server.post("/v1/paths", json={"from": 1, "to": 9, "length": n + 3}).json()
    assert whole["length"] == n and whole["requested_length"] == n + 3 and whole["truncated"] is True
    assert_problem(server.post("/v1/paths", json={"from": 1, "to": 99999, "length": 4}), 404)
    assert_problem(server.post("/v1/paths", json={"from": 1, "to": 9, "length": 1}), 400, "length")
    assert_problem(server.post("/v1/paths", json={"from": 1, "length": 4}), 400, "'to'")


def test_genres_with_counts(server):
    body = server.get("/v1/genres").json()
    assert [g["genre"] for g in body["genres"]] == list(server.service.bundle.genres) and set(GENRES) == {g["genre"] for g in body["genres"]}
    assert sum(g["tracks"] for g in body["genres"]) == len(server.service.catalog)


def test_catalog_map(server):
    """/v1/map: every track once, in [-1, 1], PCA of the embeddings (same-genre tracks nearer)."""
    body = server.get("/v1/map").json()
    cat = server.service.catalog
    assert body["method"] == "pca" and body["total"] == len(cat) == N_TRACKS
    pts = body["points"]
    assert sorted(p["id"] for p in pts) == sorted(int(i) for i in cat.ids())
    xy = np.array([[p["x"], p["y"]] for p in pts])
    assert np.abs(xy).max() == pytest.approx(1.0, abs=1e-4) and np.abs(xy).max() <= 1.0
    for p in pts[:5]:
        t = server.get(f"/v1/tracks/{p['id']}").json()
        assert (p["genre"], p["title"], p["artist"]) == (t["genre"], t["title"], t["artist"])
    ev = body["explained_variance"]
    assert 0 < ev[1] <= ev[0] <= 1
    # the projection is the embeddings' own: tracks of one genre lie nearer each other than to others
    g = np.array([p["genre"] for p in pts])
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    same, other = g[:, None] == g[None], g[:, None] != g[None]
    np.fill_diagonal(same, False)
    assert d[same].mean() < 0.7 * d[other].mean()
    assert server.get("/v1/map").json() == body  # kept until the catalog changes
    few = server.get("/v1/map", params={"limit": 5}).json()
    assert len(few["points"]) == 5 and few["total"] == N_TRACKS
    assert {p["id"] for p in few["points"]} <= {p["id"] for p in pts}
    assert_problem(server.get("/v1/map", params={"limit": 0}), 400, "limit")
    assert_problem(server.get("/v1/map", params={"limit": "x"}), 400, "limit")


# ---------------------------------------------------------------- operations
def test_health_ready_metrics(server, tmp_path):
    assert server.get("/healthz").json() == {"status": "alive"}
    r = server.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["cache"] == "ok" and body["index"]["tracks"] == N_TRACKS
    assert body["index"]["behind"] == 0 and body["index"]["generation"] == body["index"]["catalog_generation"] > 0
    server.post("/v1/predict?k=1", data=clip_bytes(tmp_path, "drone", 31337), headers={"Content-Type": "audio/wav"})
    server.post("/v1/predict?k=1", data=clip_bytes(tmp_path, "drone", 31337), headers={"Content-Type": "audio/wav"})
    m = server.get("/metrics")
    assert m.status_code == 200 and m.headers["Content-Type"].startswith("text/plain")
    from prometheus_client.parser import text_string_to_metric_families

    fam = {f.name: f for f in text_string_to_metric_families(m.text)}
    reqs = {(s.labels["route"], s.labels["status"]): s.value for s in fam["sonicsort_http_requests"].samples
            if s.name.endswith("_total")}
    assert reqs[("/v1/predict", "200")] >= 2 and reqs[("/readyz", "200")] >= 1
    cache = {s.labels["cache"]: s.value for s in fam["sonicsort_predictions"].samples if s.name.endswith("_total")}
    assert cache["hit"] >= 1 and cache["miss"] >= 1
    assert fam["sonicsort_catalog_tracks"].samples[0].value == N_TRACKS
    lat = [s for s in fam["sonicsort_http_request_duration_seconds"].samples
           if s.name.endswith("_count") and s.labels["route"] == "/v1/predict"]
    assert lat and lat[0].value >= 2


def test_not_ready_is_503(api_home, tiny_bundle, tmp_path):
    from api import create_app

    app = create_app({"SETTINGS": Settings(home=api_home, redis_url=""), "BUNDLE": tiny_bundle, "START": "no"})
    srv = Server(app)
    try:
        r = srv.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "starting" and r.headers["Retry-After"]
        assert srv.get("/healthz").status_code == 200  # alive while starting
        assert_problem(srv.post("/v1/predict", data=clip_bytes(tmp_path, "drone", 5),
                                headers={"Content-Type": "audio/wav"}), 503, "starting")
        srv.service.start(background=False)
        assert srv.get("/readyz").json()["status"] == "ready"
    finally:
        srv.close()
    # a model that cannot load: /readyz says why, requests get 503 with the reason
    app = create_app({"SETTINGS": Settings(home=tmp_path / "h", redis_url="", model_dir=tmp_path / "no-model"),
                      "START": "now"})
    srv = Server(app)
    try:
        body = srv.get("/readyz").json()
        assert body["status"] == "failed" and "no-model" in body["error"]
        assert_problem(srv.get("/v1/genres"), 503, "could not start")
    finally:
        srv.close()


def test_redis_stopped_mid_test(api_home, tiny_bundle, tmp_path):
    red = PrivateRedis(tmp_path).start()
    srv = make_server(api_home, tiny_bundle, red.url)
    try:
        a, b = clip_bytes(tmp_path, "drone", 501), clip_bytes(tmp_path, "chirp", 502)
        wav = {"Content-Type": "audio/wav"}
        assert srv.post("/v1/predict", data=a, headers=wav).json()["cached"] is False
        assert srv.post("/v1/predict", data=a, headers=wav).json()["cached"] is True
        red.stop()
        r = srv.post("/v1/predict", data=b, headers=wav)  # still answers, uncached
        assert r.status_code == 200 and r.json()["cached"] is False and r.json()["similar"]
        r = srv.get("/readyz")
        assert r.status_code == 200 and r.json()["status"] == "degraded" and r.json()["cache"] == "degraded"
        red.start()
        deadline = __import__("time").monotonic() + 10
        while srv.get("/readyz").json()["status"] != "ready" and __import__("time").monotonic() < deadline:
            __import__("time").sleep(0.2)
        assert srv.get("/readyz").json()["status"] == "ready"
        srv.post("/v1/predict", data=b, headers=wav)
        assert srv.post("/v1/predict", data=b, headers=wav).json()["cached"] is True
    finally:
        srv.close()
        red.stop()


# ---------------------------------------------------------------- the OpenAPI document
def test_openapi_document_is_valid_and_matches_the_routes(server):
    from openapi_spec_validator import validate

    doc = server.get("/openapi.json").json()
    validate(doc)
    assert doc["components"]["parameters"]["genre"]["schema"]["enum"] == list(server.service.bundle.genres)
    documented = {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    routed = set()
    for rule in server.app.url_map.iter_rules():
        if rule.rule.startswith(("/v1", "/healthz", "/readyz", "/metrics", "/openapi")):
            path = rule.rule.replace("<int:track_id>", "{track_id}").replace("<int:playlist_id>", "{playlist_id}").replace("<artist_id>", "{artist_id}")
            routed |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed == documented
    page = server.get("/docs")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert "http" not in page.text.split("<body>")[1].replace("http-equiv", "")  # no CDN: assets from us
    assert server.get("/docs/swagger-ui-bundle.js").status_code == 200


# ---------------------------------------------------------------- fuzzing against the document
def test_fuzz_the_api_against_its_openapi_document(api_home, tiny_bundle, tmp_path):
    """schemathesis with all its checks (coverage, fuzzing and stateful phases) against the
    served document: no 5xx, every status, content type and body as documented,
    schema-violating input refused, schema-valid input accepted (``tests/schemathesis.toml``:
    random bytes typed audio/* are valid by the schema and rightly get 422).
    The server has its own copy of the catalog: with the key, the fuzzer may delete tracks.
    """
    import shutil
    import subprocess
    import sys

    home = tmp_path / "home"
    shutil.copytree(api_home, home)
    srv = make_server(home, tiny_bundle, None, api_key="fuzz-key")
    try:
        exe = Path(sys.executable).with_name("schemathesis")
        config = Path(__file__).with_name("schemathesis.toml")
        p = subprocess.run([str(exe), "--config-file", str(config), "run", srv.url + "/openapi.json",
                            "--max-examples", "25", "--seed", "7", "--checks", "all", "-H", "X-API-Key: fuzz-key",
                            "--no-color"],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
        import re

        ops = re.search(r"Operations:\s+(\d+) selected / (\d+) total", p.stdout)
        assert ops and ops[1] == ops[2] and int(ops[1]) >= 14, p.stdout[-3000:]
        assert p.stdout.count(f"{ops[1]} passed") >= 2, p.stdout[-3000:]  # coverage and fuzzing phases
    finally:
        srv.close()
