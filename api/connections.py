"""Connections as ``sonicsort serve`` keeps them: every one either sends a request in time or
is closed, and a worker never runs out of file descriptors.

``Protocol`` is uvicorn's HTTP/1.1 protocol (h11) with what a server facing the open
internet needs and uvicorn leaves out:

- **a header timeout**: a connection must deliver a complete request head within
  ``header_timeout_s`` of connecting (or of its previous answer, on a kept-alive one),
  however it trickles its bytes; a connection that sends nothing is closed as well;
- **a connection cap per worker** below the process's file limit: past it, the connection
  that has waited longest without a request is closed to make room (nginx reuses idle
  keep-alive connections the same way), and when every connection is busy the new one
  gets a 503 and is closed, so ``accept`` never fails for want of descriptors;
- **a lingering close**: when the answer is sent while the client is still sending its
  body (an early 413), the connection is not closed at once, which would reset it and lose
  the answer for clients that send the whole body before reading; it reads and discards
  for up to ``linger_s`` (nginx's and Apache's lingering close), then closes;
- **zero-copy files**: the ASGI "Zero Copy Send" extension (``http.response.zerocopysend``),
  so a file's bytes (a song a player streams) go from the page cache to the socket with
  ``sendfile`` instead of through Python (``api.asgi.WSGIBridge`` uses it).

``quiet_exception_handler`` keeps the event loop's own complaints to one line a minute
each, so a flood of failing accepts cannot flood the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("sonicsort.serve")

RESERVED_FDS = 192  # left free for files, sockets to databases, spilled bodies and the model's loading


@dataclass
class ConnectionLimits:
    header_timeout_s: float = 10.0
    max_connections: int = 1000
    linger_s: float = 10.0  # at most this long reading what a client still sends after its answer
    linger_idle_s: float = 2.0  # ... and no longer than this after the client's last byte


def raise_file_limit() -> int:
    """Raise the soft file limit to the hard one where allowed; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(wanted: int, *, burst: int = 0) -> int:
    """``wanted``, or fewer when the file limit leaves less room: the soft limit is first raised
    to the hard one where allowed, and ``RESERVED_FDS`` plus those already open are kept free,
    and ``burst`` more: the sockets the event loop accepts in one go before any of them (or a
    connection evicted for them) is handled and closed."""
    soft = raise_file_limit()
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 64
    room = wanted if soft == resource.RLIM_INFINITY else soft - in_use - RESERVED_FDS - burst
    return max(8, min(int(wanted), room))


