"""Load benchmark of the HTTP API under gunicorn (`sonicsort serve`) on this machine.

    python -m benchmarks.perf.api_load [--data ../shared/data] [--pad 10000] [--clients 32] [--seconds 20]
                                  [--servers 2x4,2x4:gthread,2x8,2x4:noanswers] [--client auto|wrk|python]
                                  [--out benchmarks/results/api-load.json]

1. Builds a catalog in a temporary home: the data folder's real tracks (ingested, cache off),
   plus ``--pad`` synthetic tracks (random unit embeddings) so the index has a realistic size.
2. For each server shape (``--servers``: workers x threads, the uvicorn front unless
   ``:gthread``), starts ``sonicsort serve`` and waits until ``/readyz`` answers 200 on every
   worker; then 3 and 4 against it.
3. ``/v1/tracks/{id}/similar?k=10`` with ``--clients`` concurrent keep-alive clients for
   ``--seconds`` (random catalog ids): requests/s, p50/p90/p99 latency, errors. With wrk
   installed (Debian's ``wrk``) it drives the load, else a Python thread pool does.
4. ``/v1/predict?k=10``, one client: each real file once (a cache miss: decode, features,
   model, search) and again (a hit: the worker's stored answer, see ``api/fastpath.py``):
   median and p99 of each, and the ratio of the medians, in two orders (all misses then all
   hits; or each hit right after its miss). Then ``k=0`` on other files. A shape with ``:noanswers``
   (e.g. ``2x4:noanswers``) runs only this step, with ``SONICSORT_ANSWER_CACHE_MB=0``: the
   hit is then the prediction cache's (no model work, but the search and serialising).

5. The HTTP floor: a WSGI app that only reads the body, under the same gunicorn settings: a GET
   and a POST of each file. No hit can be faster than that POST.

Targets: /similar p99 under 50 ms at 32 clients; a /predict hit at least 50× faster
than a miss. The machine is shared and noisy: figures from one run are compared with each other.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


from ..harness import build_catalog, closed_loop, free_port, pct, wait_ready

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def load_python(host: str, port: int, ids: list[int], clients: int, seconds: float,
                more: tuple[tuple[str, int], ...] = ()) -> dict:
    """``clients`` keep-alive clients on random ids; with ``more`` nodes, client n on node n mod all."""
    return {"client": "python threads",
            **closed_loop([(host, port), *more], clients, seconds,
                          lambda rnd: f"/v1/tracks/{rnd.choice(ids)}/similar?k=10")}


WRK_SCRIPT = """
local ids = {%s}
math.randomseed(7)
request = function()
  return wrk.format("GET", "/v1/tracks/" .. ids[math.random(#ids)] .. "/similar?k=10")
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %%d, \\"errors\\": %%d, \\"non2xx\\": %%d, \\"p50_us\\": %%d, \\"p90_us\\": %%d, \\"p99_us\\": %%d, \\"max_us\\": %%d, \\"duration_us\\": %%d}\\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    summary.duration))
end
"""


def load_wrk(url: str, ids: list[int], clients: int, seconds: float, tmp: Path) -> dict:
    script = tmp / "similar.lua"
    script.write_text(WRK_SCRIPT % ",".join(map(str, ids)))
    p = subprocess.run(["wrk", "-t", "2", "-c", str(clients), "-d", f"{int(seconds)}s", "-s", str(script), url],
                       capture_output=True, text=True)
    line = next((l for l in p.stdout.splitlines() if l.startswith("JSON ")), None)
    if line is None:
        sys.exit(f"wrk failed: {p.stdout}\n{p.stderr}")
    d = json.loads(line[5:])
    return {"client": "wrk (2 threads)", "requests": d["requests"], "errors": d["errors"] + d["non2xx"],
            "requests_per_s": round(d["requests"] / (d["duration_us"] / 1e6), 1),
            "p50_ms": round(d["p50_us"] / 1000, 2), "p90_ms": round(d["p90_us"] / 1000, 2),
            "p99_ms": round(d["p99_us"] / 1000, 2), "max_ms": round(d["max_us"] / 1000, 2)}


def predict_hit_miss(host: str, port: int, files: list[Path], k: int = 10) -> dict:
    """Each file as a miss (never asked before) and as a hit (asked before), one client.

    Two orders, both reported: ``passes`` sends every file once, then every file again (the
    issue's "upload once, and the same audio again": each figure from a steady run of its
    kind); ``interleaved`` sends each file twice in a row, so every hit runs right after a
    miss on the same worker, with the CPU caches full of decoding and model work.
    """
    conn = http.client.HTTPConnection(host, port, timeout=120)
    server: dict[str, list[float]] = {}  # the app's own time (Server-Timing), without HTTP and upload
    errors = 0

    def post(data: bytes, kind: str) -> float | None:
        nonlocal errors
        t0 = time.perf_counter()
        conn.request("POST", f"/v1/predict?k={k}", body=data, headers={"Content-Type": "application/octet-stream"})
        r = conn.getresponse()
        body = r.read()
        ms = (time.perf_counter() - t0) * 1000
        if r.status != 200 or json.loads(body)["cached"] != (kind == "hit"):
            errors += 1
            return None
        timing = r.getheader("Server-Timing", "")
        if "dur=" in timing:
            server[kind].append(float(timing.split("dur=")[1].split(",")[0]))
        return ms

    half = len(files) // 2
    datas = [f.read_bytes() for f in files]
    out: dict = {"files": len(files), "k": k}
    for order, chosen in (("passes", datas[:half]), ("interleaved", datas[half:])):
        times = {"miss": [], "hit": []}
        server = {"miss": [], "hit": []}
        if order == "passes":
            steps = [(d, "miss") for d in chosen] + [(d, "hit") for d in chosen]
        else:
            steps = [(d, kind) for d in chosen for kind in ("miss", "hit")]
        for data, kind in steps:
            ms = post(data, kind)
            if ms is not None:
                times[kind].append(ms)
        miss, hit = statistics.median(times["miss"]), statistics.median(times["hit"])
        out[order] = {"files": len(chosen), "miss_p50_ms": round(miss, 2), "miss_p99_ms": round(pct(times["miss"], 99), 2),
                      "hit_p50_ms": round(hit, 3), "hit_p99_ms": round(pct(times["hit"], 99), 3),
                      "hit_speedup": round(miss / hit, 1),
                      "server_miss_p50_ms": round(statistics.median(server["miss"]), 3),
                      "server_hit_p50_ms": round(statistics.median(server["hit"]), 3),
                      "server_hit_speedup": round(statistics.median(server["miss"]) / statistics.median(server["hit"]), 1)}
    out["errors"] = errors
    return out


def floor_app(environ, start_response):
    """The least a WSGI app can do with a request: read the body, answer a small JSON."""
    n = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(n) if n else b""
    out = json.dumps({"bytes": len(body)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


def floor_asgi():
    """``floor_app`` behind the uvicorn front of ``sonicsort serve`` (``api.asgi``)."""
    from api.asgi import asgi_app

    return asgi_app(floor_app, threads=4, max_bytes=50 * 2**20, body_timeout_s=60)


def http_floor(files: list[Path], env: dict, web: str = "uvicorn") -> dict:
    """What HTTP and gunicorn cost on this machine, without sonicsort: ``floor_app`` under the
    same gunicorn settings (``web``: the uvicorn front or gthread; keep-alive), one client, a
    GET and a POST of each file."""
    port = free_port()
    worker = (["--worker-class", "api.serve.Worker", "api_load:floor_asgi()"] if web == "uvicorn"
              else ["--worker-class", "gthread", "--threads", "4", "api_load:floor_app"])
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "--chdir", str(Path(__file__).parent),
                             "--workers", "1", "--keep-alive", "5", "--bind", f"127.0.0.1:{port}", *worker],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        get, post = [], []
        for f in files * 3:
            data = f.read_bytes()
            for kind, out in (("GET", get), ("POST", post)):
                t0 = time.perf_counter()
                conn.request(kind, "/", body=data if kind == "POST" else None,
                             headers={"Content-Type": "application/octet-stream"} if kind == "POST" else {})
                conn.getresponse().read()
                out.append((time.perf_counter() - t0) * 1000)
        return {"get_p50_ms": round(statistics.median(get), 3), "post_file_p50_ms": round(statistics.median(post), 3),
                "mean_file_kb": round(sum(f.stat().st_size for f in files) / len(files) / 1000, 1)}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a folder of real audio (e.g. ../shared/data); default: generated clips")
    ap.add_argument("--pad", type=int, default=10_000, help="synthetic catalog tracks added (default 10000)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--servers", default="2x4,2x4:gthread,2x8,2x4:noanswers",
                    help="server shapes to measure in turn, WORKERSxTHREADS[:VARIANT[+VARIANT]], comma-separated "
                         "(default 2x4,2x4:gthread,2x8,2x4:noanswers; 2x4 with the uvicorn front is sonicsort serve's "
                         "default; :gthread runs gunicorn's threaded workers instead; :noanswers measures only /predict, "
                         "without the answer cache)")
    ap.add_argument("--predict-files", type=int, default=120,
                    help="real files for each /predict hit/miss run, half for each order (default 120)")
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--out")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sonicsort-load-"))
    home = tmp / "home"
    data = args.data
    if not data:
        from recommender.demo import write_demo_library

        data = str(tmp / "clips")
        write_demo_library(Path(data), per_style=10, seconds=30.0)
    env = {**os.environ, "SONICSORT_HOME": str(home), "SONICSORT_CACHE_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:",
           "SONICSORT_REDIS_URL": args.redis}
    proc = None
    try:
        t0 = time.perf_counter()
        ids, files = build_catalog(home, data, args.pad, env)
        print(f"catalog: {len(ids)} tracks ({len(files)} real, {args.pad} synthetic) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
        runs = []
        for shape in args.servers.split(","):
            shape, _, variant = shape.partition(":")
            workers, threads = (int(x) for x in shape.lower().split("x"))
            variants = set(variant.split("+")) - {""}
            if variants - {"noanswers", "gthread"}:
                sys.exit(f"unknown server variant in {shape}:{variant}; choose noanswers, gthread")
            answers = "noanswers" not in variants
            web = "gthread" if "gthread" in variants else "uvicorn"
            shape = f"{shape} {web}"
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port),
                                     "--workers", str(workers), "--threads", str(threads)],
                                    env={**env, "SONICSORT_WEB_SERVER": web,
                                         **({} if answers else {"SONICSORT_ANSWER_CACHE_MB": "0"})},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_ready(url, proc, workers=workers)
            similar = None
            if answers:
                # warm both workers' caches of catalog rows and index pages, not measured
                load_python("127.0.0.1", port, ids, 4, 2.0)
                similar = (load_wrk(url, ids, args.clients, args.seconds, tmp) if use_wrk
                           else load_python("127.0.0.1", port, ids, args.clients, args.seconds))
                similar["clients"] = args.clients
                similar["seconds"] = args.seconds
                print(f"{shape} /similar: {similar}", file=sys.stderr)
            pred = predict_hit_miss("127.0.0.1", port, files[: args.predict_files])
            print(f"{shape} /predict: {pred}", file=sys.stderr)
            # the prediction alone (k=0, no recommendations), on files not asked before
            pred0 = predict_hit_miss("127.0.0.1", port, files[args.predict_files: 2 * args.predict_files], k=0)
            print(f"{shape} /predict?k=0: {pred0}", file=sys.stderr)
            proc.terminate()
            proc.wait(30)
            proc = None
            env["SONICSORT_CACHE_PREFIX"] = f"bench-{uuid.uuid4().hex[:8]}:"  # the next server starts cold
            targets = {"predict_hit_50x_faster": pred["passes"]["hit_speedup"] >= 50 and pred["errors"] == 0,
                       "predict_hit_50x_faster_interleaved": pred["interleaved"]["hit_speedup"] >= 50,
                       "predict_hit_50x_faster_in_the_app": pred["passes"]["server_hit_speedup"] >= 50}
            if similar:
                targets["similar_p99_under_50ms"] = similar["p99_ms"] < 50 and similar["errors"] == 0
            runs.append({"server": {"workers": workers, "threads": threads, "web_server": web, "backend": "hnsw",
                                    "answer_cache": answers},
                         "similar": similar, "predict": pred, "predict_k0": pred0, "targets": targets})
        floor = {web: http_floor(files[: args.predict_files], env, web) for web in ("uvicorn", "gthread")}
        floor["best_hit_speedup_over_http"] = round(runs[0]["predict"]["passes"]["miss_p50_ms"]
                                                    / floor[runs[0]["server"]["web_server"]]["post_file_p50_ms"], 1)
        print(f"HTTP floor (gunicorn, no sonicsort): {floor}", file=sys.stderr)
        result = {"machine": {"cpus": os.cpu_count()}, "catalog_tracks": len(ids), "real_tracks": len(files),
                  "runs": runs, "http_floor": floor}
        text = json.dumps(result, indent=1)
        print(text)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
