"""Several API nodes on one catalog: the targets of the scale-out, measured.

    python -m benchmarks.perf.scale_out [--postgresql URL] [--pad 10000] [--clients 32] [--seconds 20]
                                   [--uploads 200] [--changes 10000] [--out benchmarks/results/scale-out.json]

1. A catalog of ``--partners`` generated 3 s clips (ingested with the shipped model) plus
   ``--pad`` synthetic tracks is built in SQLite and copied (``sonicsort catalog copy``) into
   a new private PostgreSQL database, which is dropped at the end.
2. For each catalog, SQLite then PostgreSQL: two ``sonicsort serve`` nodes (their own ports
   and ``SONICSORT_HOME``s, the default workers) on it. ``/v1/tracks/{id}/similar?k=10`` with
   ``--clients`` keep-alive clients, half on each node, for ``--seconds``: requests/s, p50,
   p99, errors. The SQLite nodes share the one file, as workers of one machine do.
3. Propagation (both catalogs): ``--uploads`` uploads to node A, each a copy of one partner
   clip with a little noise added (another track, whose nearest neighbour is that partner).
   From A's 201, node B is asked for the partner's ``/similar?k=1`` until it answers with the
   new track: the delay, p50/p99/max over the uploads.
4. Catch-up (PostgreSQL): a node's library opens its saved index, ``--changes`` tracks are
   added to the catalog in batches of 50 by another process's connection, and the node's
   library is opened again: the time to load and catch up through the change log, whether
   it was the change log (no rebuild), and a full rebuild's time beside it.

Targets: 2 nodes on PostgreSQL, 0 errors and p99 within 1.5x of SQLite's in the
same run; propagation p99 <= 1 s over 200 uploads; catch-up of 10,000 changes <= 5 s, no rebuild.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import soundfile as sf

from ..harness import build_catalog, free_port, pct, private_database, stop_server, wait_ready
from .api_load import load_python

KEY = "scale-key"


def tone(seed: int, seconds: float = 3.0, sr: int = 22_050, extra_noise: float = 0.0) -> bytes:
    """A partner clip (two random partials and noise); ``extra_noise`` > 0 makes another file
    of nearly the same sound."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f1, f2 = rng.uniform(80, 900), rng.uniform(900, 3000)
    y = 0.3 * np.sin(2 * np.pi * f1 * t) + 0.1 * np.sin(2 * np.pi * f2 * t) + 0.05 * rng.standard_normal(len(t))
    if extra_noise:
        y = y + extra_noise * np.random.default_rng(seed + 1_000_000).standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def start_node(tmp: Path, name: str, catalog: str, env: dict) -> tuple[str, subprocess.Popen]:
    port = free_port()
    home = tmp / name
    home.mkdir(parents=True, exist_ok=True)
    log = open(tmp / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)],
                            env={**env, "SONICSORT_HOME": str(home), "SONICSORT_CATALOG_URL": catalog},
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return url, proc


def load(urls: list[str], ids: list[int], clients: int, seconds: float) -> dict:
    """``api_load.load_python`` spread over the nodes: client i on node i mod len(urls)."""
    nodes = [(u.removeprefix("http://").split(":")[0], int(u.rsplit(":", 1)[1])) for u in urls]
    return {"nodes": len(urls), "clients": clients, **load_python(*nodes[0], ids, clients, seconds, more=tuple(nodes[1:]))}


