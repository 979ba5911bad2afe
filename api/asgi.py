"""The app as ``sonicsort serve`` runs it: slow clients wait in an event loop, not in a thread.

gunicorn's threaded workers hand a connection to a thread as soon as it is readable, and the
thread then blocks reading the request: 8 clients that trickle a body at 1 byte/s held every
thread of a 2 × 4 service, and a normal ``GET /similar`` waited 28 s. The field's answer is a
front that buffers: nginx in front of a deployment, or, without an extra server, an
asynchronous worker. By default (``SONICSORT_WEB_SERVER=uvicorn``), ``serve`` runs gunicorn
with uvicorn's worker class
(``uvicorn_worker.UvicornWorker``): each worker's event loop reads headers and bodies of any
number of connections at once, and ``BufferedRequests`` holds a request until its whole body
is there (in memory, or past ``SONICSORT_BODY_MEMORY_MB`` for the worker, in a temporary
file). Only then does the Flask (WSGI) app get it, in a pool of
``SONICSORT_WEB_THREADS`` threads (``WSGIBridge``), so a thread is only ever busy with a
complete request. A body over ``SONICSORT_MAX_UPLOAD_MB`` is refused with 413 as soon
as it passes the limit (Content-Length or chunked), one that does not arrive within
``SONICSORT_BODY_TIMEOUT_S`` gets 408, and idle keep-alive connections close after 5 s.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Iterator

from werkzeug.wsgi import FileWrapper

from .errors import HOLD_S, too_large

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _problem(send: Send, status: int, title: str, detail: str) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
                            (b"x-content-type-options", b"nosniff"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyBudget:
    """What the request bodies being read in one worker may hold in memory, in all.

    A body is kept in memory while it is at most ``spill_bytes`` and the worker's bodies
    together stay within ``memory_bytes``; past either it continues in a temporary file in
    ``spool_dir`` (deleted when closed), at most ``max_spooled`` of them at once."""

    def __init__(self, *, memory_bytes: int, spill_bytes: int = 1 << 20, spool_dir: str | None = None,
                 max_spooled: int = 64) -> None:
        self.memory_bytes, self.spill_bytes = int(memory_bytes), int(spill_bytes)
        self.spool_dir, self.max_spooled = spool_dir, int(max_spooled)
        self.in_memory = 0  # bytes of bodies held in memory now (one event loop: no lock needed)
        self.spooled = 0  # bodies in temporary files now


class _Body:
    """One request's body as it arrives: chunks in memory, then, past the budget, a temporary file."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget, self.chunks, self.size, self.file = budget, [], 0, None

    def add(self, data: bytes) -> None:
        if self.file is None and (self.size + len(data) > self.budget.spill_bytes
                                  or self.budget.in_memory + len(data) > self.budget.memory_bytes):
            self._spill()
        if self.file is not None:
            self.file.write(data)
        else:
            self.chunks.append(data)
            self.budget.in_memory += len(data)
        self.size += len(data)

    def _spill(self) -> None:
        if self.budget.spooled >= self.budget.max_spooled:
            raise _Busy()
        f = tempfile.TemporaryFile(prefix="sonicsort-body-", dir=self.budget.spool_dir)
        self.budget.spooled += 1
        self.file = f
        for chunk in self.chunks:
            f.write(chunk)
        self._forget_chunks()

    def _forget_chunks(self) -> None:
        self.budget.in_memory -= sum(map(len, self.chunks))
        self.chunks = []

    def finish(self) -> bytes | Any:
        """The whole body: bytes, or the temporary file at its start."""
        if self.file is None:
            return b"".join(self.chunks)
        self.file.flush()
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self._forget_chunks()
        if self.file is not None:
            self.file.close()
            self.file = None
            self.budget.spooled -= 1


class _Busy(Exception):
    """More bodies wait in temporary files than the budget allows."""


def _with_close(send: Send) -> Send:
    """``send`` with ``Connection: close`` added to the answer's head."""

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return wrapped


