"""Voyager (Spotify's successor to Annoy): an HNSW graph, built on hnswlib's algorithm.

Unlike Annoy it takes adds and removes at any time: adds go into the graph at once (on every
core for a batch), ``remove`` marks items deleted (their memory is kept until a rebuild) and
re-adding an id replaces its vector. ``ef`` is passed per query to Voyager itself, so it
needs no lock. Vectors are stored as ``storage`` (``float32``, or ``float8`` / ``e4m3``:
a quarter of the memory, with coarser distances).

Voyager has no search-time filter: a filtered search asks for more neighbours, in
proportion to what the filter rejects, and keeps the allowed ones; when fewer than k are
left (a selective filter), the caller's exact fallback over the allowed items answers.
Saved indexes are Voyager's own file plus the live ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import voyager

from ..base import VectorIndex
from ..distances import keep_allowed
from ..errors import InvalidInput

_SPACE = {"cosine": voyager.Space.Cosine, "l2": voyager.Space.Euclidean, "ip": voyager.Space.InnerProduct}
_STORAGE = {"float32": voyager.StorageDataType.Float32, "float8": voyager.StorageDataType.Float8,
            "e4m3": voyager.StorageDataType.E4M3}


class VoyagerIndex(VectorIndex):
    name = "voyager"
    default_params = {"M": 16, "ef_construction": 200, "ef": 50, "storage": "float32", "seed": 1}
    query_param_names = ("ef",)
    finite_check_after = True  # a NaN/inf query comes back with NaN/inf distances (tests/test_index.py)

    def __init__(self, dim: int, metric: str = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        if self.params["storage"] not in _STORAGE:
            raise InvalidInput(f"voyager storage must be one of {', '.join(_STORAGE)}, not {self.params['storage']!r}")
        self._ef_default = int(self.params["ef"])
        self._index = voyager.Index(_SPACE[metric], num_dimensions=self.dim, M=int(self.params["M"]),
                                    ef_construction=int(self.params["ef_construction"]),
                                    random_seed=int(self.params["seed"]),
                                    storage_data_type=_STORAGE[self.params["storage"]])
        self._alive: set[int] = set()

    # Voyager ids are uint64: the caller's int64 ids are viewed through them losslessly
    @staticmethod
    def _labels(ids: np.ndarray) -> np.ndarray:
        return ids.astype(np.int64).view(np.uint64)

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        # a present id (live or deleted) is replaced, and a deleted one revived, by Voyager itself
        self._index.add_items(vectors, ids=self._labels(ids), num_threads=-1 if len(ids) > 1 else 1)
        self._alive.update(ids.tolist())

    def _remove(self, ids: np.ndarray) -> None:
        for label in self._labels(ids).tolist():
            self._index.mark_deleted(label)
        self._alive.difference_update(ids.tolist())

    def _search(self, q, k, allowed, **query_params):
        ef = query_params.get("ef")
        ef = self._ef_default if ef is None else int(ef)
        n_alive = len(self._alive)
        fetch = k
        if allowed is not None:  # over-fetch in proportion to what the filter rejects
            fetch = min(n_alive, int(np.ceil(k * n_alive / max(len(allowed), 1) * 2)) + k)
        ef = max(ef, fetch)
        try:
            labels, dist = self._index.query(q, k=fetch, num_threads=1 if q.shape[0] == 1 else -1, query_ef=ef)
        except voyager.RecallError:
            # the graph walk found fewer than asked (deleted items cut it off): be exact
            every = np.fromiter(self._alive, np.int64, n_alive)
            if allowed is not None:
                every = np.intersect1d(every, allowed)
            return self._search_subset(q, k, every)  # k ≤ len(every): the caller capped it
        ids = labels.view(np.int64)
        if self.metric == "l2":  # Voyager reports the squared distance
            dist = np.sqrt(np.maximum(dist, 0.0))
        if allowed is not None:
            return keep_allowed(ids, dist, allowed, k)
        return ids, dist

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self._index.get_vectors(self._labels(ids).tolist()), dtype=np.float32)

    def _contains(self, id_: int) -> bool:
        return id_ in self._alive

    def _all_ids(self) -> np.ndarray:
        return np.fromiter(self._alive, np.int64, len(self._alive))

    def _count(self) -> int:
        return len(self._alive)

    def _save_native(self, folder: Path) -> None:
        self._index.save(str(folder / "voyager.index"))
        np.save(folder / "ids.npy", self._all_ids())

    def _load_native(self, folder: Path) -> None:
        index = voyager.Index.load(str(folder / "voyager.index"))
        if index.num_dimensions != self.dim:
            raise ValueError(f"file holds vectors of dimension {index.num_dimensions}, header says {self.dim}")
        self._index = index
        self._alive = set(np.load(folder / "ids.npy").tolist())
