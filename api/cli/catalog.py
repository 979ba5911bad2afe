"""Catalog commands: ``ingest``, ``worker``, ``reindex``, ``reembed``, ``tracks``, ``stats`` and
``catalog copy``."""

from __future__ import annotations

import argparse
import time

from .common import EXIT_ERROR, EXIT_OK, CliError, add_library_args, emit, progress, service


def add_commands(sub, common) -> None:
    p = sub.add_parser(
        "ingest", parents=[common], help="add a music folder to the catalog (incremental)",
        description="Scan folders recursively for wav, flac, ogg, mp3, m4a and au files, read their tags, predict "
                    "genres and embeddings and store them in the catalog (SONICSORT_HOME/catalog.sqlite3, or "
                    "SONICSORT_CATALOG_URL) and its index. Unchanged files are skipped, moved or duplicated audio is linked to its track, "
                    "undecodable files are reported and skipped. Safe to interrupt and run again.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folders (or single files) to ingest")
    add_library_args(p)
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
    add_library_args(p)
    p.set_defaults(func=cmd_reindex)

    p = sub.add_parser("reembed", parents=[common], help="recompute embeddings made by another model",
                       description="Re-embed every catalog track whose embedding comes from another model than "
                                   "the loaded one, from its audio file, then rebuild the index.")
    add_library_args(p)
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
    add_library_args(p)
    p.add_argument("--repair", action="store_true",
                   help="also remove what an interrupted upload or delete left in SONICSORT_HOME/uploads "
                        "(temporary files, and files no track refers to, older than a minute) and list them")
    p.set_defaults(func=cmd_stats)

    group = sub.add_parser("catalog", help="catalog maintenance: copy a catalog between databases",
                           description="Catalog maintenance.")
    csub = group.add_subparsers(dest="catalog_command", metavar="COMMAND")
    csub.required = True
    p = csub.add_parser(
        "copy", parents=[common], help="copy a catalog into a new one (SQLite to PostgreSQL and back), keeping ids",
        description="Copy every track of the catalog SRC (its ids, paths, tags, embeddings and the highest id "
                    "ever given) into DST, which must be empty or new. Each is a SQLite file path, sqlite:///PATH "
                    "or postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (the database must exist). DST is written in "
                    "one transaction: an error or Ctrl-C leaves it empty, and then vacuumed and analysed (ANALYZE "
                    "in SQLite) so that its first queries are planned with statistics. Indexes are not copied: "
                    "each machine builds its own from the catalog (they are derived).")
    p.add_argument("src", metavar="SRC", help="the catalog to copy (a path or URL)")
    p.add_argument("dst", metavar="DST", help="the new catalog (a path or URL)")
    p.set_defaults(func=cmd_catalog_copy)


def cmd_ingest(args: argparse.Namespace, settings) -> int:
    if args.batch < 1 or (args.workers is not None and args.workers < 0):
        raise CliError("--batch must be positive and --workers not negative")
    svc = service(args, settings, ready=False)  # ingest checks the model itself, re-embedding if asked
    report = svc.ingest(args.dirs, workers=args.workers, batch_tracks=args.batch, prune=args.prune,
                        progress=progress("embedding", not args.json), queue_url=args.queue)
    d = report.to_dict()
    lines = [f"ingest: {d['added']} added, {d['skipped']} skipped (audio already in the catalog), "
             f"{d['unchanged']} unchanged, {d['failed']} failed"
             + (f", {d['missing']} paths gone" if d["missing"] else "")
             + (f", {d['pruned']} tracks pruned" if d["pruned"] else "")]
    if d["from_cache"]:
        lines.append(f"  {d['from_cache']} predictions came from the Redis cache")
    if d["stored_by_workers"]:
        lines.append(f"  {d['stored_by_workers']} files stored in the shared catalog by the queue's workers")
    if d["audio_s"]:
        lines.append(f"  embedded {d['audio_s']:.0f} s of audio in {d['seconds']:.1f} s ({d['realtime_factor']}× real time)")
    for f in d["failures"]:
        lines.append(f"  failed: {f['path']}: {f['reason']}")
    lines.append(f"  catalog: {len(svc.catalog)} tracks in {svc.catalog.where}")
    emit(args, d, "\n".join(lines))
    return EXIT_ERROR if d["failed"] and not d["added"] and not d["skipped"] and not d["unchanged"] else EXIT_OK


