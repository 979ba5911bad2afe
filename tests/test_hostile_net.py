"""Hostile clients at the socket: silent and slow connections, more of them than the file
limit allows, ambiguous framing, bodies that stall or overrun, against ``sonicsort serve``
(gunicorn, uvicorn workers). The long versions with their figures are in
``benchmarks/faults/serve.py``."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time

import psutil
import pytest
import requests

from .helpers import launch, write_clip

pytestmark = pytest.mark.slow

HEADER_TIMEOUT_S = 1.5
MAX_UPLOAD_MB = 4


@pytest.fixture(scope="module")
def net_server(tmp_path_factory, tiny_bundle, redis_url):
    """Two workers at a file limit of 1,024, a 1.5 s header timeout, 4 MB uploads, 8 MB of
    bodies in memory per worker; its log collected line by line."""
    import uuid

    tmp = tmp_path_factory.mktemp("net")
    prefix = f"sonicsort-net-{uuid.uuid4().hex[:8]}:"
    url, proc, env = launch(tmp, tiny_bundle, redis_url, prefix, workers=2, threads=2, nofile=1024,
                            env_extra={"SONICSORT_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
                                       "SONICSORT_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
                                       "SONICSORT_BODY_MEMORY_MB": "8"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    yield url, proc, lines, tmp / "home"
    proc.terminate()
    proc.wait(30)


def _addr(url: str) -> tuple[str, int]:
    host, port = url.rsplit("//", 1)[1].split(":")
    return host, int(port)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_silent_and_slow_connections_are_closed_at_the_header_timeout(net_server):
    url, _, _, _ = net_server
    silent = socket.create_connection(_addr(url))
    slow = socket.create_connection(_addr(url))
    t0 = time.monotonic()
    for ch in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":  # one byte every 0.2 s: never a whole head in time
        try:
            slow.sendall(bytes([ch]))
        except OSError:
            break
        time.sleep(0.2)
        if time.monotonic() - t0 > 4 * HEADER_TIMEOUT_S:
            break
    assert _closed_within(slow, 2 * HEADER_TIMEOUT_S)
    assert time.monotonic() - t0 < 4 * HEADER_TIMEOUT_S
    assert _closed_within(silent, 2 * HEADER_TIMEOUT_S)
    # a kept-alive connection owes its next request head in time too
    keep = socket.create_connection(_addr(url))
    keep.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in keep.recv(65536)
    keep.sendall(b"GET /hea")
    assert _closed_within(keep, 3 * HEADER_TIMEOUT_S)


def test_more_silent_connections_than_the_file_limit_leave_probes_answered(net_server):
    """1,600 connections that send nothing, at a file limit of 1,024 per worker: each worker
    closes its longest-idle connection past its cap, probes keep being answered, and the log
    says so in a line or two, not a flood."""
    import resource

    url, _, lines, _ = net_server
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4000), hard))
    before = len(lines)
    socks = []
    try:
        for _ in range(1600):
            try:
                socks.append(socket.create_connection(_addr(url), timeout=5))
            except OSError:
                pass
        latencies = []
        for _ in range(20):
            t0 = time.perf_counter()
            with requests.Session() as s:
                r = s.get(url + "/healthz", timeout=10, headers={"Connection": "close"})
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200
        assert sorted(latencies)[-2] < 1.0, latencies
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    new = lines[before:]
    assert not [ln for ln in new if "Traceback" in ln or "out of system resource" in ln], new[-20:]
    assert len(new) < 20, new[-20:]


def test_content_length_with_chunked_closes_the_connection(net_server):
    url, _, _, _ = net_server
    s = socket.create_connection(_addr(url), timeout=10)
    s.sendall(b"POST /v1/playlists HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert b"connection: close" in head and data.count(b"HTTP/1.1 ") == 1, data[:500]


@pytest.mark.parametrize("chunked", [False, True])
def test_an_oversized_body_sent_whole_before_reading_still_gets_its_413(net_server, chunked):
    """Python's http.client sends the whole body before it reads: the server lingers (reads and
    drops the rest) after its early 413 instead of resetting the connection."""
    url, _, _, _ = net_server
    body = os.urandom((MAX_UPLOAD_MB + 2) * 1_000_000)
    for _ in range(3):
        conn = http.client.HTTPConnection(*_addr(url), timeout=30)
        if chunked:
            conn.request("POST", "/v1/predict", body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                         headers={"Content-Type": "audio/wav"}, encode_chunked=True)
        else:
            conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "audio/wav"})
        r = conn.getresponse()
        assert r.status == 413 and b"larger than this server accepts" in r.read()
        conn.close()


def test_stalled_large_bodies_wait_on_disk_not_in_memory(net_server):
    """12 uploads that declare 3.9 MB, send 3.5 MB and stall: past 1 MB each (and 8 MB for the
    worker) they wait in temporary files; the workers grow by far less than the 42 MB sent,
    and the files are gone when the clients leave."""
    url, proc, _, home = net_server
    workers = psutil.Process(proc.pid).children()

    def rss() -> int:
        return sum(w.memory_info().rss for w in workers)

    before = rss()
    socks = []
    part = os.urandom(3_500_000)
    for _ in range(12):
        s = socket.create_connection(_addr(url), timeout=30)
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 3900000\r\n\r\n")
        s.sendall(part)
        socks.append(s)
    time.sleep(2.0)
    grown_mb = (rss() - before) / 1e6
    spool = str(home / "tmp")

    def spooled() -> list[str]:  # the workers' open files in the spool folder (unlinked temporary files)
        found = []
        for w in workers:
            for fd in os.listdir(f"/proc/{w.pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{w.pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith(spool):
                    found.append(link)
        return found

    assert len(spooled()) >= 10, spooled()
    assert grown_mb < 21, grown_mb
    assert requests.get(url + "/healthz", timeout=10).status_code == 200
    for s in socks:
        s.close()
    time.sleep(1.5)
    assert not spooled()
    # a complete upload that passed through a temporary file is answered as any other
    big = write_clip(home.parent / "big.wav", "chirp", seconds=30.0, seed=31).read_bytes()
    assert len(big) > 1_000_000
    r = requests.post(url + "/v1/predict?k=2", data=big, headers={"Content-Type": "audio/wav"}, timeout=120)
    assert r.status_code == 200 and len(r.json()["similar"]) == 2, r.text
