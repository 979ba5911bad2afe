"""The catalog: one embedded SQLite database holding every track and its embedding.

Tracks are keyed by the sha256 of the file's bytes, so the same audio under two paths is
one track and a moved file keeps its track. ``paths`` maps every file path seen to its
track, with the size and modification time that let a second ingest skip unchanged files
without reading them. Every write is one transaction (WAL journal): a process killed at
any moment leaves the catalog as it was before or after that write, never in between.

The ANN index is *derived* from this catalog (see ``recommender.library``); the catalog is
the source of truth.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import CatalogError, UnknownTrack

SCHEMA_VERSION = 3
TOP_TAGS = 5  # a track "has" the front end's tags it ranks highest; ``search(tag=...)`` finds them
# ... and the few that stand out most against their usual probability (moods rarely rank high)
SALIENT_TAGS, SALIENT_LIFT = 3, 3.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    artist TEXT,
    album TEXT,
    duration_s REAL NOT NULL,
    genre TEXT NOT NULL,
    probabilities TEXT NOT NULL,
    embedding BLOB NOT NULL,
    model_version TEXT NOT NULL,
    is_silent INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS tracks_genre ON tracks (genre);
CREATE TABLE IF NOT EXISTS track_tags (
    track_id INTEGER NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
    tag TEXT NOT NULL COLLATE NOCASE,
    probability REAL NOT NULL,
    PRIMARY KEY (track_id, tag)
);
CREATE INDEX IF NOT EXISTS track_tags_tag ON track_tags (tag, track_id);
CREATE TABLE IF NOT EXISTS paths (
    path TEXT PRIMARY KEY,
    track_id INTEGER NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    seen_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS paths_track ON paths (track_id);
"""


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

    @classmethod
    def from_prediction(cls, pred, *, path: str, sha256: str, size: int, mtime_ns: int, title: str,
                        artist: str | None = None, album: str | None = None) -> "NewTrack":
        """The record of one file of new audio: its file facts, its tags and the model's ``Prediction``
        (ingest and uploads both build it here)."""
        return cls(path=path, size=size, mtime_ns=mtime_ns, sha256=sha256, title=title[:500], artist=artist or None,
                   album=album or None, duration_s=pred.duration_s, genre=pred.genre,
                   probabilities=pred.probabilities, embedding=pred.embedding, model_version=pred.model_version,
                   is_silent=pred.is_silent, tags=pred.tags)


_COLS = "id, sha256, title, artist, album, duration_s, genre, probabilities, model_version, is_silent, added_at, tags"


def _top_tag_rows(track_id: int, tags: dict[str, float],
                  priors: dict[str, float] | None = None) -> list[tuple[int, str, float]]:
    """The tags ``search(tag=)`` finds a track by: its ``TOP_TAGS`` most probable, plus, given the
    model's tag priors, up to ``SALIENT_TAGS`` whose probability is at least ``SALIENT_LIFT``
    times their prior (a mellow track's Mellow at 0.07 against a usual 0.01)."""
    keep = dict(sorted(tags.items(), key=lambda kv: -kv[1])[:TOP_TAGS])
    if priors:
        lift = sorted(((p / priors[t], t) for t, p in tags.items() if priors.get(t)), reverse=True)
        keep.update({t: tags[t] for ratio, t in lift[:SALIENT_TAGS] if ratio >= SALIENT_LIFT})
    return [(track_id, t, float(p)) for t, p in keep.items()]


