"""Annoy random-projection forest (Spotify's annoy).

Annoy indexes are immutable once built. This backend therefore keeps added vectors in a
write buffer and rebuilds the forest on demand: the first search after an ``add`` or
``remove`` rebuilds (cost grows with the catalog: batch your writes, or call ``build()``
at a quiet moment). The forest is built on every core (``n_jobs``, default -1). Once it is
built, the buffer is dropped: the forest holds every vector, so the catalog's vectors are
not kept twice; the next ``add`` or ``remove`` copies them out of the forest again. Saved
indexes are loaded with ``mmap``, so several server processes that load the same file share
one copy of it in memory.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
from annoy import AnnoyIndex as _Annoy

from ..base import VectorIndex
from .exact import ExactIndex

_METRIC = {"cosine": "angular", "l2": "euclidean", "ip": "dot"}


class AnnoyIndex(VectorIndex):
    name = "annoy"
    default_params = {"n_trees": 50, "search_k": 5000, "seed": 42, "n_jobs": -1}
    query_param_names = ("search_k",)

    def __init__(self, dim: int, metric: str = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        self._store: ExactIndex | None = ExactIndex(dim, metric)  # the write buffer
        self._forest: _Annoy | None = None
        self._item_ids = np.zeros(0, np.int64)  # annoy item number → caller id
        self._sorted_ids = np.zeros(0, np.int64)
        self._sorted_items = np.zeros(0, np.int64)
        self._forest_file = None  # open handle on the file backing the forest, if any
        self._dirty = False
        self._changes = 0  # adds and removes so far: a build drops the buffer only if none came meanwhile
        self._build_lock = threading.Lock()

    # ---------------------------------------------------------------- building
    def build(self) -> None:
        """Rebuild the forest from the buffered vectors now (otherwise done at next search)."""
        with self._build_lock:
            if not self._dirty:
                return
            changes = self._changes
            ids, vecs = self._store.items()
            forest = _Annoy(self.dim, _METRIC[self.metric])
            forest.set_seed(int(self.params["seed"]))
            for item, v in enumerate(vecs):
                forest.add_item(item, v)
            del vecs
            forest.build(int(self.params["n_trees"]), n_jobs=int(self.params["n_jobs"]))
            order = np.argsort(ids, kind="stable")
            # swap in one step: concurrent searches keep using the old forest until then
            self._forest, self._item_ids, self._forest_file = forest, ids, None
            self._sorted_ids, self._sorted_items = ids[order], order
            if self._changes == changes:  # nothing was added meanwhile: the forest holds it all
                self._dirty = False
                self._store = None

    def _materialise(self) -> ExactIndex:
        """A built or loaded forest gets a writable buffer again the first time it is modified."""
        with self._build_lock:
            if self._store is None:
                store = ExactIndex(self.dim, self.metric)
                if len(self._item_ids):
                    vecs = np.stack([self._forest.get_item_vector(int(i)) for i in range(len(self._item_ids))])
                    store.add(self._item_ids, vecs.astype(np.float32))
                self._store = store
            return self._store

    # ---------------------------------------------------------------- hooks
    def _add(self, ids, vectors) -> None:
        self._materialise().add(ids, vectors)
        self._changes += 1
        self._dirty = True

    def _remove(self, ids) -> None:
        self._materialise().remove(ids)
        self._changes += 1
        self._dirty = True

    def _search(self, q, k, allowed, **query_params):
        if self._dirty:
            self.build()
        forest, item_ids = self._forest, self._item_ids
        n_items = len(item_ids)
        fetch = k
        if allowed is not None:
            allowed_set = set(int(a) for a in allowed)
            # over-fetch in proportion to how much the filter rejects
            fetch = min(n_items, int(np.ceil(k * n_items / max(len(allowed), 1) * 2)) + k)
        search_k = int(query_params.get("search_k", self.params["search_k"]))
        if search_k > 0 and fetch > k:
            search_k = int(search_k * fetch / k)
        out_ids = np.full((len(q), k), -1, np.int64)
        out_dist = np.full((len(q), k), np.inf, np.float32)
        for row, v in enumerate(q):
            items, dist = forest.get_nns_by_vector(v, fetch, search_k=search_k, include_distances=True)
            ids = item_ids[np.asarray(items, dtype=np.int64)] if items else np.zeros(0, np.int64)
            dist = self._to_distance(np.asarray(dist, np.float32))
            if allowed is not None:
                keep = np.fromiter((int(i) in allowed_set for i in ids), bool, len(ids))
                ids, dist = ids[keep], dist[keep]
            n = min(k, len(ids))
            out_ids[row, :n], out_dist[row, :n] = ids[:n], dist[:n]
        return out_ids, out_dist

    def _to_distance(self, d: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":  # annoy's angular distance is sqrt(2 (1 - cos))
            return d * d / 2.0
        if self.metric == "ip":  # annoy reports the dot product itself
            return 1.0 - d
        return d

    # a build may drop the buffer between a check and its use: each reads it once
    def _vectors(self, ids):
        store = self._store
        if store is not None:
            return store._vectors(ids)
        return np.stack([self._forest.get_item_vector(int(self._item_of(i))) for i in ids]).astype(np.float32)

    def _item_of(self, id_: int) -> int:
        pos = int(np.searchsorted(self._sorted_ids, id_))
        return int(self._sorted_items[pos])

    def _contains(self, id_: int) -> bool:
        store = self._store
        if store is not None:
            return store._contains(id_)
        pos = int(np.searchsorted(self._sorted_ids, id_))
        return pos < len(self._sorted_ids) and int(self._sorted_ids[pos]) == id_

    def _all_ids(self) -> np.ndarray:
        store = self._store
        return store._all_ids() if store is not None else self._item_ids.copy()

    def _count(self) -> int:
        store = self._store
        return store._count() if store is not None else len(self._item_ids)

    def _save_native(self, folder: Path) -> None:
        target = folder / "annoy.ann"
        if self._forest is None:
            self._dirty = True
        if self._dirty:
            self.build()
        if self._forest_file is None:
            # annoy's save() writes the file and re-maps the forest from it
            self._forest.save(str(target))
            self._forest_file = open(target, "rb")
        else:
            # a forest already backed by a file cannot be saved again: copy its bytes
            self._forest_file.seek(0)
            with open(target, "wb") as out:
                shutil.copyfileobj(self._forest_file, out)
        np.save(folder / "ids.npy", self._item_ids)

    def _load_native(self, folder: Path) -> None:
        forest = _Annoy(self.dim, _METRIC[self.metric])
        forest.load(str(folder / "annoy.ann"), prefault=False)  # mmap: shared between processes
        ids = np.load(folder / "ids.npy")
        if forest.get_n_items() != len(ids):
            raise ValueError(f"forest holds {forest.get_n_items()} items for {len(ids)} ids")
        order = np.argsort(ids, kind="stable")
        self._forest, self._item_ids = forest, ids
        self._forest_file = open(folder / "annoy.ann", "rb")
        self._sorted_ids, self._sorted_items = ids[order], order
        self._store = None
        self._dirty = False
