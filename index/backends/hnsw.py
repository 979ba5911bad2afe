"""HNSW graph index (hnswlib).

Incremental adds grow the capacity automatically (doubling); ``remove`` is a soft delete
(hnswlib ``mark_deleted``), and re-adding a removed id revives and replaces it. ``ef`` can
be set per query (``search(q, k, ef=...)``) or as the default in the constructor. hnswlib
keeps a single ``ef`` per index. A query whose ``ef`` is the one set now runs at once,
without a lock or a call, so a stream of queries at one ``ef`` (the default or any other)
costs what setting it once does; a query at another ``ef`` takes the lock, sets it and
leaves it set for the queries after it. A concurrent query may briefly run at a neighbour's
``ef`` (quality, never correctness: hnswlib searches with at least k).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from ..base import VectorIndex

_SPACE = {"cosine": "cosine", "l2": "l2", "ip": "ip"}


class HnswIndex(VectorIndex):
    name = "hnsw"
    default_params = {"M": 16, "ef_construction": 200, "ef": 50, "num_threads": 1}
    query_param_names = ("ef",)

    def __init__(self, dim: int, metric: str = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        self._index = self._new(1024)
        self._alive: set[int] = set()
        self._deleted: set[int] = set()  # marked deleted in hnswlib, revived by a re-add
        self._ef_lock = threading.Lock()
        self._ef_now = self._ef_default = int(self.params["ef"])  # what hnswlib's index is set to; the default

    def _new(self, capacity: int) -> hnswlib.Index:
        idx = hnswlib.Index(space=_SPACE[self.metric], dim=self.dim)
        idx.init_index(max_elements=capacity, M=int(self.params["M"]),
                       ef_construction=int(self.params["ef_construction"]), random_seed=100)
        idx.set_ef(int(self.params["ef"]))
        return idx

    # hnswlib labels are uint64: view the caller's int64 ids through them losslessly
    @staticmethod
    def _labels(ids: np.ndarray) -> np.ndarray:
        return ids.astype(np.int64).view(np.uint64)

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        new = sum(1 for i in ids if int(i) not in self._alive)
        needed = self._index.element_count + new
        if needed > self._index.max_elements:
            self._index.resize_index(max(needed, 2 * self._index.max_elements))
        revive = [int(i) for i in ids if int(i) in self._deleted]
        for label in self._labels(np.array(revive, dtype=np.int64)):
            self._index.unmark_deleted(int(label))
        self._deleted.difference_update(revive)
        self._index.add_items(vectors, self._labels(ids), num_threads=int(self.params["num_threads"]))
        self._alive.update(int(i) for i in ids)

    def _remove(self, ids: np.ndarray) -> None:
        for label, i in zip(self._labels(ids), ids):
            self._index.mark_deleted(int(label))
            self._alive.discard(int(i))
            self._deleted.add(int(i))

    def _search(self, q, k, allowed, **query_params):
        ef = query_params.get("ef")
        ef = self._ef_default if ef is None else int(ef)
        if ef < k:
            ef = k
        flt = None
        if allowed is not None:
            allowed_labels = set(int(v) for v in self._labels(allowed))
            flt = allowed_labels.__contains__
            # a filter rejects candidates: widen the beam in proportion
            ef = min(max(ef, int(ef * len(self._alive) / max(len(allowed), 1))), max(len(self._alive), k))
        threads = 1 if q.shape[0] == 1 else -1
        try:
            if ef == self._ef_now:
                labels, dist = self._index.knn_query(q, k=k, num_threads=threads, filter=flt)
            else:
                with self._ef_lock:  # hnswlib keeps one ef per index: change it once, keep it
                    if ef != self._ef_now:
                        self._index.set_ef(ef)
                        self._ef_now = ef
                    labels, dist = self._index.knn_query(q, k=k, num_threads=threads, filter=flt)
        except RuntimeError:
            # hnswlib raises when it cannot fill k (e.g. a selective filter): caller goes exact
            return np.full((len(q), k), -1, np.int64), np.full((len(q), k), np.inf, np.float32)
        ids = labels.view(np.int64)
        if self.metric == "l2":
            dist = np.sqrt(np.maximum(dist, 0.0))
        return ids, dist

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        # hnswlib returns cosine vectors normalised, which leaves cosine distances unchanged
        return np.asarray(self._index.get_items(self._labels(ids), return_type="numpy"), dtype=np.float32)

    def _contains(self, id_: int) -> bool:
        return id_ in self._alive

    def _all_ids(self) -> np.ndarray:
        return np.fromiter(self._alive, dtype=np.int64, count=len(self._alive))

    def _count(self) -> int:
        return len(self._alive)

    def _save_native(self, folder: Path) -> None:
        self._index.save_index(str(folder / "hnsw.bin"))
        np.save(folder / "ids.npy", np.fromiter(self._alive, dtype=np.int64, count=len(self._alive)))
        np.save(folder / "deleted.npy", np.fromiter(self._deleted, dtype=np.int64, count=len(self._deleted)))

    def _load_native(self, folder: Path) -> None:
        idx = hnswlib.Index(space=_SPACE[self.metric], dim=self.dim)
        idx.load_index(str(folder / "hnsw.bin"), allow_replace_deleted=False)
        idx.set_ef(int(self.params["ef"]))
        self._index, self._ef_now = idx, int(self.params["ef"])
        self._alive = set(int(i) for i in np.load(folder / "ids.npy"))
        self._deleted = set(int(i) for i in np.load(folder / "deleted.npy"))
