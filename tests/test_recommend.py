"""Similar tracks, playlists and paths over a real catalog built by ingest (tiny model,
generated audio, real indexes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .helpers import ingest_tagged_library, write_clip
from recommender.cache import PredictionCache
from recommender.config import Settings
from recommender.errors import BadRequest, UnknownTrack
from recommender.library import Library
from recommender.recommend import Recommender, genre_agreement, slerp, to_json, to_m3u8

ARTISTS = ["Ada", "Ben", "Cy", "Dee"]


@pytest.fixture(scope="module")
def catalog_home(tmp_path_factory, tiny_bundle):
    """30 tagged clips (3 synthetic genres, 4 artists) ingested once for the module."""
    root = tmp_path_factory.mktemp("reco")
    ingest_tagged_library(root, tiny_bundle, 30, seed=300, title="Song", artists=ARTISTS)
    return root


@pytest.fixture(params=["hnsw", "annoy", "exact"])
def reco(request, catalog_home, tiny_bundle):
    lib = Library(Settings(home=catalog_home / "home"), bundle=tiny_bundle, cache=PredictionCache(None),
                  backend=request.param)
    yield Recommender(lib)
    lib.close()


def test_similar_excludes_itself_and_matches_exact_search(reco):
    ids = reco.catalog.ids().tolist()
    q = reco.query_for_track(ids[0])
    res = reco.similar(q, 5)
    assert len(res) == 5 and ids[0] not in [r.track.id for r in res]
    assert [r.similarity for r in res] == sorted([r.similarity for r in res], reverse=True)
    # the same five as brute force over the catalog's embeddings
    vecs = reco.catalog.vectors(ids)
    sims = sorted(((float(np.dot(vecs[i], q.vector)), i) for i in ids if i != ids[0]), reverse=True)
    assert {r.track.id for r in res} == {i for _, i in sims[:5]}
    for r in res:
        assert abs(r.similarity - float(np.dot(vecs[r.track.id], q.vector))) < 1e-4
        assert 0 <= r.genre_agreement <= 1 + 1e-6 and r.score == r.similarity
    assert {"similarity", "genre_agreement", "score", "title", "artist"} <= set(res[0].to_dict())
    assert res[0].track.title.startswith("Song ") and res[0].track.artist in ARTISTS


def test_upload_of_a_catalog_track_excludes_its_duplicate(reco):
    t = reco.catalog.get(reco.catalog.ids()[3])
    q, pred, _ = reco.query_for_audio(Path(t.path).read_bytes())
    assert q.track_id == t.id
    assert t.id not in [r.track.id for r in reco.similar(q, 10)]


def test_genre_filter_same_and_boost(reco):
    ids = reco.catalog.ids().tolist()
    q = reco.query_for_track(ids[0])
    genres = {i: g for i, _, _, g in reco.catalog.labels()}
    for g in set(genres.values()):
        n = sum(1 for i, gg in genres.items() if gg == g and i != ids[0])
        res = reco.similar(q, 3, genre=g)
        assert len(res) == min(3, n) and all(r.track.genre == g for r in res)
        assert len(reco.similar(q, 100, genre=g)) == n  # k > available returns what exists
    same = reco.similar(q, 4, genre_mode="same")
    assert all(r.track.genre == q.genre for r in same)
    boosted = reco.similar(q, 10, genre_mode="boost", boost_weight=0.5)
    for r in boosted:
        assert abs(r.score - (0.5 * r.similarity + 0.5 * r.genre_agreement)) < 1e-6
    assert [r.score for r in boosted] == sorted([r.score for r in boosted], reverse=True)
    with pytest.raises(BadRequest, match="unknown genre"):
        reco.similar(q, 3, genre="polka")
    with pytest.raises(BadRequest):
        reco.similar(q, 0)
    with pytest.raises(UnknownTrack):
        reco.query_for_track(10_000)


def test_artist_cap_and_mmr_diversify(reco):
    q = reco.query_for_track(reco.catalog.ids()[0])
    capped = reco.similar(q, 6, artist_cap=1)
    artists = [r.track.artist for r in capped]
    assert len(artists) == len(set(artists)) == 4  # only four artists exist
    plain = reco.similar(q, 8)
    diverse = reco.similar(q, 8, mmr_lambda=0.3)
    vecs = reco.catalog.vectors([r.track.id for r in plain + diverse])

    def redundancy(items):
        v = np.stack([vecs[r.track.id] for r in items])
        s = v @ v.T
        return float((s.sum() - np.trace(s)) / (len(items) * (len(items) - 1)))

    assert redundancy(diverse) <= redundancy(plain) + 1e-6
    assert reco.similar(q, 8, mmr_lambda=1.0)[0].track.id == plain[0].track.id


def test_playlist_rules(reco, tmp_path):
    ids = reco.catalog.ids().tolist()
    pl = reco.playlist([ids[0], ids[5]], 12, artist_cap=4)  # 4 artists × 4: the rules can always be met
    got = [s.track.id for s in pl]
    assert got[:2] == [ids[0], ids[5]] and len(got) == 12 and len(set(got)) == 12
    artists = [s.track.artist for s in pl]
    assert all(a != b for a, b in zip(artists[1:], artists[2:]))  # no artist twice in a row after the seeds
    assert max(artists.count(a) for a in set(artists)) <= 4
    assert [s.track.id for s in reco.playlist([ids[0], ids[5]], 12, artist_cap=4)] == got  # deterministic
    g = reco.catalog.get(ids[0]).genre
    n_g = len(reco.catalog.ids_with_genre(g))
    in_genre = reco.playlist([ids[0]], min(3, n_g), genres=[g], artist_cap=4)
    assert len(in_genre) == min(3, n_g) and all(s.track.genre == g for s in in_genre)
    # smoother than the same tracks in random orders
    vecs = reco.catalog.vectors(got)
    step = lambda order: np.mean([1 - float(np.dot(vecs[a], vecs[b])) for a, b in zip(order, order[1:])])
    rng = np.random.default_rng(0)
    assert step(got) < np.mean([step(list(rng.permutation(got))) for _ in range(50)])
    m3u = to_m3u8(pl, relative_to=tmp_path)
    assert m3u.startswith("#EXTM3U") and m3u.count("#EXTINF:2,") == 12
    assert all(not line.startswith("/") for line in m3u.splitlines()[2::2])
    assert all((tmp_path / line).resolve().is_file() for line in m3u.splitlines()[3::2])
    assert [d["position"] for d in to_json(pl)] == list(range(1, 13))
    with pytest.raises(BadRequest, match="length"):
        reco.playlist([ids[0]], 0)
    # longer than the catalog can fill under the rules: every track that can be placed, once;
    # it stops only when every track left is by the artist just played
    whole = [s.track.id for s in reco.playlist([ids[0]], len(ids) + 1, artist_cap=len(ids))]
    assert len(set(whole)) == len(whole) <= len(ids)
    left = set(ids) - set(whole)
    assert {reco.catalog.get(i).artist for i in left} <= {reco.catalog.get(whole[-1]).artist}
    capped = reco.playlist([ids[0]], len(ids), artist_cap=1)  # one track per artist
    assert len(capped) == len({reco.catalog.get(i).artist for i in ids})
    with pytest.raises(UnknownTrack):
        reco.playlist([999_999], 3)
    with pytest.raises(BadRequest, match="unknown genre"):
        reco.playlist([ids[0]], 3, genres=["polka"])


def test_path_goes_from_a_to_b(reco):
    ids = reco.catalog.ids().tolist()
    vecs = reco.catalog.vectors(ids)
    a, b = max(((i, j) for i in ids for j in ids if i < j), key=lambda p: -float(np.dot(vecs[p[0]], vecs[p[1]])))
    p = reco.path(a, b, 6)
    got = [s.track.id for s in p]
    assert got[0] == a and got[-1] == b and len(set(got)) == 6
    # on the way: similarity to a falls, similarity to b rises (on the whole)
    to_b = [float(np.dot(vecs[i], vecs[b])) for i in got]
    assert to_b[-1] > to_b[0] and np.corrcoef(range(6), to_b)[0, 1] > 0.5
    # from a track to itself: a round trip through its nearest tracks
    loop = [s.track.id for s in reco.path(a, a, 5)]
    nearest = [s.track.id for s in reco.similar(reco.query_for_track(a), 3)]
    assert loop == [a, *nearest, a]
    assert len(reco.path(a, b, len(ids) + 5)) == len(ids)  # every track once, no more
    with pytest.raises(BadRequest):
        reco.path(a, b, 1)


def test_slerp_and_agreement():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    m = slerp(a, b, 0.5)
    assert abs(np.linalg.norm(m) - 1) < 1e-9 and abs(m[0] - m[1]) < 1e-9
    assert np.allclose(slerp(a, b, 0), a) and np.allclose(slerp(a, b, 1), b)
    assert genre_agreement({"x": 1.0}, {"x": 1.0}) == 1.0 and genre_agreement({"x": 1.0}, {"y": 1.0}) == 0.0


def test_cli_similar_playlist_path(catalog_home, tiny_bundle, tmp_path):
    env = dict(os.environ, SONICSORT_HOME=str(catalog_home / "home"), SONICSORT_MODEL_DIR=str(tiny_bundle.directory),
               SONICSORT_REDIS_URL="", TF_CPP_MIN_LOG_LEVEL="3")
    cli = [sys.executable, "-m", "api.cli"]
    run = lambda *a: subprocess.run(cli + list(a), env=env, capture_output=True, text=True, timeout=300)
    clip = write_clip(tmp_path / "q.wav", "drone", seconds=2.0, seed=4242)
    good = (["similar", "1", "-k", "4", "--json"], ["similar", str(clip), "-k", "3", "--genre-mode", "boost"],
            ["playlist", "1", "2", "--length", "5", "--m3u", str(tmp_path / "p.m3u8")],
            ["path", "1", "2", "--length", "4", "--json"])
    bad = (["similar", "9999"], ["playlist", "1", "--length", "0"], ["similar", "1", "--genre", "polka"],
           ["path", "1", "2", "--length", "5000"], ["similar", "nofile.mp3"])
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # independent processes: two at a time on two cores
        similar, similar_file, playlist, path, *refused = pool.map(lambda a: run(*a), good + bad)
    assert similar.returncode == 0, similar.stderr
    d = json.loads(similar.stdout)
    assert len(d["results"]) == 4 and 1 not in [x["id"] for x in d["results"]]
    assert similar_file.returncode == 0 and similar_file.stdout.count("score") == 3
    assert playlist.returncode == 0, playlist.stderr
    assert (tmp_path / "p.m3u8").read_text().count("#EXTINF") == 5
    assert [t["id"] for t in json.loads(path.stdout)["tracks"]][::3] == [1, 2]
    for args, r in zip(bad, refused):
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (args, r.stderr)


def test_long_lists_on_a_catalog_too_large_to_score_whole_search_the_index(reco, monkeypatch):
    """Past ``EXACT_POOL`` tracks a playlist and a path search the index at each step: the same rules hold."""
    from recommender import recommend

    ids = reco.catalog.ids().tolist()
    exact_pl = [s.track.id for s in reco.playlist([ids[0], ids[5]], 12, artist_cap=4)]
    exact_path = [s.track.id for s in reco.path(ids[1], ids[2], 6)]
    monkeypatch.setattr(recommend, "EXACT_POOL", 0)
    pl = reco.playlist([ids[0], ids[5]], 12, artist_cap=4)
    got = [s.track.id for s in pl]
    artists = [s.track.artist for s in pl]
    assert got[:2] == [ids[0], ids[5]] and len(set(got)) == 12
    assert all(a != b for a, b in zip(artists[1:], artists[2:])) and max(map(artists.count, artists)) <= 4
    assert got == exact_pl  # an exact index (hnsw at this size finds every neighbour): the same choices
    assert [s.track.id for s in reco.path(ids[1], ids[2], 6)] == exact_path
