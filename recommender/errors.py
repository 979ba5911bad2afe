"""The recommender's errors. The API maps them to HTTP statuses, the CLI to one line + exit 1."""

from __future__ import annotations


class RecommenderError(Exception):
    """Base class: a clear, user-facing message."""

    http_status = 400


class UnknownTrack(RecommenderError):
    http_status = 404


class BadRequest(RecommenderError):
    http_status = 400


class CatalogError(RecommenderError):
    """The catalog file cannot be used (unreadable, another format)."""

    http_status = 500


class ModelMismatch(RecommenderError):
    """The catalog's embeddings come from another model than the one loaded."""

    http_status = 409


class NotReady(RecommenderError):
    """The service is still loading its model and index, or failed to (the message says which)."""

    http_status = 503
