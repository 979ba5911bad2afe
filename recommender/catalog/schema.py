"""The catalog's tables (SQLAlchemy Core, one definition for SQLite and PostgreSQL) and its
schema version. ``migrations`` upgrades an older catalog to this schema."""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 7

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
    # the file's own tags beside title, artist and album (None: the file has none)
    sa.Column("album_artist", sa.Text),
    sa.Column("track_no", sa.Integer),
    sa.Column("disc_no", sa.Integer),
    sa.Column("year", sa.Integer),
    sa.Column("tag_genre", sa.Text),
    # the audio's ``embedding.fingerprint`` (None: silence, or ingested before fingerprints)
    sa.Column("fingerprint", sa.LargeBinary),
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
# the people who listen: Subsonic apps log in as one of them (``recommender.users``)
users = sa.Table(
    "users", _md,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("password", sa.Text, nullable=False),  # encrypted with the operator's key, never in clear
    sa.Column("api_key_sha256", sa.Text, unique=True),
    sa.Column("is_admin", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
)
_USER = dict(ondelete="CASCADE", onupdate="CASCADE")
_AUTO = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
playlists = sa.Table(
    "playlists", _md,
    sa.Column("id", _AUTO, primary_key=True, autoincrement=True),
    sa.Column("owner", sa.Text, sa.ForeignKey("users.name", **_USER), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("public", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("changed_at", sa.Float, nullable=False),
    sa.Index("playlists_owner", "owner"),
)
playlist_tracks = sa.Table(
    "playlist_tracks", _md,
    sa.Column("playlist_id", _AUTO, sa.ForeignKey("playlists.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("track_id", _ID, sa.ForeignKey("tracks.id", ondelete="CASCADE"), nullable=False),
    sa.Index("playlist_tracks_track", "track_id"),
)
plays = sa.Table(
    "plays", _md,
    sa.Column("id", _AUTO, primary_key=True, autoincrement=True),
    sa.Column("user_name", sa.Text, sa.ForeignKey("users.name", **_USER), nullable=False),
    sa.Column("track_id", _ID, sa.ForeignKey("tracks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("played_at", sa.Float, nullable=False),
    sa.Index("plays_track", "track_id"),
    sa.Index("plays_user_time", "user_name", "played_at"),
)
# a starred song (its track id as text), album or artist (their ids, ``recommender.browse``);
# readers skip what no longer exists
stars = sa.Table(
    "stars", _md,
    sa.Column("user_name", sa.Text, sa.ForeignKey("users.name", **_USER), primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("starred_at", sa.Float, nullable=False),
)
ratings = sa.Table(
    "ratings", _md,
    sa.Column("user_name", sa.Text, sa.ForeignKey("users.name", **_USER), primary_key=True),
    sa.Column("track_id", _ID, sa.ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("rating", sa.Integer, nullable=False),
)
# near-duplicates: two tracks that hold the same recording (``recommender.duplicates``), lower id first
duplicates = sa.Table(
    "duplicates", _md,
    sa.Column("a", _ID, sa.ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("b", _ID, sa.ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("distance", sa.Float, nullable=False),  # the fingerprints' bit error rate
    sa.Column("similarity", sa.Float, nullable=False),  # the embeddings' cosine
    sa.Index("duplicates_b", "b"),
)
LISTENING = (users, playlists, playlist_tracks, plays, stars, ratings)

# tags match case-insensitively (``search(tag=)``), through this index in both databases
_TAG_INDEX = sa.Index("track_tags_lower", sa.func.lower(track_tags.c.tag), track_tags.c.track_id)

WRITES = sa.select(meta.c.value).where(meta.c.key == "writes")
SCHEMA = sa.select(meta.c.value).where(meta.c.key == "schema_version")
