"""USearch (Unum): a compact single-file HNSW implementation with SIMD distance kernels.

Adds are searchable at once (a batch is added on every core), ``remove`` takes items out of
the index, and re-adding an id replaces its vector (USearch itself refuses duplicate keys,
so the old entry is removed first). Vectors are stored as ``dtype`` (``f32``; ``f16``,
``bf16`` or ``i8`` store them smaller, with coarser distances). USearch keeps one
``expansion_search`` (its ``ef``) per index, so ``ef`` per query is handled as for hnsw: a
query at the ``ef`` set now runs without a lock or a call; another ``ef`` is set once, under
a lock, and kept for the queries after it.

Its Python API has no search-time filter: a filtered search asks for more neighbours, in
proportion to what the filter rejects, and keeps the allowed ones; when fewer than k are left
(a selective filter), the caller's exact fallback over the allowed items answers.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from usearch.index import Index

from ..base import VectorIndex
from ..distances import keep_allowed
from ..errors import InvalidInput

_METRIC = {"cosine": "cos", "l2": "l2sq", "ip": "ip"}
_DTYPES = ("f32", "f16", "bf16", "i8")


class USearchIndex(VectorIndex):
    name = "usearch"
    default_params = {"M": 16, "ef_construction": 200, "ef": 50, "dtype": "f32"}
    query_param_names = ("ef",)

    def __init__(self, dim: int, metric: str = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        if self.params["dtype"] not in _DTYPES:
            raise InvalidInput(f"usearch dtype must be one of {', '.join(_DTYPES)}, not {self.params['dtype']!r}")
        self._index = self._new()
        self._ef_lock = threading.Lock()
        self._ef_now = self._ef_default = int(self.params["ef"])

    def _new(self) -> Index:
        return Index(ndim=self.dim, metric=_METRIC[self.metric], dtype=self.params["dtype"],
                     connectivity=int(self.params["M"]), expansion_add=int(self.params["ef_construction"]),
                     expansion_search=int(self.params["ef"]))

    @staticmethod
    def _keys(ids: np.ndarray) -> np.ndarray:
        return ids.astype(np.int64).view(np.uint64)

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        keys = self._keys(ids)
        present = self._index.contains(keys)
        if np.any(present):
            self._index.remove(keys[present])
        self._index.add(keys, vectors, threads=0 if len(ids) > 1 else 1)

    def _remove(self, ids: np.ndarray) -> None:
        self._index.remove(self._keys(ids))

    def _search(self, q, k, allowed, **query_params):
        ef = query_params.get("ef")
        ef = self._ef_default if ef is None else int(ef)
        fetch = k
        if allowed is not None:  # over-fetch in proportion to what the filter rejects
            n = len(self._index)
            fetch = min(n, int(np.ceil(k * n / max(len(allowed), 1) * 2)) + k)
            ef = max(ef, fetch)
        n = q.shape[0]
        threads = 1 if n == 1 else 0
        if ef == self._ef_now:
            keys, dist, counts = self._search_many(q, fetch, threads)
        else:
            with self._ef_lock:  # one expansion_search per index: change it once, keep it
                if ef != self._ef_now:
                    self._index.expansion_search = ef
                    self._ef_now = ef
                keys, dist, counts = self._search_many(q, fetch, threads)
        ids = keys.view(np.int64)
        if (counts[0] < fetch if n == 1 else counts.min() < fetch):  # fewer found than asked: the rest is filler
            unfilled = np.arange(fetch)[None, :] >= counts[:, None]
            ids, dist = ids.copy(), dist.astype(np.float32, copy=True)
            ids[unfilled], dist[unfilled] = -1, np.inf
        if self.metric == "l2":  # USearch reports the squared distance
            dist = np.sqrt(np.maximum(dist, 0.0))
        if allowed is not None:
            return keep_allowed(ids, dist, allowed, k)
        return ids[:, :k], dist[:, :k]

    def _search_many(self, q: np.ndarray, count: int, threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys (n, count), distances (n, count), counts (n,)) of a search. The compiled
        index's own call, which ``Index.search`` makes too: without the result objects it builds
        around it (a fifth of a single query's time at 100k vectors), where this usearch has it."""
        compiled = getattr(self._index, "_compiled", None)
        if compiled is not None and hasattr(compiled, "search_many"):
            keys, dist, counts = compiled.search_many(q, count=count, exact=False, threads=threads)[:3]
            return keys, dist, counts
        found = self._index.search(q, count, threads=threads)  # pragma: no cover - other usearch layouts
        if q.shape[0] == 1:
            c = len(found.keys)
            keys = np.zeros((1, count), np.uint64)
            dist = np.full((1, count), np.inf, np.float32)
            keys[0, :c], dist[0, :c] = found.keys, found.distances
            return keys, dist, np.array([c])
        return found.keys, found.distances, np.asarray(found.counts)

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        got = self._index.get(self._keys(ids), dtype=np.float32)
        return np.asarray(np.stack(got) if isinstance(got, tuple) else got, dtype=np.float32).reshape(len(ids), self.dim)

    def _contains(self, id_: int) -> bool:
        return bool(self._index.contains(self._keys(np.array([id_], np.int64)))[0])

    def _contains_many(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self._index.contains(self._keys(ids)), bool).reshape(len(ids))

    def _all_ids(self) -> np.ndarray:
        return np.asarray(self._index.keys, dtype=np.uint64).view(np.int64).copy()

    def _count(self) -> int:
        return len(self._index)

    def nbytes(self) -> int:
        """Bytes of the serialised index (vectors and graph)."""
        return int(self._index.serialized_length)

    def _save_native(self, folder: Path) -> None:
        self._index.save(str(folder / "usearch.index"))

    def _load_native(self, folder: Path) -> None:
        index = self._new()
        index.load(str(folder / "usearch.index"))
        if index.ndim != self.dim:
            raise ValueError(f"file holds vectors of dimension {index.ndim}, header says {self.dim}")
        index.expansion_search = self._ef_default
        self._index, self._ef_now = index, self._ef_default