class BufferedRequests:
    """ASGI middleware: read each request's whole body in the event loop before the app sees it.

    Parameters
    ----------
    app : the ASGI app to call with the complete request
    max_bytes : larger bodies get 413 (from Content-Length at once, or as a chunked one passes it)
    body_timeout_s : a body that is not complete this long after its headers gets 408
    budget : what bodies may hold in memory (``BodyBudget``); a body past it waits in a
        temporary file, and the app gets that file as its ``wsgi.input``

    A request that carries both Content-Length and Transfer-Encoding is answered and its
    connection closed (RFC 9112 §6.1): the two may frame the body differently for another
    server on the way.
    """

    def __init__(self, app, *, max_bytes: int, body_timeout_s: float, budget: BodyBudget | None = None) -> None:
        self.app, self.max_bytes, self.body_timeout_s = app, int(max_bytes), float(body_timeout_s)
        self.budget = budget or BodyBudget(memory_bytes=64 << 20)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = too_large(self.max_bytes)
        headers = dict(scope.get("headers", ()))
        length = headers.get(b"content-length")
        if length is not None and b"transfer-encoding" in headers:
            send = _with_close(send)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _problem(send, 413, "Content Too Large", limit)
        body = _Body(self.budget)
        try:
            deadline = time.monotonic() + self.body_timeout_s
            while True:
                try:
                    msg = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    return await _problem(send, 408, "Request Timeout",
                                          f"the request body did not arrive within {self.body_timeout_s:g} s")
                if msg["type"] == "http.disconnect":
                    return
                data = msg.get("body", b"")
                if body.size + len(data) > self.max_bytes:
                    return await _problem(send, 413, "Content Too Large", limit)
                if data:
                    try:
                        body.add(data)
                    except _Busy:
                        return await _problem(send, 503, "Service Unavailable",
                                              "this server is reading as many large uploads as it can at once; "
                                              "retry in a moment")
                    except OSError as exc:
                        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                            return await _problem(send, 507, "Insufficient Storage",
                                                  "the server's disk is too full to take this upload; try later")
                        raise
                if not msg.get("more_body", False):
                    break
            whole = {"type": "http.request", "body": body.finish(), "more_body": False}
            given = False

            async def replay() -> dict[str, Any]:
                nonlocal given
                if not given:
                    given = True
                    return whole
                return await receive()  # after the body: the client's disconnect, when it comes

            await self.app(scope, replay, send)
        finally:
            body.close()


ZERO_COPY = "http.response.zerocopysend"  # the ASGI extension a server offers in the scope
STREAM_CHUNK = 1 << 20  # a larger answer (an audio file) goes out in pieces of about this size


class WSGIBridge:
    """ASGI → WSGI for requests whose body is complete (``BufferedRequests`` comes first): the
    whole WSGI call runs in one pool thread, which returns the status, the headers and the
    body (up to ``STREAM_CHUNK``; a longer one follows a piece per hop) in one hand-over
    (``docs/decisions/asgi-bridge.md`` says why not a2wsgi).

    A file answer (``send_file``: ``wsgi.file_wrapper``, whole or a range) goes to a server
    that offers the ASGI zero-copy extension (``http.response.zerocopysend``, as
    ``api.connections.Protocol`` does) as the file and the span to send: the kernel copies
    it to the socket with ``sendfile`` and no byte of it passes through Python.
    """

    def __init__(self, app, *, threads: int) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wsgi")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return None
        message = await receive()
        environ = self.environ(scope, message.get("body", b""))  # bytes, or a file (BodyBudget)
        loop = asyncio.get_running_loop()
        zero_copy = ZERO_COPY in (scope.get("extensions") or {})
        status, headers, body, rest = await loop.run_in_executor(self.pool, self._call, environ, zero_copy)
        hold = environ.get(HOLD_S)
        if hold:  # a refusal of costly work: held here, in the event loop, so retrying at once gains nothing
            await asyncio.sleep(float(hold))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if isinstance(rest, _FileSpan):
            try:
                await send({"type": ZERO_COPY, "file": rest.file, "offset": rest.offset, "count": rest.count})
            finally:
                await loop.run_in_executor(self.pool, _close, rest.result)
            return
        try:
            while rest is not None:
                await send({"type": "http.response.body", "body": body, "more_body": True})
                body = await loop.run_in_executor(self.pool, _take, rest, STREAM_CHUNK)
                if not body:
                    break
            await send({"type": "http.response.body", "body": body if rest is None else b""})
        finally:
            if rest is not None:
                await loop.run_in_executor(self.pool, _close, rest)

    def _call(self, environ: dict[str, Any], zero_copy: bool = False) -> tuple[int, list, bytes, Any]:
        """In a pool thread: the app's answer, whole when short, else its first piece and the rest;
        with ``zero_copy``, a file answer (``wsgi.file_wrapper``) as the span of the file to send."""
        started: dict[str, Any] = {}
        written: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
            if exc_info is not None and started.get("sent"):
                raise exc_info[1].with_traceback(exc_info[2])
            started["status"], started["headers"] = status, headers
            return written.append  # the legacy write() callable

        result = self.app(environ, start_response)
        span = _file_span(result, started["headers"]) if zero_copy else None
        if span is not None:
            started["sent"] = True
            code = int(started["status"].split(" ", 1)[0])
            headers = [(k.strip().lower().encode("latin1"), v.strip().encode("latin1")) for k, v in started["headers"]]
            return code, headers, b"", span
        it = iter(result)
        pieces, size, done = written, sum(map(len, written)), True
        for chunk in it:
            pieces.append(chunk)
            size += len(chunk)
            if size >= STREAM_CHUNK:
                done = False
                break
        if done:
            _close(result)
        started["sent"] = True
        code = int(started["status"].split(" ", 1)[0])
        headers = [(k.strip().lower().encode("latin1"), v.strip().encode("latin1")) for k, v in started["headers"]]
        return code, headers, b"".join(pieces), None if done else _Rest(it, result)

    @staticmethod
    def environ(scope: Scope, body) -> dict[str, Any]:
        """The WSGI environ of an ASGI HTTP scope (PEP 3333), with the complete body (bytes, or a
        file open at its start)."""
        root = scope.get("root_path", "")
        path = scope["path"]
        if root and path.startswith(root):
            path = path[len(root):]
        server = scope.get("server") or ("localhost", 80)
        env: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": root.encode("utf8").decode("latin1"),
            "PATH_INFO": path.encode("utf8").decode("latin1"),
            "QUERY_STRING": scope.get("query_string", b"").decode("latin1"),
            "SERVER_NAME": str(server[0]), "SERVER_PORT": str(server[1] or 0),
            "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            "wsgi.version": (1, 0), "wsgi.url_scheme": scope.get("scheme", "http"),
            # the body is whole: a chunked one (no Content-Length) is read to its end, not taken as empty
            "wsgi.input": io.BytesIO(body) if isinstance(body, bytes) else body, "wsgi.input_terminated": True, "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
            # files (audio for players): sent with zero copy where the server can, else in large pieces
            "wsgi.file_wrapper": _file_wrapper,
        }
        if scope.get("client"):
            env["REMOTE_ADDR"], env["REMOTE_PORT"] = scope["client"][0], str(scope["client"][1])
        for name, value in scope.get("headers", ()):
            key = name.decode("latin1").upper().replace("-", "_")
            key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
            text = value.decode("latin1")
            env[key] = env[key] + "," + text if key in env else text
        return env