class Catalog:
    """The SQLite catalog at ``path`` (created with its folder when missing).

    Safe to share between threads (one connection, serialised by a lock); several
    processes may open the same file (SQLite's own locking, WAL mode).
    """

    def __init__(self, path: str | Path, *, row_cache: int = 20_000) -> None:
        self.path = Path(path)
        # Rows and vectors already read, kept while nothing was written: by this connection
        # (``_writes``) or by any other (SQLite's ``PRAGMA data_version``). A server answers
        # most requests from here instead of parsing the same rows again.
        self._row_cache = int(row_cache)
        self._rows: dict[int, Track] = {}
        self._vecs: dict[int, np.ndarray] = {}
        self._gen: int | None = None
        self._writes = 0
        self._seen: tuple[int, int] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._lock = threading.RLock()
            with self._tx() as db:
                has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone()
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() if has_meta else None
                found = int(row[0]) if row else None
                if found is not None and found > SCHEMA_VERSION:
                    raise CatalogError(f"{self.path}: catalog schema {found} is not supported "
                                       f"(this sonicsort reads {SCHEMA_VERSION} and older)")
                if found == 1:  # v1 → v2: the front end's tags (empty until `sonicsort reembed`)
                    db.execute("ALTER TABLE tracks ADD COLUMN tags TEXT NOT NULL DEFAULT '{}'")
                for stmt in _SCHEMA.strip().split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                # v2 → v3: ids are never reused. SQLite gives a new row max(id) + 1, so deleting the
                # newest track would hand its id to the next one; the highest id ever given is kept
                # in meta and new ids count up from it (a catalog from before starts at its max(id))
                db.execute("INSERT OR IGNORE INTO meta VALUES ('last_track_id', "
                           "(SELECT CAST(COALESCE(MAX(id), 0) AS TEXT) FROM tracks))")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"{self.path}: cannot open the catalog ({exc})") from None

    # ---------------------------------------------------------------- plumbing
    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT, ROLLBACK on error)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._writes += 1  # what was read before may have changed
            self._db.execute("COMMIT")

    def _q(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def _fresh(self) -> None:
        """Drop the cached rows, vectors and generation if anything was written since they were read."""
        with self._lock:
            seen = (self._db.execute("PRAGMA data_version").fetchone()[0], self._writes)
            if seen != self._seen:
                self._rows.clear()
                self._vecs.clear()
                self._gen = None
                self._seen = seen

    def _remember(self, store: dict, key: int, value: Any) -> None:
        if len(store) >= self._row_cache:
            store.pop(next(iter(store)))  # the oldest first
        store[key] = value

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---------------------------------------------------------------- meta
    def get_meta(self, key: str) -> str | None:
        row = self._q("SELECT value FROM meta WHERE key=?", (key,))
        return row[0][0] if row else None

    def set_meta(self, **values: Any) -> None:
        with self._tx() as db:
            for k, v in values.items():
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, str(v)))

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

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO meta VALUES ('generation', '1') ON CONFLICT(key) DO UPDATE "
                   "SET value = CAST(value AS INTEGER) + 1")

    # ---------------------------------------------------------------- reads
    def __len__(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM tracks")[0][0])

    def path_state(self, path: str) -> tuple[int, int, int] | None:
        """(track_id, size, mtime_ns) recorded for a file path, or None."""
        row = self._q("SELECT track_id, size, mtime_ns FROM paths WHERE path=?", (path,))
        return tuple(row[0]) if row else None  # type: ignore[return-value]

    def path_states_under(self, root: str) -> dict[str, tuple[int, int, int]]:
        """path → (track_id, size, mtime_ns) for every recorded path under folder ``root``, in one query."""
        prefix = root.rstrip("/") + "/"
        rows = self._q("SELECT path, track_id, size, mtime_ns FROM paths WHERE substr(path, 1, ?) = ?",
                       (len(prefix), prefix))
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def ids_for_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        hashes = list(hashes)
        out: dict[str, int] = {}
        for i in range(0, len(hashes), 500):
            chunk = hashes[i:i + 500]
            rows = self._q(f"SELECT sha256, id FROM tracks WHERE sha256 IN ({','.join('?' * len(chunk))})", chunk)
            out.update(rows)
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
        if not 0 < track_id < 2**63:  # SQLite's integers are 64-bit
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
            for i in range(0, len(missing), 500):
                chunk = missing[i:i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._q(f"SELECT {_COLS} FROM tracks WHERE id IN ({marks})", chunk)
                paths: dict[int, list[str]] = {}
                for p, t in self._q(f"SELECT path, track_id FROM paths WHERE track_id IN ({marks}) ORDER BY rowid", chunk):
                    paths.setdefault(t, []).append(p)
                for r in rows:
                    found[r[0]] = self._row_to_track(r, paths.get(r[0], []))
                    self._remember(self._rows, r[0], found[r[0]])
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
        return np.array([r[0] for r in self._q("SELECT id FROM tracks ORDER BY id")], dtype=np.int64)

    def embeddings(self, batch: int = 5000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) in batches, ordered by id; vectors shape (n, embedding_dim) float32."""
        last = -1
        while True:
            rows = self._q("SELECT id, embedding FROM tracks WHERE id > ? ORDER BY id LIMIT ?", (last, batch))
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
            chunk = missing[i:i + 500]
            for tid, blob in self._q(f"SELECT id, embedding FROM tracks WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                v = np.frombuffer(blob, dtype="<f4").astype(np.float32)
                v.flags.writeable = False
                out[tid] = v
                self._remember(self._vecs, tid, v)
        return out

    def labels(self) -> list[tuple[int, str, str | None, str]]:
        """(id, title, artist, genre) of every track, by id: what a map of the catalog shows."""
        return self._q("SELECT id, title, artist, genre FROM tracks ORDER BY id")

    def ids_with_genre(self, genre: str) -> np.ndarray:
        return np.array([r[0] for r in self._q("SELECT id FROM tracks WHERE genre=?", (genre,))], np.int64)

    def tag_counts(self) -> dict[str, int]:
        """tag → how many tracks have it among their top tags, most common first."""
        return dict(self._q("SELECT tag, COUNT(*) FROM track_tags GROUP BY tag COLLATE NOCASE "
                            "ORDER BY COUNT(*) DESC, tag"))

    def search(self, text: str | None = None, *, genre: str | None = None, tag: str | None = None,
               after_id: int = 0, limit: int = 50) -> list[Track]:
        """Tracks whose title/artist/album contain ``text`` (case-insensitive), of ``genre``, with
        ``tag`` among their top tags (case-insensitive), by id after ``after_id``."""
        where, params = ["id > ?"], [int(after_id)]
        if tag:
            where.append("id IN (SELECT track_id FROM track_tags WHERE tag = ?)")
            params.append(tag)
        if text:
            like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(title LIKE ? ESCAPE '\\' OR artist LIKE ? ESCAPE '\\' OR album LIKE ? ESCAPE '\\')")
            params += [like, like, like]
        if genre:
            where.append("genre = ?")
            params.append(genre)
        rows = self._q(f"SELECT id FROM tracks WHERE {' AND '.join(where)} ORDER BY id LIMIT ?", params + [int(limit)])
        found = self.get_many(r[0] for r in rows)
        return [found[r[0]] for r in rows]

    def stats(self) -> dict[str, Any]:
        per_genre = dict(self._q("SELECT genre, COUNT(*) FROM tracks GROUP BY genre ORDER BY COUNT(*) DESC"))
        versions = dict(self._q("SELECT model_version, COUNT(*) FROM tracks GROUP BY model_version"))
        n_paths = self._q("SELECT COUNT(*) FROM paths")[0][0]
        dur = self._q("SELECT COALESCE(SUM(duration_s), 0) FROM tracks")[0][0]
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {"tracks": len(self), "paths": n_paths, "duration_s": round(float(dur), 1),
                "per_genre": per_genre, "model_versions": versions, "catalog_path": str(self.path),
                "catalog_bytes": size, "generation": self.generation}

    # ---------------------------------------------------------------- writes
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
            current = db.execute("SELECT value FROM meta WHERE key='model_version'").fetchone()
            versions = {t.model_version for t in new}
            if len(versions) > 1 or (current and versions and versions != {current[0]}):
                raise CatalogError(f"embeddings from model(s) {sorted(versions)} cannot join a catalog "
                                   f"of model {current[0] if current else None}")
            if versions and not current:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('model_version', ?)", (versions.pop(),))
            last = int(db.execute("SELECT value FROM meta WHERE key='last_track_id'").fetchone()[0])
            last = max(last, int(db.execute("SELECT COALESCE(MAX(id), 0) FROM tracks").fetchone()[0]))
            for t in new:
                row = db.execute("SELECT id FROM tracks WHERE sha256=?", (t.sha256,)).fetchone()
                if row is None:
                    last = tid = last + 1  # never an id a deleted track had
                    db.execute(
                        "INSERT INTO tracks (id, sha256, title, artist, album, duration_s, genre, probabilities,"
                        " embedding, model_version, is_silent, added_at, tags) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (tid, t.sha256, t.title, t.artist, t.album, float(t.duration_s), t.genre,
                         json.dumps(t.probabilities), np.asarray(t.embedding, "<f4").tobytes(),
                         t.model_version, int(t.is_silent), now, json.dumps(t.tags)))
                    db.executemany("INSERT INTO track_tags VALUES (?,?,?)", _top_tag_rows(tid, t.tags, tag_priors))
                else:
                    tid = int(row[0])
                if created is not None:
                    created.append(row is None)
                ids.append(tid)
                db.execute("INSERT OR REPLACE INTO paths VALUES (?,?,?,?,?)", (t.path, tid, t.size, t.mtime_ns, now))
            for path, tid, size, mtime_ns in links:
                db.execute("INSERT OR REPLACE INTO paths VALUES (?,?,?,?,?)", (path, tid, size, mtime_ns, now))
            db.execute("UPDATE meta SET value=? WHERE key='last_track_id'", (str(last),))
            if new:
                self._bump(db)
        return ids

    def forget_paths(self, paths: Iterable[str]) -> None:
        with self._tx() as db:
            db.executemany("DELETE FROM paths WHERE path=?", [(p,) for p in paths])

    def remove(self, track_ids: Iterable[int]) -> int:
        ids = [int(i) for i in track_ids]
        with self._tx() as db:
            n = 0
            for i in ids:
                n += db.execute("DELETE FROM tracks WHERE id=?", (i,)).rowcount
            if n:
                self._bump(db)
        return n

    def orphans(self) -> list[int]:
        """Tracks with no file path left."""
        return [r[0] for r in self._q("SELECT id FROM tracks WHERE id NOT IN (SELECT track_id FROM paths)")]

    def replace_embeddings(self, updates: list[tuple[int, str, dict[str, float], np.ndarray, bool, dict[str, float]]],
                           model_version: str, *, final: bool = False,
                           tag_priors: dict[str, float] | None = None) -> None:
        """Re-embedding: (track_id, genre, probabilities, embedding, is_silent, tags) from ``model_version``.

        The catalog's model version switches when ``final`` (after the last batch); until
        then it holds a mix (``ids_not_from`` lists the rest).
        """
        with self._tx() as db:
            db.executemany(
                "UPDATE tracks SET genre=?, probabilities=?, embedding=?, model_version=?, is_silent=?, tags=? WHERE id=?",
                [(g, json.dumps(p), np.asarray(e, "<f4").tobytes(), model_version, int(s), json.dumps(tg), tid)
                 for tid, g, p, e, s, tg in updates])
            db.executemany("DELETE FROM track_tags WHERE track_id=?", [(u[0],) for u in updates])
            db.executemany("INSERT INTO track_tags VALUES (?,?,?)",
                           [r for tid, _, _, _, _, tg in updates for r in _top_tag_rows(tid, tg, tag_priors)])
            if final:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('model_version', ?)", (model_version,))
            self._bump(db)

    def ids_not_from(self, model_version: str) -> list[int]:
        return [r[0] for r in self._q("SELECT id FROM tracks WHERE model_version != ?", (model_version,))]