def cmd_worker(args: argparse.Namespace, settings) -> int:
    from recommender.queue import run_worker

    run_worker(args.queue or settings.redis_url, burst=args.burst, name=args.name)
    return EXIT_OK


def cmd_reindex(args: argparse.Namespace, settings) -> int:
    svc = service(args, settings, ready=False)
    t0 = time.perf_counter()
    idx = svc.reindex()
    lib = svc.library()
    d = {"backend": lib.backend, "count": len(idx), "seconds": round(time.perf_counter() - t0, 2),
         "path": str(lib.index_path), "tag": idx.tag}
    emit(args, d, f"reindex: {d['count']} tracks into the {d['backend']} index at {d['path']} in {d['seconds']} s")
    return EXIT_OK


def cmd_reembed(args: argparse.Namespace, settings) -> int:
    svc = service(args, settings, ready=False)
    n = svc.reembed(progress=progress("re-embedding", not args.json))
    d = {"reembedded": n, "model_version": svc.load_model().version, "tracks": len(svc.catalog)}
    emit(args, d, f"reembed: {n} tracks re-embedded with model {d['model_version']}")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace, settings) -> int:
    svc = service(args, settings, ready=False)  # no model needed: stats also describe a catalog of another model
    svc.cache.ping()
    s = svc.stats()
    if args.repair:
        s["repair"] = {"removed": [str(p) for p in svc.sweep_uploads()]}
    lines = [f"catalog {s['catalog_path']}: {s['tracks']} tracks ({s['paths']} files, "
             f"{s['duration_s'] / 3600:.2f} h of audio, {s['catalog_bytes'] / 1e6:.1f} MB)"]
    for g, n in s["per_genre"].items():
        lines.append(f"  {g:<12} {n}")
    lines.append("model versions: " + (", ".join(f"{v} ({n})" for v, n in s["model_versions"].items()) or "none yet"))
    ix = s["index"]
    behind = (f", the saved file {ix['saved_count']}" if ix.get("saved_count") not in (None, ix["count"]) else "")
    lines.append(f"index: {ix['backend']}, {ix['count']} vectors live{behind}, {ix['bytes'] / 1e6:.1f} MB "
                 f"at {ix['path']}" + (f" ({ix['note']})" if ix.get("note") else ""))
    c = s["cache"]
    lines.append(f"prediction cache: {c['state']} ({c['url']})")
    if args.repair:
        gone = s["repair"]["removed"]
        lines.append(f"repair: removed {len(gone)} file(s) left by interrupted uploads or deletes"
                     + "".join(f"\n  {p}" for p in gone))
    emit(args, s, "\n".join(lines))
    return EXIT_OK


def cmd_tracks(args: argparse.Namespace, settings) -> int:
    svc = service(args, settings, ready=False)
    if args.tag or args.genre:
        svc.load_model()  # to check the tag or genre against the model's (no index needed)
    tracks, _ = svc.search(args.query, genre=args.genre, tag=args.tag, limit=max(args.limit, 0))
    lines = [f"{t.id:>6}  {t.title[:40]:<40} {(t.artist or '')[:24]:<24} {t.genre:<10} "
             + ", ".join(tag for tag, _ in t.top_tags(3)) for t in tracks]
    emit(args, {"items": [t.to_dict() for t in tracks]}, "\n".join(lines) or "no tracks match")
    return EXIT_OK


def cmd_catalog_copy(args: argparse.Namespace, settings) -> int:
    from recommender.catalog import copy_catalog

    t0 = time.perf_counter()
    d = copy_catalog(args.src, args.dst, progress=progress("copying", not args.json))
    d["seconds"] = round(time.perf_counter() - t0, 2)
    emit(args, d, f"copied {d['tracks']} tracks ({d['paths']} paths, {d['track_tags']} tags; ids up to "
                  f"{d['last_track_id']}) from {d['source']} to {d['destination']} in {d['seconds']} s")
    return EXIT_OK
