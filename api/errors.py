"""Every error leaves as ``application/problem+json`` (RFC 9457) with a human message.

The recommender, embedding and index rooms raise their own small exception hierarchies;
this module maps them to HTTP statuses. Nothing here ever sends a traceback: an unexpected
exception is logged on the server and answered with a plain 500 message.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

log = logging.getLogger("sonicsort.api")

PROBLEM = "application/problem+json"


class ApiError(Exception):
    """An HTTP-level refusal (auth, media type, body shape) raised by the views."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def problem(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body = {"type": "about:blank", "title": HTTP_STATUS_CODES.get(status, "Error"), "status": status,
            "detail": detail, **extra}
    resp = jsonify(body)
    resp.status_code = status
    resp.mimetype = PROBLEM
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _status_of(exc: Exception) -> int:
    from embedding.errors import AudioError, DatasetError, ModelError
    from index.errors import BackendUnavailable, IndexFileError, IndexMismatch, InvalidInput
    from recommender.errors import RecommenderError

    if isinstance(exc, RecommenderError):
        return exc.http_status
    if isinstance(exc, (AudioError, DatasetError)):
        return 422  # well-formed request, audio that cannot be used
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, (ModelError, BackendUnavailable, IndexFileError, IndexMismatch)):
        return 503
    return 500


def init_app(app: Flask) -> None:
    from embedding.errors import EmbeddingError
    from index.errors import VectorIndexError
    from recommender.errors import RecommenderError

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return problem(exc.status, exc.detail, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        headers = {k: v for k, v in exc.get_headers() if k.lower() not in ("content-type", "content-length")}
        detail = exc.description or HTTP_STATUS_CODES.get(exc.code or 500, "")
        if exc.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            detail = f"the upload is larger than this server accepts ({limit / 1e6:g} MB)" if limit else detail
        return problem(exc.code or 500, detail, headers)

    @app.errorhandler(RecommenderError)
    @app.errorhandler(EmbeddingError)
    @app.errorhandler(VectorIndexError)
    def _known(exc: Exception):
        status = _status_of(exc)
        if status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc)
        headers = {"Retry-After": "2"} if status == 503 else None
        return problem(status, str(exc), headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error")
        return problem(500, "internal server error; the server's log has the details")
