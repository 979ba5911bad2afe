"""The database under the catalog: its engine and one connection, the guard that notices a
database server going away (and reconnects), write and read transactions, upserts. Generic
machinery; ``store.Catalog`` holds the catalog's own queries. What differs between SQLite
and PostgreSQL is in ``dialect``."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ..errors import CatalogError, CatalogUnavailable, CatalogUpgraded
from . import migrations
from .dialect import dialect_of
from .schema import SCHEMA, SCHEMA_VERSION

log = logging.getLogger("recommender.catalog")
# While the database server does not answer, a process tries it again at most this often;
# meanwhile what needs it fails at once (CatalogUnavailable) and cached reads go on.
RETRY_S = 1.0
_LOST = (sa.exc.OperationalError, sa.exc.InterfaceError)  # a connection refused, reset or gone


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


def reason(exc: Exception) -> str:
    """The driver's own words, without SQLAlchemy's wrapping and links."""
    orig = getattr(exc, "orig", None)
    text = str(orig or exc).strip()
    return text.splitlines()[0] if text else type(orig or exc).__name__


class Database:
    """One connection to the catalog's database, serialised by a lock and safe to share
    between threads; ``where`` as ``catalog_url`` takes it."""

    def __init__(self, where: str | Path) -> None:
        self.url = catalog_url(where)
        url = make_url(self.url)
        self.dialect = url.get_backend_name()
        self.sql = dialect_of(self.dialect)
        self.path = Path(url.database) if self.dialect == "sqlite" and url.database else None
        self.where = str(self.path) if self.path else url.render_as_string(hide_password=True)
        self._writes = 0  # this connection's write transactions (what was read before may have changed)
        self._lock = threading.RLock()
        self._down: str | None = None  # why the server does not answer, while it does not
        self._retry_at = 0.0
        try:
            self._engine = self.sql.engine(self.url, self.path)
            # autocommit: a read is its own statement; a write is one explicit transaction (``_tx``)
            self._db = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            with self._tx(count=False) as db:
                migrations.migrate(db, self.where)
            self._channel = self.sql.channel(self._db)  # where other processes' writes are announced
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(f"{self.where}: cannot open the catalog ({reason(exc)})") from None

    def analyze(self) -> None:
        """After a bulk load: the planner's statistics (and, on PostgreSQL, the visibility map),
        so the first queries under load are planned as later ones will be."""
        with self._lock, self._guard():
            self.sql.analyze(self._db)

    # ---------------------------------------------------------------- plumbing
    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Around every use of the connection: a database server that stopped answering marks
        the catalog unreachable (``CatalogUnavailable``), and the next use after ``RETRY_S``
        opens a new connection. SQLite files are local: their errors pass as they are."""
        if not self.sql.server:
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
                log.warning("the catalog database stopped answering: %s", reason(exc))
            self._down, self._retry_at = reason(exc), time.monotonic() + RETRY_S
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
            self._down, self._retry_at = reason(exc), time.monotonic() + RETRY_S
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
            db.exec_driver_sql(self.sql.begin_write)
            try:
                if count:
                    self.sql.on_write(db, self._channel)
                    # a newer sonicsort may have migrated the schema under this process
                    found = int(db.execute(SCHEMA).scalar() or 0)
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
            db.exec_driver_sql(self.sql.begin_snapshot)
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
        stmt = self.sql.insert(table)
        keys = [c.name for c in table.primary_key.columns]
        if replace:
            stmt = stmt.on_conflict_do_update(index_elements=keys,
                                              set_={c: stmt.excluded[c] for c in rows[0] if c not in keys})
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        self._db.execute(stmt, rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._engine.dispose()
