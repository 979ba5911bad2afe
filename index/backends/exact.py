"""Exact search with numpy/BLAS: the ground truth every other backend is measured against.

Vectors live in one float32 matrix that grows by doubling; removal frees a slot that the
next add reuses. Queries go through BLAS in batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..base import VectorIndex
from ..distances import nearest, topk


class ExactIndex(VectorIndex):
    name = "exact"
    default_params = {"batch_size": 256}
    query_param_names = ()

    def __init__(self, dim: int, metric: str = "cosine", **params: Any) -> None:
        super().__init__(dim, metric, **params)
        self._vecs = np.zeros((0, self.dim), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._slot: dict[int, int] = {}
        self._free: list[int] = []
        self._live = np.zeros(0, bool)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids (n,), vectors (n, dim)) of every live entry, vectors as stored (unit length for cosine)."""
        with self._lock.read():
            live = np.flatnonzero(self._live)
            return self._ids[live].copy(), self._vecs[live].copy()

    def _stored(self, vectors: np.ndarray) -> np.ndarray:
        if self.metric == "cosine":  # normalise once at insert, not per query
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def _grow(self, needed: int) -> None:
        cap = len(self._vecs)
        if needed <= cap:
            return
        new_cap = max(needed, 2 * cap, 1024)
        self._vecs = np.concatenate([self._vecs, np.zeros((new_cap - cap, self.dim), np.float32)])
        self._ids = np.concatenate([self._ids, np.full(new_cap - cap, -1, np.int64)])
        self._live = np.concatenate([self._live, np.zeros(new_cap - cap, bool)])
        self._free.extend(range(new_cap - 1, cap - 1, -1))

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        new = sum(1 for i in ids if int(i) not in self._slot)
        self._grow(len(self._slot) + new)
        vectors = self._stored(vectors)
        for i, v in zip(ids, vectors):
            i = int(i)
            slot = self._slot.get(i)
            if slot is None:
                slot = self._free.pop()
                self._slot[i] = slot
            self._vecs[slot] = v
            self._ids[slot] = i
            self._live[slot] = True

    def _remove(self, ids: np.ndarray) -> None:
        for i in ids:
            slot = self._slot.pop(int(i))
            self._live[slot] = False
            self._ids[slot] = -1
            self._free.append(slot)

    def _search(self, q, k, allowed, **query_params):
        if allowed is not None:
            slots = np.fromiter((self._slot[int(i)] for i in allowed), np.int64, len(allowed))
            mat, dead = self._vecs[slots], None
        else:
            # the whole used part of the matrix, no copy; freed slots are masked
            top = int(np.flatnonzero(self._live)[-1]) + 1
            slots, mat = None, self._vecs[:top]
            dead = ~self._live[:top] if len(self._slot) < top else None
        out_ids, out_dist = [], []
        bs = int(self.params["batch_size"])
        for s in range(0, len(q), bs):
            qb = q[s : s + bs]
            if self.metric == "cosine":  # stored rows are unit length already
                qn = qb / np.maximum(np.linalg.norm(qb, axis=1, keepdims=True), 1e-30)
                d = 1.0 - qn @ mat.T
                if dead is not None:
                    d[:, dead] = np.inf
                pos, dist = topk(d, k)
            else:  # l2 re-scores in float64 what float32 cannot rank: exact far from the origin too
                pos, dist = nearest(qb, mat, k, self.metric, dead=dead)
            out_ids.append(self._ids[pos] if slots is None else self._ids[slots[pos]])
            out_dist.append(dist.astype(np.float32))
        return np.concatenate(out_ids), np.concatenate(out_dist)

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        return self._vecs[[self._slot[int(i)] for i in ids]]

    def _contains(self, id_: int) -> bool:
        return id_ in self._slot

    def _all_ids(self) -> np.ndarray:
        return self._ids[self._live].copy()

    def _count(self) -> int:
        return len(self._slot)

    def _save_native(self, folder: Path) -> None:
        live = np.flatnonzero(self._live)
        np.save(folder / "vectors.npy", self._vecs[live])
        np.save(folder / "ids.npy", self._ids[live])

    def _load_native(self, folder: Path) -> None:
        vecs = np.load(folder / "vectors.npy")
        ids = np.load(folder / "ids.npy")
        if vecs.shape != (len(ids), self.dim):
            raise ValueError(f"vectors of shape {vecs.shape} for {len(ids)} ids of dimension {self.dim}")
        self._grow(len(ids))
        self._add(ids, vecs)
