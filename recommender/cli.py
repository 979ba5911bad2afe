"""The ``sonicsort`` command line: a thin front over the same code the API uses.

Every command prints readable text by default and JSON with ``--json``; bad input ends
with one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

# TensorFlow's C++ start-up chatter is not for our users
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from .config import Settings

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("sonicsort")


class CliError(Exception):
    """One clear line for the user."""


def _known_errors() -> tuple[type[BaseException], ...]:
    from embedding.errors import EmbeddingError

    from .errors import RecommenderError

    errors: list[type[BaseException]] = [CliError, EmbeddingError, RecommenderError]
    try:
        from index.errors import VectorIndexError

        errors.append(VectorIndexError)
    except ImportError:  # pragma: no cover - index room absent
        pass
    return tuple(errors)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=None if isinstance(data, dict) and "embedding" in data else 1))
    else:
        print(text)


def _progress(label: str, enabled: bool) -> Callable[[int, int], None] | None:
    if not enabled:
        return None
    from tqdm import tqdm

    bar = {"bar": None}

    def update(done: int, total: int) -> None:
        if bar["bar"] is None:
            bar["bar"] = tqdm(total=total, desc=label, unit="track", file=sys.stderr, leave=False)
        bar["bar"].update(done - bar["bar"].n)
        if done >= total:
            bar["bar"].close()

    return update


def _load_bundle(path: str | None, settings: Settings):
    from embedding import ModelBundle

    return ModelBundle.load(path or settings.model_dir)


# ---------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from embedding.errors import AudioError

    bundle = _load_bundle(args.model, settings)
    results, failed = [], 0
    for f in args.files:
        try:
            p = bundle.predict(f, max_duration_s=settings.max_duration_s)
            results.append({"file": f, **p.to_dict(with_embedding=args.json)})
        except AudioError as exc:
            failed += 1
            results.append({"file": f, "error": str(exc)})
    if args.json:
        print(json.dumps(results if len(results) != 1 else results[0]))
    else:
        for r in results:
            if "error" in r:
                print(f"{r['file']}: error: {r['error']}", file=sys.stderr)
                continue
            top = ", ".join(f"{t['genre']} {t['probability']:.2f}" for t in r["top"])
            flag = "  [silent audio: prediction is meaningless]" if r["is_silent"] else ""
            tags = ", ".join(f"{t['tag']} {t['probability']:.2f}" for t in r["top_tags"])
            print(f"{r['file']}: {r['genre']}  ({top}){flag}" + (f"\n  tags: {tags}" if tags else ""))
    return EXIT_ERROR if failed else EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Build a demo library (the user's folder, else generated clips), ingest it, serve it."""
    from .cache import PredictionCache
    from .demo import write_demo_library

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
    # ingest in a child process: TensorFlow must not be loaded in the process gunicorn forks from
    import subprocess

    env = dict(os.environ, SONICSORT_HOME=str(settings.home), SONICSORT_REDIS_URL=settings.redis_url)
    if settings.model_dir:
        env["SONICSORT_MODEL_DIR"] = str(settings.model_dir)
    cmd = [sys.executable, "-m", "recommender.cli", "ingest", *map(str, roots), "--json"]
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise CliError("the demo's ingest failed (its error is above)") from None
    from .catalog import Catalog

    catalog = Catalog(settings.catalog_path)
    try:
        n, per_genre = len(catalog), catalog.stats()["per_genre"]
    finally:
        catalog.close()
    summary = {"home": str(settings.home), "source": source, "tracks": n, "per_genre": per_genre, "ingest": report}
    lines = [f"sonicsort demo: {n} tracks from {source}",
             "  predicted genres: " + ", ".join(f"{g} {c}" for g, c in per_genre.items()),
             f"  catalog and index in {settings.home}"]
    for f in report["failures"][:5]:
        lines.append(f"  could not read {f['path']}: {f['reason']}")
    if args.no_serve:
        _emit(args, summary, "\n".join(lines))
        return EXIT_OK
    if n == 0:
        raise CliError(f"no audio found in {source}")
    print("\n".join(lines), file=sys.stderr)
    from api.serve import check_port_free, serve

    from .errors import BadRequest

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
            "Ctrl-C stops it."])

    return serve(settings, workers=args.workers, banner=banner)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from api.serve import serve

    for name in ("host", "port", "backend"):
        if getattr(args, name, None) is not None:
            setattr(settings, name, getattr(args, name))
    if args.model:
        settings.model_dir = Path(args.model)
    if args.workers is not None and args.workers < 1 or args.threads is not None and args.threads < 1:
        raise CliError("--workers and --threads must be at least 1")
    return serve(settings, workers=args.workers, threads=args.threads, access_log=args.access_log,
                 banner=lambda url: f"sonicsort is ready: open {url} in a browser (API docs: {url}/docs)")


