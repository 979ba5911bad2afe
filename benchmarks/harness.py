"""What the benchmarks share: free ports, percentiles, generated and padded catalogs, waiting
for a server's workers, private databases. Benchmarks are modules of this package, run as
``python -m benchmarks.perf.api_load`` (and so on) from the repository root."""

from __future__ import annotations

import http.client
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import requests
import soundfile as sf

KEY = "fault-key"  # the API key of the servers the benchmarks start


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def closed_loop(nodes: list[tuple[str, int]], clients: int, seconds: float, path: Callable[[random.Random], str],
                ok: Callable[[int, bytes], bool] = lambda status, body: status == 200,
                body: Callable[[random.Random], dict] | None = None) -> dict:
    """``clients`` keep-alive clients (threads; client n on node n mod len(nodes)), each sending
    the GET ``path(its own Random)`` makes (a POST of the JSON ``body(its Random)`` makes, with
    ``body``) and the next as soon as the answer is read, for ``seconds``: requests, errors
    (``ok`` false, or no answer), requests a second and latency percentiles in ms."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        rnd = random.Random(n)
        host, port = nodes[n % len(nodes)]
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while time.monotonic() < stop:
            target = path(rnd)
            payload = json.dumps(body(rnd)).encode() if body is not None else None
            t0 = time.perf_counter()
            try:
                if payload is None:
                    conn.request("GET", target)
                else:
                    conn.request("POST", target, body=payload, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                if not ok(r.status, r.read()):
                    errors[n] += 1
            except Exception:
                errors[n] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
                continue
            lat[n].append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    every = [x for one in lat for x in one]
    return {"requests": len(every), "errors": sum(errors), "requests_per_s": round(len(every) / wall, 1),
            "p50_ms": round(pct(every, 50), 2), "p90_ms": round(pct(every, 90), 2),
            "p99_ms": round(pct(every, 99), 2), "max_ms": round(max(every), 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clip(seed: int, seconds: float = 2.0, sr: int = 22_050) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * rng.uniform(80, 900) * t) + 0.05 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def generated_catalog(prefix: str, web_server: str, catalog_url: str = "") -> tuple[Path, Path, dict[str, str]]:
    """40 generated 3 s clips ingested into a new home in a temporary folder: (folder, home, the
    environment of a `sonicsort` process on it, with the API key, no cache and ``web_server``;
    the catalog in ``catalog_url`` when given, else the home's SQLite file)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    home, music = tmp / "home", tmp / "music"
    music.mkdir(parents=True)
    for i in range(40):
        (music / f"t{i:02d}.wav").write_bytes(clip(i, seconds=3.0))
    env = {**os.environ, "SONICSORT_HOME": str(home), "SONICSORT_API_KEY": KEY, "SONICSORT_REDIS_URL": "none",
           "SONICSORT_WEB_SERVER": web_server, "TF_CPP_MIN_LOG_LEVEL": "2", "SONICSORT_CATALOG_URL": catalog_url}
    subprocess.run([sys.executable, "-m", "api.cli", "ingest", str(music)], env=env, check=True, capture_output=True)
    return tmp, home, env


def build_catalog(home: Path, data: str | None, pad: int, env: dict) -> tuple[list[int], list[Path]]:
    import numpy as np

    files: list[Path] = []
    if data:
        from embedding.audio import AUDIO_EXTENSIONS

        files = sorted(p for p in Path(data).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        p = subprocess.run([sys.executable, "-m", "api.cli", "ingest", data, "--json"],
                           env={**env, "SONICSORT_REDIS_URL": "none"}, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"ingest failed: {p.stderr[-2000:]}")
    from recommender.catalog import Catalog, NewTrack

    cat = Catalog(home / "catalog.sqlite3")
    version = cat.model_version
    if version is None:
        from embedding import ModelBundle

        version = ModelBundle.load(None).version
    dim = next(iter(cat.vectors(cat.ids()[:1].tolist()).values())).shape[0] if len(cat) else 128
    genres = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
    rng = np.random.default_rng(0)
    batch = []
    for i in range(pad):
        v = rng.normal(size=dim).astype(np.float32)
        v /= np.linalg.norm(v)
        probs = rng.dirichlet(np.ones(len(genres)))
        g = genres[int(np.argmax(probs))]
        batch.append(NewTrack(path=f"/synthetic/{i}.wav", size=0, mtime_ns=0, sha256=f"synthetic-{i:08d}",
                              title=f"Synthetic {i}", artist=f"Artist {i % 997}", album=None, duration_s=30.0,
                              genre=g, probabilities={k: float(p) for k, p in zip(genres, probs)}, embedding=v,
                              model_version=version))
        if len(batch) == 2000 or i == pad - 1:
            cat.add(batch)
            batch = []
    ids = cat.ids().tolist()
    cat.close()
    return ids, files


def wait_ready(url: str, proc, n: int = 8, timeout: float = 180, workers: int | None = None) -> None:
    """Until every worker has answered ``/readyz`` 200 and then ``n`` answers in a row were 200.

    Ready answers in a row alone prove nothing of a worker still loading: the kernel may hand
    every new connection to the same one. ``workers``: how many (default: what serve starts,
    ``SONICSORT_WEB_WORKERS`` or 2)."""
    if workers is None:
        workers = int(os.environ.get("SONICSORT_WEB_WORKERS", "2"))
    deadline, ok, ready = time.monotonic() + timeout, 0, set()
    while (ok < n or len(ready) < workers) and time.monotonic() < deadline:
        try:
            r = requests.get(url + "/readyz", timeout=5, headers={"Connection": "close"})
            pid = r.json().get("worker_pid")
            if r.ok and pid is not None:
                ready.add(pid)
                ok += 1
            else:
                ready.discard(pid)
                ok = 0
        except (requests.RequestException, ValueError):
            ok = 0
            if proc.poll() is not None:
                sys.exit(f"serve exited before it was ready (exit status {proc.returncode})")
        time.sleep(0.2)
    if ok < n or len(ready) < workers:
        sys.exit(f"serve did not get ready ({len(ready)} of {workers} workers answered ready)")


def stop_server(proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Stop a ``sonicsort serve`` the way an operator does (SIGTERM), killing it if it lingers."""
    import signal

    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def private_database(server_url: str):
    """A new database on the server at ``server_url``: (its URL, a function that drops it)."""
    import uuid

    import sqlalchemy as sa

    from recommender.catalog import catalog_url

    name = f"sonicsort_faults_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(catalog_url(server_url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False), drop
