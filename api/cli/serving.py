"""Serving commands: ``serve`` (the HTTP API under gunicorn) and ``demo`` (a demo library, served)."""

from __future__ import annotations

import argparse
import os
import logging
import shlex
import sys
from pathlib import Path

from .common import EXIT_OK, MODEL_HELP, CliError, emit

log = logging.getLogger("sonicsort")


def add_commands(sub, common) -> None:
    from recommender.config import backend_names

    p = sub.add_parser("demo", parents=[common], help="ingest a demo library and serve it (what `make demo` runs)",
                       description="Build a demo library in SONICSORT_HOME/demo: your own music folder (--music), "
                                   "else generated clips (not music). Ingest it, then serve the API under gunicorn "
                                   "and print the URL and example curl calls. Uses Redis when one answers, else "
                                   "an in-process cache (with a warning).")
    p.add_argument("--music", nargs="+", metavar="DIR", help="music folder(s) to ingest instead of generated clips")
    p.add_argument("--per-style", type=int, default=6, help="generated clips per style (default 6; 6 styles)")
    p.add_argument("--port", type=int, default=None, help="port (default SONICSORT_PORT or 8000, else the next free one)")
    p.add_argument("--workers", type=int, default=None, help="gunicorn workers (default SONICSORT_WEB_WORKERS or 2)")
    p.add_argument("--no-serve", action="store_true", help="build and ingest the library, print a summary, exit")
    p.add_argument("--model", help=MODEL_HELP)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", parents=[common], help="serve the HTTP API under gunicorn",
                       description="Serve the catalog in SONICSORT_HOME over HTTP (JSON API under /v1, /healthz, "
                                   "/readyz, /metrics, /openapi.json, docs at /docs). Each worker loads the model "
                                   "once; every worker follows catalog changes (ingest, uploads) before its next "
                                   "query.")
    p.add_argument("--host", default=None, help="address to listen on (default SONICSORT_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default SONICSORT_PORT or 8000)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default SONICSORT_WEB_WORKERS or 2)")
    p.add_argument("--threads", type=int, default=None, help="threads per worker (default SONICSORT_WEB_THREADS or 4)")
    p.add_argument("--backend", choices=backend_names(), default=None,
                   help="default index backend (default SONICSORT_BACKEND or hnsw)")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument("--model", help=MODEL_HELP)
    p.set_defaults(func=cmd_serve)


def cmd_demo(args: argparse.Namespace, settings) -> int:
    """Build a demo library (the user's folder, else generated clips), ingest it, serve it."""
    from recommender.cache import PredictionCache
    from recommender.demo import write_demo_library

    settings.home = settings.home / "demo"  # never mixed into the user's own catalog
    if args.model:
        settings.model_dir = Path(args.model)
    if args.music:
        roots = [Path(m).expanduser() for m in args.music]
        for r in roots:
            if not r.exists():
                raise CliError(f"{r}: no such folder")
        source = ", ".join(str(r) for r in roots)
    else:
        folder = settings.home / "generated"
        write_demo_library(folder, per_style=args.per_style)
        roots, source = [folder], f"{folder} (generated clips, not music)"
    if settings.redis_url and not settings.redis_url.startswith("memory://"):
        probe = PredictionCache(settings.redis_url)
        if probe.enabled and not probe.ping():
            log.warning("no Redis answers at %s: predictions are cached in each server process's memory "
                        "instead (lost at exit, not shared); start redis-server for the real cache",
                        settings.redis_url)
            settings.redis_url = "memory://"
    report = _ingest_in_child(settings, roots)
    from recommender.service import Service

    svc = Service(settings)  # the catalog's counts need no model
    try:
        stats = svc.stats()
    finally:
        svc.close()
    n, per_genre = stats["tracks"], stats["per_genre"]
    summary = {"home": str(settings.home), "serve_command": f"SONICSORT_HOME={shlex.quote(str(settings.home))} sonicsort serve",
               "source": source, "tracks": n, "per_genre": per_genre, "ingest": report}
    lines = [f"sonicsort demo: {n} tracks from {source}",
             "  predicted genres: " + ", ".join(f"{g} {c}" for g, c in per_genre.items()),
             f"  catalog and index in {settings.home}",
             # the demo keeps its own catalog beside the user's: this is how to reach it again
             f"  serve it again: SONICSORT_HOME={shlex.quote(str(settings.home))} sonicsort serve "
             f"(or sonicsort stats, tracks, similar with that SONICSORT_HOME)"]
    for f in report["failures"][:5]:
        lines.append(f"  could not read {f['path']}: {f['reason']}")
    if args.no_serve:
        emit(args, summary, "\n".join(lines))
        return EXIT_OK
    if n == 0:
        raise CliError(f"no audio found in {source}")
    print("\n".join(lines), file=sys.stderr)
    from recommender.errors import BadRequest

    from ..serve import check_port_free, serve

    if args.port is None:  # the default port taken: the next free one
        for port in range(settings.port, settings.port + 20):
            try:
                check_port_free(settings.host, port)
                settings.port = port
                break
            except BadRequest:
                continue
    else:
        settings.port = args.port
    example = next((str(p) for r in roots for p in sorted(Path(r).rglob("*.flac"))[:1]), "song.mp3")

    def banner(url: str) -> str:
        return "\n".join([
            f"sonicsort is ready: open {url} in a browser   (API docs: {url}/docs, metrics: {url}/metrics)",
            "try:",
            f"  curl -s {url}/v1/genres",
            f"  curl -s '{url}/v1/tracks?q=no.%201&limit=3'",
            f"  curl -s '{url}/v1/tracks/1/similar?k=5&genre_mode=boost'",
            f"  curl -s -F file=@{example} '{url}/v1/predict?k=5'      # again: \"cached\": true",
            f"  curl -s -H 'Content-Type: application/json' -d '{{\"seeds\": [1], \"length\": 8}}' {url}/v1/playlists",
            f"  curl -s -OJ -H 'Content-Type: application/json' -d '{{\"from\": 1, \"to\": 2, \"length\": 6}}' "
            f"'{url}/v1/paths?format=m3u8'",
            f"Subsonic apps: add a user (SONICSORT_HOME={settings.home} sonicsort users add NAME), "
            f"then connect the app to {url}",
            "Ctrl-C stops it."])

    return serve(settings, workers=args.workers, banner=banner)


def _ingest_in_child(settings, roots: list[Path]) -> dict:
    """``recommender.demo.ingest_demo`` in a spawned process: TensorFlow must not be loaded in
    the process gunicorn forks its workers from. Its errors come back as they were raised."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from recommender.demo import ingest_demo

    try:
        from recommender.lifeline import die_with_parent

        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            return pool.submit(ingest_demo, settings, roots).result()
    except BrokenProcessPool:
        raise CliError("the demo's ingest process died (its error is above)") from None


def cmd_serve(args: argparse.Namespace, settings) -> int:
    from ..serve import serve

    for name in ("host", "port", "backend"):
        if getattr(args, name, None) is not None:
            setattr(settings, name, getattr(args, name))
    if args.model:
        settings.model_dir = Path(args.model)
    if args.workers is not None and args.workers < 1 or args.threads is not None and args.threads < 1:
        raise CliError("--workers and --threads must be at least 1")
    return serve(settings, workers=args.workers, threads=args.threads, access_log=args.access_log,
                 banner=lambda url: f"sonicsort is ready: open {url} in a browser (API docs: {url}/docs)")
