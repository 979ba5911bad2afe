"""Exact distances and nearest neighbours in numpy, the ground truth every backend is scored
against and the exact backend's search. Distances are "smaller is closer" for every metric
(``cosine``: 1 − cos; ``l2``: Euclidean; ``ip``: 1 − a·b)."""

from __future__ import annotations

import numpy as np


def _l2_squared(q: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``|q|² − 2q·x + |x|²`` through BLAS in float32, with |q|² and |x|²."""
    qn2, xn2 = np.einsum("ij,ij->i", q, q), np.einsum("ij,ij->i", x, x)
    return qn2[:, None] - 2.0 * (q @ x.T) + xn2[None, :], qn2, xn2


def pairwise_distances(queries: np.ndarray, items: np.ndarray, metric: str) -> np.ndarray:
    """Distances through BLAS, shape (n_queries, n_items), float32, smaller is closer. Fast, and
    for l2 only as exact as float32 lets ``|q|² − 2q·x + |x|²`` be: far from the origin the
    terms cancel. ``nearest`` and ``exact_distances`` are exact."""
    q = queries.astype(np.float32, copy=False)
    x = items.astype(np.float32, copy=False)
    if metric == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        return 1.0 - qn @ xn.T
    if metric == "ip":
        return 1.0 - q @ x.T
    return np.sqrt(np.maximum(_l2_squared(q, x)[0], 0.0))


def exact_distances(queries: np.ndarray, items: np.ndarray, metric: str) -> np.ndarray:
    """Distances computed directly in float64 (differences, not the expanded square), shape
    (n_queries, n_items): what recall is scored with. For a few items per query."""
    q, x = np.asarray(queries, np.float64), np.asarray(items, np.float64)
    if metric == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
        return 1.0 - qn @ xn.T
    if metric == "ip":
        return 1.0 - q @ x.T
    return np.stack([np.sqrt(np.einsum("ij,ij->i", x - row, x - row)) for row in q]) if len(q) else np.zeros((0, len(x)))


_EPS32 = float(np.finfo(np.float32).eps)


def nearest(queries: np.ndarray, items: np.ndarray, k: int, metric: str,
            dead: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact k nearest items of each query: (positions, distances float32), sorted.

    BLAS in float32 finds them; for l2, whose expanded form loses precision far from the
    origin, every item the float32 rounding bound cannot rule out is scored again in float64
    from the differences, so uncentred data (a large common offset) gets its true neighbours.
    On centred data that is k items or a few more. ``dead``: a mask of items to skip."""
    q = queries.astype(np.float32, copy=False)
    x = items.astype(np.float32, copy=False)
    if metric != "l2":
        d = pairwise_distances(q, x, metric)
        if dead is not None:
            d[:, dead] = np.inf
        return topk(d, k)
    sq, qn2, xn2 = _l2_squared(q, x)
    if dead is not None:
        sq[:, dead] = np.inf
    n_live = x.shape[0] - (int(dead.sum()) if dead is not None else 0)
    k = min(k, n_live)
    if k == 0:
        return np.empty((len(q), 0), np.int64), np.empty((len(q), 0), np.float32)
    kth = np.partition(sq, k - 1, axis=1)[:, k - 1].astype(np.float64)
    # float32 rounding of a d-term dot product and the two norms: at most ~(d + 4)·ε·(|q|² + |x|²)
    err = (x.shape[1] + 4) * _EPS32 * (qn2.astype(np.float64) + float(xn2.max(initial=0.0)))
    pos_out = np.empty((len(q), k), np.int64)
    dist_out = np.empty((len(q), k), np.float32)
    q64 = q.astype(np.float64)
    for row in range(len(q)):
        cand = np.flatnonzero(sq[row] <= kth[row] + 2.0 * err[row])
        diff = x[cand].astype(np.float64) - q64[row]
        exact = np.einsum("ij,ij->i", diff, diff)
        order = np.argsort(exact, kind="stable")[:k]
        pos_out[row], dist_out[row] = cand[order], np.sqrt(exact[order])
    return pos_out, dist_out


def topk(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column positions and distances of the k smallest per row, sorted."""
    k = min(k, dist.shape[1])
    if k == 0:
        return np.empty((dist.shape[0], 0), np.int64), np.empty((dist.shape[0], 0), np.float32)
    if k < dist.shape[1]:
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(dist.shape[1]), (dist.shape[0], 1))
    pd = np.take_along_axis(dist, part, axis=1)
    order = np.argsort(pd, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64), np.take_along_axis(pd, order, axis=1)


def keep_allowed(ids: np.ndarray, dist: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Post-filtering for backends without a search-time filter: of over-fetched results
    (n, fetch), nearest first, the first k per row whose ids are in ``allowed`` (sorted,
    unique), padded with id -1 and distance inf (the caller then answers that row exactly)."""
    mask = np.isin(ids, allowed, assume_unique=False)
    out_ids = np.full((len(ids), k), -1, np.int64)
    out_dist = np.full((len(ids), k), np.inf, np.float32)
    for row in range(len(ids)):
        keep = np.flatnonzero(mask[row])[:k]
        out_ids[row, :len(keep)], out_dist[row, :len(keep)] = ids[row, keep], dist[row, keep]
    return out_ids, out_dist


__all__ = ["exact_distances", "keep_allowed", "nearest", "pairwise_distances", "topk"]