def propagation(a_url: str, b_url: str, partners: list[int], n_uploads: int, timeout_s: float = 5.0) -> dict:
    """Upload near-copies of partner clips to A; time until B's /similar of the partner finds it."""
    delays, unseen, not_nearest = [], 0, 0
    with requests.Session() as up, requests.Session() as ask:
        for i in range(n_uploads):
            seed = i  # one upload per partner: it is then the partner's only near copy
            data = tone(seed, extra_noise=0.002)
            r = up.post(a_url + "/v1/tracks", data=data, timeout=60,
                        headers={"Content-Type": "audio/wav", "X-API-Key": KEY})
            if r.status_code != 201:
                raise SystemExit(f"upload {i} to A: {r.status_code} {r.text[:200]}")
            new_id, t0 = r.json()["id"], time.perf_counter()
            partner = partners[seed]
            while True:
                top = ask.get(f"{b_url}/v1/tracks/{partner}/similar?k=1", timeout=30).json()["items"]
                if top and top[0]["id"] == new_id:
                    delays.append((time.perf_counter() - t0) * 1000)
                    break
                if time.perf_counter() - t0 > timeout_s:
                    # is the new track the partner's nearest at all? A (which stored it) says
                    a_top = ask.get(f"{a_url}/v1/tracks/{partner}/similar?k=1", timeout=30).json()["items"]
                    if a_top and a_top[0]["id"] == new_id:
                        unseen += 1
                    else:
                        not_nearest += 1
                    break
    return {"uploads": n_uploads, "measured": len(delays), "unseen_after_5s": unseen,
            "not_the_partners_nearest": not_nearest,
            "p50_ms": round(pct(delays, 50), 1) if delays else None,
            "p99_ms": round(pct(delays, 99), 1) if delays else None,
            "max_ms": round(max(delays), 1) if delays else None}


