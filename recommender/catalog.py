"""The catalog: every track and its embedding, in one SQL database.

The embedded default is a SQLite file (``SONICSORT_HOME/catalog.sqlite3``); with
``SONICSORT_CATALOG_URL=postgresql://…`` the same tables live in PostgreSQL (psycopg 3), so
several API nodes can share one catalog. The statements are SQLAlchemy Core, written once
for both; what differs (transactions' write lock, change detection, upserts) is in a few
small methods below.

Tracks are keyed by the sha256 of the file's bytes, so the same audio under two paths is
one track and a moved file keeps its track. ``paths`` maps every file path seen to its
track, with the size and modification time that let a second ingest skip unchanged files
without reading them. Every write is one transaction: a process killed at any moment leaves
the catalog as it was before or after that write, never in between. Writers are serialised
(SQLite's ``BEGIN IMMEDIATE``; in PostgreSQL a row lock on the ``writes`` counter that every
write transaction bumps first).

The schema is versioned (``meta.schema_version``); ``MIGRATIONS`` upgrade an older catalog
in place when it is opened.

The ANN index is *derived* from this catalog (see ``recommender.library``); the catalog is
the source of truth.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import logging

from .errors import CatalogError, CatalogUnavailable, CatalogUpgraded, UnknownTrack
from .text import clean_text

SCHEMA_VERSION = 5
CHANGES_KEPT = 100_000  # generations of the change log kept; a node further behind reconciles in full
TOP_TAGS = 5  # a track "has" the front end's tags it ranks highest; ``search(tag=...)`` finds them
# ... and the few that stand out most against their usual probability (moods rarely rank high)
SALIENT_TAGS, SALIENT_LIFT = 3, 3.0

log = logging.getLogger(__name__)
# While the database server does not answer, a process tries it again at most this often;
# meanwhile what needs it fails at once (CatalogUnavailable) and cached reads go on.
RETRY_S = 1.0
_LOST = (sa.exc.OperationalError, sa.exc.InterfaceError)  # a connection refused, reset or gone
LISTEN_POLL_S = 0.5  # how often the change listener's thread looks up from waiting (to stop)

_scope = threading.local()  # one_check_per_thread's: catalog id → this process's writes when checked


@contextmanager
def one_check_per_thread():
    """Within the block, each catalog asks its database whether another process wrote at most
    once on this thread (writes of this process are always seen). An API request runs in one:
    a request reads the catalog several times (the generation, the query track, the
    neighbours' rows), where one answer is enough; on PostgreSQL it is a round trip, or none
    while the change listener has heard no write (``Catalog._fresh``)."""
    outer = getattr(_scope, "checked", None)
    if outer is None:
        _scope.checked = {}
    try:
        yield
    finally:
        if outer is None:
            _scope.checked = None


class _ChangeListener:
    """PostgreSQL's LISTEN on the catalog's channel, in a thread with a connection of its own.

    Every write transaction sends ``NOTIFY`` on the channel (delivered when it commits), and
    each notification bumps ``count``. While the listener is connected, ``token()`` is what a
    catalog compares to know whether anything was written, with no round trip; when it is
    not (starting, or the server went away) ``token()`` is None and the catalog asks the
    database instead. Each (re)connection bumps ``count`` too: what was written while nobody
    listened is never taken for nothing."""

    def __init__(self, connect_args: tuple[tuple, dict], channel: str) -> None:
        self._args, self.channel = connect_args, channel
        self.count, self.live, self.pid = 0, False, os.getpid()
        self.backend_pid: int | None = None  # the server process of its connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sonicsort-catalog-listen", daemon=True)
        self._thread.start()

    def token(self) -> tuple[str, int] | None:
        """None while not listening, and in a forked child (the thread did not come along)."""
        return ("notified", self.count) if self.live and self.pid == os.getpid() else None

    def stop(self) -> None:
        self._stop.set()  # the thread sees it within LISTEN_POLL_S and closes its connection

    def _run(self) -> None:
        import psycopg
        from psycopg import sql

        warned = False
        while not self._stop.is_set():
            try:
                cargs, cparams = self._args
                with psycopg.connect(*cargs, **{**cparams, "autocommit": True, "keepalives": 1,
                                                "keepalives_idle": 10, "keepalives_interval": 5,
                                                "keepalives_count": 3}) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.backend_pid = conn.info.backend_pid
                    self.count += 1
                    self.live, warned = True, False
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=LISTEN_POLL_S):
                            self.count += 1
            except Exception as exc:  # the server stopped, or the connection broke: poll, and try again
                if not warned and not self._stop.is_set():
                    log.warning("the catalog's change listener lost its connection (%s); polling meanwhile",
                                _reason(exc))
                    warned = True
            finally:
                self.live = False
            self._stop.wait(RETRY_S)


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


# schema version → the step that upgrades a catalog of the version before it, in place
MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {2: _v2_tags, 3: _v3_last_id, 4: _v4_portable,
                                                          5: _v5_changes}


def catalog_url(where: str | Path) -> str:
    """The SQLAlchemy URL of a catalog given as a SQLite file path or as a URL: ``sqlite:///…``,
    or ``postgresql://…`` (psycopg 3, whatever driver the URL names)."""
    text = str(where)
    if "://" not in text:
        return "sqlite:///" + str(Path(text).expanduser().resolve())
    url = make_url(text)
    if url.get_backend_name() == "postgresql":
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if url.get_backend_name() == "sqlite":
        return text
    raise CatalogError(f"{url.render_as_string()}: a catalog is a SQLite file or a postgresql:// URL")


@dataclass
class Track:
    """One catalog track. ``path`` is its first known file; ``paths`` all of them."""

    id: int
    sha256: str
    title: str
    artist: str | None
    album: str | None
    duration_s: float
    genre: str
    probabilities: dict[str, float]
    model_version: str
    is_silent: bool
    added_at: float
    paths: list[str] = field(default_factory=list)
    embedding: np.ndarray | None = None
    tags: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> str | None:
        return self.paths[0] if self.paths else None

    def top_tags(self, k: int = TOP_TAGS) -> list[tuple[str, float]]:
        # the catalog hands out ``tags`` most probable first (sorted once per row read)
        return list(itertools.islice(self.tags.items(), k))

    def to_dict(self, *, with_embedding: bool = False) -> dict[str, Any]:
        d = {
            "id": self.id, "title": self.title, "artist": self.artist, "album": self.album,
            "duration_s": round(self.duration_s, 3), "genre": self.genre,
            "probabilities": {g: round(p, 6) for g, p in self.probabilities.items()},
            "sha256": self.sha256, "path": self.path, "paths": self.paths,
            "model_version": self.model_version, "is_silent": self.is_silent, "added_at": self.added_at,
            "tags": {t: round(p, 6) for t, p in self.tags.items()},
            "top_tags": [{"tag": t, "probability": round(p, 6)} for t, p in self.top_tags()],
        }
        if with_embedding and self.embedding is not None:
            d["embedding"] = [round(float(v), 6) for v in self.embedding]
        return d


@dataclass
class NewTrack:
    """What ingest and uploads hand the catalog for one file of new audio."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    title: str
    artist: str | None
    album: str | None
    duration_s: float
    genre: str
    probabilities: dict[str, float]
    embedding: np.ndarray
    model_version: str
    is_silent: bool = False
    tags: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the one door of new rows: titles, artists and albums carry no control characters
        self.title = (clean_text(self.title) or "Untitled")[:500]
        self.artist = clean_text(self.artist)
        self.album = clean_text(self.album)

    @classmethod
    def from_prediction(cls, pred, *, path: str, sha256: str, size: int, mtime_ns: int, title: str,
                        artist: str | None = None, album: str | None = None) -> "NewTrack":
        """The record of one file of new audio: its file facts, its tags and the model's ``Prediction``
        (ingest and uploads both build it here)."""
        return cls(path=path, size=size, mtime_ns=mtime_ns, sha256=sha256, title=title[:500], artist=artist or None,
                   album=album or None, duration_s=pred.duration_s, genre=pred.genre,
                   probabilities=pred.probabilities, embedding=pred.embedding, model_version=pred.model_version,
                   is_silent=pred.is_silent, tags=pred.tags)


def _top_tag_rows(track_id: int, tags: dict[str, float],
                  priors: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The tags ``search(tag=)`` finds a track by: its ``TOP_TAGS`` most probable, plus, given the
    model's tag priors, up to ``SALIENT_TAGS`` whose probability is at least ``SALIENT_LIFT``
    times their prior (a mellow track's Mellow at 0.07 against a usual 0.01)."""
    keep = dict(sorted(tags.items(), key=lambda kv: -kv[1])[:TOP_TAGS])
    if priors:
        lift = sorted(((p / priors[t], t) for t, p in tags.items() if priors.get(t)), reverse=True)
        keep.update({t: tags[t] for ratio, t in lift[:SALIENT_TAGS] if ratio >= SALIENT_LIFT})
    return [{"track_id": track_id, "tag": t, "probability": float(p)} for t, p in keep.items()]


class Catalog:
    """The catalog at ``where``: a SQLite file path (created with its folder when missing), or a
    ``sqlite:///`` or ``postgresql://`` URL (the database must exist; its tables are created).

    Safe to share between threads (one connection, serialised by a lock); several
    processes, or machines with PostgreSQL, may open the same catalog.
    """

    def __init__(self, where: str | Path, *, row_cache: int = 20_000) -> None:
        self.url = catalog_url(where)
        url = make_url(self.url)
        self.dialect = url.get_backend_name()
        self.path = Path(url.database) if self.dialect == "sqlite" and url.database else None
        self.where = str(self.path) if self.path else url.render_as_string(hide_password=True)
        # Rows and vectors already read, kept while nothing was written: by this connection
        # (``_writes``) or by any other (SQLite's ``PRAGMA data_version``; the ``writes``
        # counter in PostgreSQL). A server answers most requests from here instead of parsing
        # the same rows again.
        self._row_cache = int(row_cache)
        self._rows: dict[int, Track] = {}
        self._vecs: dict[int, np.ndarray] = {}
        self._gen: int | None = None
        self._writes = 0
        self._seen: tuple[Any, int] | None = None
        self._lock = threading.RLock()
        self._down: str | None = None  # why the server does not answer, while it does not
        self._retry_at = 0.0
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                engine = sa.create_engine(self.url, poolclass=sa.pool.StaticPool,
                                          connect_args={"timeout": 30.0, "check_same_thread": False})

                @sa.event.listens_for(engine, "connect")
                def _pragmas(dbapi, _record) -> None:
                    dbapi.isolation_level = None  # transactions are ours (BEGIN IMMEDIATE), not the driver's
                    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                        dbapi.execute("PRAGMA " + pragma)
            else:
                engine = sa.create_engine(self.url, poolclass=sa.pool.StaticPool,
                                          connect_args={"connect_timeout": 10})
            self._engine = engine
            # autocommit: a read is its own statement; a write is one explicit transaction (``_tx``)
            self._db = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            with self._tx(count=False) as db:
                self._migrate(db)
            self._channel: str | None = None  # PostgreSQL: the NOTIFY channel of this catalog's schema
            self._listener: _ChangeListener | None = None
            self._note: tuple[str, int] | None = None  # the listener's token at the last check
            if self.dialect == "postgresql":
                where = "%s.%s" % tuple(self._db.exec_driver_sql("SELECT current_database(), current_schema()").one())
                self._channel = "sonicsort_" + hashlib.sha1(where.encode()).hexdigest()[:20]
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"{self.where}: cannot open the catalog ({_reason(exc)})") from None

    def analyze(self) -> None:
        """After a bulk load: the planner's statistics and, on PostgreSQL, the visibility map.

        Measured on a freshly copied PostgreSQL catalog of 10,200 tracks under load
        (``benchmarks/perf/scale_out.py``): a row lookup of ten ids sometimes took 0.2-0.8 s, all of it
        in planning (the server's log, ``log_min_duration_statement``), which stalled every
        request of that worker; the planner most likely probing index ends through heap pages
        no vacuum had marked yet. After this, none took 150 ms. Autovacuum gets there too, but
        only minutes later."""
        with self._lock, self._guard():
            if self.dialect == "postgresql":
                for table in _md.sorted_tables:
                    self._db.exec_driver_sql(f"VACUUM (ANALYZE) {table.name}")
            else:
                self._db.exec_driver_sql("ANALYZE")

    def _migrate(self, db: sa.Connection) -> None:
        has_meta = sa.inspect(db).has_table("meta")
        found = db.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar() if has_meta else None
        found = int(found) if found is not None else None
        if found is not None and found > SCHEMA_VERSION:
            raise CatalogError(f"{self.where}: catalog schema {found} is not supported "
                               f"(this sonicsort reads {SCHEMA_VERSION} and older)")
        if found is None:  # a new catalog: today's schema at once
            _md.create_all(db)  # with _TAG_INDEX, which belongs to track_tags
            db.execute(meta.insert(), [{"key": "last_track_id", "value": "0"}, {"key": "writes", "value": "0"},
                                       {"key": "changes_from", "value": "0"},
                                       {"key": "schema_version", "value": str(SCHEMA_VERSION)}])
            return
        for version in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](db)
        if found < SCHEMA_VERSION:
            db.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))

    # ---------------------------------------------------------------- plumbing
    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Around every use of the connection: a database server that stopped answering marks
        the catalog unreachable (``CatalogUnavailable``), and the next use after ``RETRY_S``
        opens a new connection. SQLite files are local: their errors pass as they are."""
        if self.dialect == "sqlite":
            yield
            return
        if self._down is not None:
            if time.monotonic() < self._retry_at:
                raise CatalogUnavailable(f"{self.where}: the catalog database does not answer ({self._down}); "
                                         f"try again in a moment")
            self._reconnect()
        try:
            yield
        except _LOST as exc:
            if self._down is None:
                log.warning("the catalog database stopped answering: %s", _reason(exc))
            self._down, self._retry_at = _reason(exc), time.monotonic() + RETRY_S
            raise CatalogUnavailable(f"{self.where}: the catalog database does not answer ({self._down}); "
                                     f"try again in a moment") from None

    def _reconnect(self) -> None:
        try:
            self._db.invalidate()  # the old connection is dead: never hand it out again
        except Exception:
            pass
        try:
            self._db = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except _LOST as exc:
            self._down, self._retry_at = _reason(exc), time.monotonic() + RETRY_S
            raise CatalogUnavailable(f"{self.where}: the catalog database does not answer ({self._down}); "
                                     f"try again in a moment") from None
        log.warning("the catalog database answers again")
        self._down = None
        self._seen = None  # whatever happened meanwhile: read again

    @property
    def reachable(self) -> bool:
        """False while the database server does not answer (always True for SQLite)."""
        return self._down is None

    def ping(self) -> bool:
        """Ask the database now (at most every ``RETRY_S`` while it is down): is it there?"""
        with self._lock:
            try:
                with self._guard():
                    self._db.exec_driver_sql("SELECT 1")
            except CatalogUnavailable:
                return False
            return True

    @contextmanager
    def _tx(self, *, count: bool = True) -> Iterator[sa.Connection]:
        """One write transaction, COMMIT at the end, ROLLBACK on error. Writers wait for each
        other: SQLite's BEGIN IMMEDIATE, and in PostgreSQL the row lock of the ``writes``
        counter, which the transaction bumps first (other connections' caches see it)."""
        with self._lock, self._guard():
            db = self._db
            db.exec_driver_sql("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
            try:
                if count and self.dialect != "sqlite":
                    db.execute(meta.update().where(meta.c.key == "writes")
                               .values(value=sa.cast(sa.cast(meta.c.value, sa.BigInteger) + 1, sa.Text)))
                    db.execute(sa.select(sa.func.pg_notify(self._channel, "")))  # sent at COMMIT
                if count:  # a newer sonicsort may have migrated the schema under this process
                    found = int(db.execute(_SCHEMA).scalar() or 0)
                    if found > SCHEMA_VERSION:
                        raise CatalogUpgraded(
                            f"{self.where}: a newer sonicsort upgraded this catalog to schema {found} (this "
                            f"process writes {SCHEMA_VERSION}); restart it with that sonicsort. Nothing was written")
                yield db
            except BaseException:
                try:
                    db.exec_driver_sql("ROLLBACK")
                except _LOST:
                    pass  # the connection is gone, and its transaction with it
                raise
            finally:
                self._writes += 1  # what was read before may have changed
            db.exec_driver_sql("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[sa.Connection]:
        """A read transaction: every statement inside sees the catalog as of its start, whatever
        other connections write meanwhile (SQLite's WAL snapshot; REPEATABLE READ in PostgreSQL)."""
        with self._lock, self._guard():
            db = self._db
            db.exec_driver_sql("BEGIN" if self.dialect == "sqlite" else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield db
            finally:
                db.exec_driver_sql("COMMIT")

    def _q(self, stmt, params: dict[str, Any] | list | None = None) -> list:
        with self._lock, self._guard():
            return self._db.execute(stmt, params).all()

    def _upsert(self, table: sa.Table, rows: list[dict[str, Any]], *, replace: bool = True) -> None:
        """INSERT … ON CONFLICT (primary key) DO UPDATE (``replace``) or DO NOTHING."""
        if not rows:
            return
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        stmt = insert(table)
        keys = [c.name for c in table.primary_key.columns]
        if replace:
            stmt = stmt.on_conflict_do_update(index_elements=keys,
                                              set_={c: stmt.excluded[c] for c in rows[0] if c not in keys})
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        self._db.execute(stmt, rows)

    def _fresh(self) -> None:
        """Drop the cached rows, vectors and generation if anything was written since they were read.

        Inside ``one_check_per_thread`` (one API request) the database is asked once per
        catalog and thread; this process's own writes meanwhile make it ask again. On
        PostgreSQL a request asks no database at all while the catalog's change listener
        (``LISTEN``, in a thread) is connected and has heard of no write: the notifications
        say when to ask again."""
        scope = getattr(_scope, "checked", None)
        if scope is not None and scope.get(id(self)) == self._writes:
            return
        with self._lock:
            if self.dialect == "sqlite":
                other = self._db.exec_driver_sql("PRAGMA data_version").scalar()
            else:
                # In a request the change listener (started here) spares the round trip: while it
                # is connected and no notification came since the last check, nothing was written
                # (another process's write is known a moment after its COMMIT). Elsewhere, or
                # after a notification, ask: that sees every write committed before this read.
                listener = self._listening() if scope is not None else self._listener
                note = listener.token() if listener is not None else None
                if (scope is not None and note is not None and note == self._note and self._seen is not None
                        and self._seen[1] == self._writes):
                    scope[id(self)] = self._writes
                    return
                try:
                    with self._guard():
                        other = self._db.execute(_WRITES).scalar()
                except CatalogUnavailable:
                    if self._seen is None:
                        raise
                    return  # the server is away: what was read stays good to answer from
                self._note = note  # read before the question: a write after it notifies again
            seen = (other, self._writes)
            if seen != self._seen:
                self._rows.clear()
                self._vecs.clear()
                self._gen = None
                self._seen = seen
            if scope is not None:
                scope[id(self)] = self._writes

    def _remember(self, store: dict, key: int, value: Any) -> None:
        if len(store) >= self._row_cache:
            store.pop(next(iter(store)))  # the oldest first
        store[key] = value

    def _listening(self) -> _ChangeListener:
        """This process's change listener, started on first use (a forked worker starts its own)."""
        listener = self._listener
        if listener is None or listener.pid != os.getpid():
            self._listener = listener = _ChangeListener(
                self._engine.dialect.create_connect_args(self._engine.url), self._channel)
        return listener

    def close(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.stop()
            self._db.close()
            self._engine.dispose()

    # ---------------------------------------------------------------- meta
    def get_meta(self, key: str) -> str | None:
        with self._lock, self._guard():
            return self._db.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar()

    def set_meta(self, **values: Any) -> None:
        with self._tx():
            self._upsert(meta, [{"key": k, "value": str(v)} for k, v in values.items()])

    @property
    def model_version(self) -> str | None:
        """The model version of the catalog's embeddings (None while empty)."""
        return self.get_meta("model_version")

    @property
    def generation(self) -> int:
        """Bumped by every write that changes the set of tracks or their embeddings."""
        with self._lock:
            self._fresh()
            if self._gen is None:
                self._gen = int(self.get_meta("generation") or 0)
            return self._gen

    def _bump(self, db: sa.Connection, ops: dict[int, str]) -> int:
        """The next generation, with what it did to which tracks (``ops``: id → + - ~) in the
        change log, and the log's oldest generations beyond ``CHANGES_KEPT`` dropped."""
        updated = db.execute(meta.update().where(meta.c.key == "generation")
                             .values(value=sa.cast(sa.cast(meta.c.value, sa.BigInteger) + 1, sa.Text))).rowcount
        if not updated:
            db.execute(meta.insert().values(key="generation", value="1"))
        gen = int(db.execute(sa.select(meta.c.value).where(meta.c.key == "generation")).scalar_one())
        if ops:
            db.execute(changes.insert(), [{"generation": gen, "track_id": int(t), "op": op} for t, op in ops.items()])
        if gen % 1000 == 0 and gen > CHANGES_KEPT:  # now and then: the delete is one range of the key
            db.execute(changes.delete().where(changes.c.generation <= gen - CHANGES_KEPT))
            db.execute(meta.update().where(meta.c.key == "changes_from").values(value=str(gen - CHANGES_KEPT)))
        return gen

    def changes_since(self, generation: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
        """What changed after ``generation``: (the generation now, ids added since, ids
        re-embedded since, ids removed since), each id once, by its last change. None when the
        log does not reach back that far (pruned, or older than the log): then compare whole id
        sets."""
        with self._snapshot() as db:
            got = dict(db.execute(sa.select(meta.c.key, meta.c.value)
                                  .where(meta.c.key.in_(["generation", "changes_from"]))).all())
            now, start = int(got.get("generation") or 0), int(got.get("changes_from") or 0)
            if not start <= generation <= now:
                return None
            rows = db.execute(sa.select(changes.c.track_id, changes.c.op).where(changes.c.generation > generation)
                              .order_by(changes.c.generation)).all()
        last = dict(rows)  # the last op of each id wins

        def having(op: str) -> np.ndarray:
            return np.array(sorted(t for t, o in last.items() if o == op), np.int64)

        return now, having("+"), having("~"), having("-")

    # ---------------------------------------------------------------- reads
    def __len__(self) -> int:
        return int(self._q(sa.select(sa.func.count()).select_from(tracks))[0][0])

    def path_state(self, path: str) -> tuple[int, int, int] | None:
        """(track_id, size, mtime_ns) recorded for a file path, or None."""
        row = self._q(sa.select(paths.c.track_id, paths.c.size, paths.c.mtime_ns).where(paths.c.path == path))
        return tuple(row[0]) if row else None  # type: ignore[return-value]

    def path_states_under(self, root: str) -> dict[str, tuple[int, int, int]]:
        """path → (track_id, size, mtime_ns) for every recorded path under folder ``root``, in one query."""
        prefix = root.rstrip("/") + "/"
        rows = self._q(sa.select(paths.c.path, paths.c.track_id, paths.c.size, paths.c.mtime_ns)
                       .where(sa.func.substr(paths.c.path, 1, len(prefix)) == prefix))
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def ids_for_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        hashes = list(hashes)
        out: dict[str, int] = {}
        for i in range(0, len(hashes), 500):
            out.update(self._q(sa.select(tracks.c.sha256, tracks.c.id).where(tracks.c.sha256.in_(hashes[i:i + 500]))))
        return out

    def _row_to_track(self, row: tuple, paths: list[str]) -> Track:
        return Track(
            id=row[0], sha256=row[1], title=row[2], artist=row[3], album=row[4], duration_s=row[5],
            genre=row[6], probabilities=json.loads(row[7]), model_version=row[8], is_silent=bool(row[9]),
            added_at=row[10], paths=paths,
            tags=dict(sorted(json.loads(row[11]).items(), key=lambda kv: -kv[1])),
        )

    def get(self, track_id: int, *, with_embedding: bool = False) -> Track:
        try:
            track_id = int(track_id)
        except (TypeError, ValueError):
            raise UnknownTrack(f"unknown track {track_id!r}") from None
        if not 0 < track_id < 2**63:  # the databases' integers are 64-bit
            raise UnknownTrack(f"unknown track {track_id}")
        found = self.get_many([track_id], with_embedding=with_embedding)
        if track_id not in found:
            raise UnknownTrack(f"unknown track {track_id}")
        return found[track_id]

    def get_many(self, track_ids: Iterable[int], *, with_embedding: bool = False) -> dict[int, Track]:
        """id → Track for the ids that exist (each a copy: callers may change it)."""
        ids = [i for i in map(int, track_ids) if 0 < i < 2**63]
        with self._lock:
            self._fresh()
            found = {i: self._rows[i] for i in ids if i in self._rows}
            missing = [i for i in ids if i not in found]
            # one round trip per chunk: the rows with their paths (an outer join, a row per
            # path, in the order they were recorded) and their vectors, cached together: a
            # track read as a neighbour is soon asked for as a query (/similar of it), and
            # its vector is then already here instead of costing a second round trip
            for i in range(0, len(missing), 500):
                got: dict[int, tuple[tuple, list[str]]] = {}
                for r in self._q(_ROWS_PATHS_VECS, {"ids": missing[i:i + 500]}):
                    seen = got.get(r[0])
                    if seen is None:
                        got[r[0]] = seen = (r, [])
                    if r[_PATH_COL] is not None:
                        seen[1].append(r[_PATH_COL])
                for tid, (r, where) in got.items():
                    found[tid] = self._row_to_track(r, where)
                    self._remember(self._rows, tid, found[tid])
                    self._remember(self._vecs, tid, _vector(r[_PATH_COL + 1]))
            vecs = self._vectors(ids) if with_embedding else {}
        out: dict[int, Track] = {}
        for i in ids:
            t = found.get(i)
            if t is None or (with_embedding and i not in vecs):  # or removed by another process meanwhile
                continue
            out[i] = c = Track.__new__(Track)  # a shallow copy, without copy.copy's cost
            c.__dict__.update(t.__dict__)
            if with_embedding:
                c.embedding = vecs[i].copy()
        return out

    def ids(self) -> np.ndarray:
        return np.array([r[0] for r in self._q(sa.select(tracks.c.id).order_by(tracks.c.id))], dtype=np.int64)

    def embeddings(self, batch: int = 5000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) in batches, ordered by id; vectors shape (n, embedding_dim) float32."""
        last = -1
        while True:
            rows = self._q(sa.select(tracks.c.id, tracks.c.embedding).where(tracks.c.id > last)
                           .order_by(tracks.c.id).limit(batch))
            if not rows:
                return
            ids = np.array([r[0] for r in rows], np.int64)
            vecs = np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows]).astype(np.float32)
            yield ids, vecs
            last = int(ids[-1])

    def vectors(self, track_ids: Iterable[int]) -> dict[int, np.ndarray]:
        """id → embedding (read-only float32) for the ids that exist."""
        with self._lock:
            self._fresh()
            return self._vectors([int(i) for i in track_ids])

    def _vectors(self, ids: list[int]) -> dict[int, np.ndarray]:
        out = {i: self._vecs[i] for i in ids if i in self._vecs}
        missing = [i for i in ids if i not in out]
        for i in range(0, len(missing), 500):
            for tid, blob in self._q(_VECS, {"ids": missing[i:i + 500]}):
                out[tid] = _vector(blob)
                self._remember(self._vecs, tid, out[tid])
        return out

    def labels(self) -> list[tuple[int, str, str | None, str]]:
        """(id, title, artist, genre) of every track, by id: what a map of the catalog shows."""
        return [tuple(r) for r in self._q(sa.select(tracks.c.id, tracks.c.title, tracks.c.artist, tracks.c.genre)
                                          .order_by(tracks.c.id))]

    def ids_with_genre(self, genre: str) -> np.ndarray:
        return np.array([r[0] for r in self._q(sa.select(tracks.c.id).where(tracks.c.genre == genre))], np.int64)

    def tag_counts(self) -> dict[str, int]:
        """tag → how many tracks have it among their top tags, most common first."""
        n = sa.func.count()
        return {t: c for t, c in self._q(sa.select(sa.func.min(track_tags.c.tag), n)
                                         .group_by(sa.func.lower(track_tags.c.tag))
                                         .order_by(n.desc(), sa.func.min(track_tags.c.tag)))}

    def search(self, text: str | None = None, *, genre: str | None = None, tag: str | None = None,
               after_id: int = 0, limit: int = 50) -> list[Track]:
        """Tracks whose title/artist/album contain ``text`` (case-insensitive), of ``genre``, with
        ``tag`` among their top tags (case-insensitive), by id after ``after_id``."""
        q = sa.select(tracks.c.id).where(tracks.c.id > int(after_id))
        if tag:
            q = q.where(tracks.c.id.in_(sa.select(track_tags.c.track_id)
                                        .where(sa.func.lower(track_tags.c.tag) == tag.lower())))
        if text:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            # SQLite's LIKE ignores (ASCII) case already, and lower() on every row costs it 5x
            match = (lambda c: c.like(like, escape="\\")) if self.dialect == "sqlite" else \
                (lambda c: c.ilike(like, escape="\\"))
            q = q.where(sa.or_(*(match(c) for c in (tracks.c.title, tracks.c.artist, tracks.c.album))))
        if genre:
            q = q.where(tracks.c.genre == genre)
        rows = self._q(q.order_by(tracks.c.id).limit(int(limit)))
        found = self.get_many(r[0] for r in rows)
        return [found[r[0]] for r in rows if r[0] in found]

    def stats(self) -> dict[str, Any]:
        n = sa.func.count()
        per_genre = dict(self._q(sa.select(tracks.c.genre, n).group_by(tracks.c.genre).order_by(n.desc())))
        versions = dict(self._q(sa.select(tracks.c.model_version, n).group_by(tracks.c.model_version)))
        n_paths = self._q(sa.select(n).select_from(paths))[0][0]
        dur = self._q(sa.select(sa.func.coalesce(sa.func.sum(tracks.c.duration_s), 0)))[0][0]
        if self.path is not None:
            size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        else:
            size = sum(self._q(sa.text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": t.name})[0][0]
                       for t in _md.sorted_tables)
        return {"tracks": len(self), "paths": n_paths, "duration_s": round(float(dur), 1),
                "per_genre": per_genre, "model_versions": versions, "catalog_path": self.where,
                "catalog_bytes": int(size), "generation": self.generation}

    # ---------------------------------------------------------------- writes
    def _record_paths(self, db: sa.Connection, rows: list[tuple[str, int, int, int]], now: float) -> None:
        """(path, track_id, size, mtime_ns): recorded, or moved to the end of their track's paths."""
        if not rows:
            return
        last = db.execute(sa.select(sa.func.coalesce(sa.func.max(paths.c.seq), 0))).scalar_one()
        self._upsert(paths, [{"path": p, "track_id": int(t), "size": int(s), "mtime_ns": int(m), "seen_at": now,
                              "seq": last + 1 + k} for k, (p, t, s, m) in enumerate(rows)])

    def add(self, new: list[NewTrack], links: list[tuple[str, int, int, int]] = (), *,
            tag_priors: dict[str, float] | None = None, created: list[bool] | None = None) -> list[int]:
        """Store new tracks and extra paths of known tracks in one transaction.

        ``tag_priors``: the model's (``ModelBundle.tag_priors``), for the tags a track is found by.

        ``links``: (path, track_id, size, mtime_ns) for files whose audio is already here.
        Returns the ids of ``new`` in order (an already stored hash gets its existing id and
        the new path). All embeddings must come from the catalog's model version.
        ``created``: a list that gets, for each of ``new``, whether this call stored its row (the
        check and the insert share one write transaction, so of concurrent adds of the same
        audio, from any process, exactly one creates it).
        """
        now = time.time()
        ids: list[int] = []
        with self._tx() as db:
            current = db.execute(sa.select(meta.c.value).where(meta.c.key == "model_version")).scalar()
            versions = {t.model_version for t in new}
            if len(versions) > 1 or (current and versions and versions != {current}):
                raise CatalogError(f"embeddings from model(s) {sorted(versions)} cannot join a catalog "
                                   f"of model {current}")
            if versions and not current:
                self._upsert(meta, [{"key": "model_version", "value": versions.pop()}])
            last = int(db.execute(sa.select(meta.c.value).where(meta.c.key == "last_track_id")).scalar_one())
            last = max(last, db.execute(sa.select(sa.func.coalesce(sa.func.max(tracks.c.id), 0))).scalar_one())
            recorded: list[tuple[str, int, int, int]] = []
            made: dict[int, str] = {}
            for t in new:
                tid = db.execute(sa.select(tracks.c.id).where(tracks.c.sha256 == t.sha256)).scalar()
                if created is not None:
                    created.append(tid is None)
                if tid is None:
                    last = tid = last + 1  # never an id a deleted track had
                    made[tid] = "+"
                    db.execute(tracks.insert().values(
                        id=tid, sha256=t.sha256, title=t.title, artist=t.artist, album=t.album,
                        duration_s=float(t.duration_s), genre=t.genre, probabilities=json.dumps(t.probabilities),
                        embedding=np.asarray(t.embedding, "<f4").tobytes(), model_version=t.model_version,
                        is_silent=int(t.is_silent), added_at=now, tags=json.dumps(t.tags)))
                    tag_rows = _top_tag_rows(tid, t.tags, tag_priors)
                    if tag_rows:
                        db.execute(track_tags.insert(), tag_rows)
                ids.append(int(tid))
                recorded.append((t.path, int(tid), t.size, t.mtime_ns))
            self._record_paths(db, recorded + list(links), now)
            db.execute(meta.update().where(meta.c.key == "last_track_id").values(value=str(last)))
            if made:  # the set of tracks changed (a known audio's new path does not change it)
                self._bump(db, made)
        return ids

    def forget_paths(self, gone: Iterable[str]) -> None:
        gone = list(gone)
        with self._tx() as db:
            for i in range(0, len(gone), 500):
                db.execute(paths.delete().where(paths.c.path.in_(gone[i:i + 500])))

    def remove(self, track_ids: Iterable[int]) -> int:
        ids = [int(i) for i in track_ids if 0 < int(i) < 2**63]
        with self._tx() as db:
            gone: list[int] = []
            for i in range(0, len(ids), 500):
                chunk = db.execute(sa.select(tracks.c.id).where(tracks.c.id.in_(ids[i:i + 500]))).scalars().all()
                db.execute(tracks.delete().where(tracks.c.id.in_(chunk)))
                gone += chunk
            if gone:
                self._bump(db, {t: "-" for t in gone})
        return len(gone)

    def orphans(self) -> list[int]:
        """Tracks with no file path left."""
        return [r[0] for r in self._q(sa.select(tracks.c.id).where(~tracks.c.id.in_(sa.select(paths.c.track_id))))]

    def replace_embeddings(self, updates: list[tuple[int, str, dict[str, float], np.ndarray, bool, dict[str, float]]],
                           model_version: str, *, final: bool = False,
                           tag_priors: dict[str, float] | None = None) -> None:
        """Re-embedding: (track_id, genre, probabilities, embedding, is_silent, tags) from ``model_version``.

        The catalog's model version switches when ``final`` (after the last batch); until
        then it holds a mix (``ids_not_from`` lists the rest).
        """
        b = sa.bindparam
        with self._tx() as db:
            if updates:
                db.execute(tracks.update().where(tracks.c.id == b("tid")).values(
                    genre=b("g"), probabilities=b("p"), embedding=b("e"), model_version=b("mv"), is_silent=b("s"),
                    tags=b("tg")),
                    [{"tid": tid, "g": g, "p": json.dumps(p), "e": np.asarray(e, "<f4").tobytes(), "mv": model_version,
                      "s": int(s), "tg": json.dumps(tg)} for tid, g, p, e, s, tg in updates])
                db.execute(track_tags.delete().where(track_tags.c.track_id.in_([u[0] for u in updates])))
                tag_rows = [r for tid, _, _, _, _, tg in updates for r in _top_tag_rows(tid, tg, tag_priors)]
                if tag_rows:
                    db.execute(track_tags.insert(), tag_rows)
            if final:
                self._upsert(meta, [{"key": "model_version", "value": model_version}])
            self._bump(db, {int(u[0]): "~" for u in updates})

    def ids_not_from(self, model_version: str) -> list[int]:
        return [r[0] for r in self._q(sa.select(tracks.c.id).where(tracks.c.model_version != model_version))]


_COLS = (tracks.c.id, tracks.c.sha256, tracks.c.title, tracks.c.artist, tracks.c.album, tracks.c.duration_s,
         tracks.c.genre, tracks.c.probabilities, tracks.c.model_version, tracks.c.is_silent, tracks.c.added_at,
         tracks.c.tags)
_PATH_COL = len(_COLS)  # _ROWS_PATHS_VECS: the row's columns, then one path (None: no path), then the vector
_ROWS_PATHS_VECS = (sa.select(*_COLS, paths.c.path, tracks.c.embedding)
                    .select_from(tracks.outerjoin(paths, paths.c.track_id == tracks.c.id))
                    .where(tracks.c.id.in_(sa.bindparam("ids", expanding=True)))
                    .order_by(tracks.c.id, paths.c.seq))
_VECS = sa.select(tracks.c.id, tracks.c.embedding).where(tracks.c.id.in_(sa.bindparam("ids", expanding=True)))
_WRITES = sa.select(meta.c.value).where(meta.c.key == "writes")
_SCHEMA = sa.select(meta.c.value).where(meta.c.key == "schema_version")


def _vector(blob: bytes) -> np.ndarray:
    """A stored embedding as a read-only float32 array (the caches share it between callers)."""
    v = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    v.flags.writeable = False
    return v


def _reason(exc: Exception) -> str:
    """The driver's own words, without SQLAlchemy's wrapping and links."""
    orig = getattr(exc, "orig", None)
    text = str(orig or exc).strip()
    return text.splitlines()[0] if text else type(orig or exc).__name__


def copy_catalog(src: str | Path, dst: str | Path, *, batch: int = 2000,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Copy the catalog at ``src`` into the empty catalog at ``dst`` (SQLite → PostgreSQL, back,
    or any pair), keeping every track id, path and its order, tag, embedding and the highest
    id ever given. ``dst`` is written in one transaction: an error or a kill leaves it empty.
    Returns counts; ``progress(done, total)`` is told per batch of tracks."""
    url = make_url(catalog_url(src))
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
        raise CatalogError(f"{url.database}: no catalog there to copy")  # and none is made there
    source, target = Catalog(src), Catalog(dst)
    try:
        if source.url == target.url:
            raise CatalogError("the source and the destination are the same catalog")
        if len(target) or target.get_meta("model_version"):
            raise CatalogError(f"{target.where} is not empty ({len(target)} tracks): copy into a new catalog")
        total = len(source)  # for the progress bar only; the copy reads one snapshot
        counts = {"tracks": 0, "paths": 0, "track_tags": 0}
        with source._snapshot() as snap, target._tx() as db:  # noqa: SLF001 - the same module's two catalogs
            rows = snap.execute(sa.select(meta.c.key, meta.c.value)
                                .where(meta.c.key.notin_(["schema_version", "writes", "changes_from"]))).all()
            target._upsert(meta, [{"key": k, "value": v} for k, v in rows])  # noqa: SLF001
            for table in (tracks, track_tags, paths):  # parents first
                key = list(table.primary_key.columns)
                last: tuple | None = None
                while True:
                    q = sa.select(table).order_by(*key).limit(batch)
                    if last is not None:
                        q = q.where(sa.tuple_(*key) > sa.tuple_(*last))
                    chunk = snap.execute(q).mappings().all()
                    if not chunk:
                        break
                    db.execute(table.insert(), [dict(r) for r in chunk])
                    counts[table.name] += len(chunk)
                    last = tuple(chunk[-1][c.name] for c in key)
                    if table is tracks and progress is not None:
                        progress(counts["tracks"], total)
            # the change log is not copied: it starts at the copy (a node further behind reconciles)
            gen = db.execute(sa.select(meta.c.value).where(meta.c.key == "generation")).scalar() or "0"
            target._upsert(meta, [{"key": "changes_from", "value": str(gen)}])  # noqa: SLF001
        target.analyze()
        return {"source": source.where, "destination": target.where, **counts,
                "last_track_id": int(target.get_meta("last_track_id") or 0), "generation": target.generation}
    finally:
        source.close()
        target.close()