# ---------------------------------------------------------------- train / evaluate
def _dataset(args: argparse.Namespace):
    from embedding.data import load_dataset

    lists = {k: v for k, v in (("train", args.train_list), ("valid", args.valid_list), ("test", args.test_list)) if v}
    return load_dataset(args.data, split_lists=lists or None, seed=args.seed)


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from embedding.features import FeatureConfig
    from embedding.model import ModelConfig
    from embedding.train import plot_confusion, train_bundle

    try:
        if args.features == "musicnn":
            if args.n_mels is not None or args.segment_seconds is not None or args.segment_hop_seconds is not None:
                raise ValueError("--n-mels and --segment-(hop-)seconds are for --features logmel|mfcc; "
                                 "musicnn patches are fixed (3 s, 96 bands)")
            fc = FeatureConfig.musicnn(max_patches=args.max_patches)
            recipe = ModelConfig.sequence()
        else:
            fc = FeatureConfig(kind=args.features, n_mels=args.n_mels or 96, segment_seconds=args.segment_seconds or 3.0,
                               segment_hop_seconds=args.segment_hop_seconds or 1.5)
            recipe = ModelConfig()
        given = {k: getattr(args, k) for k in ("embedding_dim", "max_epochs", "patience", "learning_rate",
                                                "segments_per_track", "dropout", "time_pool", "mixup")
                 if getattr(args, k) is not None}
        if args.lstm_units is not None:
            given["lstm_units"] = tuple(int(u) for u in args.lstm_units.split(","))
        mc = dataclasses.replace(recipe, seed=args.seed, **given)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.train_on_all and not args.epochs:
        raise CliError("--train-on-all trains a fixed number of epochs: give --epochs N (chosen on a validation split)")
    ds = _dataset(args)
    counts = ds.counts()
    log.info("dataset: %d tracks, %d genres: %s", len(ds.tracks), len(counts),
             "; ".join(f"{g} {c}" for g, c in counts.items()))

    def on_epoch(row: dict[str, Any]) -> None:
        msg = f"epoch {row['epoch']:3d}  loss {row['loss']:.3f}"
        if "valid_balanced_accuracy" in row:
            msg += (f"  valid loss {row['valid_loss']:.3f}  acc {row['valid_accuracy']:.3f}"
                    f"  bal.acc {row['valid_balanced_accuracy']:.3f}{'  *' if row.get('best') else ''}")
        print(f"{msg}  ({row['seconds']} s)", file=sys.stderr, flush=True)

    bundle = train_bundle(ds, feature_config=fc, model_config=mc, train_on_all=args.train_on_all, epochs=args.epochs,
                          workers=args.workers, on_epoch=on_epoch, progress=_progress("features", not args.json),
                          restore_best=not args.last_epoch)
    out = bundle.save(args.out)
    if bundle.evaluation:
        plot_confusion(bundle.evaluation, out / "confusion.png", f"sonicsort {bundle.version} on {bundle.evaluation['split']}")
    ev = bundle.evaluation
    summary = {"model_dir": str(out), "model_version": bundle.version, "genres": bundle.genres,
               "epochs_run": bundle.training["epochs_run"], "n_train_tracks": bundle.training["n_tracks"],
               "evaluation": {k: ev[k] for k in ("split", "n_tracks", "accuracy", "balanced_accuracy", "macro_f1", "baseline") if k in ev}}
    text = f"saved model {bundle.version} to {out} ({bundle.training['epochs_run']} epochs, {bundle.training['n_tracks']} training tracks)"
    if ev:
        text += (f"\n{ev['split']}: {ev['n_tracks']} tracks  accuracy {ev['accuracy']:.3f}  balanced accuracy "
                 f"{ev['balanced_accuracy']:.3f}  macro-F1 {ev['macro_f1']:.3f}")
    _emit(args, summary, text)
    return EXIT_OK


