"""Every error leaves as ``application/problem+json`` (RFC 9457) with a human message.

The rooms raise their own small exception hierarchies; ``recommender.errors`` says which
are ours and what kind of failure each is, and this module maps those kinds to HTTP statuses. Nothing here ever sends a traceback: an unexpected
exception is logged on the server and answered with a plain 500 message.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

log = logging.getLogger("sonicsort.api")

PROBLEM = "application/problem+json"
# An answer that refuses work for being too costly just now (``Overloaded``) asks the serving
# front to hold it this long before sending (in its event loop, holding no thread): a client
# that retries at once, ignoring Retry-After, costs one cheap refusal per hold, not a flood.
HOLD_S = "sonicsort.hold_s"  # the WSGI environ key
OVERLOAD_HOLD_S = 0.5
# the HTTP status of each kind of failure that ``recommender.errors.error_kind`` names
_STATUS = {"bad_request": 400, "not_found": 404, "conflict": 409, "unusable_input": 422, "unavailable": 503,
           "internal": 500, "storage_full": 507, "unauthenticated": 401, "forbidden": 403}


class ApiError(Exception):
    """An HTTP-level refusal (auth, media type, body shape) raised by the views."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def too_large(limit_bytes: int) -> str:
    """The 413 message for a body over ``MAX_CONTENT_LENGTH`` (every door that refuses one says this)."""
    return f"the upload is larger than this server accepts ({limit_bytes / 1e6:g} MB)"


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
    from recommender.errors import error_kind

    return _STATUS.get(error_kind(exc) or "internal", 500)


def init_app(app: Flask) -> None:
    from recommender.errors import ERROR_KINDS

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return problem(exc.status, exc.detail, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        headers = {k: v for k, v in exc.get_headers() if k.lower() not in ("content-type", "content-length")}
        detail = exc.description or HTTP_STATUS_CODES.get(exc.code or 500, "")
        if exc.code == 413:
            from flask import request

            limit = app.config.get("MAX_CONTENT_LENGTH")
            sent = request.content_length if request else None
            if limit and (sent is None or sent > limit):
                detail = too_large(limit)
            else:  # within the byte limit: the form parser's own limits (parts, in-memory fields)
                parts = app.config.get("MAX_FORM_PARTS") or 1000
                detail = (f"the form has more parts than this server accepts (at most {parts} fields and files), "
                          "or a text field larger than it keeps in memory; send the audio as field 'file'")
        return problem(exc.code or 500, detail, headers)

    def _known(exc: Exception):
        from flask import request

        from recommender.errors import Overloaded

        status = _status_of(exc)
        if isinstance(exc, Overloaded):  # expected under load: counted in /metrics, not logged
            if request:
                request.environ[HOLD_S] = OVERLOAD_HOLD_S
        elif status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc)
        headers = {"Retry-After": "2"} if status == 503 else None
        return problem(status, str(exc), headers)

    for kind in ERROR_KINDS:
        app.register_error_handler(kind, _known)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        from recommender.errors import is_disk_full

        if is_disk_full(exc):
            log.warning("the disk is full: %s", exc)
            return problem(507, "the server's disk is full; nothing was written; try again later")
        log.exception("unexpected error")
        return problem(500, "internal server error; the server's log has the details")


def last_resort(inner):
    """The outermost WSGI layer: an error raised before Flask's own handlers (in middleware
    that answers before Flask, such as ``fastpath``) still leaves as problem+json, 503 with
    Retry-After for the rooms' "unavailable" errors, never as a server's plain-text page."""
    import json

    def wsgi(environ, start_response):
        try:
            return inner(environ, start_response)
        except Exception as exc:
            status = _status_of(exc)
            if status >= 500 and status != 503:
                log.exception("error outside the app's handlers")
            detail = str(exc) if status < 500 or status == 503 else "internal server error; the server's log has the details"
            body = json.dumps({"type": "about:blank", "title": HTTP_STATUS_CODES.get(status, "Error"), "status": status,
                               "detail": detail}).encode()
            headers = [("Content-Type", PROBLEM), ("Content-Length", str(len(body))), ("X-Content-Type-Options", "nosniff")]
            if status == 503:
                headers.append(("Retry-After", "2"))
            start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'Error')}", headers, sys.exc_info())
            return [body]

    return wsgi
