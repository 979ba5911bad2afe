"""The long cases of the second hostile round, against a real `sonicsort serve` (2 workers ×
4 threads, uvicorn front) at a file limit of 1,024, on a catalog of 10,000 tracks (40 clips
would not make the costly requests costly: the rest are synthetic unit vectors, as in
``benchmarks.perf.api_load``). Not part of CI; ``tests/test_hostile*.py`` hold the CI-sized versions.

1. Costly requests: 8 clients (in a process of their own) loop the costliest requests the
   API takes (``/similar`` with k=100, MMR and an artist cap; a 1,000-track playlist; a
   1,000-track path), back to back and ignoring Retry-After, while 4 clients call plain
   ``/v1/tracks/ID/similar``: the plain requests' p50/p99 and errors, and what the costly
   ones were answered (200, or 503 from the heavy-request gate or the time budget); first
   the same plain load alone, as the same-run reference.
2. Silent connections: 3,000 connections that send nothing, then probes of ``/healthz`` and
   ``/similar``: their p99 and errors, and how many lines the server logged meanwhile.
3. Stalled bodies: 40 uploads that declare 49 MB, send 45 MB and stall: how much the workers
   grew while they wait, and after they leave.

    python -m benchmarks.faults.hostile --out benchmarks/results/hostile.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

from ..harness import build_catalog, free_port, pct, stop_server, wait_ready


def plain_load(url: str, ids: list[int], stop: threading.Event, out: list, errors: list) -> None:
    with requests.Session() as s:
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                r = s.get(f"{url}/v1/tracks/{ids[i % len(ids)]}/similar?k=10", timeout=10)
                (out if r.status_code == 200 else errors).append(time.perf_counter() - t0 if r.ok else r.status_code)
            except requests.RequestException as exc:
                errors.append(type(exc).__name__)
            i += 7


def heavy_clients(url: str, ids: list[int], seconds: float, n: int, out) -> None:
    """In a process of its own (so the plain clients' timings do not wait for its threads):
    ``n`` clients that send the costliest requests back to back for ``seconds``."""
    heavy = [("GET", f"/v1/tracks/{ids[0]}/similar?k=100&mmr_lambda=0.5&artist_cap=100", None),
             ("POST", "/v1/playlists", {"seeds": [ids[1]], "length": 1000, "artist_cap": 1000}),
             ("POST", "/v1/paths", {"from": ids[2], "to": ids[-1], "length": 1000})]
    answers: dict[str, int] = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def loop(k: int) -> None:
        with requests.Session() as s:
            while time.monotonic() < end:
                method, path, body = heavy[k % 3]
                try:
                    r = s.request(method, url + path, json=body, timeout=60)
                    key = f"{path.split('?')[0].rsplit('/', 1)[-1]} {r.status_code}"
                except requests.RequestException as exc:
                    key = type(exc).__name__
                with lock:
                    answers[key] = answers.get(key, 0) + 1

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(answers)


def costly(url: str, ids: list[int], seconds: float, n_costly: int = 8) -> dict:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    heavy = ctx.Process(target=heavy_clients, args=(url, ids, seconds, n_costly, out))
    heavy.start()
    time.sleep(1.0)  # the heavy clients are under way before the plain ones start timing
    stop = threading.Event()
    plain, plain_errors = [], []
    threads = [threading.Thread(target=plain_load, args=(url, ids, stop, plain, plain_errors)) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(max(1.0, seconds - 2.0))
    stop.set()
    for t in threads:
        t.join(90)
    answers = out.get(timeout=120)
    heavy.join(30)
    return {"plain_requests": len(plain), "plain_p50_ms": round(1000 * pct(plain, 50), 1),
            "plain_p99_ms": round(1000 * pct(plain, 99), 1), "plain_errors": len(plain_errors),
            "costly_clients": n_costly, "costly_answers": answers, "seconds": seconds}


def probes(url: str, ids: list[int], n: int = 100) -> tuple[list[float], list]:
    times, errors = [], []
    for i in range(n):
        path = "/healthz" if i % 2 else f"/v1/tracks/{ids[i % len(ids)]}/similar?k=10"
        t0 = time.perf_counter()
        try:
            r = requests.get(url + path, timeout=10, headers={"Connection": "close"})
            (times if r.status_code == 200 else errors).append(time.perf_counter() - t0 if r.ok else r.status_code)
        except requests.RequestException as exc:
            errors.append(type(exc).__name__)
    return times, errors


def silent(url: str, port: int, ids: list[int], log: Path, n: int = 3000) -> dict:
    lines_before = len(log.read_text().splitlines())
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            pass
    times, errors = probes(url, ids)
    for s in socks:
        s.close()
    time.sleep(1.0)
    return {"silent_connections": len(socks), "probes": len(times) + len(errors),
            "probe_p50_ms": round(1000 * pct(times, 50), 1), "probe_p99_ms": round(1000 * pct(times, 99), 1),
            "probe_errors": len(errors), "log_lines_meanwhile": len(log.read_text().splitlines()) - lines_before}


def stalled(url: str, port: int, workers: list[psutil.Process], n: int = 40) -> dict:
    def rss() -> float:
        return sum(w.memory_info().rss for w in workers) / 1e6

    before = rss()
    part = os.urandom(1 << 20)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 49000000\r\n\r\n")
        socks.append(s)
    for _ in range(45):  # 45 MB each, a megabyte to every connection in turn
        for s in socks:
            s.sendall(part)
    time.sleep(2.0)
    during = rss()
    times, errors = probes(url, [1], 20)
    for s in socks:
        s.close()
    time.sleep(2.0)
    return {"stalled_bodies": n, "sent_mb_each": 45, "workers_rss_before_mb": round(before),
            "growth_while_stalled_mb": round(during - before, 1), "growth_after_mb": round(rss() - before, 1),
            "probe_errors_meanwhile": len(errors)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the costly requests run (default 30)")
    ap.add_argument("--nofile", type=int, default=1024, help="the server's file limit (default 1024)")
    ap.add_argument("--costly-clients", type=int, default=8, help="clients sending costly requests (default 8)")
    ap.add_argument("--cases", default="costly,silent,stalled", help="which cases to run (default all three)")
    ap.add_argument("--out", default="benchmarks/results/hostile.json")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sonicsort-hostile-"))
    home = tmp / "home"
    env = {**os.environ, "SONICSORT_HOME": str(home), "SONICSORT_REDIS_URL": "none", "TF_CPP_MIN_LOG_LEVEL": "3"}
    ids, _ = build_catalog(home, None, args.tracks, env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "serve.log"
    log_file = open(log, "w")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))

    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "2",
                             "--threads", "4"], env=env, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=limit)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 10_000), hard))
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
                     "date": time.strftime("%Y-%m-%d"), "tracks": len(ids), "server_nofile": args.nofile,
                     "workers": 2, "threads": 4}
    try:
        wait_ready(url, proc, workers=2)
        workers = psutil.Process(proc.pid).children()
        cases = args.cases.split(",")
        if "costly" in cases:
            results["costly_baseline"] = c = costly(url, ids, args.seconds / 2, 0)  # the same server, no costly clients
            print(f"baseline: plain /similar p50 {c['plain_p50_ms']} ms, p99 {c['plain_p99_ms']} ms, "
                  f"{c['plain_errors']} errors of {c['plain_requests']}", flush=True)
            results["costly"] = c = costly(url, ids, args.seconds, args.costly_clients)
            print(f"costly: plain /similar p50 {c['plain_p50_ms']} ms, p99 {c['plain_p99_ms']} ms, "
                  f"{c['plain_errors']} errors of {c['plain_requests']}; costly answers {c['costly_answers']}",
                  flush=True)
        if "silent" in cases:
            results["silent"] = s = silent(url, port, ids, log)
            print(f"silent: {s}", flush=True)
        if "stalled" in cases:
            results["stalled"] = b = stalled(url, port, workers)
            print(f"stalled: {b}", flush=True)
    finally:
        stop_server(proc)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
