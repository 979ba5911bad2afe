"""Faults the CI tests only sample, against a real `sonicsort serve` (2 workers × 4
threads by default) on a generated catalog. Not part of CI: it takes a few minutes.

Default: the uvicorn front (``--web-server uvicorn``; ``gthread`` for gunicorn's threads).

1. Slow clients: 8, 32 and 64 connections that send headers and then trickle a body at
   1 byte/s, while 4 normal clients call ``/v1/tracks/ID/similar``: their p50/p99 and errors
   (400 requests, or what 90 s allow where starved ones wait out their 10 s timeout).
2. Kills: 100 uploads of new audio, each with a SIGKILL of the worker serving it at a random
   moment of the request (gunicorn starts a new worker each time); an upload the kill cut
   off is sent again, unkilled. Then the consistency check: catalog rows = stored upload
   files = every worker's index, every upload answered 201 or 200 in the catalog once, and
   no temporary file left, right after the kills and after ``stats --repair``.
3. Same-audio bursts: 10 bursts of 8 simultaneous uploads of one new clip: 201s per burst.

    python -m benchmarks.faults.serve --out benchmarks/results/faults.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

from ..harness import KEY, clip, free_port, generated_catalog, pct, private_database, stop_server, wait_ready



def slow_clients(url: str, port: int, n_slow: int, n_requests: int = 400, max_s: float = 90.0) -> dict:
    """4 normal clients send ``n_requests`` in all (or what ``max_s`` allows: starved requests
    each wait out the client's 10 s timeout) while ``n_slow`` connections trickle a body."""
    stop = threading.Event()
    socks = []
    for _ in range(n_slow):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 100000\r\n\r\n")
        socks.append(s)

    def trickle():
        while not stop.is_set():
            for s in socks:
                try:
                    s.send(b"\x00")
                except OSError:
                    pass
            stop.wait(1.0)

    threading.Thread(target=trickle, daemon=True).start()
    time.sleep(1.0)
    lat, errors, kinds, sent = [], 0, {}, 0
    deadline = time.monotonic() + max_s

    def client(i):
        nonlocal errors, sent
        with requests.Session() as http:
            for j in range(n_requests // 4):
                if time.monotonic() > deadline:
                    return
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = http.get(f"{url}/v1/tracks/{1 + (i * 7 + j) % 40}/similar?k=10", timeout=10)
                    what = None if r.status_code == 200 else f"HTTP {r.status_code}"
                except requests.RequestException as exc:
                    what = type(exc).__name__
                if what is None:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors += 1
                    kinds[what] = kinds.get(what, 0) + 1

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(client, range(4)))
    stop.set()
    for s in socks:
        s.close()
    return {"slow_connections": n_slow, "requests": sent, "errors": errors, "error_kinds": kinds,
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}


def kills(url: str, n_uploads: int, seed: int) -> dict:
    """``n_uploads`` uploads of new audio, one at a time, each with a SIGKILL of the worker that
    serves it at a random moment of the request. The worker's pid comes from ``/readyz`` on the
    same keep-alive connection the upload then uses; the kill lands uniformly within 1.5 × the
    median unkilled upload time (the body read, the decode, the model, the file write, the
    catalog commit, the answer, or just after it). An upload the kill cut off is sent again,
    unkilled, until it is answered: 200 says the killed request had committed it, 201 that it
    had not. gunicorn starts a new worker after every kill; requests wait for a ready one."""
    rng = random.Random(seed)
    headers = {"Content-Type": "audio/wav", "X-API-Key": KEY}
    answered: dict[int, int] = {}  # upload number -> track id
    times = []
    for j in range(5):  # the time an upload takes, unkilled (their tracks count as answered uploads)
        t0 = time.perf_counter()
        r = requests.post(url + "/v1/tracks", data=clip(9_000 + j), headers=headers, timeout=60)
        r.raise_for_status()
        times.append(time.perf_counter() - t0)
        answered[-1 - j] = r.json()["id"]
    window = 1.5 * float(np.median(times))
    when = {"answered_before_the_kill": 0, "cut_after_the_commit": 0, "cut_before_the_commit": 0}
    t_start = time.monotonic()

    def ready_session() -> tuple[requests.Session, int]:
        while True:
            http = requests.Session()
            try:
                r = http.get(url + "/readyz", timeout=30)
                if r.status_code == 200:
                    return http, r.json()["worker_pid"]
            except requests.RequestException:
                pass
            http.close()
            time.sleep(0.3)  # every worker is starting again

    for i in range(n_uploads):
        data = clip(10_000 + i)
        http, pid = ready_session()
        timer = threading.Timer(rng.uniform(0.0, window), os.kill, (pid, signal.SIGKILL))
        timer.start()
        try:
            r = http.post(url + "/v1/tracks", data=data, headers=headers, timeout=60)
        except requests.RequestException:
            r = None
        timer.join()
        http.close()
        if r is not None and r.status_code in (200, 201):
            answered[i] = r.json()["id"]
            when["answered_before_the_kill"] += 1
            continue
        while i not in answered:  # the resend, on whichever worker is ready
            http, _ = ready_session()
            try:
                again = http.post(url + "/v1/tracks", data=data, headers=headers, timeout=60)
                if again.status_code in (200, 201):
                    answered[i] = again.json()["id"]
                    when["cut_after_the_commit" if again.status_code == 200 else "cut_before_the_commit"] += 1
            except requests.RequestException:
                pass
            http.close()
    return {"uploads": n_uploads, "kills": n_uploads, **when, "kill_window_ms": round(window * 1000, 1),
            "seconds": round(time.monotonic() - t_start, 1), "answered_ids": answered}


def consistency(url: str, home: Path, answered: dict[int, int], n_ingested: int, catalog_url: str = "") -> dict:
    from recommender.catalog import Catalog

    cat = Catalog(catalog_url or home / "catalog.sqlite3")
    ids = set(cat.ids().tolist())
    tracks = cat.get_many(sorted(ids))
    uploads = home / "uploads"
    files = {str(p.resolve()) for p in uploads.rglob("*") if p.is_file() and not p.name.startswith(".upload.")}
    temps = [p for p in uploads.rglob(".upload.*")]
    referenced = {str(Path(p).resolve()) for t in tracks.values() for p in t.paths if str(p).startswith(str(uploads))}
    cat.close()
    indexes = {}
    for _ in range(40):  # one connection: a query brings that worker's index in step, then /readyz reports it
        with requests.Session() as http:
            http.get(f"{url}/v1/tracks/{min(ids)}/similar?k=1", timeout=30)
            r = http.get(url + "/readyz", timeout=30).json()
            indexes[r.get("worker_pid")] = r["index"].get("tracks")
    return {"catalog_tracks": len(ids), "upload_files": len(files), "orphan_files": len(files - referenced),
            "rows_without_file": len(referenced - files), "temp_files": len(temps),
            "lost_answered_uploads": sum(1 for tid in answered.values() if tid not in ids),
            "expected_tracks": n_ingested + len(set(answered.values())),
            "worker_index_counts": indexes}


def bursts(url: str, n_bursts: int = 10, width: int = 8) -> dict:
    created, files_ok = [], 0
    for b in range(n_bursts):
        data = clip(50_000 + b)

        def up(_):
            return requests.post(url + "/v1/tracks", data=data, timeout=60,
                                 headers={"Content-Type": "audio/wav", "X-API-Key": KEY, "Connection": "close"})

        with ThreadPoolExecutor(width) as pool:
            rs = list(pool.map(up, range(width)))
        created.append(sum(r.status_code == 201 for r in rs))
        files_ok += len({r.json()["id"] for r in rs if r.ok}) == 1
    return {"bursts": n_bursts, "width": width, "created_per_burst": created, "one_id_per_burst": files_ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--uploads", type=int, default=100, help="uploads, each with a SIGKILL of its worker (default 100)")
    ap.add_argument("--slow", default="8,32,64")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--web-server", default="uvicorn", choices=["uvicorn", "gthread"],
                    help="SONICSORT_WEB_SERVER of the server under test (default uvicorn, the slow-client front)")
    ap.add_argument("--postgresql", metavar="URL", nargs="?", const="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="the catalog in a new database on this PostgreSQL server (dropped afterwards; "
                         "default server %(const)s) instead of a SQLite file")
    ap.add_argument("--out", default="benchmarks/results/faults.json")
    args = ap.parse_args()

    catalog_url, drop = "", None
    if args.postgresql:
        catalog_url, drop = private_database(args.postgresql)
    try:
        return run(args, catalog_url)
    finally:
        if drop:
            drop()


def run(args, catalog_url: str) -> int:
    tmp, home, env = generated_catalog("sonicsort-faults-", args.web_server, catalog_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = open(tmp / "serve.log", "w")  # a pipe nobody reads would fill and stall the master
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers",
                             str(args.workers), "--threads", str(args.threads)], env=env,
                            stdout=log_file, stderr=subprocess.STDOUT, text=True)
    results: dict = {"workers": args.workers, "threads": args.threads, "web_server": args.web_server,
                     "catalog": "postgresql" if catalog_url else "sqlite"}
    try:
        wait_ready(url, proc)
        results["baseline"] = slow_clients(url, port, 0)
        results["slow_clients"] = [slow_clients(url, port, int(n)) for n in args.slow.split(",")]
        for r in [results["baseline"], *results["slow_clients"]]:
            print(f"slow clients {r['slow_connections']:>3}: /similar p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                  f"errors {r['errors']} of {r['requests']} {r['error_kinds'] or ''}", flush=True)
        k = kills(url, args.uploads, args.seed)
        wait_ready(url, proc)
        answered = k.pop("answered_ids")
        results["kills"] = k
        print(f"kills: {k['kills']} workers killed at random moments of {k['uploads']} uploads: "
              f"{k['answered_before_the_kill']} answered first, {k['cut_after_the_commit']} cut after the commit, "
              f"{k['cut_before_the_commit']} before it ({k['seconds']} s)", flush=True)
        results["consistency_after_kills"] = c = consistency(url, home, answered, 40, catalog_url)
        print(f"consistency right after the kills: {c}", flush=True)
        # what the last minute's kills left is younger than the sweep's 60 s grace (it could be
        # an upload in flight); past it, `stats --repair` removes it and says what it removed
        time.sleep(61)
        rep = subprocess.run([sys.executable, "-m", "api.cli", "stats", "--repair", "--json"], env=env,
                             capture_output=True, text=True, check=True)
        removed = json.loads(rep.stdout)["repair"]["removed"]
        results["repair_removed"] = len(removed)
        results["consistency_after_repair"] = c = consistency(url, home, answered, 40, catalog_url)
        print(f"stats --repair removed {len(removed)} files; then: {c}", flush=True)
        results["bursts"] = bursts(url)
        print(f"bursts: {results['bursts']}", flush=True)
    finally:
        stop_server(proc)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