def accept_burst(backlog: int) -> int:
    """How many connections one event-loop turn may accept (asyncio accepts up to the listen
    backlog per turn): the backlog, bounded to a fraction of the file limit, so that a burst
    of connections fits beside the capped ones instead of failing with EMFILE."""
    soft = raise_file_limit()
    if soft == resource.RLIM_INFINITY:
        return backlog
    return max(16, min(int(backlog), soft // 8))


_REFUSAL = json.dumps({"type": "about:blank", "title": "Service Unavailable", "status": 503,
                       "detail": "this server has as many connections open as it keeps; retry in a moment"}).encode()
_REFUSAL_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n"
                     b"retry-after: 1\r\nconnection: close\r\ncontent-length: " + str(len(_REFUSAL)).encode()
                     + b"\r\n\r\n" + _REFUSAL)


class _Transport:
    """The connection's transport as uvicorn sees it: ``close`` lingers while the client is
    still sending a body (``Protocol._linger``); everything else is the real transport's."""

    def __init__(self, real: asyncio.Transport, protocol: "Protocol") -> None:
        self._real, self._protocol, self._closing = real, protocol, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def is_closing(self) -> bool:
        return self._closing or self._real.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._protocol.conn.their_state is h11.SEND_BODY and self._protocol.limits.linger_s > 0:
            self._protocol._linger()
        else:
            self._real.close()


ZERO_COPY = "http.response.zerocopysend"  # the ASGI extension (api.asgi.WSGIBridge uses it)


class _Span:
    """``count`` bytes of a file, as h11 frames them without reading them (``send_with_data_passthrough``)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count


class Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout, a connection cap, a lingering close and
    zero-copy file bodies."""

    limits = ConnectionLimits()
    # the connections of this process waiting for a request, the longest-waiting first
    _waiting: "OrderedDict[Protocol, None]" = OrderedDict()
    _refused = 0
    _refused_logged_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._linger_until = 0.0
        self._lingering = False
        super().connection_made(_Transport(transport, self))  # type: ignore[arg-type]
        self.app = self._zero_copy_app(self.config.loaded_app)
        self._wait_for_request()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def _make_room(self) -> None:
        for other in self._waiting:
            if other is not self:
                other._stop_waiting()
                other.transport._real.close()  # no request yet: nothing to answer, nothing lost
                return
        cls = type(self)
        cls._refused += 1
        now = time.monotonic()
        if now - cls._refused_logged_at >= 60.0:
            log.warning("at the cap of %d connections with none idle: refused %d since the last report",
                        self.limits.max_connections, cls._refused)
            cls._refused, cls._refused_logged_at = 0, now
        self._stop_waiting()
        self.transport._real.write(_REFUSAL_RESPONSE)
        self.transport._real.close()

    # ---------------------------------------------------------------- zero-copy file bodies
    def _zero_copy_app(self, app):
        """``app`` with the zero-copy extension in its scope and its messages handled here."""

        async def with_zero_copy(scope, receive, send):
            scope.setdefault("extensions", {})[ZERO_COPY] = {}
            cycle = getattr(send, "__self__", None)

            async def send_or_copy(message):
                if message["type"] != ZERO_COPY:
                    return await send(message)
                await self._send_file(cycle, message)
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

            return await app(scope, receive, send_or_copy)

        return with_zero_copy

    async def _send_file(self, cycle, message: dict[str, Any]) -> None:
        """A ``http.response.zerocopysend`` message: ``count`` bytes of ``file`` from ``offset``
        (the file's position when absent; to its end when ``count`` is absent), framed by h11
        and written with ``loop.sendfile`` once what is queued before them has gone out."""
        if cycle is None or not cycle.response_started or cycle.response_complete:
            raise RuntimeError(f"'{ZERO_COPY}' is only valid inside a started response")
        if cycle.disconnected or cycle.scope["method"] == "HEAD":
            return
        file = message["file"]
        offset = message.get("offset")
        offset = file.tell() if offset is None else int(offset)
        count = message.get("count")
        count = os.fstat(file.fileno()).st_size - offset if count is None else int(count)
        if count <= 0:
            return
        if cycle.flow.write_paused:
            await cycle.flow.drain()
        for part in self.conn.send_with_data_passthrough(h11.Data(data=_Span(count))):
            if isinstance(part, _Span):
                try:
                    await self.loop.sendfile(self.transport._real, file, offset, count)
                except (ConnectionError, OSError):
                    cycle.disconnected = True
                    self.transport._real.close()
                    return
            else:
                self.transport.write(part)

    # ---------------------------------------------------------------- the header timeout
    def _wait_for_request(self) -> None:
        self._stop_waiting()
        self._waiting[self] = None
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timeout)

    def _stop_waiting(self) -> None:
        self._waiting.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._waiting.pop(self, None)
            self.transport._real.close()

    def _request_started(self) -> None:
        if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
            self._stop_waiting()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._linger_data()
            return
        super().data_received(data)
        self._request_started()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            self._wait_for_request()  # a kept-alive connection: the next request head is due in time too
        else:
            self._request_started()  # a pipelined request began meanwhile

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    # ---------------------------------------------------------------- the lingering close
    def _linger(self) -> None:
        self._stop_waiting()
        self._lingering = True
        self._linger_until = time.monotonic() + self.limits.linger_s
        self.transport._real.resume_reading()
        self._linger_data()

    def _linger_data(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        delay = min(self.limits.linger_idle_s, self._linger_until - time.monotonic())
        if delay <= 0:
            self.transport._real.close()
            return
        self._linger_timer = self.loop.call_later(delay, self.transport._real.close)

    def eof_received(self) -> None:
        if self._lingering:
            self.transport._real.close()


_QUIET_S = 60.0
_last_said: dict[str, float] = {}


def quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's handler of errors it has nowhere to send: each message at most once a
    minute (a full descriptor table makes asyncio report every failed ``accept``)."""
    message = str(context.get("message", "event loop error"))
    now = time.monotonic()
    if now - _last_said.get(message, -_QUIET_S) < _QUIET_S:
        return
    _last_said[message] = now
    exc = context.get("exception")
    log.error("%s%s (said at most once a minute)", message, f": {exc!r}" if exc is not None else "")


__all__ = ["ZERO_COPY", "ConnectionLimits", "Protocol", "connection_cap", "quiet_exception_handler"]
