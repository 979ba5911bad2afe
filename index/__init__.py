"""Vectors → nearest neighbours, behind one interface with switchable backends.

    >>> from index import create_index
    >>> idx = create_index("hnsw", dim=128, metric="cosine")
    >>> idx.add(ids, vectors)
    >>> ids, dist = idx.search(query, k=10, allowed={1, 5, 9})
"""

from .base import METRICS, VectorIndex, read_header
from .distances import exact_distances, nearest, pairwise_distances
from .errors import BackendUnavailable, IndexFileError, IndexMismatch, InvalidInput, VectorIndexError
from .registry import BACKENDS, backend_class, create_index, load_index

__all__ = [
    "BACKENDS", "BackendUnavailable", "IndexFileError", "IndexMismatch", "InvalidInput", "METRICS",
    "VectorIndex", "VectorIndexError", "read_header", "backend_class", "create_index", "load_index", "pairwise_distances", "exact_distances", "nearest",
]