def _format_report(m: dict[str, Any]) -> str:
    lines = [f"model {m.get('model_version', '?')} on split {m['split']}: {m['n_tracks']} tracks"
             + (f" ({m['excluded_training_tracks']} left out: in the model's training data)" if m.get("excluded_training_tracks") else ""),
             f"  BiLSTM               accuracy {m['accuracy']:.3f}  balanced accuracy {m['balanced_accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}"]
    for name, b in (m.get("baseline") or {}).items():
        lines.append(f"  baseline {name:<12} accuracy {b['accuracy']:.3f}  balanced accuracy {b['balanced_accuracy']:.3f}  macro-F1 {b['macro_f1']:.3f}")
    lines.append(f"  {'genre':<12} {'prec':>5} {'recall':>6} {'F1':>5} {'n':>4}")
    for g, s in m["per_genre"].items():
        if s["support"] or s["precision"]:
            lines.append(f"  {g:<12} {s['precision']:5.2f} {s['recall']:6.2f} {s['f1']:5.2f} {s['support']:4d}")
    labels, mat = m["confusion"]["labels"], m["confusion"]["matrix"]
    lines.append("  confusion (rows true, columns predicted): " + " ".join(l[:4] for l in labels))
    for l, row in zip(labels, mat):
        lines.append(f"  {l[:10]:<10} " + " ".join(f"{v:4d}" for v in row))
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from embedding.train import evaluate_bundle, plot_confusion

    bundle = _load_bundle(args.model, settings)
    ds = _dataset(args)
    m = evaluate_bundle(bundle, ds, split=args.split, workers=args.workers, progress=_progress("features", not args.json))
    out = Path(args.out) if args.out else settings.home / "evaluations" / f"{bundle.version}-{m['split']}"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "evaluation.json.tmp"
    tmp.write_text(json.dumps(m, indent=1))
    os.replace(tmp, out / "evaluation.json")
    plot_confusion(m, out / "confusion.png", f"sonicsort {bundle.version} on {m['split']} ({m['n_tracks']} tracks)")
    m_out = {k: v for k, v in m.items() if k != "predictions"}
    m_out["report_dir"] = str(out)
    _emit(args, m_out, _format_report(m) + f"\nsaved {out / 'evaluation.json'} and {out / 'confusion.png'}")
    return EXIT_OK


