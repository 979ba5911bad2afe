"""The uvicorn front's WSGI bridge (api.asgi.WSGIBridge), driven the way uvicorn drives it."""

from __future__ import annotations

import asyncio


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
