"""OpenSubsonic under load: ``getArtists``, ``getAlbum``, ``search3`` and
``getSonicSimilarTracks`` with 16 keep-alive clients against ``sonicsort serve`` (2 workers,
4 threads: its default), one method at a time, on a catalog of 10,000 tracks (real ingested
tracks, generated clips by default, padded with synthetic tracks in albums of 10); then
``stream`` of a 10 MB file, whole and by 1 MB ranges, beside reading the same file.

    python -m benchmarks.perf.subsonic_load [--data ../shared/data] --out benchmarks/results/subsonic-load.json

Targets: p99 under 30 ms for each of the four methods, no errors; streaming at the disk's
speed: at least 0.85 of the rate at which the kernel's bare ``sendfile`` sends the same file
to a loopback socket (the most any file server here can reach; each read after the file's
pages were dropped from the page cache, interleaved in one run). Reading the file into
memory is reported beside them. The methods are measured twice:
with the per-worker answer cache (``SONICSORT_ANSWER_CACHE_MB``, the default) and without.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
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
import urllib.parse
import uuid
from pathlib import Path

import numpy as np

from ..harness import build_catalog, closed_loop, free_port, pct, stop_server, wait_ready

USER, PASSWORD = "bench", "bench-password"


def auth() -> dict[str, str]:
    salt = uuid.uuid4().hex[:8]
    return {"u": USER, "t": hashlib.md5((PASSWORD + salt).encode()).hexdigest(), "s": salt, "v": "1.16.1",
            "c": "bench", "f": "json"}


def load(port: int, queries: list[dict[str, str]], method: str, clients: int, seconds: float) -> dict:
    base = auth()
    return closed_loop([("127.0.0.1", port)], clients, seconds,
                       lambda rnd: f"/rest/{method}?" + urllib.parse.urlencode({**base, **rnd.choice(queries)}),
                       ok=lambda status, body: status == 200 and b'"status":"ok"' in body)


def _evict(path: Path) -> None:
    """Drop the file's pages from the page cache, so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class _BareSendfile:
    """The reference for streaming: the kernel sending the file to a loopback socket with
    ``sendfile`` and nothing else (no HTTP, no Python between the two), what the fastest
    file server on the machine could do at best."""

    def __init__(self, path: Path) -> None:
        import socket
        import threading

        self.path, self.size = path, path.stat().st_size
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn, open(self.path, "rb") as f:
                conn.recv(16)
                sent = 0
                while sent < self.size:
                    sent += os.sendfile(conn.fileno(), f.fileno(), sent, self.size - sent)

    def fetch(self) -> bytes:
        import socket

        with socket.create_connection(("127.0.0.1", self.port)) as conn, conn.makefile("rb") as f:
            conn.sendall(b"go")
            return f.read(self.size)

    def close(self) -> None:
        self.srv.close()


