"""The catalog's tables (SQLAlchemy Core, one definition for SQLite and PostgreSQL) and its
schema version. ``migrations`` upgrades an older catalog to this schema."""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 5

_md = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY is the rowid
meta = sa.Table("meta", _md, sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text, nullable=False))
tracks = sa.Table(
    "tracks", _md,
    sa.Column("id", _ID, primary_key=True, autoincrement=False),
    sa.Column("sha256", sa.Text, nullable=False, unique=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("artist", sa.Text),
    sa.Column("album", sa.Text),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("genre", sa.Text, nullable=False),
    sa.Column("probabilities", sa.Text, nullable=False),
    sa.Column("embedding", sa.LargeBinary, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("is_silent", sa.Integer, nullable=False, server_default="0"),
    sa.Column("added_at", sa.Float, nullable=False),
    sa.Column("tags", sa.Text, nullable=False, server_default="{}"),
    sa.Index("tracks_genre", "genre"),
)
track_tags = sa.Table(
    "track_tags", _md,
    sa.Column("track_id", _ID, sa.ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag", sa.Text, primary_key=True),
    sa.Column("probability", sa.Float, nullable=False),
)
paths = sa.Table(
    "paths", _md,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("track_id", _ID, sa.ForeignKey("tracks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
    sa.Column("seq", sa.BigInteger),  # the order paths were recorded in: a track's first is its path
    sa.Index("paths_track", "track_id"),
    sa.Index("paths_seq", "seq"),
)
# the change feed: which tracks each generation added (+), removed (-) or re-embedded (~)
changes = sa.Table(
    "changes", _md,
    sa.Column("generation", sa.BigInteger, primary_key=True),
    sa.Column("track_id", _ID, primary_key=True),
    sa.Column("op", sa.Text, nullable=False),
)
# tags match case-insensitively (``search(tag=)``), through this index in both databases
_TAG_INDEX = sa.Index("track_tags_lower", sa.func.lower(track_tags.c.tag), track_tags.c.track_id)

WRITES = sa.select(meta.c.value).where(meta.c.key == "writes")
SCHEMA = sa.select(meta.c.value).where(meta.c.key == "schema_version")
