"""The unit costs behind docs/scaling.md's capacity model, measured on this machine.

    python -m benchmarks.perf.unit_costs [--data ../shared/data] [--postgresql [URL]]

1. **Ingest CPU per track**: ``sonicsort ingest --workers 0`` (one process: model, decode and
   catalog writes) on N and on 3N files; the CPU time (user + system, from ``getrusage`` of
   the child) of the second minus the first, over the 2N extra files, leaves out start-up
   (TensorFlow, the model). Real 30 s excerpts from ``--data`` when given, else generated 30 s clips.
2. **`/similar` CPU per request**: ``sonicsort serve`` with one worker; 2,000 sequential
   ``/v1/tracks/ID/similar?k=10`` requests over keep-alive; the worker's CPU time over them.
3. **Bytes per track**: 20,000 tracks (the shipped model's prediction of a real clip, each
   with its own random embedding and hash) in the SQLite catalog, in a PostgreSQL database
   (``pg_total_relation_size`` of the catalog's tables, when ``--postgresql``), in a saved
   hnswlib index and in a flushed milvus-lite folder.
4. **Index build time**: hnswlib with the project's defaults (M=16, ef_construction=200) on
   200,000 embeddings of the shipped model's dimension, 1 and 2 threads; milvus-lite (HNSW,
   the same M and efConstruction) on 100,000. Per million is extrapolated linearly (HNSW's
   build grows slightly faster than n: a lower bound).

Figures are printed and written to ``benchmarks/results/unit-costs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests


from ..harness import clip, free_port


def cpu_of_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child process run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def audio_files(data: str | None, n: int, folder: Path) -> list[Path]:
    """n 30 s files: real excerpts from ``data`` when given, else generated."""
    if data:
        found = sorted(p.resolve() for p in Path(data).rglob("*") if p.suffix.lower() in (".ogg", ".wav", ".mp3", ".flac")
                       and "clips" not in str(p))
        if len(found) >= n:
            return found[:n]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"g{i:04d}.wav"
        p.write_bytes(clip(10_000 + i, seconds=30.0))
        out.append(p)
    return out


def ingest_cost(data: str | None, n: int, env: dict[str, str]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="sonicsort-units-"))
    try:
        files = audio_files(data, 3 * n, tmp / "gen")
        runs = {}
        for count in (n, 3 * n):
            music = tmp / f"music{count}"
            music.mkdir()
            for f in files[:count]:
                os.symlink(f, music / f.name)
            home_env = {**env, "SONICSORT_HOME": str(tmp / f"home{count}")}
            runs[count] = cpu_of_child([sys.executable, "-m", "api.cli", "ingest", str(music), "--workers", "0",
                                        "--json"], home_env)
        (c1, w1), (c3, w3) = runs[n], runs[3 * n]
        return {"files": f"{n} and {3 * n}", "source": "real 30 s excerpts" if data else "generated 30 s clips",
                "cpu_s": [round(c1, 2), round(c3, 2)], "wall_s": [round(w1, 2), round(w3, 2)],
                "core_s_per_track": round((c3 - c1) / (2 * n), 4), "startup_core_s": round(c1 - (c3 - c1) / 2, 2)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def similar_cpu(env: dict[str, str], n_requests: int = 2000) -> dict:
    import psutil

    tmp = Path(tempfile.mkdtemp(prefix="sonicsort-units-"))
    home = tmp / "home"
    music = tmp / "music"
    music.mkdir(parents=True)
    for i in range(200):
        (music / f"t{i:03d}.wav").write_bytes(clip(20_000 + i, seconds=3.0))
    env = {**env, "SONICSORT_HOME": str(home), "SONICSORT_REDIS_URL": "none"}
    subprocess.run([sys.executable, "-m", "api.cli", "ingest", str(music)], env=env, check=True, capture_output=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/readyz", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        workers = psutil.Process(proc.pid).children(recursive=True)
        with requests.Session() as s:
            for i in range(200):  # warm: every row read once, every code path taken
                s.get(f"{url}/v1/tracks/{1 + i % 200}/similar?k=10", timeout=30).raise_for_status()

            def cpu() -> float:
                return sum(sum(w.cpu_times()[:2]) for w in workers)

            c0, t0 = cpu(), time.perf_counter()
            for i in range(n_requests):
                s.get(f"{url}/v1/tracks/{1 + i % 200}/similar?k=10", timeout=30).raise_for_status()
            wall, used = time.perf_counter() - t0, cpu() - c0
        return {"requests": n_requests, "catalog_tracks": 200, "worker_cpu_ms_per_request": round(1000 * used / n_requests, 3),
                "wall_ms_per_request": round(1000 * wall / n_requests, 3)}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def storage(n: int, postgresql: str | None) -> dict:
    from embedding import ModelBundle
    from index import create_index
    from recommender.catalog import Catalog, NewTrack
    from recommender.config import Settings

    bundle = ModelBundle.load(Settings().model_dir)
    pred = bundle.predict(clip(1, seconds=30.0))
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, bundle.embedding_dim)).astype(np.float32)
    records = []
    for i in range(n):
        pred.embedding = vecs[i]
        records.append(NewTrack.from_prediction(pred, path=f"/music/artist {i % 500}/album {i % 50}/track {i:06d}.ogg",
                                                sha256=f"{i:064x}", size=5_000_000, mtime_ns=1_700_000_000 * 10**9,
                                                title=f"Track number {i}", artist=f"Artist {i % 500}",
                                                album=f"Album {i % 50}"))
    out: dict = {"tracks": n, "embedding_dim": bundle.embedding_dim, "tags_per_track": len(pred.tags)}
    tmp = Path(tempfile.mkdtemp(prefix="sonicsort-units-"))
    try:
        targets = [("sqlite", tmp / "catalog.sqlite3")]
        drop = None
        if postgresql:
            from ..harness import private_database

            url, drop = private_database(postgresql)
            targets.append(("postgresql", url))
        for name, where in targets:
            cat = Catalog(where)
            for s in range(0, n, 2000):
                cat.add(records[s:s + 2000], tag_priors=bundle.tag_priors)
            if name == "sqlite":
                cat._db.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # noqa: SLF001 - all in the file
                cat._db.exec_driver_sql("VACUUM")  # noqa: SLF001 - the file's size, without free pages
                size = (tmp / "catalog.sqlite3").stat().st_size
            else:
                size = int(cat._db.exec_driver_sql(  # noqa: SLF001
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace "
                    "WHERE c.relkind = 'r' AND ns.nspname = current_schema()").scalar())
            cat.close()
            out[f"{name}_bytes_per_track"] = round(size / n)
        if drop:
            drop()
        ids = np.arange(1, n + 1)
        h = create_index("hnsw", bundle.embedding_dim, num_threads=2)
        h.add(ids, vecs)
        saved = h.save(tmp / "hnsw")
        out["hnsw_bytes_per_track"] = round(sum(p.stat().st_size for p in saved.iterdir()) / n)
        m = create_index("milvus", bundle.embedding_dim)
        m.add(ids, vecs)
        m.build()
        out["milvus_lite_bytes_per_track"] = round(m.disk_bytes() / n)
        m.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def build_times(dim: int) -> dict:
    from index import create_index

    rng = np.random.default_rng(1)
    out: dict = {"dim": dim}
    x = rng.standard_normal((200_000, dim)).astype(np.float32)
    for threads in (1, 2):
        t0 = time.perf_counter()
        h = create_index("hnsw", dim, num_threads=threads)
        h.add(np.arange(len(x)), x)
        s = time.perf_counter() - t0
        out[f"hnsw_200k_{threads}_threads_s"] = round(s, 1)
        out[f"hnsw_per_million_{threads}_threads_s"] = round(s * 5, 0)
        del h
    t0 = time.perf_counter()
    m = create_index("milvus", dim)
    for s in range(0, 100_000, 20_000):
        m.add(np.arange(s, s + 20_000), x[s:s + 20_000])
    m.build()
    s = time.perf_counter() - t0
    m.close()
    out["milvus_lite_100k_s"] = round(s, 1)
    out["milvus_lite_per_million_s"] = round(s * 10, 0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a folder of real music (30 s excerpts) for the ingest cost")
    ap.add_argument("--ingest-files", type=int, default=30, help="N: ingest N, then 3N files (default 30)")
    ap.add_argument("--tracks", type=int, default=20_000, help="tracks for the bytes per track (default 20,000)")
    ap.add_argument("--postgresql", metavar="URL", nargs="?", const="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="also measure a PostgreSQL catalog (a new database, dropped afterwards)")
    ap.add_argument("--only", choices=["ingest", "similar", "storage", "build"],
                    help="measure only this one (the others in --out are kept)")
    ap.add_argument("--out", default="benchmarks/results/unit-costs.json")
    args = ap.parse_args()
    env = {**os.environ, "SONICSORT_REDIS_URL": "none", "TF_CPP_MIN_LOG_LEVEL": "2", "SONICSORT_CATALOG_URL": ""}
    results: dict = {"cores": os.cpu_count()}
    if args.only and Path(args.out).is_file():
        results = json.loads(Path(args.out).read_text())

    def wanted(part: str) -> bool:
        return args.only in (None, part)

    if wanted("ingest"):
        results["ingest"] = r = ingest_cost(args.data, args.ingest_files, env)
        print(f"ingest: {r['core_s_per_track']} core-s per track ({r['source']}; start-up {r['startup_core_s']} core-s)",
              flush=True)
    if wanted("similar"):
        results["similar"] = r = similar_cpu(env)
        print(f"/similar: {r['worker_cpu_ms_per_request']} ms of worker CPU per request "
              f"({r['wall_ms_per_request']} ms wall, sequential)", flush=True)
    if wanted("storage"):
        results["storage"] = r = storage(args.tracks, args.postgresql)
        print(f"bytes per track: {r}", flush=True)
    if wanted("build"):
        from embedding import ModelBundle
        from recommender.config import Settings

        results["build"] = r = build_times(ModelBundle.load(Settings().model_dir).embedding_dim)
        print(f"index build: {r}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
