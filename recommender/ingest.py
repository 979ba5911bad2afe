"""Ingest a music folder into the catalog: ``sonicsort ingest DIR...``.

1. Scan: every file with an audio extension, recursively.
2. Unchanged files (same path, size and modification time as recorded) are skipped
   without being read.
3. Changed or new files are hashed (sha256 of the bytes). Audio already in the catalog
   under another path (a moved, renamed or duplicated file) is linked to its track: no
   model work. Predictions cached in Redis for that audio and model are reused.
4. The rest are decoded and turned into features in worker processes; the main process
   runs the model on batches of tracks and commits each batch to the catalog in one
   transaction, then adds it to the index.

Killing ingest at any moment loses nothing and duplicates nothing: a batch is in the
catalog entirely or not at all, tracks are unique by content hash, and the index is
reconciled with the catalog when next opened.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from embedding.audio import AUDIO_EXTENSIONS
from embedding.data import sha256_of

from .catalog import NewTrack
from .errors import BadRequest
from .extract import extract, predict_extracted, read_tags
from .library import Library
from .lifeline import die_with_parent

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class IngestReport:
    added: int = 0  # new tracks
    linked: int = 0  # new paths whose audio was already in the catalog (moved, renamed, duplicated)
    unchanged: int = 0  # same path, size and mtime as last time: not read
    from_cache: int = 0  # of the added: prediction taken from the Redis cache
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    missing: int = 0  # paths recorded under the scanned folders whose file is gone
    pruned: int = 0  # tracks removed because none of their files is left (--prune)
    audio_s: float = 0.0  # seconds of audio embedded by the model
    seconds: float = 0.0
    stored_by_workers: int = 0  # files whose track a queue worker stored in the shared catalog itself

    @property
    def skipped(self) -> int:
        """Files that needed no model work besides the unchanged ones (their audio was known)."""
        return self.linked

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "skipped": self.skipped, "unchanged": self.unchanged,
                "failed": len(self.failed), "failures": [{"path": p, "reason": r} for p, r in self.failed],
                "from_cache": self.from_cache, "missing": self.missing, "pruned": self.pruned,
                "audio_s": round(self.audio_s, 1), "seconds": round(self.seconds, 2),
                "stored_by_workers": self.stored_by_workers,
                "realtime_factor": round(self.audio_s / self.seconds, 1) if self.seconds > 0 and self.audio_s else None}


# ---------------------------------------------------------------- scanning
def scan(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Audio files under ``roots`` (folders or single files), sorted, absolute paths."""
    out: set[Path] = set()
    for root in roots:
        r = Path(root).expanduser()
        if not r.exists():
            raise BadRequest(f"{root}: no such file or folder")
        r = r.resolve()
        if r.is_file():
            out.add(r)
            continue
        for dirpath, dirnames, filenames in os.walk(r, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in filenames:
                if not f.startswith(".") and f.lower().endswith(AUDIO_EXTENSIONS):
                    out.add(Path(dirpath) / f)
    return sorted(out)


# ---------------------------------------------------------------- worker side
_W: dict[str, Any] = {}


def _init_worker(feature_config: dict[str, Any], normalizer: dict[str, Any], limits: dict[str, Any],
                 fingerprints: bool = True, parent_pid: int | None = None) -> None:
    from embedding import FeatureConfig, Normalizer

    if parent_pid is not None:  # a pool worker: it ends with the ingest, however the ingest ends
        die_with_parent(parent_pid)

    _W["config"] = FeatureConfig.from_dict(feature_config)
    _W["norm"] = Normalizer.from_dict(normalizer)
    _W["limits"] = limits
    _W["fingerprints"] = fingerprints


def _hash_job(path: str) -> tuple[str, str | None, str | None]:
    try:
        return path, sha256_of(path), None
    except OSError as exc:
        return path, None, f"cannot read ({exc.strerror or exc})"


def _extract_job(path: str) -> dict[str, Any]:
    return extract(path, _W["config"], _W["norm"], _W["limits"], fingerprint=_W["fingerprints"])


# ---------------------------------------------------------------- the pipeline
class _Runner:
    """Runs jobs in a spawn-started process pool, or inline when ``workers`` is 0."""

    def __init__(self, workers: int, initargs: tuple) -> None:
        self.workers = workers
        self.initargs = initargs
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "_Runner":
        if self.workers > 0:
            # spawn: TensorFlow is loaded in this process, and forking it is unsafe
            self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                            initializer=_init_worker, initargs=(*self.initargs, os.getpid()))
        else:
            _init_worker(*self.initargs)
        return self

    def map(self, fn, items: list, chunksize: int = 1) -> Iterator:
        if self.pool is None:
            return map(fn, items)
        return self.pool.map(fn, items, chunksize=chunksize)

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _embed_local(runner: _Runner, bundle, paths: list[str], batch_tracks: int) -> Iterator[tuple[str, dict, Any]]:
    """Decode + features in the runner's processes, the model on batches of tracks here.

    Yields (path, item, prediction) per file; prediction None and ``item["error"]`` on failure.
    """
    batch: list[dict[str, Any]] = []

    def flush() -> Iterator[tuple[str, dict, Any]]:
        for b, p in zip(batch, predict_extracted(bundle, batch)):
            yield b["path"], b, p
        batch.clear()

    for item in runner.map(_extract_job, paths, chunksize=2):
        if "error" in item:
            yield item["path"], item, None
            continue
        batch.append(item)
        if len(batch) >= batch_tracks:
            yield from flush()
    if batch:
        yield from flush()