def streaming(port: int, song_id: str, path: Path, rounds: int = 15, *, cold: bool) -> dict:
    """``stream`` of the whole file beside reading it and beside the bare ``sendfile`` of it
    (all three from the disk with ``cold``, else from the page cache; interleaved, each round
    in the same order), then 1 MB ranges."""
    size = path.stat().st_size
    q = urllib.parse.urlencode({**auth(), "id": song_id})
    reads, bare, whole, ranges = [], [], [], []
    reference = _BareSendfile(path)
    for _ in range(rounds):
        if cold:
            _evict(path)
        t0 = time.perf_counter()
        data = path.read_bytes()
        reads.append(time.perf_counter() - t0)
        if cold:
            _evict(path)
        t0 = time.perf_counter()
        if reference.fetch() != data:
            sys.exit("sendfile answered other bytes than the file's")
        bare.append(time.perf_counter() - t0)
        if cold:
            _evict(path)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        t0 = time.perf_counter()
        conn.request("GET", f"/rest/stream?{q}")
        got = conn.getresponse().read()
        whole.append(time.perf_counter() - t0)
        if got != data:
            sys.exit("stream answered other bytes than the file's")
        rnd = random.Random(len(whole))
        for _ in range(10):
            start = rnd.randrange(0, size - 1_000_000)
            t0 = time.perf_counter()
            conn.request("GET", f"/rest/stream?{q}", headers={"Range": f"bytes={start}-{start + 999_999}"})
            r = conn.getresponse()
            part = r.read()
            ranges.append((time.perf_counter() - t0) * 1000)
            if r.status != 206 or part != data[start:start + 1_000_000]:
                sys.exit("a range of stream was not the file's bytes")
        conn.close()
    reference.close()
    mb = size / 1e6
    read_s, bare_s, whole_s = (float(np.median(v)) for v in (reads, bare, whole))
    return {"file_mb": round(mb, 1), "rounds": rounds, "read_mb_per_s": round(mb / read_s, 1),
            "sendfile_mb_per_s": round(mb / bare_s, 1), "stream_mb_per_s": round(mb / whole_s, 1),
            "stream_over_read": round(read_s / whole_s, 3), "sendfile_over_read": round(read_s / bare_s, 3),
            "stream_over_sendfile": round(bare_s / whole_s, 3),
            "range_1mb_p50_ms": round(pct(ranges, 50), 2), "range_1mb_p99_ms": round(pct(ranges, 99), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a folder of real audio to ingest (default: generated 30 s clips)")
    ap.add_argument("--tracks", type=int, default=10_000, help="catalog size after padding (default 10000)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--out")
    args = ap.parse_args()

    import soundfile as sf

    tmp = Path(tempfile.mkdtemp(prefix="sonicsort-subsonic-"))
    home, data = tmp / "home", args.data
    if not data:
        from recommender.demo import write_demo_library

        data = str(tmp / "clips")
        write_demo_library(Path(data), per_style=6, seconds=30.0)
    # one long file to stream: 10 MB of 16-bit stereo WAV (about a minute)
    rng = np.random.default_rng(3)
    long = Path(data) / "long" / "ten-megabytes.wav"
    long.parent.mkdir(parents=True, exist_ok=True)
    sf.write(long, (0.2 * rng.standard_normal((2_500_000, 2))).astype(np.float32), 44_100, subtype="PCM_16")
    args.long_file = long
    env = {**os.environ, "SONICSORT_HOME": str(home), "SONICSORT_REDIS_URL": "none", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = None
    try:
        t0 = time.perf_counter()
        n_real = sum(1 for p in Path(data).rglob("*") if p.is_file())
        ids, files = build_catalog(home, data, max(0, args.tracks - n_real), env)
        db = sqlite3.connect(home / "catalog.sqlite3")  # the synthetic tracks in albums of ten
        db.execute("UPDATE tracks SET album = 'Album ' || (id / 10), album_artist = 'Artist ' || (id / 10 % 997), "
                   "track_no = id % 10 + 1 WHERE sha256 LIKE 'synthetic-%'")
        db.commit()
        db.close()
        subprocess.run([sys.executable, "-m", "api.cli", "users", "add", USER], input=PASSWORD + "\n", text=True,
                       env=env, check=True, capture_output=True)
        print(f"catalog: {len(ids)} tracks ({len(files)} real) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        passes, stream = {}, {}
        for answers in ("on", "off"):
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "2",
                                     "--threads", "4"], env={**env, **({} if answers == "on" else
                                                                      {"SONICSORT_ANSWER_CACHE_MB": "0"})},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_ready(f"http://127.0.0.1:{port}", proc, workers=2)
            passes[f"answer_cache_{answers}"], more = measure(port, args)
            stream.update(more)
            stop_server(proc)
            proc = None
        runs = passes["answer_cache_on"]
        targets = {f"{m}_p99_under_30ms": r["p99_ms"] < 30 and r["errors"] == 0 for m, r in runs.items()}
        # the disk's speed as a socket can take it: the kernel's bare sendfile of the same cold file
        targets["stream_at_disk_speed"] = stream["cold"]["stream_over_sendfile"] >= 0.85
        result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
                  "date": time.strftime("%Y-%m-%d"), "catalog_tracks": len(ids), "real_tracks": len(files),
                  "server": {"workers": 2, "threads": 4}, "clients": args.clients, "seconds": args.seconds,
                  "methods": runs, "methods_answer_cache_off": passes["answer_cache_off"], "stream": stream,
                  "targets": targets}
        text = json.dumps(result, indent=1)
        print(text)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
    finally:
        if proc is not None and proc.poll() is None:
            stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def measure(port: int, args) -> tuple[dict, dict]:
    """The four methods under load, one after another; and, with the answer cache on, streaming."""
    long = args.long_file

    def get(method: str, **params) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", f"/rest/{method}?" + urllib.parse.urlencode({**auth(), **params}))
        return json.loads(conn.getresponse().read())["subsonic-response"]

    albums = get("getAlbumList2", type="alphabeticalByName", size=500)["albumList2"]["album"]
    songs = get("search3", query="", songCount=500, artistCount=0, albumCount=0)["searchResult3"]["song"]
    words = ["album", "artist", "synthetic 1", "blues", "rock", "9", "jazz", "12"]
    plans = {"getArtists": [{}], "getAlbum": [{"id": a["id"]} for a in albums],
             "search3": [{"query": w} for w in words + [f"synthetic {n}" for n in range(1000)]],
             "getSonicSimilarTracks": [{"id": s["id"], "count": 10} for s in songs]}
    runs = {}
    for method, queries in plans.items():
        load(port, queries, method, 4, 2.0)  # both workers build their music index and warm up, not measured
        runs[method] = load(port, queries, method, args.clients, args.seconds)
        print(f"{method}: {runs[method]}", file=sys.stderr)
    more = {}
    long_id = get("search3", query="ten-megabytes", songCount=1)["searchResult3"]["song"][0]["id"]
    if args.long_file is not None:
        more = {"warm": streaming(port, long_id, long, cold=False), "cold": streaming(port, long_id, long, cold=True)}
        print(f"stream: {more}", file=sys.stderr)
        args.long_file = None  # once is enough
    return runs, more


if __name__ == "__main__":
    main()
