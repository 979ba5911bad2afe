"""The uvicorn front's WSGI bridge (api.asgi.WSGIBridge), driven the way uvicorn drives it, and
file answers sent with zero copy by sonicsort's protocol over a real socket."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest


def run_bridge(app, scope_extra=None, body=b""):
    from api.asgi import BufferedRequests, WSGIBridge

    scope = {"type": "http", "method": "POST", "path": "/a/b", "root_path": "", "query_string": b"k=5&x=%C3%A9",
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("10.0.0.2", 5555),
             "headers": [(b"host", b"h"), (b"content-type", b"audio/wav"), (b"content-length", str(len(body)).encode()),
                         (b"x-many", b"1"), (b"x-many", b"2")], **(scope_extra or {})}
    sent, messages = [], [{"type": "http.request", "body": body[:3], "more_body": True},
                          {"type": "http.request", "body": body[3:], "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(msg):
        sent.append(msg)

    asyncio.run(BufferedRequests(WSGIBridge(app, threads=2), max_bytes=10 << 20, body_timeout_s=5)(scope, receive, send))
    return sent


def test_the_bridge_passes_the_request_and_streams_a_long_answer():
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        seen["body"] = environ["wsgi.input"].read()
        start_response("206 Partial Content", [("Content-Type", "audio/wav"), ("X-A", "b")])
        return (bytes([i % 256]) * 65536 for i in range(48))  # 3 MiB in 64 KiB pieces

    sent = run_bridge(app, body=b"0123456789")
    assert seen["body"] == b"0123456789" and seen["QUERY_STRING"] == "k=5&x=%C3%A9" and seen["PATH_INFO"] == "/a/b"
    assert (seen["CONTENT_TYPE"], seen["CONTENT_LENGTH"], seen["HTTP_X_MANY"]) == ("audio/wav", "10", "1,2")
    assert seen["REMOTE_ADDR"] == "10.0.0.2" and seen["SERVER_PORT"] == "8000"
    assert seen["wsgi.input_terminated"]  # werkzeug reads a chunked body (no Content-Length) to its end
    assert sent[0] == {"type": "http.response.start", "status": 206,
                       "headers": [(b"content-type", b"audio/wav"), (b"x-a", b"b")]}
    bodies = [m for m in sent[1:]]
    assert all(m["type"] == "http.response.body" for m in bodies) and not bodies[-1].get("more_body")
    assert len(bodies) >= 3  # streamed in pieces of about 1 MiB, not held whole
    assert b"".join(m["body"] for m in bodies) == b"".join(bytes([i % 256]) * 65536 for i in range(48))


def test_the_bridge_sends_a_short_answer_at_once_and_closes_the_iterable():
    closed = []

    class Result(list):
        def close(self):
            closed.append(True)

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Length", "5")])
        write(b"he")  # the legacy write() callable
        return Result([b"llo"])

    sent = run_bridge(app)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1]["body"] == b"hello" and closed == [True]


# ---------------------------------------------------------------- files with zero copy
def _file_app(path):
    import io

    from flask import Flask, send_file

    app = Flask("files")
    app.add_url_rule("/file", "file", lambda: send_file(path, mimetype="audio/wav", conditional=True))
    app.add_url_rule("/memory", "memory", lambda: send_file(io.BytesIO(b"not a real file"), mimetype="text/plain"))
    app.add_url_rule("/small", "small", lambda: "ok")
    return app


def test_the_bridge_hands_a_file_answer_to_the_servers_zero_copy_send(tmp_path):
    from api.asgi import ZERO_COPY

    path = tmp_path / "a.wav"
    path.write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    app = _file_app(path).wsgi_app
    get = {"method": "GET", "path": "/file", "query_string": b"", "headers": [(b"host", b"h")]}
    sent = run_bridge(app, {**get, "extensions": {ZERO_COPY: {}}})
    assert [m["type"] for m in sent] == ["http.response.start", ZERO_COPY]
    assert (sent[1]["offset"], sent[1]["count"]) == (0, 2 << 20) and sent[1]["file"].closed  # closed once sent
    ranged = run_bridge(app, {**get, "extensions": {ZERO_COPY: {}},
                              "headers": [(b"host", b"h"), (b"range", b"bytes=1000-1999")]})
    assert ranged[0]["status"] == 206 and (ranged[1]["offset"], ranged[1]["count"]) == (1000, 1000)
    # a server without the extension gets the bytes; so does a body that is no real file
    plain = run_bridge(app, get)
    assert b"".join(m.get("body", b"") for m in plain[1:]) == path.read_bytes()
    memory = run_bridge(app, {**get, "path": "/memory", "extensions": {ZERO_COPY: {}}})
    assert [m["type"] for m in memory] == ["http.response.start", "http.response.body"]
    assert memory[1]["body"] == b"not a real file"


@pytest.fixture()
def file_server(tmp_path):
    """uvicorn with sonicsort's protocol (``api.connections.Protocol``) and bridge, on a free
    port in a thread, serving a 6 MB file."""
    import threading

    import uvicorn

    from api.asgi import asgi_app
    from api.connections import Protocol

    from .helpers import free_port

    path = tmp_path / "big.wav"
    path.write_bytes(np.random.default_rng(5).integers(0, 256, 6_000_000, dtype=np.uint8).tobytes())
    port = free_port()
    config = uvicorn.Config(asgi_app(_file_app(path).wsgi_app, threads=2, max_bytes=1 << 20, body_timeout_s=5),
                            host="127.0.0.1", port=port, http=Protocol, loop="asyncio", lifespan="off",
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield port, path.read_bytes()
    server.should_exit = True
    thread.join(10)


def test_files_go_out_with_zero_copy_whole_by_range_and_to_head_on_one_connection(file_server):
    import http.client

    port, data = file_server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    for _ in range(2):
        conn.request("GET", "/file")
        r = conn.getresponse()
        assert r.status == 200 and int(r.headers["Content-Length"]) == len(data) and r.read() == data
    conn.request("GET", "/file", headers={"Range": "bytes=123-4567890"})
    r = conn.getresponse()
    assert r.status == 206 and r.headers["Content-Range"] == f"bytes 123-4567890/{len(data)}"
    assert r.read() == data[123:4567891]
    conn.request("HEAD", "/file")
    r = conn.getresponse()
    assert r.status == 200 and r.headers["Content-Length"] == str(len(data)) and r.read() == b""
    conn.request("GET", "/small")  # the connection is still in step after all of them
    assert conn.getresponse().read() == b"ok"
    conn.close()


def test_a_client_leaving_during_a_zero_copy_send_leaves_the_server_answering(file_server):
    import http.client
    import socket

    port, data = file_server
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # reset on close
        s.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", "/file")
    assert conn.getresponse().read() == data
