"""The catalog: every track and its embedding, in one SQL database.

The embedded default is a SQLite file (``SONICSORT_HOME/catalog.sqlite3``); with
``SONICSORT_CATALOG_URL=postgresql://…`` the same tables live in PostgreSQL (psycopg 3), so
several API nodes can share one catalog. The statements are SQLAlchemy Core, written once
for both; what differs (transactions' write lock, change detection, upserts) is in one
dialect object each (``dialect``).

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

The package's modules, from the bottom up: ``schema`` (the tables), ``migrations``,
``dialect`` (what differs between SQLite and PostgreSQL), ``database`` (engine, connection
guard, transactions), ``freshness`` (the row cache and change detection), ``records``
(``Track``, ``NewTrack``), ``accounts`` (listeners) and ``sameness`` (fingerprints and
near-duplicate pairs), which ``store`` (``Catalog``: the queries) mixes in, and ``copy``.
"""

from .copy import copy_catalog
from .database import RETRY_S, Database, catalog_url
from .freshness import one_check_per_thread
from .migrations import MIGRATIONS
from .records import FILE_TAGS, SALIENT_LIFT, SALIENT_TAGS, TOP_TAGS, NewTrack, Track, TrackFacts
from .schema import SCHEMA_VERSION
from .store import CHANGES_KEPT, Catalog

__all__ = ["CHANGES_KEPT", "FILE_TAGS", "Catalog", "Database", "MIGRATIONS", "NewTrack", "RETRY_S", "SALIENT_LIFT", "SALIENT_TAGS",
           "SCHEMA_VERSION", "TOP_TAGS", "Track", "TrackFacts", "catalog_url", "copy_catalog", "one_check_per_thread"]