class _FileBody(FileWrapper):
    """A file answer (``wsgi.file_wrapper``), read in pieces of the size sent at once, not
    werkzeug's 8 KB; ``_file_span`` recognises it, also inside werkzeug's range wrapper."""


def _file_wrapper(f, block_size: int = 8192) -> _FileBody:
    return _FileBody(f, max(block_size, STREAM_CHUNK))


class _FileSpan:
    """A file answer to send with zero copy: ``count`` bytes of ``file`` from ``offset``."""

    def __init__(self, file, offset: int, count: int, result) -> None:
        self.file, self.offset, self.count, self.result = file, offset, count, result


def _file_span(result, headers: list[tuple[str, str]]) -> _FileSpan | None:
    """The span of a real file that ``result`` (a WSGI body) would yield, when it is the body of
    ``wsgi.file_wrapper`` (whole, or a range by werkzeug) and the Content-Length says the
    same; None for every other body."""
    inner, offset, count = result, None, None
    if hasattr(result, "start_byte") and hasattr(result, "byte_range"):  # werkzeug's range of a body
        inner, offset, count = result.iterable, result.start_byte, result.byte_range
    if not isinstance(inner, _FileBody):
        return None
    length = next((v for k, v in headers if k.lower() == "content-length"), None)
    try:
        fileno = inner.file.fileno()
    except (AttributeError, OSError, ValueError):  # a stream without a descriptor (BytesIO)
        return None
    if length is None or not length.strip().isdigit():
        return None
    offset = inner.file.tell() if offset is None else offset
    count = int(length) if count is None else count
    if count != int(length) or offset + count > os.fstat(fileno).st_size:
        return None
    return _FileSpan(inner.file, offset, count, result)


class _Rest:
    """The part of a long answer not yet sent, and what to close when it is."""

    def __init__(self, it: Iterator[bytes], result) -> None:
        self.it, self.result = it, result


def _take(rest: _Rest, size: int) -> bytes:
    """In a pool thread: the next ``size`` bytes or so of the answer (b"" at its end)."""
    pieces, n = [], 0
    for chunk in rest.it:
        pieces.append(chunk)
        n += len(chunk)
        if n >= size:
            break
    return b"".join(pieces)


def _close(result) -> None:
    close = getattr(result.result if isinstance(result, _Rest) else result, "close", None)
    if close is not None:
        close()


def asgi_app(wsgi_app, *, threads: int, max_bytes: int, body_timeout_s: float, budget: BodyBudget | None = None):
    """The WSGI app behind ``BufferedRequests``, called in a pool of ``threads`` threads."""
    return BufferedRequests(WSGIBridge(wsgi_app, threads=threads), max_bytes=max_bytes,
                            body_timeout_s=body_timeout_s, budget=budget)
