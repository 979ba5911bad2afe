"""Errors raised by the index room (mapped to exit codes / HTTP statuses by the fronts)."""

from __future__ import annotations


class VectorIndexError(Exception):
    """Base class for everything the index room raises on purpose."""


class InvalidInput(VectorIndexError, ValueError):
    """Bad vectors or ids: wrong shape or dimension, NaN/inf, duplicate ids, bad k."""


class IndexMismatch(VectorIndexError):
    """A saved index does not match what the caller expects (dimension, metric, tag)."""


class IndexFileError(VectorIndexError):
    """A saved index is missing, unreadable or of an unknown format."""


class BackendUnavailable(VectorIndexError):
    """The named backend is unknown or its library cannot be imported."""
