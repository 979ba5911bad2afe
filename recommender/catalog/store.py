"""``Catalog``: the catalog's queries over its ``Database``, with the row cache of ``Freshness``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import sqlalchemy as sa

from ..errors import CatalogError, UnknownTrack
from ..text import clean_text
from .accounts import Accounts
from .database import Database
from .freshness import Freshness
from .records import NewTrack, Track, _top_tag_rows, _vector
from .sameness import Sameness
from .schema import changes, meta, paths, track_tags, tracks

CHANGES_KEPT = 100_000  # generations of the change log kept; a node further behind reconciles in full


class Catalog(Freshness, Accounts, Sameness, Database):
    """The catalog at ``where``: a SQLite file path (created with its folder when missing), or a
    ``sqlite:///`` or ``postgresql://`` URL (the database must exist; its tables are created).

    Safe to share between threads (one connection, serialised by a lock); several
    processes, or machines with PostgreSQL, may open the same catalog.
    """

    def __init__(self, where: str | Path, *, row_cache: int = 20_000) -> None:
        self._init_freshness(row_cache)
        Database.__init__(self, where)

    def close(self) -> None:
        with self._lock:
            self._stop_listening()
            Database.close(self)




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

    def write_token(self) -> Any:
        """A value that changes with every write to the catalog, by this process or any other
        (tracks, users, playlists, plays, stars, ratings): what an answer cache keys on."""
        with self._lock:
            self._fresh()
            return self._seen

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
            album_artist=row[12], track_no=row[13], disc_no=row[14], year=row[15], tag_genre=row[16],
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

    def browse_rows(self) -> list[tuple]:
        """What browsing by tags needs of every track, by id: (id, title, artist, album, album
        artist, track no, disc no, year, genre tag, predicted genre, duration s, added at, first
        path, its size in bytes); the path and size are None for a track without a file."""
        first = (sa.select(paths.c.track_id, sa.func.min(paths.c.seq).label("seq"))
                 .group_by(paths.c.track_id).subquery())
        q = (sa.select(tracks.c.id, tracks.c.title, tracks.c.artist, tracks.c.album, tracks.c.album_artist,
                       tracks.c.track_no, tracks.c.disc_no, tracks.c.year, tracks.c.tag_genre, tracks.c.genre,
                       tracks.c.duration_s, tracks.c.added_at, paths.c.path, paths.c.size)
             .select_from(tracks.outerjoin(first, first.c.track_id == tracks.c.id)
                          .outerjoin(paths, sa.and_(paths.c.track_id == tracks.c.id, paths.c.seq == first.c.seq)))
             .order_by(tracks.c.id))
        return [tuple(r) for r in self._q(q)]

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
            q = q.where(sa.or_(*(self.sql.contains(c, like) for c in (tracks.c.title, tracks.c.artist, tracks.c.album))))
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
        with self._lock, self._guard():
            size = self.sql.size_bytes(self._db, self.path)
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
                        is_silent=int(t.is_silent), added_at=now, tags=json.dumps(t.tags),
                        album_artist=t.album_artist, track_no=t.track_no, disc_no=t.disc_no, year=t.year,
                        tag_genre=t.tag_genre, fingerprint=t.fingerprint))
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

    def update_file_tags(self, rows: dict[int, dict[str, Any]]) -> None:
        """Track id → its file's tags (``FILE_TAGS``, read again): stored in one transaction,
        as a new generation with no change to the set of tracks or their embeddings."""
        if not rows:
            return
        b = sa.bindparam
        text = ("artist", "album", "album_artist", "tag_genre")
        params = [{"tid": int(t), "_title": (clean_text(v.get("title")) or "Untitled")[:500],
                   **{"_" + c: clean_text(v.get(c)) for c in text},
                   **{"_" + c: v.get(c) for c in ("track_no", "disc_no", "year")}} for t, v in rows.items()]
        with self._tx() as db:
            db.execute(tracks.update().where(tracks.c.id == b("tid"))
                       .values(**{c: b("_" + c) for c in ("title", *text, "track_no", "disc_no", "year")}), params)
            self._bump(db, {})  # what browsing shows changed; the tracks and their embeddings did not

    def ids_not_from(self, model_version: str) -> list[int]:
        return [r[0] for r in self._q(sa.select(tracks.c.id).where(tracks.c.model_version != model_version))]


_COLS = (tracks.c.id, tracks.c.sha256, tracks.c.title, tracks.c.artist, tracks.c.album, tracks.c.duration_s,
         tracks.c.genre, tracks.c.probabilities, tracks.c.model_version, tracks.c.is_silent, tracks.c.added_at,
         tracks.c.tags, tracks.c.album_artist, tracks.c.track_no, tracks.c.disc_no, tracks.c.year, tracks.c.tag_genre)
_PATH_COL = len(_COLS)  # _ROWS_PATHS_VECS: the row's columns, then one path (None: no path), then the vector
_ROWS_PATHS_VECS = (sa.select(*_COLS, paths.c.path, tracks.c.embedding)
                    .select_from(tracks.outerjoin(paths, paths.c.track_id == tracks.c.id))
                    .where(tracks.c.id.in_(sa.bindparam("ids", expanding=True)))
                    .order_by(tracks.c.id, paths.c.seq))
_VECS = sa.select(tracks.c.id, tracks.c.embedding).where(tracks.c.id.in_(sa.bindparam("ids", expanding=True)))
