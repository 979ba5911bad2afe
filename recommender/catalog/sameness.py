"""The catalog's near-duplicates (``Sameness``, a part of ``Catalog``): each track's audio
fingerprint, the pairs of tracks found to hold the same recording, and how far the search
for them has got (``meta.duplicates_through``: every track up to that id has been compared
with the catalog). ``recommender.duplicates`` finds the pairs; these are its queries."""

from __future__ import annotations

from typing import Iterable

import sqlalchemy as sa

from .schema import duplicates, meta, tracks


class Sameness:
    """Fingerprints and near-duplicate pairs: the queries (``Catalog`` mixes this in)."""

    def fingerprints(self, track_ids: Iterable[int]) -> dict[int, tuple[bytes, float]]:
        """id → (fingerprint, duration in s) for those of ``track_ids`` that have a fingerprint."""
        ids = [int(i) for i in track_ids]
        out: dict[int, tuple[bytes, float]] = {}
        for i in range(0, len(ids), 500):
            out.update((r[0], (bytes(r[1]), r[2])) for r in self._q(
                sa.select(tracks.c.id, tracks.c.fingerprint, tracks.c.duration_s)
                .where(tracks.c.id.in_(ids[i:i + 500]), tracks.c.fingerprint.is_not(None))))
        return out

    def ids_to_compare(self, limit: int = 1000) -> list[int]:
        """Up to ``limit`` ids of fingerprinted tracks above ``duplicates_through``, lowest first:
        the tracks not yet compared with the catalog."""
        through = int(self.get_meta("duplicates_through") or 0)
        return [r[0] for r in self._q(sa.select(tracks.c.id).where(tracks.c.id > through,
                                                                    tracks.c.fingerprint.is_not(None))
                                      .order_by(tracks.c.id).limit(int(limit)))]

    def ids_without_fingerprint(self) -> list[int]:
        """Tracks that have no fingerprint and are not silence: ingested before fingerprints."""
        return [r[0] for r in self._q(sa.select(tracks.c.id).where(tracks.c.fingerprint.is_(None),
                                                                    tracks.c.is_silent == 0)
                                      .order_by(tracks.c.id))]

    def record_duplicates(self, pairs: list[tuple[int, int, float, float]], through: int) -> None:
        """Store (a, b, fingerprint distance, embedding similarity) pairs of tracks that hold the same
        recording, and that every track up to id ``through`` has been compared, in one
        transaction. Pairs known already, or of a track removed meanwhile, are left out."""
        with self._tx() as db:
            rows = [{"a": min(a, b), "b": max(a, b), "distance": float(d), "similarity": float(s)}
                    for a, b, d, s in pairs if a != b]
            if rows:
                alive = set(db.execute(sa.select(tracks.c.id).where(
                    tracks.c.id.in_({r["a"] for r in rows} | {r["b"] for r in rows}))).scalars())
                rows = [r for r in rows if r["a"] in alive and r["b"] in alive]
                self._upsert(duplicates, rows, replace=False)
            was = int(db.execute(sa.select(meta.c.value).where(meta.c.key == "duplicates_through")).scalar() or 0)
            self._upsert(meta, [{"key": "duplicates_through", "value": str(max(was, int(through)))}])

    def set_fingerprints(self, rows: dict[int, bytes]) -> None:
        """Track id → its fingerprint, for tracks that had none; the search for their duplicates
        starts again from the lowest of them."""
        if not rows:
            return
        b = sa.bindparam
        with self._tx() as db:
            db.execute(tracks.update().where(tracks.c.id == b("tid")).values(fingerprint=b("fp")),
                       [{"tid": int(t), "fp": fp} for t, fp in rows.items()])
            was = int(db.execute(sa.select(meta.c.value).where(meta.c.key == "duplicates_through")).scalar() or 0)
            self._upsert(meta, [{"key": "duplicates_through", "value": str(min(was, min(rows) - 1))}])

    def duplicate_pairs(self) -> list[tuple[int, int, float, float]]:
        """Every stored pair (a, b, distance, similarity), a < b, by a then b."""
        return [tuple(r) for r in self._q(sa.select(duplicates.c.a, duplicates.c.b, duplicates.c.distance,
                                                    duplicates.c.similarity)
                                          .order_by(duplicates.c.a, duplicates.c.b))]
