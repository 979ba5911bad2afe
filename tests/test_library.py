"""The library: the index kept equal to the catalog, and the catalog's model checked."""

from __future__ import annotations

import numpy as np
import pytest

from .helpers import GENRES, UNDO_SCHEMA_6, agree, music, write_clip
from recommender.catalog import SCHEMA_VERSION
from recommender.errors import ModelMismatch
from recommender.ingest import ingest


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


def test_schema_1_catalog_upgrades_in_place_and_reembeds_to_a_new_model(tmp_path, make_library, tiny_bundle,
                                                                       other_bundle):
    """A catalog of schema 1 built with another model: opened by this sonicsort it gains the
    tags column, refuses the new model until re-embedded, and after `reembed` its tracks carry tags."""
    import sqlite3

    music(tmp_path / "music", n=6)
    old = make_library(bundle=other_bundle)
    ingest(old, [tmp_path / "music"], workers=0)
    old.close()
    db = sqlite3.connect(tmp_path / "home" / "catalog.sqlite3")  # make it a schema-1 file, as 0.1 wrote them
    db.executescript(UNDO_SCHEMA_6 + "DROP TABLE track_tags; ALTER TABLE tracks DROP COLUMN tags; DROP INDEX paths_seq; "
                     "ALTER TABLE paths DROP COLUMN seq; DROP TABLE changes; DELETE FROM meta WHERE key IN ('last_track_id', 'writes', 'changes_from'); "
                     "UPDATE meta SET value='1' WHERE key='schema_version';")
    db.close()

    refusing = make_library()  # the new model on the old model's catalog
    assert refusing.catalog.get_meta("schema_version") == str(SCHEMA_VERSION)
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


def test_a_node_catches_up_from_its_saved_generation_without_comparing_the_catalog(tmp_path, make_library,
                                                                                monkeypatch):
    """A library (a node) saves its index with the catalog generation it holds. Others add and
    remove tracks meanwhile; reopened, it applies just those changes from the catalog's change
    log (never reading every id), and its index equals the catalog."""
    from recommender.catalog import Catalog
    from recommender.ingest import ingest

    music(tmp_path / "music", n=6)
    node = make_library()
    ingest(node, [tmp_path / "music"], workers=0)
    node.save_index()
    node.close()
    other = make_library()
    music(tmp_path / "more", n=3, offset=50)
    ingest(other, [tmp_path / "more"], workers=0)
    other.remove_tracks([int(other.catalog.ids()[0])])
    other.close()

    def no_full_scan(self):
        raise AssertionError("the catalog's whole id set was read")

    monkeypatch.setattr(Catalog, "ids", no_full_scan)
    monkeypatch.setattr(Catalog, "embeddings", no_full_scan)  # nor rebuilt from every vector
    back = make_library()
    idx_ids = sorted(back.index.ids().tolist())
    monkeypatch.undo()
    assert idx_ids == back.catalog.ids().tolist() and len(idx_ids) == 8


def test_schema_5_catalog_gains_file_tags_and_listeners_and_ingest_reads_the_tags_again(tmp_path, make_library):
    """A catalog from before schema 6 keeps its tracks; the new tag columns are empty until the
    next ingest, which reads the unchanged files' tags (not their audio) and fills them in."""
    import sqlite3

    import mutagen

    from recommender.extract import read_tags
    from recommender.ingest import ingest

    paths = [write_clip(tmp_path / "music" / f"{i}.flac", g, seconds=2.0, seed=30 + i)
             for i, g in enumerate(GENRES)]
    for i, p in enumerate(paths):
        f = mutagen.File(p, easy=True)
        f["albumartist"], f["tracknumber"], f["date"], f["genre"] = "Band", f"{i + 1}/3", "1999-01-02", "Dub"
        f.save()
    assert read_tags(paths[1]) | {"title": None} == {"title": None, "artist": None, "album": None,
                                                       "album_artist": "Band", "track_no": 2, "disc_no": None,
                                                       "year": 1999, "tag_genre": "Dub"}
    lib = make_library()
    ingest(lib, [tmp_path / "music"], workers=0)
    assert {t.track_no for t in lib.catalog.get_many(lib.catalog.ids()).values()} == {1, 2, 3}
    lib.close()
    db = sqlite3.connect(tmp_path / "home" / "catalog.sqlite3")
    db.executescript(UNDO_SCHEMA_6 + "UPDATE meta SET value='5' WHERE key='schema_version';")
    db.close()
    old = make_library()
    tracks = old.catalog.get_many(old.catalog.ids())
    assert len(tracks) == 3 and all(t.album_artist is None and t.year is None for t in tracks.values())
    assert old.catalog.users() == [] and old.catalog.playlists() == []
    report = ingest(old, [tmp_path / "music"], workers=0)
    assert report.unchanged == 3 and report.added == 0
    tracks = old.catalog.get_many(old.catalog.ids())
    assert {(t.album_artist, t.year, t.tag_genre) for t in tracks.values()} == {("Band", 1999, "Dub")}
    assert old.catalog.get_meta("facts_missing") == "0"
