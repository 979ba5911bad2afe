"""The music map: the catalog's embeddings projected to 2-D (PCA) for the web page's map.

``MusicMap.points`` fits the projection on every track (or a fixed sample of 50,000), keeps
it until the catalog or the model changes, and returns at most ``limit`` points.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class MusicMap:
    """The 2-D projection of one catalog, recomputed when its generation or the model changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: tuple | None = None

    def points(self, catalog, model_version: str, limit: int = 5000) -> dict[str, Any]:
        """PCA of the (L2-normalised) embeddings: at most ``limit`` points, an even spread by id
        when the catalog is larger, each with its id, title, artist and genre."""
        key = (catalog.generation, model_version)
        with self._lock:
            cached = self._cached if self._cached is not None and self._cached[0] == key else None
        if cached is None:
            cached = (key, *_project(catalog))
            with self._lock:
                self._cached = cached
        _, ids, xy, labels, explained = cached
        n = len(ids)
        pick = np.arange(n) if n <= limit else np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))
        points = [{"id": int(ids[i]), "x": round(float(xy[i, 0]), 5), "y": round(float(xy[i, 1]), 5),
                   "genre": labels[i][2], "title": labels[i][0], "artist": labels[i][1]} for i in pick]
        return {"method": "pca", "total": n, "explained_variance": [round(float(v), 5) for v in explained],
                "generation": key[0], "points": points}


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
