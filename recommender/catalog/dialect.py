"""What differs between the catalog's two databases, in one object each: how the engine is
made, how a write transaction takes the write lock, how other processes' writes are noticed,
upserts, case-insensitive text matching and planner upkeep. ``Database`` asks its dialect
instead of branching on the database's name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import sqlalchemy as sa

from .schema import WRITES, _md, meta


class Dialect:
    """The common part; ``SQLite`` and ``PostgreSQL`` fill in the rest."""

    name = ""
    server = False  # a server that may stop answering (the connection guard watches it)
    listens = False  # other processes' writes are announced (NOTIFY) rather than only asked for
    begin_write = "BEGIN"
    begin_snapshot = "BEGIN"

    def engine(self, url: str, path: Path | None) -> sa.Engine:
        raise NotImplementedError

    def insert(self, table: sa.Table):
        """The dialect's INSERT, which has ``on_conflict_do_update`` / ``on_conflict_do_nothing``."""
        raise NotImplementedError

    def on_write(self, db: sa.Connection, channel: str | None) -> None:
        """At the start of every counted write transaction."""

    def others_token(self, db: sa.Connection):
        """A value that changes whenever another connection commits a write."""
        raise NotImplementedError

    def channel(self, db: sa.Connection) -> str | None:
        """The name other processes' writes are announced under (None: not announced)."""
        return None

    def contains(self, column, like: str):
        """``column`` contains the LIKE pattern ``like`` (escaped with backslash), ignoring case."""
        return column.ilike(like, escape="\\")

    def analyze(self, db: sa.Connection) -> None:
        db.exec_driver_sql("ANALYZE")

    def size_bytes(self, db: sa.Connection, path: Path | None) -> int:
        """What the catalog takes on disk."""
        raise NotImplementedError


class SQLite(Dialect):
    """A local file: WAL, one writer at a time by ``BEGIN IMMEDIATE``, ``PRAGMA data_version``."""

    name = "sqlite"
    begin_write = "BEGIN IMMEDIATE"

    def engine(self, url: str, path: Path | None) -> sa.Engine:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, poolclass=sa.pool.StaticPool,
                                  connect_args={"timeout": 30.0, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi, _record) -> None:
            dbapi.isolation_level = None  # transactions are ours (BEGIN IMMEDIATE), not the driver's
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                dbapi.execute("PRAGMA " + pragma)

        return engine

    def insert(self, table: sa.Table):
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)

    def others_token(self, db: sa.Connection):
        return db.exec_driver_sql("PRAGMA data_version").scalar()

    def size_bytes(self, db: sa.Connection, path: Path | None) -> int:
        if path is None:
            return 0
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())  # with -wal, -shm

    def contains(self, column, like: str):
        # SQLite's LIKE ignores (ASCII) case already, and lower() on every row costs it 5x
        return column.like(like, escape="\\")


class PostgreSQL(Dialect):
    """A server several processes share: writers queue on the row lock of the ``writes``
    counter, which every write bumps and announces with ``NOTIFY`` (sent at COMMIT)."""

    name = "postgresql"
    server = listens = True
    begin_snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    def engine(self, url: str, path: Path | None) -> sa.Engine:
        return sa.create_engine(url, poolclass=sa.pool.StaticPool, connect_args={"connect_timeout": 10})

    def insert(self, table: sa.Table):
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

    def on_write(self, db: sa.Connection, channel: str | None) -> None:
        db.execute(meta.update().where(meta.c.key == "writes")
                   .values(value=sa.cast(sa.cast(meta.c.value, sa.BigInteger) + 1, sa.Text)))
        db.execute(sa.select(sa.func.pg_notify(channel, "")))  # delivered at COMMIT

    def others_token(self, db: sa.Connection):
        return db.execute(WRITES).scalar()

    def channel(self, db: sa.Connection) -> str | None:
        where = "%s.%s" % tuple(db.exec_driver_sql("SELECT current_database(), current_schema()").one())
        return "sonicsort_" + hashlib.sha1(where.encode()).hexdigest()[:20]

    def size_bytes(self, db: sa.Connection, path: Path | None) -> int:
        return sum(db.execute(sa.text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": t.name}).scalar()
                   for t in _md.sorted_tables)

    def analyze(self, db: sa.Connection) -> None:
        # the planner's statistics and the visibility map; without them a freshly copied catalog
        # sometimes took 0.2-0.8 s to plan a ten-id lookup under load
        for table in _md.sorted_tables:
            db.exec_driver_sql(f"VACUUM (ANALYZE) {table.name}")


DIALECTS: dict[str, Dialect] = {"sqlite": SQLite(), "postgresql": PostgreSQL()}


def dialect_of(backend_name: str) -> Dialect:
    return DIALECTS[backend_name]
