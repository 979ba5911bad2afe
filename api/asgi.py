"""The app as ``sonicsort serve`` runs it: slow clients wait in an event loop, not in a thread.

gunicorn's threaded workers hand a connection to a thread as soon as it is readable, and the
thread then blocks reading the request: 8 clients that trickle a body at 1 byte/s held every
thread of a 2 × 4 service, and a normal ``GET /similar`` waited 28 s. The field's answer is a
front that buffers: nginx in front of a deployment, or, without an extra server, an
asynchronous worker. By default (``SONICSORT_WEB_SERVER=uvicorn``), ``serve`` runs gunicorn
with uvicorn's worker class
(``uvicorn_worker.UvicornWorker``): each worker's event loop reads headers and bodies of any
number of connections at once, and ``BufferedRequests`` holds a request until its whole body
is there. Only then does the Flask (WSGI) app get it, in a pool of
``SONICSORT_WEB_THREADS`` threads (``a2wsgi.WSGIMiddleware``), so a thread is only ever busy
with a complete request. A body over ``SONICSORT_MAX_UPLOAD_MB`` is refused with 413 as soon
as it passes the limit (Content-Length or chunked), one that does not arrive within
``SONICSORT_BODY_TIMEOUT_S`` gets 408, and idle keep-alive connections close after 5 s.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable

from .errors import too_large

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _problem(send: Send, status: int, title: str, detail: str) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
                            (b"x-content-type-options", b"nosniff"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BufferedRequests:
    """ASGI middleware: read each request's whole body in the event loop before the app sees it.

    Parameters
    ----------
    app : the ASGI app to call with the complete request
    max_bytes : larger bodies get 413 (from Content-Length at once, or as a chunked one passes it)
    body_timeout_s : a body that is not complete this long after its headers gets 408
    """

    def __init__(self, app, *, max_bytes: int, body_timeout_s: float) -> None:
        self.app, self.max_bytes, self.body_timeout_s = app, int(max_bytes), float(body_timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = too_large(self.max_bytes)
        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _problem(send, 413, "Content Too Large", limit)
        chunks: list[bytes] = []
        n = 0
        deadline = time.monotonic() + self.body_timeout_s
        while True:
            try:
                msg = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                return await _problem(send, 408, "Request Timeout",
                                      f"the request body did not arrive within {self.body_timeout_s:g} s")
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            n += len(body)
            if n > self.max_bytes:
                return await _problem(send, 413, "Content Too Large", limit)
            if body:
                chunks.append(body)
            if not msg.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        given = False

        async def replay() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return whole
            return await receive()  # after the body: the client's disconnect, when it comes

        await self.app(scope, replay, send)


def asgi_app(wsgi_app, *, threads: int, max_bytes: int, body_timeout_s: float):
    """The WSGI app behind ``BufferedRequests``, called in a pool of ``threads`` threads."""
    from a2wsgi import WSGIMiddleware

    return BufferedRequests(WSGIMiddleware(wsgi_app, workers=threads), max_bytes=max_bytes,
                            body_timeout_s=body_timeout_s)
