"""The steps that upgrade a catalog of an older schema in place, when it is opened."""

from __future__ import annotations

from typing import Callable

import sqlalchemy as sa

from ..errors import CatalogError
from .schema import LISTENING, SCHEMA_VERSION, _md, changes, duplicates, meta, track_tags, tracks

def _v2_tags(conn: sa.Connection) -> None:
    """v1 → v2: the front end's tags (empty until ``sonicsort reembed``)."""
    conn.exec_driver_sql("ALTER TABLE tracks ADD COLUMN tags TEXT NOT NULL DEFAULT '{}'")
    track_tags.create(conn, checkfirst=True)


def _v3_last_id(conn: sa.Connection) -> None:
    """v2 → v3: ids are never reused. SQLite gives a new row max(id) + 1, so deleting the newest
    track would hand its id to the next one; the highest id ever given is kept in meta and new
    ids count up from it (a catalog from before starts at its max(id))."""
    top = conn.execute(sa.select(sa.func.coalesce(sa.func.max(tracks.c.id), 0))).scalar_one()
    conn.execute(meta.delete().where(meta.c.key == "last_track_id"))
    conn.execute(meta.insert().values(key="last_track_id", value=str(top)))


def _v4_portable(conn: sa.Connection) -> None:
    """v3 → v4, the schema PostgreSQL shares: paths keep their order in a ``seq`` column (SQLite's
    rowid did it before), tags are matched through ``lower(tag)``, and a ``writes`` counter
    tells other connections that something changed."""
    conn.exec_driver_sql("ALTER TABLE paths ADD COLUMN seq BIGINT")
    conn.exec_driver_sql("UPDATE paths SET seq = rowid")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS paths_seq ON paths (seq)")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS track_tags_lower ON track_tags (lower(tag), track_id)")
    conn.execute(meta.insert().values(key="writes", value="0"))


def _v5_changes(conn: sa.Connection) -> None:
    """v4 → v5: the change log (``changes_since``); it starts at the catalog's generation now."""
    changes.create(conn, checkfirst=True)
    now = conn.execute(sa.select(meta.c.value).where(meta.c.key == "generation")).scalar() or "0"
    conn.execute(meta.delete().where(meta.c.key == "changes_from"))
    conn.execute(meta.insert().values(key="changes_from", value=str(now)))


def _v6_listening(conn: sa.Connection) -> None:
    """v5 → v6: the files' album artist, track and disc numbers, year and genre tag (None for
    tracks ingested before: ``sonicsort ingest`` reads them again), and the listeners' tables:
    users, playlists, plays, stars and ratings."""
    for column, kind in (("album_artist", "TEXT"), ("track_no", "INTEGER"), ("disc_no", "INTEGER"),
                         ("year", "INTEGER"), ("tag_genre", "TEXT")):
        conn.exec_driver_sql(f"ALTER TABLE tracks ADD COLUMN {column} {kind}")
    for table in LISTENING:
        table.create(conn, checkfirst=True)
    conn.execute(meta.delete().where(meta.c.key == "facts_missing"))
    conn.execute(meta.insert().values(key="facts_missing", value="1"))


def _v7_duplicates(conn: sa.Connection) -> None:
    """v6 → v7: tracks keep their audio's fingerprint (None for tracks ingested before; they are
    fingerprinted when ``sonicsort duplicates --scan`` reads their files), and the near-duplicate
    pairs found by it."""
    conn.exec_driver_sql(f"ALTER TABLE tracks ADD COLUMN fingerprint {'BYTEA' if conn.dialect.name == 'postgresql' else 'BLOB'}")
    duplicates.create(conn, checkfirst=True)


# schema version → the step that upgrades a catalog of the version before it, in place
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {2: _v2_tags, 3: _v3_last_id, 4: _v4_portable,
                                                          5: _v5_changes, 6: _v6_listening,
                                                          7: _v7_duplicates}


def migrate(db: sa.Connection, where: str) -> None:
    """Bring the catalog on ``db`` to ``SCHEMA_VERSION``: create it when new, else run each
    step from its version on. A catalog of a newer schema is refused."""
    has_meta = sa.inspect(db).has_table("meta")
    found = db.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar() if has_meta else None
    found = int(found) if found is not None else None
    if found is not None and found > SCHEMA_VERSION:
        raise CatalogError(f"{where}: catalog schema {found} is not supported "
                           f"(this sonicsort reads {SCHEMA_VERSION} and older)")
    if found is None:  # a new catalog: today's schema at once
        _md.create_all(db)  # with the lower(tag) index, which belongs to track_tags
        db.execute(meta.insert(), [{"key": "last_track_id", "value": "0"}, {"key": "writes", "value": "0"},
                                   {"key": "changes_from", "value": "0"},
                                   {"key": "schema_version", "value": str(SCHEMA_VERSION)}])
        return
    for version in range(found + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version](db)
    if found < SCHEMA_VERSION:
        db.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))
