"""The service facade: everything the HTTP API does, as plain method calls.

One ``Service`` per server process holds the model (loaded once), the prediction cache and
one ``Library`` per index backend asked for (they share the catalog file, the model and the
cache). ``start()`` loads and warms the model, opens the index and checks Redis, in the
background by default, so a server answers ``/healthz`` at once and reports ``starting``
on ``/readyz`` until everything is loaded.

Tracks added through the service keep their audio under ``SONICSORT_HOME/uploads``: the
service owns those files and deletes them with their track. Files of an ingested folder
are never deleted, only forgotten.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .cache import AnswerCache, PredictionCache
from .catalog import NewTrack, Track
from .config import Settings
from .errors import BadRequest, NotReady, RecommenderError, UnknownTrack
from .library import Library, sha256_bytes
from .recommend import Recommender, Scored

log = logging.getLogger(__name__)

# mutagen's file type → the extension an upload is stored under (so `ingest` finds it too)
_EXT_OF_TYPE = {"FLAC": ".flac", "MP3": ".mp3", "EasyMP3": ".mp3", "OggVorbis": ".ogg", "OggOpus": ".opus",
                "OggFLAC": ".oga", "WAVE": ".wav", "AIFF": ".aiff", "MP4": ".m4a", "EasyMP4": ".m4a"}


class Service:
    """The model, cache and libraries of one server process, and what the API asks of them.

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
        self.error: str | None = None
        self.started_at = time.time()
        self.ready_after_s: float | None = None
        self._on_started: list = []
        self._map: tuple | None = None
        self.answers = AnswerCache(int(self.settings.answer_cache_mb * 1_000_000))

    def on_started(self, fn) -> None:
        """Call ``fn()`` when start-up has finished (at once if it already has)."""
        self._on_started.append(fn)
        if self._done.is_set():
            fn()

    # ---------------------------------------------------------------- start-up
    def start(self, *, background: bool = True) -> "Service":
        if background:
            threading.Thread(target=self._start, name="sonicsort-start", daemon=True).start()
        else:
            self._start()
        return self

    def _start(self) -> None:
        t0 = time.perf_counter()
        try:
            library = self.library()
            self._bundle = library.bundle  # loaded from settings.model_dir unless one was given; shared
            self._bundle.warm_up()  # tf.function tracing and librosa's numba kernels, not on a request
            library.check_model()
            library.index  # noqa: B018 - load (or rebuild) and reconcile now, not on the first request
            self.cache.ping()
            self.ready_after_s = time.perf_counter() - t0
            self.state = "ready"
            log.info("ready in %.1f s: model %s, %d tracks, %s index, cache %s", self.ready_after_s,
                     self._bundle.version, len(library.catalog), library.backend, self.cache.state())
        except Exception as exc:
            from embedding.errors import EmbeddingError
            from index.errors import VectorIndexError

            if not isinstance(exc, (RecommenderError, EmbeddingError, VectorIndexError)):
                log.exception("the service failed to start")
            self.error = str(exc)
            self.state = "failed"
        finally:
            self._done.set()
            for fn in self._on_started:
                fn()

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
        """What ``/readyz`` reports: ``ready``, ``degraded`` (no Redis), ``starting`` or ``failed``."""
        if self.cache.enabled and self.cache.state() == "degraded":
            self.cache.ping()  # a probe is a fine moment to look again
        cache_state = self.cache.state()
        status = self.state
        if status == "ready" and cache_state == "degraded":
            status = "degraded"
        lib = self._libraries.get(self.settings.backend)
        index = {"backend": self.settings.backend, "loaded": bool(lib is not None and lib._index is not None)}
        if index["loaded"]:
            index["tracks"] = len(lib._index)
        out = {"status": status,
               "model": {"loaded": self.state == "ready", "version": self._bundle.version if self._bundle else None},
               "index": index, "cache": cache_state, "uptime_s": round(time.time() - self.started_at, 1)}
        if self.error:
            out["error"] = self.error
        return out

    # ---------------------------------------------------------------- parts
    @property
    def bundle(self):
        self.require_ready()
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

    # ---------------------------------------------------------------- prediction
    def answer_token(self) -> tuple[str, int] | None:
        """What a stored answer depends on besides its request: the model and the catalog's
        generation (None while not ready or with the answer cache off: store nothing)."""
        if self.state != "ready" or not self.answers.enabled:
            return None
        return self._bundle.version, self.catalog.generation

    def stored_answer(self, key: Any) -> tuple[tuple[str, int] | None, bytes | None]:
        """(the current answer token, the answer stored under ``key`` for it or None)."""
        token = self.answer_token()
        return token, (self.answers.get(key, token) if token is not None else None)

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
            similar = reco.similar(query, k, genre=genre, genre_mode=genre_mode, **similar_opts)
        return {"prediction": pred, "sha256": query.sha256, "cached": cached, "track_id": query.track_id,
                "backend": reco.library.backend, "similar": similar}

    # ---------------------------------------------------------------- catalog
    def track(self, track_id: int) -> Track:
        return self.catalog.get(track_id)

    def search(self, text: str | None = None, *, genre: str | None = None, tag: str | None = None,
               after_id: int = 0, limit: int = 50) -> tuple[list[Track], int | None]:
        """One page of tracks by id; returns (tracks, the ``after_id`` of the next page or None).

        ``tag``: only tracks that have that front-end tag (``catalog._top_tag_rows``; case-insensitive).
        """
        if genre and self._bundle is not None:
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

        The same audio again returns its existing track (created False). Nothing is written
        when the audio cannot be decoded; a failed catalog write removes the stored file.
        """
        self.require_ready()
        lib = self.library(backend)
        sha = sha256_bytes(data)
        known = lib.catalog.ids_for_hashes([sha]).get(sha)
        if known is not None:
            return lib.catalog.get(known), False
        pred, _, _ = lib.predict_bytes(data, sha256=sha)  # AudioError here: nothing written yet
        folder = self.settings.uploads_dir / sha[:2]
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload.", dir=folder)
        final: Path | None = None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            final = folder / (sha + _extension(tmp, filename))
            os.replace(tmp, final)
            from .extract import read_tags

            tags = read_tags(final)
            if tags["title"] == final.stem:  # no title tag: the uploaded file's name, else a plain label
                tags["title"] = Path(filename).stem if filename and Path(filename).stem else "Untitled upload"
            st = final.stat()
            rec = NewTrack(path=str(final), size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha,
                           title=(title or tags["title"])[:500], artist=(artist or tags["artist"] or None),
                           album=(album or tags["album"] or None), duration_s=pred.duration_s, genre=pred.genre,
                           probabilities=pred.probabilities, embedding=pred.embedding,
                           model_version=pred.model_version, is_silent=pred.is_silent, tags=pred.tags)
            (track_id,) = lib.add_tracks([rec])
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            if final is not None and lib.catalog.ids_for_hashes([sha]).get(sha) is None:
                final.unlink(missing_ok=True)
            raise
        return lib.catalog.get(track_id), True

    def delete_track(self, track_id: int, *, backend: str | None = None) -> Track:
        """Remove a track from the catalog and the live index; delete its uploaded audio."""
        self.require_ready()
        lib = self.library(backend)
        t = lib.catalog.get(track_id)
        lib.remove_tracks([track_id])
        uploads = self.settings.uploads_dir.resolve()
        for p in t.paths:
            path = Path(p).resolve()
            if uploads in path.parents:
                path.unlink(missing_ok=True)
        return t

    # ---------------------------------------------------------------- playlists
    def playlist(self, seeds: Sequence[int], length: int, *, genres: Sequence[str] | None = None,
                 artist_cap: int = 2, centre_weight: float = 0.5) -> list[Scored]:
        return self.recommender().playlist(seeds, length, genres=genres, artist_cap=artist_cap,
                                           centre_weight=centre_weight)

    def path(self, start: int, end: int, length: int) -> list[Scored]:
        return self.recommender().path(start, end, length)

    def similar_to_track(self, track_id: int, k: int = 10, *, backend: str | None = None, **opts: Any) -> list[Scored]:
        reco = self.recommender(backend)
        if opts.get("genre"):
            reco.check_genre(opts["genre"])
        return reco.similar(reco.query_for_track(track_id), k, **opts)

    # ---------------------------------------------------------------- the map
    def map(self, limit: int = 5000) -> dict[str, Any]:
        """The catalog projected to 2-D for a music map: PCA of the (L2-normalised) embeddings.

        The projection is fitted on every track (or a fixed sample of 50,000) and kept until
        the catalog changes (its generation). At most ``limit`` points come back: an even
        spread by id when the catalog is larger, each with its id, title, artist and genre.
        """
        self.require_ready()
        lib = self.library()
        key = (lib.catalog.generation, self._bundle.version)
        with self._lock:
            cached = self._map if self._map is not None and self._map[0] == key else None
        if cached is None:
            cached = (key, *_project(lib.catalog))
            with self._lock:
                self._map = cached
        _, ids, xy, labels, explained = cached
        n = len(ids)
        pick = np.arange(n) if n <= limit else np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))
        points = [{"id": int(ids[i]), "x": round(float(xy[i, 0]), 5), "y": round(float(xy[i, 1]), 5),
                   "genre": labels[i][2], "title": labels[i][0], "artist": labels[i][1]} for i in pick]
        return {"method": "pca", "total": n, "explained_variance": [round(float(v), 5) for v in explained],
                "generation": key[0], "points": points}

    # ---------------------------------------------------------------- reporting
    def stats(self) -> dict[str, Any]:
        return self.library().stats()

    def close(self) -> None:
        for lib in self._libraries.values():
            lib.close()


_MAP_FIT_MAX = 50_000


def _project(catalog) -> tuple[np.ndarray, np.ndarray, list[tuple], list[float]]:
    """(ids, 2-D coordinates scaled into [-1, 1], (title, artist, genre) per id, explained variance)."""
    from sklearn.decomposition import PCA

    labels = catalog.labels()
    ids = np.array([r[0] for r in labels], np.int64)
    if len(ids) == 0:
        return ids, np.zeros((0, 2), np.float32), [], [0.0, 0.0]
    parts = list(catalog.embeddings())
    got = np.concatenate([i for i, _ in parts])
    vecs = np.concatenate([v for _, v in parts]).astype(np.float64)
    if not np.array_equal(got, ids):  # changed between the two reads: keep the tracks both saw
        keep = np.isin(ids, got)
        ids, labels = ids[keep], [lab for lab, k in zip(labels, keep) if k]
        vecs = vecs[np.isin(got, ids)]
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)  # cosine geometry
    if len(ids) < 3:
        xy = np.zeros((len(ids), 2))
        explained = [0.0, 0.0]
    else:
        rng = np.random.default_rng(0)
        fit = vecs if len(vecs) <= _MAP_FIT_MAX else vecs[rng.choice(len(vecs), _MAP_FIT_MAX, replace=False)]
        pca = PCA(n_components=2, svd_solver="full" if len(fit) <= 5000 else "randomized", random_state=0).fit(fit)
        xy = pca.transform(vecs)
        xy /= max(float(np.abs(xy).max()), 1e-12)
        explained = list(pca.explained_variance_ratio_)
    return ids, xy.astype(np.float32), [(r[1], r[2], r[3]) for r in labels], explained


def _extension(path: str, filename: str | None) -> str:
    """The stored upload's extension: the uploaded name's when it is an audio one, else its sniffed type."""
    from embedding.audio import AUDIO_EXTENSIONS

    if filename:
        ext = Path(filename).suffix.lower()
        if ext in AUDIO_EXTENSIONS:
            return ext
    try:
        import mutagen

        f = mutagen.File(path)
        if f is not None:
            return _EXT_OF_TYPE.get(type(f).__name__, ".audio")
    except Exception:  # unknown to mutagen: the decoder still read it
        pass
    return ".audio"


__all__ = ["Service"]
