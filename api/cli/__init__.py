"""The ``sonicsort`` command line: the second front door, beside HTTP, on the same facade.

Each command group is one module that adds its subcommands (``add_commands``):
``model`` (predict, train, evaluate), ``serving`` (serve, demo), ``catalog`` (ingest,
worker, reindex, reembed, tracks, stats), ``reco`` (similar, playlist, path) and ``bench``
(bench ann). Every command prints readable text by default and JSON with ``--json``; bad
input ends with one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

# TensorFlow's C++ start-up chatter is not for our users
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from .common import EXIT_ERROR, CliError  # noqa: E402

GROUPS = ("model", "serving", "catalog", "reco", "bench", "users")  # in the order --help lists them

ENVIRONMENT = (
    "Environment: SONICSORT_HOME (data folder, default ~/.sonicsort), SONICSORT_MODEL_DIR "
    "(model bundle, default: the one shipped in the package), SONICSORT_CATALOG_URL (default: "
    "SONICSORT_HOME/catalog.sqlite3; postgresql://user@host/db for a catalog machines share), "
    "SONICSORT_BACKEND ({backends}), SONICSORT_MILVUS_URI (the milvus backend's server, "
    "http://host:19530; default: milvus-lite in SONICSORT_HOME/milvus.db), "
    "SONICSORT_REDIS_URL (prediction cache, default redis://127.0.0.1:6379/0), SONICSORT_CACHE_TTL_S, "
    "SONICSORT_CACHE_PREFIX, SONICSORT_ON_MODEL_MISMATCH (refuse|reembed), SONICSORT_INGEST_WORKERS, "
    "SONICSORT_FIND_DUPLICATES (1|0: fingerprint new audio and find near-duplicates, default 1), "
    "SONICSORT_MAX_DURATION_S, SONICSORT_MAX_CHANNELS, SONICSORT_MAX_SAMPLE_RATE, "
    "SONICSORT_MAX_DECODED_SAMPLES (what one file may cost to decode); for serve: SONICSORT_HOST, SONICSORT_PORT, SONICSORT_WEB_WORKERS, "
    "SONICSORT_WEB_THREADS, SONICSORT_WEB_SERVER (uvicorn|gthread, default uvicorn), SONICSORT_BODY_TIMEOUT_S, "
    "SONICSORT_API_KEY (needed by changes through the API), SONICSORT_UPLOADS (where uploaded audio is "
    "kept, default SONICSORT_HOME/uploads; one shared folder for nodes on one catalog), "
    "SONICSORT_MAX_UPLOAD_MB (default 50), SONICSORT_ANSWER_CACHE_MB (whole /v1/predict answers, "
    "and /rest answers until the catalog's next write, kept per worker: default 32 each, 0: off), SONICSORT_HEADER_TIMEOUT_S (a request head is due this long "
    "after connecting, default 10), SONICSORT_MAX_CONNECTIONS (per worker, default 1000, lowered to fit "
    "the file limit), SONICSORT_BODY_MEMORY_MB (bodies kept in memory per worker, default 64; the rest "
    "wait in SONICSORT_HOME/tmp), SONICSORT_REQUEST_BUDGET_S (one request's work, default 10), "
    "SONICSORT_HEAVY_REQUESTS (long playlists, paths and re-rankings at once per process, default 1), "
    "SONICSORT_SECRET_KEY (encrypts the users' passwords; default: the key file SONICSORT_HOME/secret.key).")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from recommender.config import backend_names

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    common.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser = argparse.ArgumentParser(
        prog="sonicsort", parents=[common],
        description="Genre-aware music recommendation: genre prediction, embeddings, ANN search.",
        epilog=ENVIRONMENT.format(backends="|".join(backend_names())))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in GROUPS:
        importlib.import_module(f"{__name__}.{group}").add_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    from recommender.config import Settings
    from recommender.errors import ERROR_KINDS

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("numba", "matplotlib", "h5py", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings.from_env()
    try:
        return args.func(args, settings)
    except (CliError, *ERROR_KINDS) as exc:
        print(f"sonicsort: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("sonicsort: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        # last guard: file system and value problems still get one line, not a traceback
        print(f"sonicsort: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


__all__ = ["CliError", "build_parser", "main"]