# ---------------------------------------------------------------- parser
def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="folder <genre>/<audio files>, or a CSV manifest with path,genre[,split,artist]")
    p.add_argument("--train-list", help="split list: one genre/file per line")
    p.add_argument("--valid-list", help="split list: one genre/file per line")
    p.add_argument("--test-list", help="split list: one genre/file per line")
    p.add_argument("--seed", type=int, default=1234, help="seed for the split made when none is given, and training (default 1234)")
    p.add_argument("--workers", type=int, default=None, help="feature extraction processes (default: up to 4)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    common.add_argument("-v", "--verbose", action="store_true", help="log more")

    parser = argparse.ArgumentParser(
        prog="sonicsort", parents=[common],
        description="Genre-aware music recommendation: genre prediction, embeddings, ANN search.",
        epilog="Environment: SONICSORT_HOME (data folder, default ~/.sonicsort), SONICSORT_MODEL_DIR "
               "(model bundle, default: the one shipped in the package), SONICSORT_BACKEND (hnsw|annoy|exact), "
               "SONICSORT_REDIS_URL (prediction cache, default redis://127.0.0.1:6379/0), SONICSORT_CACHE_TTL_S, "
               "SONICSORT_CACHE_PREFIX, SONICSORT_ON_MODEL_MISMATCH (refuse|reembed), SONICSORT_INGEST_WORKERS, "
               "SONICSORT_MAX_DURATION_S; for serve: SONICSORT_HOST, SONICSORT_PORT, SONICSORT_WEB_WORKERS, "
               "SONICSORT_WEB_THREADS, SONICSORT_API_KEY (needed by changes through the API), "
               "SONICSORT_MAX_UPLOAD_MB (default 50), SONICSORT_ANSWER_CACHE_MB (whole /v1/predict answers "
               "kept per worker, default 32, 0: off).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("predict", parents=[common], help="predict the genre and tags of audio files",
                       description="Predict genre and top-3 probabilities, and the top 5 of the front end's tags "
                                   "(musicnn's Last.fm tags of the Million Song Dataset: moods, styles, eras, "
                                   "instruments; not GTZAN labels); with --json all 50 tags and the track embedding.")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, au)")
    p.add_argument("--model", help="model bundle folder (default: SONICSORT_MODEL_DIR or the shipped model)")
    p.set_defaults(func=cmd_predict)

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
    p.add_argument("--model", help="model bundle folder (default: SONICSORT_MODEL_DIR or the shipped model)")
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
    p.add_argument("--backend", choices=["hnsw", "annoy", "exact"], default=None,
                   help="default index backend (default SONICSORT_BACKEND or hnsw)")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument("--model", help="model bundle folder (default: SONICSORT_MODEL_DIR or the shipped model)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("train", parents=[common], help="train a genre model bundle",
                       description="Train the BiLSTM on train, early-stop on valid, score test (or valid) at track level. "
                                   "Default recipe (--features musicnn): the frozen pretrained musicnn front end, then a "
                                   "BiLSTM over the track's patch features. --features logmel|mfcc train the v1 frame "
                                   "BiLSTM instead. Options left out take the chosen recipe's values (v2 / v1).")
    _add_dataset_args(p)
    p.add_argument("--out", required=True, help="folder to write the model bundle to (replaced atomically)")
    p.add_argument("--features", choices=["musicnn", "logmel", "mfcc"], default="musicnn",
                   help="musicnn: pretrained front end + BiLSTM over patches (default); logmel|mfcc: v1 frame BiLSTM")
    p.add_argument("--max-patches", type=int, default=4,
                   help="musicnn: at most N 3 s patches per track, spread over it (default 4; bounds a long track's cost)")
    p.add_argument("--n-mels", type=int, default=None, help="logmel/mfcc: mel bands (default 96)")
    p.add_argument("--segment-seconds", type=float, default=None, help="logmel/mfcc: segment length (default 3)")
    p.add_argument("--segment-hop-seconds", type=float, default=None, help="logmel/mfcc: hop between segments at prediction (default 1.5)")
    p.add_argument("--lstm-units", default=None, help="units per BiLSTM layer, comma-separated (default 32 / 48,48)")
    p.add_argument("--time-pool", type=int, default=None, help="logmel/mfcc: average-pool this many frames before the BiLSTM (default 4)")
    p.add_argument("--mixup", type=float, default=None, help="logmel/mfcc: mixup Beta(a, a) parameter, 0 to disable (default 0.4)")
    p.add_argument("--embedding-dim", type=int, default=None, help="embedding size (default 64 / 128)")
    p.add_argument("--dropout", type=float, default=None, help="dropout rate (default 0.3 / 0.5)")
    p.add_argument("--learning-rate", type=float, default=None, help="Adam learning rate (default 0.001)")
    p.add_argument("--segments-per-track", type=int, default=None,
                   help="random patch sequences (v2) or crops (v1) per training track per epoch (default 8 / 16)")
    p.add_argument("--max-epochs", type=int, default=None, help="upper bound with early stopping (default 30 / 40)")
    p.add_argument("--patience", type=int, default=None, help="epochs without validation improvement before stopping (default 10 / 8)")
    p.add_argument("--epochs", type=int, default=None, help="train exactly N epochs (required with --train-on-all)")
    p.add_argument("--last-epoch", action="store_true",
                   help="keep the last epoch's weights instead of the best on valid (with --epochs: a fixed-length "
                        "run, so the valid figures are not selected on valid)")
    p.add_argument("--train-on-all", action="store_true",
                   help="train on every track of DATA (all splits), for the final model once the recipe is chosen")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", parents=[common], help="score a model at track level beside a classical baseline",
                       description="Track-level accuracy, balanced accuracy, macro-F1, per-genre P/R/F1 and confusion "
                                   "matrix (JSON + PNG), beside MFCC mean/std logistic-regression and k-NN baselines "
                                   "trained on DATA's train split. Tracks the model was trained on are left out.")
    _add_dataset_args(p)
    p.add_argument("--model", help="model bundle folder (default: SONICSORT_MODEL_DIR or the shipped model)")
    p.add_argument("--split", default="auto", choices=["auto", "test", "valid", "train", "all"],
                   help="which tracks to score (default auto: test, else valid, else all)")
    p.add_argument("--out", help="report folder (default SONICSORT_HOME/evaluations/<model>-<split>)")
    p.set_defaults(func=cmd_evaluate)

    _add_catalog_commands(sub, common)
    _add_reco_commands(sub, common)
    _add_bench(sub, common)
    return parser


