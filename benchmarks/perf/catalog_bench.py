"""The catalog's costs in SQLite and in PostgreSQL, one after the other in the same run.

    python -m benchmarks.perf.catalog_bench [--tracks 2000] [--postgres postgresql://postgres@127.0.0.1/postgres]

For each database: add ``--tracks`` tracks (128-d, 8 tags) in batches of 100; ``get_many`` of 10
tracks from the row cache (what ``/similar`` pays per answer) and uncached with their
vectors; what one ``/similar`` reads when none of its tracks is cached (the query track with its
vector, then its 10 neighbours); ``generation`` (the change check); a title search. PostgreSQL runs in a temporary
database of its own, dropped afterwards. The machine is shared and noisy: compare the two
columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from recommender.catalog import Catalog, NewTrack, catalog_url


def records(n: int) -> list[NewTrack]:
    rng = np.random.default_rng(0)
    return [NewTrack(path=f"/music/{i}.wav", size=1, mtime_ns=1, sha256=f"h{i}", title=f"Track {i}", artist="A",
                     album=None, duration_s=30.0, genre="rock", probabilities={"rock": 1.0},
                     embedding=rng.normal(size=128).astype(np.float32), model_version="m1",
                     tags={f"tag{j}": 0.1 * j for j in range(8)}) for i in range(n)]


def measure(where, n: int) -> dict:
    recs = records(n)
    c = Catalog(where)
    try:
        t0 = time.perf_counter()
        ids: list[int] = []
        for k in range(0, n, 100):
            ids += c.add(recs[k:k + 100])
        add_s = time.perf_counter() - t0
        c.get_many(ids[:10])
        reps = 2000
        t0 = time.perf_counter()
        for _ in range(reps):
            c.get_many(ids[:10])
        cached = (time.perf_counter() - t0) / reps
        t0 = time.perf_counter()
        chunks = min(200, n // 11)
        for k in range(chunks):
            c._rows.clear()  # noqa: SLF001 - measure the read itself
            c._vecs.clear()  # noqa: SLF001
            c.get_many(ids[k * 10:(k + 1) * 10], with_embedding=True)
        uncached = (time.perf_counter() - t0) / chunks
        # what one /similar asks of a catalog whose row cache holds none of the tracks: the
        # query track with its vector, then its 10 neighbours, after the change check
        t0 = time.perf_counter()
        for k in range(chunks):
            c._rows.clear()  # noqa: SLF001
            c._vecs.clear()  # noqa: SLF001
            c._seen = None  # noqa: SLF001 - the change check runs as in a new request
            c.get(ids[k * 11], with_embedding=True)
            c.get_many(ids[k * 11 + 1:(k + 1) * 11])
        similar_reads = (time.perf_counter() - t0) / chunks
        t0 = time.perf_counter()
        for _ in range(reps):
            c.generation  # noqa: B018
        gen = (time.perf_counter() - t0) / reps
        t0 = time.perf_counter()
        for _ in range(50):
            c.search("track 1", limit=20)
        search = (time.perf_counter() - t0) / 50
    finally:
        c.close()
    return {"add_s": round(add_s, 2), "get_many_10_cached_us": round(cached * 1e6, 1),
            "get_many_10_uncached_with_vectors_ms": round(uncached * 1e3, 3),
            "similar_reads_uncached_ms": round(similar_reads * 1e3, 3), "generation_us": round(gen * 1e6, 1),
            "search_ms": round(search * 1e3, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=2000)
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="a server's admin URL: a temporary database is made there and dropped")
    ap.add_argument("--out")
    args = ap.parse_args()
    out = {"tracks": args.tracks}
    with tempfile.TemporaryDirectory() as tmp:
        out["sqlite"] = measure(Path(tmp) / "catalog.sqlite3", args.tracks)
    admin_url = sa.engine.make_url(args.postgres)
    name = f"sonicsort_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(catalog_url(args.postgres), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        out["postgresql"] = measure(admin_url.set(database=name).render_as_string(hide_password=False), args.tracks)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
