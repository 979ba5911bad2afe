"""Copying a whole catalog into an empty one (SQLite to PostgreSQL, back, or any pair)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ..errors import CatalogError
from .database import catalog_url
from .schema import duplicates, meta, paths, track_tags, tracks
from .store import Catalog

def copy_catalog(src: str | Path, dst: str | Path, *, batch: int = 2000,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Copy the catalog at ``src`` into the empty catalog at ``dst`` (SQLite → PostgreSQL, back,
    or any pair), keeping every track id, path and its order, tag, embedding, fingerprint, near-duplicate
    pair and the highest
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
        counts = {"tracks": 0, "paths": 0, "track_tags": 0, "duplicates": 0}
        with source._snapshot() as snap, target._tx() as db:  # noqa: SLF001 - the same module's two catalogs
            rows = snap.execute(sa.select(meta.c.key, meta.c.value)
                                .where(meta.c.key.notin_(["schema_version", "writes", "changes_from"]))).all()
            target._upsert(meta, [{"key": k, "value": v} for k, v in rows])  # noqa: SLF001
            for table in (tracks, track_tags, paths, duplicates):  # parents first
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