# ---------------------------------------------------------------- catalog
def _library(args: argparse.Namespace, settings: Settings):
    from .library import Library

    if getattr(args, "model", None):
        settings.model_dir = Path(args.model)
    if getattr(args, "on_model_mismatch", None):
        settings.on_model_mismatch = args.on_model_mismatch
    return Library(settings, backend=getattr(args, "backend", None))


def _add_library_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["hnsw", "annoy", "exact"], default=None,
                   help="index backend (default SONICSORT_BACKEND or hnsw)")
    p.add_argument("--model", help="model bundle folder (default: SONICSORT_MODEL_DIR or the shipped model)")


def _add_catalog_commands(sub, common) -> None:
    p = sub.add_parser(
        "ingest", parents=[common], help="add a music folder to the catalog (incremental)",
        description="Scan folders recursively for wav, flac, ogg, mp3, m4a and au files, read their tags, predict "
                    "genres and embeddings and store them in the catalog (SONICSORT_HOME/catalog.sqlite3) and "
                    "its index. Unchanged files are skipped, moved or duplicated audio is linked to its track, "
                    "undecodable files are reported and skipped. Safe to interrupt and run again.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders (or single files) to ingest")
    _add_library_args(p)
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default SONICSORT_INGEST_WORKERS, else one per core; 0: in this process)")
    p.add_argument("--batch", type=int, default=32, help="tracks per model batch and catalog transaction (default 32)")
    p.add_argument("--prune", action="store_true", help="remove tracks none of whose files is left")
    p.add_argument("--queue", metavar="REDIS_URL",
                   help="send the model's work to RQ jobs for `sonicsort worker` processes (other machines)")
    p.add_argument("--on-model-mismatch", choices=["refuse", "reembed"], default=None,
                   help="when the catalog comes from another model: refuse (default) or re-embed it")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("worker", parents=[common], help="process queued ingest jobs (RQ)",
                       description="Run an RQ worker for `sonicsort ingest --queue`: it loads the model once and "
                                   "embeds queued files. Needs the same files under the same paths as the ingest "
                                   "machine, and the same model.")
    p.add_argument("--queue", metavar="REDIS_URL", default=None, help="Redis URL (default SONICSORT_REDIS_URL)")
    p.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    p.add_argument("--name", help="worker name (default: RQ's)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("reindex", parents=[common], help="rebuild the ANN index from the catalog",
                       description="Rebuild the index of the chosen backend from the catalog's embeddings.")
    _add_library_args(p)
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("reembed", parents=[common], help="recompute embeddings made by another model",
                       description="Re-embed every catalog track whose embedding comes from another model than "
                                   "the loaded one, from its audio file, then rebuild the index.")
    _add_library_args(p)
    p.set_defaults(func=cmd_reembed)

    p = sub.add_parser("tracks", parents=[common], help="list catalog tracks by text, genre or tag",
                       description="List catalog tracks (by id) whose title, artist or album contains --query, of "
                                   "--genre, with --tag among their 5 most probable front-end tags or standing out at 3x the "
                                   "model's mean probability of it (moods, styles, "
                                   "eras from Last.fm tags of the MSD, e.g. mellow, punk, 80s).")
    p.add_argument("--query", "-q", help="text in the title, artist or album (case-insensitive)")
    p.add_argument("--genre", help="only tracks of this predicted genre")
    p.add_argument("--tag", help="only tracks that have this tag: top 5, or at >= 3x its usual probability (case-insensitive)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.set_defaults(func=cmd_tracks)

    p = sub.add_parser("stats", parents=[common], help="catalog counts per genre, backend, model version, sizes",
                       description="Print the catalog's track counts per genre, model version, the index backend "
                                   "and sizes, and the prediction cache's state.")
    _add_library_args(p)
    p.set_defaults(func=cmd_stats)


def _add_reco_commands(sub, common) -> None:
    p = sub.add_parser("similar", parents=[common], help="catalog tracks that sound like a track or an audio file",
                       description="The k nearest catalog tracks by embedding, excluding the query itself and its "
                                   "exact duplicates, with similarity, genre agreement and score for each.")
    p.add_argument("query", metavar="TRACK_ID_OR_FILE", help="a catalog track id, or an audio file")
    p.add_argument("-k", type=int, default=10, help="how many (default 10)")
    p.add_argument("--genre", help="only tracks of this predicted genre")
    p.add_argument("--genre-mode", choices=["any", "same", "boost"], default="any",
                   help="any (default); same: the query's genre only; boost: re-rank by genre agreement")
    p.add_argument("--boost", type=float, default=0.3, help="genre agreement weight for --genre-mode boost (default 0.3)")
    p.add_argument("--artist-cap", type=int, help="at most N tracks per artist")
    p.add_argument("--mmr", type=float, metavar="LAMBDA", help="diversify by MMR (1 = relevance only, 0.7 is a good start)")
    _add_library_args(p)
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser("playlist", parents=[common], help="a playlist that flows from seed tracks",
                       description="Start with the seed tracks; each next track is close to the previous one and to "
                                   "the seeds' centre; no repeats, no artist twice in a row, a cap per artist.")
    p.add_argument("seeds", nargs="+", type=int, metavar="SEED", help="seed track ids")
    p.add_argument("--length", type=int, default=20, help="tracks in the playlist, seeds included (default 20)")
    p.add_argument("--genre", action="append", help="only tracks of this genre (repeatable)")
    p.add_argument("--artist-cap", type=int, default=2, help="at most N tracks per artist (default 2)")
    p.add_argument("--m3u", metavar="FILE", help="also write an M3U8 playlist (paths relative to its folder)")
    _add_library_args(p)
    p.set_defaults(func=cmd_playlist)

    p = sub.add_parser("path", parents=[common], help="a listening journey from one track to another",
                       description="Steps along the great circle between two tracks' embeddings, each the nearest "
                                   "unused catalog track; starts at A, ends at B.")
    p.add_argument("start", type=int, metavar="A", help="first track id")
    p.add_argument("end", type=int, metavar="B", help="last track id")
    p.add_argument("--length", type=int, default=10, help="tracks in the path, both ends included (default 10)")
    p.add_argument("--m3u", metavar="FILE", help="also write an M3U8 playlist")
    _add_library_args(p)
    p.set_defaults(func=cmd_path)


def _reco(args, settings):
    from .recommend import Recommender

    lib = _library(args, settings)
    lib.check_model()
    return Recommender(lib)


def _playlist_out(args, items, what: str) -> int:
    from .recommend import to_json, to_m3u8

    data = {"tracks": to_json(items)}
    if args.m3u:
        out = Path(args.m3u)
        text = to_m3u8(items, relative_to=out.parent, title=what)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
        data["m3u"] = str(out)
    lines = [f"{i + 1:>3}. [{s.track.id}] {s.track.title}" + (f" — {s.track.artist}" if s.track.artist else "")
             + f"  ({s.track.genre}, sim {s.similarity:.3f})" for i, s in enumerate(items)]
    if args.m3u:
        lines.append(f"wrote {args.m3u}")
    _emit(args, data, "\n".join(lines))
    return EXIT_OK


def cmd_similar(args: argparse.Namespace, settings: Settings) -> int:
    reco = _reco(args, settings)
    q = args.query
    if q.lstrip("-").isdigit() and not Path(q).exists():
        query = reco.query_for_track(int(q))
        about: dict[str, Any] = {"track_id": int(q)}
    else:
        path = Path(q)
        if not path.is_file():
            raise CliError(f"{q}: neither a track id nor an audio file")
        query, pred, cached = reco.query_for_audio(path.read_bytes())
        about = {"file": str(path), "genre": pred.genre, "cached": cached, "track_id": query.track_id}
    res = reco.similar(query, args.k, genre=args.genre, genre_mode=args.genre_mode, boost_weight=args.boost,
                       artist_cap=args.artist_cap, mmr_lambda=args.mmr)
    data = {"query": {**about, "genre": query.genre}, "results": [r.to_dict() for r in res]}
    lines = [f"similar to {about.get('file') or 'track ' + str(about['track_id'])} (genre {query.genre}):"]
    for i, r in enumerate(res):
        t = r.track
        lines.append(f"{i + 1:>3}. [{t.id}] {t.title}" + (f" — {t.artist}" if t.artist else "")
                     + f"  {t.genre:<10} score {r.score:.3f} (similarity {r.similarity:.3f}, genre agreement "
                       f"{r.genre_agreement:.2f})")
    _emit(args, data, "\n".join(lines))
    return EXIT_OK


def cmd_playlist(args: argparse.Namespace, settings: Settings) -> int:
    reco = _reco(args, settings)
    items = reco.playlist(args.seeds, args.length, genres=args.genre, artist_cap=args.artist_cap)
    return _playlist_out(args, items, "sonicsort playlist")


def cmd_path(args: argparse.Namespace, settings: Settings) -> int:
    reco = _reco(args, settings)
    items = reco.path(args.start, args.end, args.length)
    return _playlist_out(args, items, "sonicsort path")


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from .ingest import ingest

    if args.batch < 1 or (args.workers is not None and args.workers < 0):
        raise CliError("--batch must be positive and --workers not negative")
    lib = _library(args, settings)
    report = ingest(lib, args.dirs, workers=args.workers, batch_tracks=args.batch, prune=args.prune,
                    progress=_progress("embedding", not args.json), queue_url=args.queue)
    d = report.to_dict()
    lines = [f"ingest: {d['added']} added, {d['skipped']} skipped (audio already in the catalog), "
             f"{d['unchanged']} unchanged, {d['failed']} failed"
             + (f", {d['missing']} paths gone" if d["missing"] else "")
             + (f", {d['pruned']} tracks pruned" if d["pruned"] else "")]
    if d["from_cache"]:
        lines.append(f"  {d['from_cache']} predictions came from the Redis cache")
    if d["audio_s"]:
        lines.append(f"  embedded {d['audio_s']:.0f} s of audio in {d['seconds']:.1f} s ({d['realtime_factor']}× real time)")
    for f in d["failures"]:
        lines.append(f"  failed: {f['path']}: {f['reason']}")
    lines.append(f"  catalog: {len(lib.catalog)} tracks in {lib.catalog.path}")
    _emit(args, d, "\n".join(lines))
    return EXIT_ERROR if d["failed"] and not d["added"] and not d["skipped"] and not d["unchanged"] else EXIT_OK


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from .queue import run_worker

    run_worker(args.queue or settings.redis_url, burst=args.burst, name=args.name)
    return EXIT_OK


def cmd_reindex(args: argparse.Namespace, settings: Settings) -> int:
    import time

    lib = _library(args, settings)
    lib.check_model()
    t0 = time.perf_counter()
    idx = lib.rebuild_index()
    d = {"backend": lib.backend, "count": len(idx), "seconds": round(time.perf_counter() - t0, 2),
         "path": str(lib.index_path), "tag": idx.tag}
    _emit(args, d, f"reindex: {d['count']} tracks into the {d['backend']} index at {d['path']} in {d['seconds']} s")
    return EXIT_OK


def cmd_reembed(args: argparse.Namespace, settings: Settings) -> int:
    lib = _library(args, settings)
    n = lib.reembed(progress=_progress("re-embedding", not args.json))
    d = {"reembedded": n, "model_version": lib.bundle.version, "tracks": len(lib.catalog)}
    _emit(args, d, f"reembed: {n} tracks re-embedded with model {d['model_version']}")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    lib = _library(args, settings)
    lib.cache.ping()
    s = lib.stats()
    lines = [f"catalog {s['catalog_path']}: {s['tracks']} tracks ({s['paths']} files, "
             f"{s['duration_s'] / 3600:.2f} h of audio, {s['catalog_bytes'] / 1e6:.1f} MB)"]
    for g, n in s["per_genre"].items():
        lines.append(f"  {g:<12} {n}")
    lines.append("model versions: " + (", ".join(f"{v} ({n})" for v, n in s["model_versions"].items()) or "none yet"))
    ix = s["index"]
    lines.append(f"index: {ix['backend']}, {ix.get('count')} vectors, {ix['bytes'] / 1e6:.1f} MB at {ix['path']}"
                 + (f" ({ix['note']})" if ix.get("note") else ""))
    c = s["cache"]
    lines.append(f"prediction cache: {c['state']} ({c['url']})")
    _emit(args, s, "\n".join(lines))
    return EXIT_OK


def cmd_tracks(args: argparse.Namespace, settings: Settings) -> int:
    from .catalog import Catalog

    if args.tag:
        from .library import Library

        lib = Library(settings, backend=getattr(args, "backend", None))
        known = lib.bundle.tag_names
        if known and args.tag.lower() not in {t.lower() for t in known}:
            raise CliError(f"unknown tag {args.tag!r}; the model's tags are: {', '.join(known)}")
        catalog = lib.catalog
    else:
        catalog = Catalog(settings.catalog_path)
    tracks = catalog.search(args.query, genre=args.genre, tag=args.tag, limit=args.limit)
    lines = [f"{t.id:>6}  {t.title[:40]:<40} {(t.artist or '')[:24]:<24} {t.genre:<10} "
             + ", ".join(tag for tag, _ in t.top_tags(3)) for t in tracks]
    _emit(args, {"items": [t.to_dict() for t in tracks]}, "\n".join(lines) or "no tracks match")
    return EXIT_OK


def _add_bench(sub, common) -> None:
    bench = sub.add_parser("bench", help="benchmarks", description="Benchmarks.")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    bsub.required = True
    p = bsub.add_parser(
        "ann", parents=[common], help="compare ANN backends: recall against queries/s, build time, size, memory",
        description="Benchmark the index backends the way ann-benchmarks does: every build-argument × "
                    "query-argument combination of the runs file; recall@k against exact neighbours "
                    "(distance threshold of the k-th true neighbour), single-thread and batch queries/s, "
                    "build time, index size on disk, memory. Writes runs.csv, runs.json, pareto.md "
                    "and recall_qps.png.")
    p.add_argument("--dataset", default="synthetic:10000:128",
                   help="ann-benchmarks .hdf5 file, a .npy matrix (ground truth cached beside it), or "
                        "synthetic:N:DIM[:CLUSTERS[:SEED]] (default synthetic:10000:128)")
    p.add_argument("--metric", choices=["cosine", "l2", "ip"], default="cosine",
                   help="metric for .npy and synthetic data (HDF5 files name their own; default cosine)")
    p.add_argument("--runs", help="YAML or JSON runs file (default: index/runs.yml in the package)")
    p.add_argument("--backends", help="comma-separated subset of the runs file's backends")
    p.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--queries", type=int, default=1000, help="queries for .npy/synthetic data (default 1000)")
    p.add_argument("--max-single-queries", type=int, default=1000,
                   help="queries timed one at a time per run (default 1000)")
    p.add_argument("--out", default="bench-results", help="output folder (default ./bench-results)")
    p.set_defaults(func=cmd_bench_ann)


def cmd_bench_ann(args: argparse.Namespace, settings: Settings) -> int:
    from index import bench

    if args.k < 1 or args.queries < 1 or args.max_single_queries < 1:
        raise CliError("-k, --queries and --max-single-queries must be positive")
    runs = bench.load_runs(args.runs, args.backends.split(",") if args.backends else None)
    log.info("dataset %s ...", args.dataset)
    ds = bench.load_dataset(args.dataset, metric=args.metric, n_queries=args.queries, k=max(args.k, 100))
    n_runs = sum(len(bench.grid((s or {}).get("build"))) * len(bench.grid((s or {}).get("query"))) for s in runs.values())
    bar = None
    if not args.json:
        from tqdm import tqdm

        bar = tqdm(total=n_runs, desc="runs", unit="run", file=sys.stderr, leave=False)

    def progress(label: str) -> None:
        if bar is not None:
            bar.set_postfix_str(label[:60])
            bar.update(1)

    results = bench.run_benchmark(ds, runs, k=args.k, max_single_queries=args.max_single_queries, progress=progress)
    if bar is not None:
        bar.close()
    paths = bench.write_reports(results, args.out, dataset_name=ds.name)
    data = {"dataset": ds.name, "n_train": int(ds.train.shape[0]), "dim": int(ds.train.shape[1]), "metric": ds.metric,
            "runs": [{**r.__dict__, "label": r.label} for r in results], "files": {k: str(v) for k, v in paths.items()}}
    text = bench.markdown_table(bench.pareto_frontier(results), ds.name) + "\n" + "\n".join(
        f"wrote {p}" for p in paths.values())
    _emit(args, data, text)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("numba", "matplotlib", "h5py", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings.from_env()
    try:
        return args.func(args, settings)
    except _known_errors() as exc:
        print(f"sonicsort: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("sonicsort: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        # last guard: file system and value problems still get one line, not a traceback
        print(f"sonicsort: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
