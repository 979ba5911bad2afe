"""Recommendation commands: ``similar``, ``playlist``, ``path``, ``next``, ``alchemy``, ``plays``, ``mix``
and ``duplicates``, through the same facade as the API."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .common import EXIT_OK, CliError, add_library_args, emit, service


def add_commands(sub, common) -> None:
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
    p.add_argument("--keep-duplicates", action="store_true",
                   help="keep near-duplicates (the same recording in other files), which are dropped by default")
    add_library_args(p)
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser("playlist", parents=[common], help="a playlist that flows from seed tracks",
                       description="Start with the seed tracks; each next track is close to the previous one and to "
                                   "the seeds' centre; no repeats, no artist twice in a row, a cap per artist.")
    p.add_argument("seeds", nargs="+", type=int, metavar="SEED", help="seed track ids")
    p.add_argument("--length", type=int, default=20, help="tracks in the playlist, seeds included (default 20)")
    p.add_argument("--genre", action="append", help="only tracks of this genre (repeatable)")
    p.add_argument("--artist-cap", type=int, default=2, help="at most N tracks per artist (default 2)")
    p.add_argument("--flow", action="store_true",
                   help="order the tracks after the seeds so that consecutive tracks are close")
    p.add_argument("--m3u", metavar="FILE", help="also write an M3U8 playlist (paths relative to its folder)")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="keep near-duplicates (the same recording in other files), which are dropped by default")
    add_library_args(p)
    p.set_defaults(func=cmd_playlist)

    p = sub.add_parser("path", parents=[common], help="a listening journey from one track to another",
                       description="Steps along the great circle between two tracks' embeddings, each the nearest "
                                   "unused catalog track; starts at A, ends at B.")
    p.add_argument("start", type=int, metavar="A", help="first track id")
    p.add_argument("end", type=int, metavar="B", help="last track id")
    p.add_argument("--length", type=int, default=10, help="tracks in the path, both ends included (default 10)")
    p.add_argument("--flow", action="store_true", help="order the tracks between A and B so that consecutive "
                                                        "tracks are close")
    p.add_argument("--m3u", metavar="FILE", help="also write an M3U8 playlist")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="keep near-duplicates (the same recording in other files), which are dropped by default")
    add_library_args(p)
    p.set_defaults(func=cmd_path)

    p = sub.add_parser("next", parents=[common], help="the tracks that continue a queue",
                       description="The next tracks after a queue (most recent last): near its recent tracks (the "
                                   "more recent, the more they count), never a queued track, no artist again within "
                                   "--no-repeat-artist tracks and no album within --no-repeat-album (halved, and "
                                   "said so, when the catalog cannot keep them).")
    p.add_argument("queue", nargs="+", type=int, metavar="ID", help="the queue's track ids, most recent last")
    p.add_argument("--count", type=int, default=10, help="how many tracks (default 10, at most 200)")
    p.add_argument("--no-repeat-artist", type=int, default=15, help="tracks before an artist may return (default 15)")
    p.add_argument("--no-repeat-album", type=int, default=25, help="tracks before an album may return (default 25)")
    p.add_argument("--min-duration", type=float, help="only tracks of at least this many seconds")
    p.add_argument("--max-duration", type=float, help="only tracks of at most this many seconds")
    p.add_argument("--genre", action="append", help="only tracks of this genre (repeatable)")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="keep near-duplicates (the same recording in other files), which are dropped by default")
    add_library_args(p)
    p.set_defaults(func=cmd_next)

    p = sub.add_parser("alchemy", parents=[common], help="tracks like some and unlike others",
                       description="Tracks near the --add tracks and away from the --subtract ones: the cosine to "
                                   "the added tracks' centre minus --subtract-weight times the cosine to the "
                                   "nearest subtracted track. Never one of the inputs.")
    p.add_argument("--add", type=int, action="append", required=True, metavar="ID", help="a track to move towards")
    p.add_argument("--subtract", type=int, action="append", default=[], metavar="ID", help="a track to move away from")
    p.add_argument("--count", type=int, default=20, help="how many tracks (default 20, at most 200)")
    p.add_argument("--subtract-weight", type=float, default=0.5, help="0 to 1 (default 0.5)")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="keep near-duplicates (the same recording in other files), which are dropped by default")
    add_library_args(p)
    p.set_defaults(func=cmd_alchemy)

    p = sub.add_parser("artists", parents=[common], help="the catalog's artists, or those like one",
                       description="List the catalog's artists with the ids Subsonic apps see (by the files' album "
                                   "artist, else artist), or with --similar-to ID the artists whose tracks sound most "
                                   "like that artist's (compared as sets of tracks).")
    p.add_argument("--query", "-q", help="names containing this text")
    p.add_argument("--similar-to", metavar="ARTIST_ID", help="the artists most like this one")
    p.add_argument("--count", type=int, default=10, help="similar artists to list (default 10, at most 200)")
    p.add_argument("--limit", type=int, default=200, help="artists to list (default 200)")
    add_library_args(p)
    p.set_defaults(func=cmd_artists)

    p = sub.add_parser("plays", parents=[common], help="record that a user played tracks",
                       description="Record plays of a user (of `sonicsort users`), now; `sonicsort mix` learns from them.")
    p.add_argument("track_ids", nargs="+", type=int, metavar="ID")
    p.add_argument("--user", required=True)
    p.set_defaults(func=cmd_plays)

    p = sub.add_parser("duplicates", parents=[common], help="tracks that hold the same recording",
                       description="Groups of catalog tracks that hold the same recording in other files (another "
                                   "album, format, bit rate or sample rate, trimmed ends, another gain): close "
                                   "embeddings, lengths that agree, and audio fingerprints that match. Ingest finds "
                                   "them as it adds tracks; --scan first fingerprints the tracks ingested before "
                                   "fingerprints existed, from their files.")
    p.add_argument("--scan", action="store_true", help="fingerprint the tracks that have none, then search again")
    add_library_args(p)
    p.set_defaults(func=cmd_duplicates)

    p = sub.add_parser("mix", parents=[common], help="a mix from what a user played",
                       description="A mix from a user's plays: each play counts half as much every 30 days; what "
                                   "they played in the last day is left out; at most --artist-cap tracks an artist.")
    p.add_argument("--user", required=True)
    p.add_argument("--count", type=int, default=30, help="how many tracks (default 30, at most 200)")
    p.add_argument("--artist-cap", type=int, default=2, help="at most N tracks per artist (default 2)")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="keep near-duplicates (the same recording in other files), which are dropped by default")
    add_library_args(p)
    p.set_defaults(func=cmd_mix)


def _playlist_out(args, items, what: str) -> int:
    from recommender.recommend import to_json, to_m3u8

    data = {"tracks": to_json(items), "requested_length": args.length, "truncated": len(items) < args.length}
    if args.m3u:
        out = Path(args.m3u)
        text = to_m3u8(items, relative_to=out.parent, title=what)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
        data["m3u"] = str(out)
    lines = [f"{i + 1:>3}. [{s.track.id}] {s.track.title}" + (f" — {s.track.artist}" if s.track.artist else "")
             + f"  ({s.track.genre}, sim {s.similarity:.3f})" for i, s in enumerate(items)]
    if data["truncated"]:
        lines.append(f"{len(items)} of the {args.length} tracks asked for: the catalog (and the constraints) "
                     f"hold no more")
    if args.m3u:
        lines.append(f"wrote {args.m3u}")
    emit(args, data, "\n".join(lines))
    return EXIT_OK


def cmd_similar(args: argparse.Namespace, settings) -> int:
    svc = service(args, settings)
    opts = dict(genre=args.genre, genre_mode=args.genre_mode, boost_weight=args.boost, artist_cap=args.artist_cap,
                mmr_lambda=args.mmr, dedupe=not args.keep_duplicates)
    q = args.query
    if q.lstrip("-").isdigit() and not Path(q).exists():
        track_id = int(q)
        res = svc.similar_to_track(track_id, args.k, **opts)
        about: dict[str, Any] = {"track_id": track_id, "genre": svc.track(track_id).genre}
    else:
        path = Path(q)
        if not path.is_file():
            raise CliError(f"{q}: neither a track id nor an audio file")
        out = svc.predict(path.read_bytes(), k=args.k, **opts)  # what POST /v1/predict answers
        res = out["similar"]
        about = {"file": str(path), "genre": out["prediction"].genre, "cached": out["cached"],
                 "track_id": out["track_id"]}
    data = {"query": about, "results": [r.to_dict() for r in res]}
    lines = [f"similar to {about.get('file') or 'track ' + str(about['track_id'])} (genre {about['genre']}):"]
    for i, r in enumerate(res):
        t = r.track
        lines.append(f"{i + 1:>3}. [{t.id}] {t.title}" + (f" — {t.artist}" if t.artist else "")
                     + f"  {t.genre:<10} score {r.score:.3f} (similarity {r.similarity:.3f}, genre agreement "
                       f"{r.genre_agreement:.2f})")
    emit(args, data, "\n".join(lines))
    return EXIT_OK


def cmd_playlist(args: argparse.Namespace, settings) -> int:
    items = service(args, settings).playlist(args.seeds, args.length, genres=args.genre, artist_cap=args.artist_cap,
                                             order="flow" if args.flow else "playlist",
                                             dedupe=not args.keep_duplicates)
    return _playlist_out(args, items, "sonicsort playlist")


def cmd_path(args: argparse.Namespace, settings) -> int:
    items = service(args, settings).path(args.start, args.end, args.length, order="flow" if args.flow else "path",
                                         dedupe=not args.keep_duplicates)
    return _playlist_out(args, items, "sonicsort path")


def _ranked_out(args, items, data: dict[str, Any], note: str = "") -> int:
    from recommender.recommend import to_json

    data = {**data, "items": to_json(items)}
    lines = [f"{i + 1:>3}. [{s.track.id}] {s.track.title}" + (f" — {s.track.artist}" if s.track.artist else "")
             + f"  ({s.track.genre}, score {s.score:.3f})" for i, s in enumerate(items)]
    emit(args, data, "\n".join(lines + ([note] if note else [])) or "no tracks")
    return EXIT_OK


def cmd_next(args: argparse.Namespace, settings) -> int:
    items, relaxed = service(args, settings).queue_next(
        args.queue, args.count, no_repeat_artist=args.no_repeat_artist, no_repeat_album=args.no_repeat_album,
        min_duration_s=args.min_duration, max_duration_s=args.max_duration, genres=args.genre,
        dedupe=not args.keep_duplicates)
    note = ("the catalog could not keep the windows: used " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                                                      for k, v in relaxed.items())) if relaxed else ""
    return _ranked_out(args, items, {"relaxed": relaxed or None, "truncated": len(items) < args.count}, note)


def cmd_alchemy(args: argparse.Namespace, settings) -> int:
    items = service(args, settings).alchemy(args.add, args.subtract, args.count, subtract_weight=args.subtract_weight,
                                            dedupe=not args.keep_duplicates)
    return _ranked_out(args, items, {"add": args.add, "subtract": args.subtract})


def cmd_artists(args: argparse.Namespace, settings) -> int:
    from recommender.browse import _key

    svc = service(args, settings, ready=args.similar_to is not None)
    idx = svc.music_index()
    if args.similar_to:
        found = svc.similar_artists(args.similar_to, args.count)
        rows = [{"id": a.id, "name": a.name, "similarity": round(sim, 6)} for a, sim in found]
        lines = [f"{r['id']}  {r['name'][:40]:<40} {r['similarity']:.3f}" for r in rows]
    else:
        found = [idx.artists[a] for a in idx.artist_order if not args.query or _key(args.query) in _key(idx.artists[a].name)]
        rows = [{"id": a.id, "name": a.name, "album_count": len(a.album_ids)} for a in found[:max(args.limit, 0)]]
        lines = [f"{r['id']}  {r['name'][:40]:<40} {r['album_count']} album(s)" for r in rows]
    emit(args, {"items": rows}, "\n".join(lines) or "no artists")
    return EXIT_OK


def cmd_plays(args: argparse.Namespace, settings) -> int:
    service(args, settings, ready=False).record_plays(args.user, args.track_ids)
    emit(args, {"user": args.user, "track_ids": args.track_ids},
         f"recorded {len(args.track_ids)} play(s) of {args.user}")
    return EXIT_OK


def cmd_mix(args: argparse.Namespace, settings) -> int:
    items = service(args, settings).mix(args.user, args.count, artist_cap=args.artist_cap,
                                        dedupe=not args.keep_duplicates)
    return _ranked_out(args, items, {"user": args.user}, "" if items else f"{args.user} has no plays recorded yet")


def cmd_duplicates(args: argparse.Namespace, settings) -> int:
    svc = service(args, settings)
    dups = svc.library().duplicates
    scanned = None
    if args.scan:
        scanned = dups.fingerprint_missing()
        dups.find()
    groups, data, lines = dups.groups(), [], []
    rows = svc.catalog.get_many([t for g in groups for t in g.ids])
    for g in groups:
        tracks = [rows[t] for t in g.ids if t in rows]
        data.append({"ids": list(g.ids), "distance": round(g.distance, 6), "similarity": round(g.similarity, 6),
                     "tracks": [{"id": t.id, "title": t.title, "artist": t.artist, "album": t.album,
                                 "duration_s": round(t.duration_s, 3), "path": t.path} for t in tracks]})
        lines.append(f"{len(tracks)} tracks, fingerprint distance {g.distance:.3f}:")
        lines += [f"  [{t.id}] {t.title}" + (f" — {t.artist}" if t.artist else "") + (f" ({t.album})" if t.album else "")
                  + f"  {t.duration_s:.1f} s  {t.path or ''}" for t in tracks]
    if scanned is not None:
        lines.insert(0, f"fingerprinted {scanned} track(s) that had none")
    emit(args, {"groups": data, **({"fingerprinted": scanned} if scanned is not None else {})},
         "\n".join(lines) or "no near-duplicates")
    return EXIT_OK