def ingest(library: Library, roots: Iterable[str | os.PathLike], *, workers: int | None = None,
           batch_tracks: int = 32, prune: bool = False, progress: Progress | None = None,
           save_every_s: float = 60.0, queue_url: str | None = None) -> IngestReport:
    """Bring the catalog up to date with the audio files under ``roots``.

    Parameters
    ----------
    workers : decoding/feature processes (default ``settings.ingest_workers``, 0 there
        meaning one per core); 0 here runs everything in this process
    batch_tracks : tracks per model batch and per catalog transaction
    prune : remove tracks none of whose files is left under the scanned folders
    progress : called with (done, total) over the files that need model work
    queue_url : a Redis URL: the model's work goes to RQ jobs that ``sonicsort worker``
        processes run (on any machine that sees the files); results land here
    """
    t0 = time.perf_counter()
    report = IngestReport()
    roots = list(roots)
    files = scan(roots)
    bundle = library.bundle
    library.check_model()
    cat = library.catalog
    version = bundle.version
    _ = library.index  # opened (and reconciled) before we add to it

    # 1. unchanged files are not read at all; what the catalog knows comes in one query per folder
    known_paths: dict[str, tuple[int, int, int]] = {}
    for root in roots:
        r = Path(root).expanduser().resolve()
        if r.is_dir():
            known_paths.update(cat.path_states_under(str(r)))
        elif (state := cat.path_state(str(r))) is not None:  # a single file named on the command line
            known_paths[str(r)] = state
    seen = {str(p) for p in files}
    todo: list[tuple[str, int, int]] = []
    replaced: set[int] = set()  # tracks whose file changed content under the same path
    for p in files:
        try:
            st = p.stat()
        except OSError as exc:
            report.failed.append((str(p), f"cannot read ({exc.strerror or exc})"))
            continue
        state = known_paths.get(str(p))
        if state is not None and state[1] == st.st_size and state[2] == st.st_mtime_ns:
            report.unchanged += 1
        else:
            todo.append((str(p), st.st_size, st.st_mtime_ns))
            if state is not None:
                replaced.add(state[0])

    if cat.get_meta("facts_missing") == "1":
        # a catalog from before the tags beyond title, artist and album: read the unchanged
        # files' tags again (mutagen only, no audio), one file per track
        changed = {p for p, _, _ in todo}
        again = {state[0]: p for p, state in known_paths.items() if p in seen and p not in changed}
        cat.update_file_tags({tid: read_tags(p) for tid, p in again.items()})
        cat.set_meta(facts_missing="0")

    # paths recorded under these folders whose file has gone (moved, deleted)
    gone = [p for p in known_paths if p not in seen and not os.path.exists(p)]
    if gone:
        cat.forget_paths(gone)
        report.missing = len(gone)

    n_workers = workers if workers is not None else (library.settings.ingest_workers or (os.cpu_count() or 1))
    if len(todo) < 4 or queue_url:
        n_workers = 0  # starting processes costs more than it saves
    initargs = (bundle.feature_config.to_dict(), bundle.normalizer.to_dict(), library.settings.decode_limits.to_dict(),
                library.settings.find_duplicates)
    stat_of = {p: (size, mtime) for p, size, mtime in todo}
    last_save = time.monotonic()
    with _Runner(n_workers, initargs) as runner:
        # 2. hash what changed; link audio the catalog already holds
        hashed: dict[str, list[str]] = {}
        for path, sha, err in runner.map(_hash_job, [p for p, _, _ in todo], chunksize=16):
            if err:
                report.failed.append((path, err))
            else:
                hashed.setdefault(sha, []).append(path)
        known = cat.ids_for_hashes(hashed)
        links = [(p, known[sha], *stat_of[p]) for sha, ps in hashed.items() if sha in known for p in ps]
        if links:
            cat.add([], links)
            report.linked += len(links)
        new = {sha: ps for sha, ps in hashed.items() if sha not in known}

        # 3. predictions the cache already holds for this model
        cached = library.cache.get_many(list(new), version)

        def commit(items: list[tuple[dict[str, Any], Any]]) -> None:
            nonlocal last_save
            records: list[NewTrack] = []
            for item, pred in items:
                sha = item["sha256"]
                for p in new[sha]:
                    tags = item["tags"]
                    records.append(NewTrack.from_prediction(
                        pred, path=p, sha256=sha, size=stat_of[p][0], mtime_ns=stat_of[p][1],
                        **{**tags, "title": tags["title"] or Path(p).stem}))
            library.add_tracks(records)
            report.added += len(items)
            report.linked += len(records) - len(items)
            if time.monotonic() - last_save > save_every_s:
                library.save_index()
                last_save = time.monotonic()

        hits = []
        for sha, pred in cached.items():
            hits.append(({"sha256": sha, "tags": read_tags(new[sha][0])}, pred))
            report.from_cache += 1
        for i in range(0, len(hits), batch_tracks):
            commit(hits[i:i + batch_tracks])

        # 4. the model's work: here (worker processes + batched model) or on an RQ queue
        to_embed = {new[sha][0]: sha for sha in new if sha not in cached}
        total, done = len(to_embed), 0
        if progress:
            progress(0, total)
        if queue_url:
            from .queue import embed_on_queue

            direct = None
            if cat.dialect == "postgresql":  # workers that open this catalog too store their tracks themselves
                direct = {"where": cat.where, "files": {p: [sha, [[q, *stat_of[q]] for q in new[sha]]]
                                                        for p, sha in to_embed.items()}}
            results = embed_on_queue(queue_url, list(to_embed), version, library.settings.decode_limits.to_dict(),
                                     chunk=batch_tracks, catalog=direct)
        else:
            results = _embed_local(runner, bundle, list(to_embed), batch_tracks)
        ready: list[tuple[dict[str, Any], Any]] = []
        for path, item, pred in results:
            done += 1
            if "id" in item:  # stored by the worker (or found there by hash: a job run again)
                report.stored_by_workers += 1
                report.added += 1 if item["created"] else 0
                report.linked += len(new[to_embed[path]]) - (1 if item["created"] else 0)
                report.audio_s += item["duration_s"]
            elif pred is None:
                report.failed.append((path, item["error"]))
            else:
                item["sha256"] = to_embed[path]
                ready.append((item, pred))
                report.audio_s += pred.duration_s
            if len(ready) >= batch_tracks or (done == total and ready):
                library.cache.put_many([(it["sha256"], pr) for it, pr in ready])
                commit(ready)
                ready = []
            if progress:
                progress(done, total)
        if ready:
            library.cache.put_many([(it["sha256"], pr) for it, pr in ready])
            commit(ready)

    # a track whose only file now holds other audio is gone (the file became another track)
    stale = sorted(set(cat.orphans()) & replaced)
    if stale:
        library.remove_tracks(stale)
    if prune:
        orphans = cat.orphans()
        if orphans:
            library.remove_tracks(orphans)
            report.pruned = len(orphans)
    _ = library.index  # caught up with what queue workers stored
    library.duplicates.find()  # what queue workers stored (each batch here found its own)
    library.save_index()
    report.seconds = time.perf_counter() - t0
    return report
