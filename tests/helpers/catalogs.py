"""Catalogs for tests: a tagged library ingested, the agreement of index and catalog, PostgreSQL schemas."""

from __future__ import annotations

import os
from pathlib import Path


from .audio import GENRES, write_clip


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


# what schema 7 added, dropped again: with the version set back, a test's SQLite catalog is one of schema 6
UNDO_SCHEMA_7 = ("DROP TABLE duplicates; ALTER TABLE tracks DROP COLUMN fingerprint; "
                 "DELETE FROM meta WHERE key = 'duplicates_through'; ")
# ... and what schema 6 added: a catalog of schema 5
UNDO_SCHEMA_6 = UNDO_SCHEMA_7 + ("DROP TABLE playlist_tracks; DROP TABLE playlists; DROP TABLE plays; DROP TABLE stars; "
                 "DROP TABLE ratings; DROP TABLE users; ALTER TABLE tracks DROP COLUMN album_artist; "
                 "ALTER TABLE tracks DROP COLUMN track_no; ALTER TABLE tracks DROP COLUMN disc_no; "
                 "ALTER TABLE tracks DROP COLUMN year; ALTER TABLE tracks DROP COLUMN tag_genre; ")


POSTGRES_ADMIN_URL = os.environ.get("SONICSORT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


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


def agree(lib) -> bool:
    """The library's index holds exactly the catalog's tracks."""
    return sorted(lib.index.ids().tolist()) == lib.catalog.ids().tolist()
