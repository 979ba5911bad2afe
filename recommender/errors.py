"""The errors the front doors answer with their message, and what kind each one is.

The recommender raises its own small hierarchy (``RecommenderError``); the rooms below it
raise theirs (``embedding.EmbeddingError``, ``index.VectorIndexError``). ``ERROR_KINDS`` lists
all three base classes and ``error_kind`` names what went wrong in words both doors use:
the API maps a kind to an HTTP status, the CLI prints the message and exits 1. A front door
therefore imports its error knowledge from here, not from ``embedding`` or ``index``.
"""

from __future__ import annotations

from embedding.errors import AudioError, DatasetError, EmbeddingError, ModelError
from index.errors import BackendUnavailable, IndexFileError, IndexMismatch, InvalidInput, VectorIndexError

# what a front door can say about a failure (the API: 400, 404, 409, 422, 503, 500, 507, 401, 403)
BAD_REQUEST, NOT_FOUND, CONFLICT, UNUSABLE_INPUT, UNAVAILABLE, INTERNAL, STORAGE_FULL, UNAUTHENTICATED, FORBIDDEN = (
    "bad_request", "not_found", "conflict", "unusable_input", "unavailable", "internal", "storage_full",
    "unauthenticated", "forbidden")


class RecommenderError(Exception):
    """Base class: a clear, user-facing message."""

    kind = BAD_REQUEST


class UnknownTrack(RecommenderError):
    kind = NOT_FOUND


class BadRequest(RecommenderError):
    kind = BAD_REQUEST


class UnknownUser(RecommenderError):
    kind = NOT_FOUND


class UnknownPlaylist(RecommenderError):
    kind = NOT_FOUND


class UnknownArtist(RecommenderError):
    kind = NOT_FOUND


class WrongCredentials(RecommenderError):
    """A login with a wrong name, password, token or API key, or one refused for too many failures."""

    kind = UNAUTHENTICATED


class NotAllowed(RecommenderError):
    """The user is known but may not do this (another user's playlist, an admin's command)."""

    kind = FORBIDDEN


class CatalogError(RecommenderError):
    """The catalog file cannot be used (unreadable, another format)."""

    kind = INTERNAL


class CatalogUpgraded(CatalogError):
    """A newer sonicsort upgraded the catalog's schema while this process was running on it."""

    kind = UNAVAILABLE


class CatalogUnavailable(CatalogError):
    """The catalog's database server does not answer (PostgreSQL stopped, the network down):
    writes wait for it to return; reads the process has at hand still succeed."""

    kind = UNAVAILABLE


class ModelMismatch(RecommenderError):
    """The catalog's embeddings come from another model than the one loaded."""

    kind = CONFLICT


class Overloaded(RecommenderError):
    """A request would cost more than one request may (``recommender.limits``): retry later, or ask for less."""

    kind = UNAVAILABLE


class StorageFull(RecommenderError):
    """The disk under the catalog, the index or the uploads is full: nothing was written; writes
    succeed again once there is space."""

    kind = STORAGE_FULL


class NotReady(RecommenderError):
    """The service is still loading its model and index, or failed to (the message says which)."""

    kind = UNAVAILABLE


# every room's user-facing errors: a front door answers these with their message
ERROR_KINDS: tuple[type[Exception], ...] = (RecommenderError, EmbeddingError, VectorIndexError)


def error_kind(exc: BaseException) -> str | None:
    """What kind of failure ``exc`` is (one of the constants above), None when it is none of ours."""
    if is_disk_full(exc):
        return STORAGE_FULL
    if isinstance(exc, RecommenderError):
        return exc.kind
    if isinstance(exc, (AudioError, DatasetError)):
        return UNUSABLE_INPUT  # a well-formed request with audio (or data) that cannot be used
    if isinstance(exc, InvalidInput):
        return BAD_REQUEST
    if isinstance(exc, (ModelError, BackendUnavailable, IndexFileError, IndexMismatch)):
        return UNAVAILABLE
    if isinstance(exc, (EmbeddingError, VectorIndexError)):
        return INTERNAL
    return None


_FULL_ERRNOS = {28, 122}  # ENOSPC, EDQUOT


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it was raised from) says the disk or quota is full: an OSError
    with ENOSPC or EDQUOT, SQLite's SQLITE_FULL, or PostgreSQL's disk_full (SQLSTATE 53100)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, StorageFull):
            return True
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if getattr(exc, "sqlite_errorcode", None) == 13 or getattr(exc, "sqlstate", None) == "53100":
            return True
        if "database or disk is full" in str(exc):
            return True
        orig = getattr(exc, "orig", None)  # SQLAlchemy's wrapper of the driver's error
        exc = orig if isinstance(orig, BaseException) else (exc.__cause__ or exc.__context__)
        seen += 1
    return False
