"""The library: the catalog, the ANN index derived from it, the model and the prediction
cache, kept in step. The front doors reach it through ``service.Service``.

The index is a copy of the catalog's embeddings, saved under ``SONICSORT_HOME/index/<backend>``
with the model version as its tag. Opening it reconciles it with the catalog (ids added or
removed since it was saved, e.g. by an ingest that was killed) and rebuilds it from the
catalog when it is missing, unreadable or from another model.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from embedding.data import sha256_bytes

from .cache import PredictionCache
from .catalog import Catalog
from .config import Settings
from .errors import BadRequest, ModelMismatch

log = logging.getLogger(__name__)

METRIC = "cosine"


class Library:
    """The state behind one index backend: the catalog, its index kept equal to it, the model
    and the prediction cache (``Service`` holds one per backend; ingest writes through it).

    Parameters
    ----------
    settings : where things live and how they behave
    bundle : a loaded ``ModelBundle`` (default: loaded on first use from ``settings.model_dir``)
    cache : a ``PredictionCache`` (default: Redis at ``settings.redis_url``)
    backend : index backend name (default ``settings.backend``)
    persist_index : save the index after reconciling or rebuilding it when opened (server
        workers leave that to ``sonicsort serve``, which prepares it once)
    """

    def __init__(self, settings: Settings | None = None, *, bundle=None, cache: PredictionCache | None = None,
                 backend: str | None = None, persist_index: bool = True) -> None:
        from index import BACKENDS

        self.settings = settings or Settings.from_env()
        self.backend = backend or self.settings.backend
        if self.backend not in BACKENDS:
            raise BadRequest(f"unknown index backend {self.backend!r}; available: {', '.join(BACKENDS)}")
        if self.settings.on_model_mismatch not in ("refuse", "reembed"):
            raise BadRequest(f"on_model_mismatch must be 'refuse' or 'reembed', not {self.settings.on_model_mismatch!r}")
        self.catalog = Catalog(self.settings.catalog_location)
        self._bundle = bundle
        self.cache = cache if cache is not None else PredictionCache.from_settings(self.settings)
        self._index = None
        # save the index after reconciling it on open; server workers leave that to `serve`
        self.persist_index = persist_index
        self._index_generation = -1
        self._index_lock = threading.RLock()
        self._bundle_lock = threading.Lock()
        # (catalog generation, the whole catalog's ids, unit vectors and artists): what long
        # playlists and paths score (``Recommender._pool``), kept while the catalog is unchanged
        self.whole_pool: tuple[int, tuple] | None = None
        self._duplicates = None

    # ---------------------------------------------------------------- model
    @property
    def bundle(self):
        if self._bundle is None:
            with self._bundle_lock:
                if self._bundle is None:
                    from embedding import ModelBundle

                    self._bundle = ModelBundle.load(self.settings.model_dir)
        return self._bundle

    @property
    def model_version(self) -> str:
        return self.bundle.version

    def check_model(self, *, progress=None) -> None:
        """Make sure the catalog's embeddings come from the loaded model.

        On a mismatch: ``refuse`` raises ``ModelMismatch`` with what to do; ``reembed``
        recomputes every embedding from the audio files.
        """
        have = self.catalog.model_version
        want = self.bundle.version
        if have is None or (have == want and not self.catalog.ids_not_from(want)):
            return  # empty, or every embedding from this model (none left over from a stopped reembed)
        if self.settings.on_model_mismatch == "reembed":
            self.reembed(progress=progress)
            return
        raise ModelMismatch(
            f"the catalog's embeddings come from model {have}, the loaded model is {want}: run "
            f"`sonicsort reembed` (or set SONICSORT_ON_MODEL_MISMATCH=reembed), or load model {have}")

    def reembed(self, *, progress=None, batch: int = 32) -> int:
        """Recompute every embedding not made by the loaded model, from the tracks' files."""
        bundle = self.bundle
        stale = self.catalog.ids_not_from(bundle.version)
        tracks = self.catalog.get_many(stale)
        missing = [t for t in tracks.values() if not any(Path(p).is_file() for p in t.paths)]
        if missing:
            raise ModelMismatch(f"cannot re-embed: {len(missing)} track(s) have no readable file "
                                f"(e.g. {missing[0].path}); restore them or remove the tracks")
        done, updates = 0, []
        for i, tid in enumerate(stale):
            t = tracks[tid]
            path = next(p for p in t.paths if Path(p).is_file())
            pred = bundle.predict(path, limits=self.settings.decode_limits)
            updates.append((tid, pred.genre, pred.probabilities, pred.embedding, pred.is_silent, pred.tags))
            if len(updates) >= batch or i == len(stale) - 1:
                self.catalog.replace_embeddings(updates, bundle.version, final=i == len(stale) - 1,
                                                tag_priors=bundle.tag_priors)
                done += len(updates)
                updates = []
                if progress:
                    progress(done, len(stale))
        if not stale:
            self.catalog.set_meta(model_version=bundle.version)
        self.rebuild_index()
        return done

    # ---------------------------------------------------------------- index
    @property
    def index_path(self) -> Path:
        return self.settings.index_dir(self.backend)

    @property
    def index(self):
        """The live index, loaded (or rebuilt) on first use and kept in step with the catalog."""
        with self._index_lock:
            if self._index is None:
                self._index = self._open_index()  # sets the generation it holds
            elif self._index_generation != self.catalog.generation:
                # another process (ingest, a second server worker, another node) changed the catalog
                self.catch_up()
            return self._index

    def _tag(self) -> str:
        return self.catalog.model_version or self.bundle.version

    def _index_params(self) -> dict[str, Any]:
        """What the backend needs from the settings: where a Milvus collection lives."""
        return {"uri": self.settings.milvus_location} if self.backend == "milvus" else {}

    def _open_index(self):
        from index import IndexFileError, IndexMismatch, load_index

        path = self.index_path
        if (path / "header.json").is_file():
            try:
                idx = load_index(path, backend=self.backend, metric=METRIC, tag=self._tag())
                moved = {k: v for k, v in self._index_params().items() if idx.params.get(k) != v}
                if moved:
                    idx.close()
                    raise IndexMismatch(f"the index lives at {idx.params.get('uri')}, the settings say {moved}")
            except (IndexFileError, IndexMismatch) as exc:
                log.warning("rebuilding the %s index from the catalog: %s", self.backend, exc)
            else:
                self._index = idx
                # a saved index knows the generation it holds: the change log brings it up to date
                self._index_generation = idx.generation if idx.generation is not None else -1
                self.catch_up(save=self.persist_index)
                return self._index
        return self._build_index()

    def _build_index(self):
        from index import create_index

        idx = None
        generation = self.catalog.generation  # before reading: what changes meanwhile is caught up later
        for ids, vecs in self.catalog.embeddings():
            if idx is None:
                idx = create_index(self.backend, vecs.shape[1], METRIC, **self._index_params())
            idx.add(ids, vecs)
        if idx is None:
            idx = create_index(self.backend, self.bundle.embedding_dim, METRIC, **self._index_params())
        if getattr(idx, "shared", False):  # a collection others wrote to: drop what the catalog lost
            extra = np.setdiff1d(idx.ids(), self.catalog.ids())
            if len(extra):
                idx.remove(extra)
        idx.build()
        if self.persist_index:
            idx.save(self.index_path, tag=self._tag(), generation=generation)
        else:
            idx.tag, idx.generation = self._tag(), generation
        self._index_generation = generation
        log.info("built the %s index from the catalog: %d tracks", self.backend, len(idx))
        return idx

    def rebuild_index(self):
        """Rebuild the index from the catalog now (``sonicsort reindex``)."""
        with self._index_lock:
            self._index = self._build_index()
            return self._index

    def catch_up(self, *, save: bool = True) -> dict[str, Any]:
        """Bring the index to the catalog's generation through the change log (the ids added,
        re-embedded or removed since the generation it holds): O(changes), not O(catalog). When
        the log does not reach back that far, ``reconcile`` compares whole id sets instead."""
        with self._index_lock:
            feed = self.catalog.changes_since(self._index_generation) if self._index_generation >= 0 else None
            if feed is None:
                return {**self.reconcile(save=save), "how": "reconciled"}
            now, added, reembedded, removed = feed
            idx = self._index
            n_removed = idx.remove(removed) if len(removed) else 0
            # an added track's vector never changes: one already here (this process added it) stays
            want = added[~idx.contains(added)].tolist() + reembedded.tolist() if len(added) else reembedded.tolist()
            have: list[int] = []
            if want:
                vecs = self.catalog.vectors(want)
                have = [i for i in want if i in vecs]  # not removed since the log was read
                if have:
                    idx.add(np.array(have, np.int64), np.stack([vecs[i] for i in have]))
            self._index_generation = now
            if (have or n_removed) and save:
                idx.save(self.index_path, tag=self._tag(), generation=now)
            return {"added": len(have), "removed": int(n_removed), "how": "change log"}

    def reconcile(self, *, save: bool = True) -> dict[str, int]:
        """Make the index hold exactly the catalog's tracks. Returns what it changed."""
        with self._index_lock:
            idx = self._index
            generation = self.catalog.generation
            cat_ids = self.catalog.ids()
            idx_ids = idx.ids()
            missing = np.setdiff1d(cat_ids, idx_ids)
            extra = np.setdiff1d(idx_ids, cat_ids)
            if len(extra):
                idx.remove(extra)
            if len(missing):
                vecs = self.catalog.vectors(missing.tolist())
                have = [i for i in missing.tolist() if i in vecs]
                idx.add(np.array(have, np.int64), np.stack([vecs[i] for i in have]))
            self._index_generation = generation
            if (len(missing) or len(extra) or idx.generation != generation) and save:
                idx.save(self.index_path, tag=self._tag(), generation=generation)
            if len(missing) or len(extra):
                log.info("index reconciled with the catalog: +%d −%d", len(missing), len(extra))
            return {"added": int(len(missing)), "removed": int(len(extra))}

    @property
    def duplicates(self):
        """The catalog's near-duplicates (``recommender.duplicates.Duplicates``)."""
        if self._duplicates is None:
            from .duplicates import Duplicates

            self._duplicates = Duplicates(self)
        return self._duplicates

    def add_tracks(self, records: list, links: list = (), *, created: list[bool] | None = None) -> list[int]:
        """Store new tracks in the catalog (one transaction), then in the live index, then find
        their near-duplicates. ``created``: as for ``Catalog.add``."""
        with self._index_lock:
            idx = self.index
            ids = self.catalog.add(records, links, tag_priors=self.bundle.tag_priors if records else None,
                                   created=created)
            first: dict[int, np.ndarray] = {}
            for rec, tid in zip(records, ids):
                first.setdefault(tid, rec.embedding)
            if first:
                idx.add(np.fromiter(first, np.int64, len(first)), np.stack(list(first.values())))
            self.catch_up(save=False)  # to the generation after this write, with whatever others wrote
            if records:
                self.duplicates.find()
            return ids

    def remove_tracks(self, track_ids: list[int]) -> int:
        """Remove tracks from the catalog, then from the live index."""
        with self._index_lock:
            idx = self.index
            n = self.catalog.remove(track_ids)
            idx.remove(np.asarray(track_ids, np.int64))
            self.catch_up(save=False)
            return n

    def save_index(self) -> None:
        with self._index_lock:
            if self._index is not None:
                self._index.save(self.index_path, tag=self._tag(), generation=self._index_generation)

    # ---------------------------------------------------------------- prediction
    def predict_bytes(self, data: bytes, *, sha256: str | None = None) -> tuple[Any, str, bool]:
        """Predict one piece of audio through the cache. Returns (prediction, sha256, from_cache).

        ``sha256``: the data's hash when the caller has it already."""
        sha = sha256 or sha256_bytes(data)
        version = self.bundle.version
        cached = self.cache.get(sha, version)
        if cached is not None:
            return cached, sha, True
        pred = self.bundle.predict(data, limits=self.settings.decode_limits)
        self.cache.put(sha, pred)
        return pred, sha, False

    # ---------------------------------------------------------------- reporting
    def stats(self) -> dict[str, Any]:
        from index import IndexFileError, read_header

        s = self.catalog.stats()
        try:
            header = read_header(self.index_path)
            index_info = {k: header.get(k) for k in ("backend", "params", "metric", "dim", "count", "tag")}
        except IndexFileError:
            index_info = {"backend": self.backend, "count": None, "note": "not built yet"}
        # the live count: this process's index when it has one in step, else the catalog's, which
        # every serving worker's index holds once it has caught up (it does before its next
        # query); the file on disk is saved now and then, so it may be behind ("saved_count")
        index_info["saved_count"] = index_info.get("count")
        with self._index_lock:
            live = self._index is not None and self._index_generation == self.catalog.generation
            index_info["count"] = len(self._index) if live else s["tracks"]
        size = sum(p.stat().st_size for p in self.index_path.glob("*") if p.is_file()) if self.index_path.is_dir() else 0
        index_info["bytes"] = size
        index_info["path"] = str(self.index_path)
        s["index"] = index_info
        s["cache"] = self.cache.stats()
        s["home"] = str(self.settings.home)
        return s

    def close(self) -> None:
        with self._index_lock:
            if self._index is not None:
                self._index.close()
                self._index = None
        self.catalog.close()
