"""The listening features under load and the flowing order's steps.

``POST /v1/queue/next`` (a queue of 5 random tracks, 10 next) and ``POST /v1/alchemy`` (2
added, 1 subtracted, 10 tracks) with 16 keep-alive clients against ``sonicsort serve`` (2
workers, 4 threads), one after the other, on a catalog of 10,000 tracks (generated clips,
or ``--data``, padded with synthetic tracks of 997 artists in albums of ten). Then, for 30
playlists of 30 tracks from random seeds, the mean cosine distance between consecutive
tracks in four orders of the same tracks: the playlist's own, ``"order": "flow"``, by
similarity to the seed, and shuffled (the mean of 20 shuffles).

    python -m benchmarks.perf.listening_load --out benchmarks/results/listening-load.json

Targets: p99 under 30 ms for both at 16 clients, no errors; the flowing order's mean step
shorter than a shuffle's and than similarity order's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from ..harness import build_catalog, closed_loop, free_port, stop_server, wait_ready


def _steps(vec: dict[int, np.ndarray], order: list[int]) -> float:
    return float(np.mean([1.0 - vec[a] @ vec[b] for a, b in zip(order, order[1:])]))


def flow_steps(url: str, ids: list[int], home: Path, n: int = 30, length: int = 30) -> dict:
    from recommender.catalog import Catalog

    cat = Catalog(home / "catalog.sqlite3")
    rnd = random.Random(7)
    rows: dict[str, list[float]] = {"playlist": [], "flow": [], "similarity": [], "shuffle": []}
    for seed in rnd.sample(ids, n):
        plain = [t["id"] for t in requests.post(url + "/v1/playlists", json={"seeds": [seed], "length": length},
                                                timeout=60).json()["items"]]
        flow = [t["id"] for t in requests.post(url + "/v1/playlists", json={"seeds": [seed], "length": length,
                                                                           "order": "flow"}, timeout=60).json()["items"]]
        if sorted(plain) != sorted(flow) or flow[0] != seed:
            sys.exit("the flowing order changed the playlist's tracks")
        vec = {i: v / np.linalg.norm(v) for i, v in cat.vectors(plain).items()}
        rows["playlist"].append(_steps(vec, plain))
        rows["flow"].append(_steps(vec, flow))
        rows["similarity"].append(_steps(vec, [seed] + sorted(plain[1:], key=lambda i: -float(vec[i] @ vec[seed]))))
        rows["shuffle"].append(float(np.mean([_steps(vec, [seed] + rnd.sample(plain[1:], len(plain) - 1))
                                              for _ in range(20)])))
    cat.close()
    mean = {k: round(float(np.mean(v)), 4) for k, v in rows.items()}
    return {"playlists": n, "length": length, "mean_step": mean,
            "flow_over_shuffle": round(mean["flow"] / mean["shuffle"], 3),
            "flow_over_similarity": round(mean["flow"] / mean["similarity"], 3),
            "flow_over_playlist": round(mean["flow"] / mean["playlist"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a folder of real audio to ingest (default: generated 30 s clips)")
    ap.add_argument("--tracks", type=int, default=10_000, help="catalog size after padding (default 10000)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--out")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sonicsort-listening-"))
    home, data = tmp / "home", args.data
    if not data:
        from recommender.demo import write_demo_library

        data = str(tmp / "clips")
        write_demo_library(Path(data), per_style=6, seconds=30.0)
    env = {**os.environ, "SONICSORT_HOME": str(home), "SONICSORT_REDIS_URL": "none", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = None
    try:
        n_real = sum(1 for p in Path(data).rglob("*") if p.is_file())
        ids, files = build_catalog(home, data, max(0, args.tracks - n_real), env)
        db = sqlite3.connect(home / "catalog.sqlite3")  # the synthetic tracks in albums of ten
        db.execute("UPDATE tracks SET album = 'Album ' || (id / 10), album_artist = 'Artist ' || (id / 10 % 997) "
                   "WHERE sha256 LIKE 'synthetic-%'")
        db.commit()
        db.close()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "2",
                                 "--threads", "4"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(url, proc, workers=2)
        node = [("127.0.0.1", port)]
        plans = {
            "queue_next": ("/v1/queue/next", lambda rnd: {"queue": rnd.sample(ids, 5), "count": 10}),
            "alchemy": ("/v1/alchemy", lambda rnd: (lambda three: {"add": three[:2], "subtract": three[2:],
                                                                   "count": 10})(rnd.sample(ids, 3))),
        }
        runs = {}
        for name, (path, body) in plans.items():
            closed_loop(node, 4, 2.0, lambda rnd, p=path: p, body=body)  # both workers warm up, not measured
            runs[name] = closed_loop(node, args.clients, args.seconds, lambda rnd, p=path: p, body=body)
            print(f"{name}: {runs[name]}", file=sys.stderr)
        flow = flow_steps(url, ids, home)
        print(f"flow: {flow}", file=sys.stderr)
        targets = {f"{m}_p99_under_30ms": r["p99_ms"] < 30 and r["errors"] == 0 for m, r in runs.items()}
        targets["flow_shorter_than_shuffle_and_similarity"] = (flow["flow_over_shuffle"] < 1
                                                               and flow["flow_over_similarity"] < 1)
        result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
                  "date": time.strftime("%Y-%m-%d"), "catalog_tracks": len(ids), "real_tracks": len(files),
                  "server": {"workers": 2, "threads": 4}, "clients": args.clients, "seconds": args.seconds,
                  "methods": runs, "flow": flow, "targets": targets}
        text = json.dumps(result, indent=1)
        print(text)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
    finally:
        if proc is not None and proc.poll() is None:
            stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
