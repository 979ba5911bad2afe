"""Repeated uploads to ``POST /v1/predict``, answered before Flask.

The view stores every answer it computes in the ``AnswerCache`` (``api.answers``), keyed by the
audio's sha256, the query string and the script root, and tagged with the model version and
catalog generation it was computed from. This WSGI middleware reads a raw audio body (an
audio Content-Type, as apps send it), hashes it, and when the same request was answered
before and neither the model nor the catalog has changed since, returns the stored bytes
without building a Flask request, decoding or searching: the cheapest answer the service
has. Anything else (another route, a multipart upload, a miss) goes on to Flask unchanged,
with the body and its hash, so the view does not hash it again.

A hit is still counted in ``/metrics`` (requests, latency, prediction cache hits) and still
says ``"cached": true`` and carries ``Server-Timing``, like any answer from the cache.
"""

from __future__ import annotations

import io
import time
from typing import Any, Callable, Iterable

from recommender.errors import ERROR_KINDS
from recommender.library import sha256_bytes

from .answers import answer_key
from .metrics import server_timing
from .params import is_audio_type

ROUTE = "/v1/predict"
UPLOAD_SHA256 = "sonicsort.upload_sha256"  # environ key: the raw body's hash, for the view


class PredictFastPath:
    def __init__(self, app) -> None:
        self.inner: Callable = app.wsgi_app
        self.service = app.extensions["sonicsort"]
        self.answers = app.extensions["sonicsort_answers"]
        self.metrics = app.extensions["sonicsort_metrics"]
        self.max_bytes = int(app.config["MAX_CONTENT_LENGTH"])

    def __call__(self, environ: dict[str, Any], start_response) -> Iterable[bytes]:
        if (environ.get("PATH_INFO") != ROUTE or environ.get("REQUEST_METHOD") != "POST"
                or not self.answers.enabled):
            return self.inner(environ, start_response)
        mimetype = (environ.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower()
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if not is_audio_type(mimetype) or not 0 < length <= self.max_bytes:
            return self.inner(environ, start_response)  # Flask says what is wrong, or parses it
        t0 = time.perf_counter()
        stream, chunks, left = environ["wsgi.input"], [], length
        while left > 0:
            chunk = stream.read(left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        environ["wsgi.input"] = io.BytesIO(body)
        if left:  # the client sent less than it announced: Flask gets the short body as it came, and answers 4xx
            return self.inner(environ, start_response)
        sha = environ[UPLOAD_SHA256] = sha256_bytes(body)
        try:
            _, hit = self.answers.lookup(self.service, answer_key(sha, environ.get("QUERY_STRING", ""),
                                                           environ.get("SCRIPT_NAME", "")))
        except ERROR_KINDS:  # the catalog's database away, say: the view answers it as every route does (503)
            hit = None
        if hit is None:
            return self.inner(environ, start_response)
        elapsed = time.perf_counter() - t0
        self.metrics.predictions.labels("hit").inc()
        self.metrics.observe("POST", ROUTE, 200, elapsed)
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(hit))),
                                  ("X-Content-Type-Options", "nosniff"),
                                  ("Server-Timing", server_timing(elapsed))])
        return [hit]
