"""Backends by name. Adding one: a module under ``index/backends/`` and one line here."""

from __future__ import annotations

import importlib
from typing import Any

from .base import VectorIndex, read_header
from .errors import BackendUnavailable

BACKENDS: dict[str, str] = {
    "hnsw": "index.backends.hnsw:HnswIndex",
    "annoy": "index.backends.annoy:AnnoyIndex",
    "exact": "index.backends.exact:ExactIndex",
    "milvus": "index.backends.milvus:MilvusIndex",
    "faiss": "index.backends.faiss:FaissIndex",
    "voyager": "index.backends.voyager:VoyagerIndex",
    "usearch": "index.backends.usearch:USearchIndex",
}


def backend_class(name: str) -> type[VectorIndex]:
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown index backend {name!r}; available: {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} cannot be used: {exc}") from None


def create_index(name: str, dim: int, metric: str = "cosine", **params: Any) -> VectorIndex:
    """A new, empty index of backend ``name``."""
    return backend_class(name)(dim, metric, **params)


def load_index(path, *, dim: int | None = None, metric: str | None = None, tag: str | None = None,
               backend: str | None = None) -> VectorIndex:
    """Load a saved index of whichever backend wrote it, checking the caller's expectations."""
    header = read_header(path)
    if backend is not None and header["backend"] != backend:
        from .errors import IndexMismatch

        raise IndexMismatch(f"{path}: holds a {header['backend']} index, expected {backend}")
    return backend_class(header["backend"]).load(path, dim=dim, metric=metric, tag=tag)