def catch_up(catalog_url: str, tmp: Path, n_changes: int) -> dict:
    """A node's library: open (saved index), ``n_changes`` tracks added elsewhere, open again."""
    from recommender.catalog import Catalog, NewTrack
    from recommender.config import Settings
    from recommender.library import Library

    home = tmp / "catch-up-node"
    builds: list[int] = []
    build = Library._build_index
    Library._build_index = lambda self: builds.append(1) or build(self)  # counts rebuilds
    try:
        settings = Settings.from_env({**os.environ, "SONICSORT_HOME": str(home), "SONICSORT_CATALOG_URL": catalog_url,
                                      "SONICSORT_REDIS_URL": "none"})
        lib = Library(settings)
        n0 = len(lib.index)
        generation0 = lib.catalog.generation
        lib.catalog.close()
        # another process's connection adds the tracks, in batches of 50
        other = Catalog(catalog_url)
        version = other.model_version
        dim = next(iter(other.vectors(other.ids()[:1].tolist()).values())).shape[0]
        rng = np.random.default_rng(7)
        t_add = time.perf_counter()
        for s in range(0, n_changes, 50):
            batch = []
            for i in range(s, min(s + 50, n_changes)):
                v = rng.normal(size=dim).astype(np.float32)
                v /= np.linalg.norm(v)
                batch.append(NewTrack(path=f"/catch-up/{i}.wav", size=0, mtime_ns=0, sha256=f"catch-up-{i:08d}",
                                      title=f"Catch-up {i}", artist=None, album=None, duration_s=30.0, genre="rock",
                                      probabilities={"rock": 1.0}, embedding=v, model_version=version))
            other.add(batch)
        add_s = time.perf_counter() - t_add
        generations = other.generation - generation0
        other.close()
        t0 = time.perf_counter()
        lib2 = Library(settings)
        idx = lib2.index  # loads the saved index, then the change log
        open_s = time.perf_counter() - t0
        n1 = len(idx)
        rebuilt_on_open = len(builds) > 1  # the first node's open built it; the second's must not
        in_log = lib2.catalog.changes_since(generation0) is not None
        t0 = time.perf_counter()
        lib2.rebuild_index()
        rebuild_s = time.perf_counter() - t0
        lib2.catalog.close()
    finally:
        Library._build_index = build
    return {"changes": n_changes, "generations": generations, "index_before": n0, "index_after": n1,
            "caught_up_all": n1 == n0 + n_changes, "rebuilt_on_open": rebuilt_on_open, "through_change_log": in_log,
            "open_and_catch_up_s": round(open_s, 3), "full_rebuild_s": round(rebuild_s, 3),
            "adding_them_s": round(add_s, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postgresql", default="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="a PostgreSQL server (a new database is made on it and dropped)")
    ap.add_argument("--partners", type=int, default=200, help="generated clips ingested (default 200, >= --uploads)")
    ap.add_argument("--pad", type=int, default=10_000, help="synthetic tracks added (default 10000)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warm-up", type=float, default=3, help="seconds of the same load before the measured run (default 3)")
    ap.add_argument("--uploads", type=int, default=200)
    ap.add_argument("--changes", type=int, default=10_000)
    ap.add_argument("--out", default="benchmarks/results/scale-out.json")
    args = ap.parse_args()
    if args.uploads > args.partners:
        raise SystemExit("--uploads must not exceed --partners (each upload is a near copy of one partner)")

    tmp = Path(tempfile.mkdtemp(prefix="sonicsort-scale-"))
    env = {**os.environ, "SONICSORT_API_KEY": KEY, "SONICSORT_REDIS_URL": "none", "TF_CPP_MIN_LOG_LEVEL": "2",
           "SONICSORT_UPLOADS": str(tmp / "uploads")}
    pg_url, drop = private_database(args.postgresql)
    results: dict = {"pad": args.pad, "partners": args.partners}
    try:
        music = tmp / "music"
        music.mkdir()
        for i in range(args.partners):
            (music / f"p{i:04d}.wav").write_bytes(tone(i))
        seed_home = tmp / "seed"
        subprocess.run([sys.executable, "-m", "api.cli", "ingest", str(music)], check=True, capture_output=True,
                       env={**env, "SONICSORT_HOME": str(seed_home)})
        ids, _ = build_catalog(seed_home, None, args.pad, {**env, "SONICSORT_HOME": str(seed_home)})
        from recommender.catalog import Catalog

        cat = Catalog(seed_home / "catalog.sqlite3")
        by_title = {t: i for i, t, _, _ in cat.labels()}
        partners = [by_title[f"p{i:04d}"] for i in range(args.partners)]
        cat.close()
        sqlite_file = tmp / "shared.sqlite3"
        shutil.copy(seed_home / "catalog.sqlite3", sqlite_file)
        subprocess.run([sys.executable, "-m", "api.cli", "catalog", "copy", str(sqlite_file), pg_url], check=True,
                       capture_output=True, env=env)
        print(f"catalog: {len(ids)} tracks ({args.partners} clips + {args.pad} synthetic), in SQLite and PostgreSQL",
              flush=True)
        for name, where in (("sqlite", str(sqlite_file)), ("postgresql", pg_url)):
            a_url, a = start_node(tmp, f"{name}-a", where, env)
            b_url, b = start_node(tmp, f"{name}-b", where, env)
            try:
                load([a_url, b_url], ids, args.clients, args.warm_up)  # warm-up: row caches, answer paths
                results[f"similar_{name}"] = r = load([a_url, b_url], ids, args.clients, args.seconds)
                print(f"{name}: /similar, 2 nodes, {args.clients} clients: {r}", flush=True)
                results[f"propagation_{name}"] = r = propagation(a_url, b_url, partners, args.uploads)
                print(f"{name}: propagation A -> B: {r}", flush=True)
            finally:
                stop_server(a)
                stop_server(b)
        sq, pg = results["similar_sqlite"], results["similar_postgresql"]
        results["p99_ratio_postgresql_to_sqlite"] = round(pg["p99_ms"] / sq["p99_ms"], 3)
        print(f"p99 PostgreSQL / SQLite: {results['p99_ratio_postgresql_to_sqlite']}", flush=True)
        results["catch_up_postgresql"] = r = catch_up(pg_url, tmp, args.changes)
        print(f"catch-up: {r}", flush=True)
    finally:
        drop()
        shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
