"""The service facade: everything both front doors (HTTP and the command line) ask, as plain method calls.

One ``Service`` per server process holds the model (loaded once), the prediction cache and
one ``Library`` per index backend asked for (they share the catalog file, the model and the
cache). ``start()`` loads and warms the model, opens the index and checks Redis, in the
background by default, so a server answers ``/healthz`` at once and reports ``starting``
on ``/readyz`` until everything is loaded.

Tracks added through the service keep their audio in its ``UploadStore``
(``SONICSORT_HOME/uploads``), deleted with their track; files of an ingested folder are
never deleted, only forgotten. The music map is ``musicmap.MusicMap``.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from .cache import PredictionCache
from .catalog import NewTrack, Track
from .config import Settings
from .errors import ERROR_KINDS, BadRequest, CatalogUnavailable, NotReady, StorageFull, UnknownTrack, is_disk_full
from .extract import read_tags
from .library import Library, sha256_bytes
from .limits import Deadline, Gate, lower_priority
from .listening import Listening, ListeningFacade
from .musicmap import MusicMap
from .recommend import Recommender, Scored
from .uploads import UploadStore

log = logging.getLogger(__name__)
HEAVY_LENGTH = 100  # a playlist or path longer than this passes the heavy-request gate ...
HEAVY_RERANK = 4  # ... and so does re-ranking (MMR, an artist cap) of more than 25 similar tracks
# with a write refused for want of space, /readyz reports storage "full" until this much is free again
FREE_AGAIN_BYTES = 64 * 1024 * 1024


class Service(ListeningFacade):
    """The one facade of sonicsort: what the HTTP API and the command line ask, as method calls.

    It holds the model, the prediction cache and one ``Library`` (catalog + index) per index
    backend of one process.

    Parameters
    ----------
    settings : where things live and how they behave
    bundle : a loaded ``ModelBundle`` (default: loaded by ``start`` from ``settings.model_dir``)
    cache : a ``PredictionCache`` (default: ``settings.redis_url``)
    persist_index : save the index after reconciling it when opened; off in server workers,
        where ``sonicsort serve`` prepared it once before starting them
    """

    def __init__(self, settings: Settings | None = None, *, bundle=None, cache: PredictionCache | None = None,
                 persist_index: bool = True) -> None:
        self.settings = settings or Settings.from_env()
        self.cache = cache if cache is not None else PredictionCache.from_settings(self.settings)
        self.persist_index = persist_index
        self._bundle = bundle
        self._libraries: dict[str, Library] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.state = "starting"
        self._start_error: Exception | None = None
        self.started_at = time.time()
        self.ready_after_s: float | None = None
        self._on_started: list = []
        self._map = MusicMap()
        self.uploads = UploadStore(self.settings.uploads_dir)
        self._heavy = Gate(self.settings.heavy_requests)
        self._heavy_pool = ThreadPoolExecutor(self._heavy.slots, thread_name_prefix="sonicsort-heavy",
                                              initializer=lower_priority)
        self._storage_error: str | None = None  # why the last write failed for want of space
        self._users = None
        self._music_index = None

    def on_started(self, fn) -> None:
        """Call ``fn()`` when start-up has finished (at once if it already has)."""
        self._on_started.append(fn)
        if self._done.is_set():
            fn()

    # ---------------------------------------------------------------- start-up
    def start(self, *, background: bool = True, warm: bool = True) -> "Service":
        """Load the model, check it against the catalog, open (or rebuild) the index and probe
        Redis; in a thread by default (``/readyz`` says ``starting`` until done). ``warm``:
        also run the model once, so the first request does not pay for tracing it."""
        if background:
            threading.Thread(target=self._start, args=(warm,), name="sonicsort-start", daemon=True).start()
        else:
            self._start(warm)
        return self

    def open(self) -> "Service":
        """Start now, for one command's work (no warm-up): raises what made start-up fail."""
        self.start(background=False, warm=False)
        if self._start_error is not None:
            raise self._start_error
        return self

    def _start(self, warm: bool = True) -> None:
        t0 = time.perf_counter()
        try:
            library = self.library()
            self._bundle = library.bundle  # loaded from settings.model_dir unless one was given; shared
            if warm:
                self._bundle.warm_up()  # tf.function tracing and librosa's numba kernels, not on a request
            library.check_model()
            library.index  # noqa: B018 - load (or rebuild) and reconcile now, not on the first request
            self.sweep_uploads()
            self.cache.ping()
            self.ready_after_s = time.perf_counter() - t0
            self.state = "ready"
            # a server says so; a command (open) has its own output
            log.log(logging.INFO if warm else logging.DEBUG, "ready in %.1f s: model %s, %d tracks, %s index, cache %s",
                    self.ready_after_s, self._bundle.version, len(library.catalog), library.backend, self.cache.state())
        except Exception as exc:
            if not isinstance(exc, ERROR_KINDS):
                log.exception("the service failed to start")
            self._start_error = exc
            self.state = "failed"
        finally:
            self._done.set()
            for fn in self._on_started:
                fn()

    @property
    def error(self) -> str | None:
        """Why start-up failed, None while it has not."""
        return None if self._start_error is None else str(self._start_error)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until start-up finished (ready or failed). Returns whether it is ready."""
        self._done.wait(timeout_s)
        return self.state == "ready"

    def require_ready(self) -> None:
        if self.state == "ready":
            return
        if self.state == "failed":
            raise NotReady(f"the service could not start: {self.error}")
        raise NotReady("the service is starting (loading the model and the index); retry in a few seconds")

    def readiness(self) -> dict[str, Any]:
        """What ``/readyz`` reports: ``ready``, ``degraded`` (no Redis, or the catalog's database
        server does not answer), ``starting`` or ``failed``."""
        if self.cache.enabled and self.cache.state() == "degraded":
            self.cache.ping()  # a probe is a fine moment to look again
        cache_state = self.cache.state()
        status = self.state
        if status == "ready" and cache_state == "degraded":
            status = "degraded"
        lib = self._libraries.get(self.settings.backend)
        # a shared catalog's server that stopped answering: cached reads go on, writes wait (503)
        catalog_state = "ok" if lib is None or lib.catalog.ping() else "unreachable"
        if status == "ready" and catalog_state != "ok":
            status = "degraded"
        storage = self._storage_state()
        if status == "ready" and storage != "ok":
            status = "degraded"
        index = {"backend": self.settings.backend, "loaded": bool(lib is not None and lib._index is not None)}
        if index["loaded"]:
            index["tracks"] = len(lib._index)
            # where this node's index stands against the (maybe shared) catalog: it catches up
            # through the change log on its next query (the last generation seen while the
            # catalog's server is away)
            index["generation"] = lib._index_generation
            try:
                index["catalog_generation"] = lib.catalog.generation
                index["behind"] = max(0, index["catalog_generation"] - index["generation"])
            except CatalogUnavailable:
                pass
        out = {"status": status,
               "model": {"loaded": self.state == "ready", "version": self._bundle.version if self._bundle else None},
               "index": index, "cache": cache_state, "catalog": catalog_state, "storage": storage,
               "uptime_s": round(time.time() - self.started_at, 1),
               "worker_pid": os.getpid()}
        if self.error:
            out["error"] = self.error
        if self._storage_error:
            out["storage_error"] = self._storage_error
        return out

    def _storage_state(self) -> str:
        """``full`` after a write failed for want of space, until a write succeeds or
        ``FREE_AGAIN_BYTES`` are free again under home; else ``ok``."""
        if self._storage_error is None:
            return "ok"
        try:
            if shutil.disk_usage(self.settings.home).free >= FREE_AGAIN_BYTES:
                self._storage_error = None
                return "ok"
        except OSError:
            pass
        return "full"

    # ---------------------------------------------------------------- parts
    @property
    def bundle(self):
        self.require_ready()
        return self._bundle

    def load_model(self):
        """The model bundle, loaded now if start-up has not (for work that needs no index)."""
        if self._bundle is None:
            self._bundle = self.library().bundle
        return self._bundle

    def library(self, backend: str | None = None) -> Library:
        """The library for ``backend`` (default: the configured one), opened on first use."""
        backend = backend or self.settings.backend
        lib = self._libraries.get(backend)
        if lib is None:
            with self._lock:
                lib = self._libraries.get(backend)
                if lib is None:
                    lib = Library(self.settings, bundle=self._bundle, cache=self.cache, backend=backend,
                                  persist_index=self.persist_index)
                    self._libraries[backend] = lib
        return lib

    def recommender(self, backend: str | None = None) -> Recommender:
        self.require_ready()
        return Recommender(self.library(backend))

    @property
    def catalog(self):
        return self.library().catalog

    def music_index(self):
        """The catalog as artists, albums and songs (``browse.MusicIndex``), rebuilt when the
        catalog's generation moves."""
        from .browse import MusicIndex

        cat = self.catalog
        gen = cat.generation
        idx = self._music_index
        if idx is None or idx.generation != gen:
            with self._lock:
                idx = self._music_index
                if idx is None or idx.generation != gen:
                    idx = self._music_index = MusicIndex(cat.browse_rows(), gen)
        return idx

    @property
    def users(self):
        """The catalog's users (``recommender.users.Users``): Subsonic apps log in as them."""
        if self._users is None:
            from .users import Users

            self._users = Users(self.catalog, self.settings)
        return self._users

    # ---------------------------------------------------------------- prediction
    def state_token(self) -> tuple[str, int] | None:
        """What every answer about the catalog depends on besides its request: the model version
        and the catalog's generation (None while not ready). A front door may keep an answer
        for as long as this token stays the same."""
        if self.state != "ready":
            return None
        return self._bundle.version, self.catalog.generation

    def predict(self, data: bytes, *, k: int = 10, genre: str | None = None, genre_mode: str = "any",
                backend: str | None = None, sha256: str | None = None, **similar_opts: Any) -> dict[str, Any]:
        """Genre of uploaded audio (through the cache) and its ``k`` nearest catalog tracks.

        ``sha256``: the data's hash when the caller has it already."""
        reco = self.recommender(backend)
        if genre:
            reco.check_genre(genre)  # a bad genre costs nothing: refused before decoding
        query, pred, cached = reco.query_for_audio(data, sha256=sha256)
        similar: list[Scored] = []
        if k > 0 and len(reco.catalog):
            similar = self._costly("the similar tracks", _rerank_work(k, similar_opts),
                                   lambda _: reco.similar(query, k, genre=genre, genre_mode=genre_mode, **similar_opts))
        return {"prediction": pred, "sha256": query.sha256, "cached": cached, "track_id": query.track_id,
                "backend": reco.library.backend, "similar": similar}

    # ---------------------------------------------------------------- catalog
    def track(self, track_id: int) -> Track:
        return self.catalog.get(track_id)

    def search(self, text: str | None = None, *, genre: str | None = None, tag: str | None = None,
               after_id: int = 0, limit: int = 50) -> tuple[list[Track], int | None]:
        """One page of tracks by id; returns (tracks, the ``after_id`` of the next page or None).

        ``tag``: only tracks that have that front-end tag (``recommender.catalog.records._top_tag_rows``; case-insensitive).
        """
        if genre and self._bundle is not None:  # checked once a model is loaded (start, load_model)
            Recommender(self.library()).check_genre(genre)
        if tag and self._bundle is not None and self._bundle.tag_names:
            known = {t.lower(): t for t in self._bundle.tag_names}
            if tag.lower() not in known:
                raise BadRequest(f"unknown tag {tag!r}; the model's tags are: {', '.join(self._bundle.tag_names)}")
        rows = self.catalog.search(text, genre=genre, tag=tag, after_id=after_id, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].id if more and rows else None)

    def audio_file(self, track_id: int) -> Path:
        """The first of the track's files that still exists."""
        t = self.catalog.get(track_id)
        for p in t.paths:
            if Path(p).is_file():
                return Path(p)
        raise UnknownTrack(f"track {track_id} has no readable audio file any more")

    def genres(self) -> list[dict[str, Any]]:
        counts = self.catalog.stats()["per_genre"]
        return [{"genre": g, "tracks": int(counts.get(g, 0))} for g in self.bundle.genres]

    def add_track(self, data: bytes, *, filename: str | None = None, title: str | None = None,
                  artist: str | None = None, album: str | None = None,
                  backend: str | None = None) -> tuple[Track, bool]:
        """Add uploaded audio to the catalog and the live index. Returns (track, created).

        The same audio again returns its existing track (created False), also when uploads of
        it race each other in other threads or processes: one of them creates it, and they
        share one stored file. Nothing is written when the audio cannot be decoded; a failed
        catalog write removes the stored file (a crash leaves it for ``sweep_uploads``).
        """
        self.require_ready()
        lib = self.library(backend)
        sha = sha256_bytes(data)
        known = lib.catalog.ids_for_hashes([sha]).get(sha)
        if known is not None:
            return lib.catalog.get(known), False
        pred, _, _ = lib.predict_bytes(data, sha256=sha)  # AudioError here: nothing written yet
        with self._writing("the upload"), self.uploads.holding(sha):
            final, new_file = self.uploads.write(data, sha)
            try:
                tags = read_tags(final)
                if tags["title"] == final.stem:  # no title tag: the uploaded file's name, else a plain label
                    tags["title"] = Path(filename).stem if filename and Path(filename).stem else "Untitled upload"
                st = final.stat()
                tags.update(title=title or tags["title"], artist=artist or tags["artist"], album=album or tags["album"])
                rec = NewTrack.from_prediction(pred, path=str(final), sha256=sha, size=st.st_size,
                                               mtime_ns=st.st_mtime_ns, **tags)
                created: list[bool] = []
                (track_id,) = lib.add_tracks([rec], created=created)
            except BaseException:
                # under the lock no other upload can have committed a row for a file this one created
                if new_file:
                    final.unlink(missing_ok=True)
                raise
        return lib.catalog.get(track_id), created[0]

    def delete_track(self, track_id: int, *, backend: str | None = None) -> Track:
        """Remove a track from the catalog and the live index; delete its uploaded audio."""
        self.require_ready()
        lib = self.library(backend)
        t = lib.catalog.get(track_id)
        with self._writing("the delete"), self.uploads.holding(t.sha256):
            lib.remove_tracks([track_id])
            self.uploads.delete_owned(t.paths)
        return t

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Around a write: a full disk becomes ``StorageFull`` (507 on the API) and is reported by
        ``readiness`` until a write succeeds again or space returns; nothing is half-written
        (the catalog's transactions and the files' renames are atomic)."""
        try:
            yield
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            self._storage_error = f"{what} found the disk full ({type(exc).__name__}: {exc})"
            log.warning("%s", self._storage_error)
            raise StorageFull(f"{what} could not be stored: the disk of the catalog, index or uploads is full; "
                              f"nothing was written. Free some space and try again") from None
        self._storage_error = None

    # ---------------------------------------------------------------- playlists
    def _costly(self, what: str, work: int, fn):
        """``fn(deadline)`` under the request budget (``recommender.limits``). Work of more than
        ``HEAVY_LENGTH`` (a playlist's or path's tracks, ``HEAVY_RERANK`` × a re-ranked ``k``)
        first passes the heavy-request gate, then runs in one of the process's heavy-work
        threads, which the operating system schedules after the threads of short requests
        (nice 10): the short requests keep their latency while a long one runs."""
        if work <= HEAVY_LENGTH:
            return fn(Deadline(self.settings.request_budget_s))
        with self._heavy.enter(what):
            return self._heavy_pool.submit(lambda: fn(Deadline(self.settings.request_budget_s))).result()

    def playlist(self, seeds: Sequence[int], length: int, *, genres: Sequence[str] | None = None,
                 artist_cap: int = 2, centre_weight: float = 0.5, order: str = "playlist",
                 dedupe: bool = True) -> list[Scored]:
        """``Recommender.playlist``: shorter than ``length`` when fewer tracks can be placed;
        ``order="flow"`` reorders the tracks after the seeds (``listening.flow_order``)."""
        _check_order(order, ("playlist", "flow"))
        reco = self.recommender()

        def run(deadline):
            items = reco.playlist(seeds, length, genres=genres, artist_cap=artist_cap, centre_weight=centre_weight,
                                  deadline=deadline, dedupe=dedupe)
            if order == "flow":
                return Listening(reco).in_flow(items, keep_first=len(seeds), deadline=deadline)
            return items

        return self._costly("the playlist", length, run)

    def path(self, start: int, end: int, length: int, *, order: str = "path", dedupe: bool = True) -> list[Scored]:
        """``Recommender.path``: shorter than ``length`` when the catalog holds fewer tracks;
        ``order="flow"`` reorders the tracks between the two ends (``listening.flow_order``)."""
        _check_order(order, ("path", "flow"))
        reco = self.recommender()

        def run(deadline):
            items = reco.path(start, end, length, deadline=deadline, dedupe=dedupe)
            return Listening(reco).in_flow(items, keep_last=True, deadline=deadline) if order == "flow" else items

        return self._costly("the path", length, run)

    def similar_to_track(self, track_id: int, k: int = 10, *, backend: str | None = None, **opts: Any) -> list[Scored]:
        reco = self.recommender(backend)
        if opts.get("genre"):
            reco.check_genre(opts["genre"])
        query = reco.query_for_track(track_id)
        return self._costly("the similar tracks", _rerank_work(k, opts), lambda _: reco.similar(query, k, **opts))

    def duplicate_groups(self, *, after_id: int = 0, limit: int = 100) -> tuple[list[tuple[Any, list[Track]]], int | None]:
        """The catalog's near-duplicate groups whose lowest id is above ``after_id``, ``limit`` of
        them, each with its tracks; and the cursor of the next page (None: the last)."""
        self.require_ready()
        groups = [g for g in self.library().duplicates.groups() if g.ids[0] > after_id]
        page = groups[:limit]
        rows = self.catalog.get_many([t for g in page for t in g.ids])
        out = [(g, [rows[t] for t in g.ids if t in rows]) for g in page]
        return out, (page[-1].ids[0] if len(groups) > limit else None)

    # ---------------------------------------------------------------- the map
    def map(self, limit: int = 5000) -> dict[str, Any]:
        """The catalog projected to 2-D for a music map (``musicmap.MusicMap.points``)."""
        self.require_ready()
        return self._map.points(self.library().catalog, self._bundle.version, limit)

    # ---------------------------------------------------------------- catalog maintenance
    def ingest(self, roots: Sequence[str | Path], **options: Any):
        """Scan folders into the catalog and the index (``recommender.ingest.ingest``; its options).
        Returns its ``IngestReport``."""
        from .ingest import ingest

        with self._writing("the ingest"):
            return ingest(self.library(), roots, **options)

    def reindex(self):
        """Rebuild the index of the configured backend from the catalog. Returns the index."""
        lib = self.library()
        lib.check_model()
        with self._writing("the index"):
            return lib.rebuild_index()

    def reembed(self, *, progress=None) -> int:
        """Re-embed every track made by another model than the loaded one. Returns how many."""
        return self.library().reembed(progress=progress)

    def sweep_uploads(self, *, grace_s: float = 60.0) -> list[Path]:
        """Remove what a crash mid-upload or mid-delete left in the upload store: temporary
        files, and stored files no catalog row refers to, older than ``grace_s``. Returns them."""
        return self.uploads.sweep_against(self.library().catalog, grace_s=grace_s)

    # ---------------------------------------------------------------- reporting
    def stats(self) -> dict[str, Any]:
        """Catalog counts, model versions, index and cache state; needs no loaded model."""
        return self.library().stats()

    def close(self) -> None:
        self._heavy_pool.shutdown(wait=False)
        for lib in self._libraries.values():
            lib.close()


def _check_order(order: str, choices: tuple[str, ...]) -> None:
    if order not in choices:
        raise BadRequest(f"order must be one of {', '.join(choices)}, not {order!r}")


def _rerank_work(k: int, opts: dict[str, Any]) -> int:
    """What ``Service._costly`` weighs a ``similar`` call at: ``HEAVY_RERANK`` × ``k`` when it
    re-ranks (MMR, an artist cap), else nothing."""
    reranked = opts.get("mmr_lambda") is not None or opts.get("artist_cap") is not None
    return k * HEAVY_RERANK if reranked else 0


__all__ = ["Service"]
