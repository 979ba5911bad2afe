"""Hostile inputs and faults: decoding bombs, cut and mislabelled uploads, races and
crashes. The long cases (slow clients at 8/32/64 connections, 100 random kills) are in
``benchmarks/faults/serve.py``; these are the CI-sized ones, on generated audio."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from .helpers import set_flac_length, write_clip


def _flac_8ch_192k(path: Path, seconds: int) -> bytes:
    """Silence, 8 channels at 192 kHz: FLAC packs it into a few hundred bytes a second."""
    with sf.SoundFile(path, "w", samplerate=192_000, channels=8, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((192_000, 8), np.float32)
        for _ in range(seconds):
            f.write(block)
    return path.read_bytes()


# The request runs in a child process, so its peak RSS is its own: the app on a fresh
# catalog, warmed up by one normal request, then the bomb; the growth of ru_maxrss is what
# the bomb's request cost the worker.
_CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    from api import create_app
    from embedding import ModelBundle
    from recommender.config import Settings

    model, home, normal, bomb = sys.argv[1:5]
    app = create_app({"SETTINGS": Settings(home=Path(home), redis_url=""), "BUNDLE": ModelBundle.load(model),
                      "START": "now"})
    client = app.test_client()
    def post(path):
        r = client.post("/v1/predict?k=0", data=Path(path).read_bytes(), headers={"Content-Type": "audio/flac"})
        return r.status_code, r.get_json()
    assert post(normal)[0] == 200
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status, body = post(bomb)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"status": status, "body": body, "growth_mb": (after - before) / 1024}))
""")


def _request_in_child(tmp_path: Path, bundle, bomb: bytes) -> dict:
    normal = write_clip(tmp_path / "normal.flac", "chirp", seconds=2.0)
    (tmp_path / "bomb.flac").write_bytes(bomb)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(bundle.directory), str(tmp_path / "home"), str(normal),
                          str(tmp_path / "bomb.flac")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_bomb_whose_header_admits_its_size_is_refused_before_decoding(tmp_path, tiny_bundle):
    # 1 s of real frames, a header that says 1,199 s: 1.8 billion samples, inside the duration limit
    bomb = set_flac_length(_flac_8ch_192k(tmp_path / "one.flac", 1), 1199 * 192_000)
    r = _request_in_child(tmp_path, tiny_bundle, bomb)
    assert r["status"] == 422, r
    assert "SONICSORT_MAX_DECODED_SAMPLES" in r["body"]["detail"]
    assert r["growth_mb"] < 50, r


def test_a_bomb_without_a_length_is_decoded_in_bounded_memory(tmp_path, tiny_bundle):
    # 120 s of 8 × 192 kHz with the length unset: decoded whole it is 740 MB of float32 (and a
    # copy); streamed in blocks, mixed down and resampled as it comes, it is its 16 kHz mono
    bomb = set_flac_length(_flac_8ch_192k(tmp_path / "long.flac", 120), 0)
    assert len(bomb) < 1_000_000
    r = _request_in_child(tmp_path, tiny_bundle, bomb)
    assert r["status"] == 200, r
    assert r["body"]["is_silent"] is True and abs(r["body"]["duration_s"] - 120) < 0.1
    assert r["growth_mb"] < 300, r


# ---------------------------------------------------------------- uploads: races, types, crashes
@pytest.fixture
def upload_server(tmp_path, tiny_bundle):
    from .helpers import make_server

    srv = make_server(tmp_path / "home", tiny_bundle, None)
    assert srv.service.state == "ready", srv.service.error
    yield srv
    srv.close()


def test_the_same_new_audio_uploaded_at_once_makes_one_track_and_one_file(upload_server, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    import requests

    data = write_clip(tmp_path / "same.wav", "chirp", seconds=2.0, seed=77).read_bytes()
    names = ["a.wav", "b.mp3", "c.flac", "d.au", "e", "f.wav", "g.ogg", "h.wav"]  # whatever the clients call it

    def upload(name):
        with requests.Session() as s:
            return s.post(upload_server.url + "/v1/tracks", files={"file": (name, data, "audio/wav")}, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(upload, names))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 7 + [201], codes
    assert len({r.json()["id"] for r in answers}) == 1
    lib = upload_server.service.library()
    assert len(lib.catalog) == 1
    (track,) = lib.catalog.get_many(lib.catalog.ids()).values()
    stored = [p for p in (tmp_path / "home" / "uploads").rglob("*") if p.is_file()]
    assert track.paths == [str(stored[0])] and len(stored) == 1 and stored[0].suffix == ".wav"


@pytest.mark.parametrize("name,ctype", [("song.mp3", "audio/mpeg"), ("voice.au", "audio/basic")])
def test_the_stored_type_comes_from_the_content_not_the_filename(upload_server, tmp_path, name, ctype):
    data = write_clip(tmp_path / "real.wav", "drone", seconds=2.0, seed=len(name)).read_bytes()
    r = upload_server.post("/v1/tracks", files={"file": (name, data, ctype)})
    assert r.status_code == 201, r.text
    audio = upload_server.get(f"/v1/tracks/{r.json()['id']}/audio")
    assert audio.status_code == 200 and audio.content == data
    assert audio.headers["Content-Type"] in ("audio/x-wav", "audio/wav"), audio.headers["Content-Type"]
    flac = write_clip(tmp_path / "real.flac", "drone", seconds=2.0, seed=len(name) + 1).read_bytes()
    r = upload_server.post("/v1/tracks", data=flac, headers={"Content-Type": "audio/wav"})
    assert upload_server.get(f"/v1/tracks/{r.json()['id']}/audio").headers["Content-Type"] == "audio/flac"


def test_what_a_crash_mid_upload_leaves_is_swept_and_reported(tmp_path, tiny_bundle, cli_env):
    """A SIGKILL while the file is written leaves a ``.upload.*`` temp file; after the rename but
    before the catalog commit, a whole file no row refers to. Start-up sweeps both (once they
    are older than an upload in flight), `stats --repair` too, and says what it removed; the
    tracks' own files stay."""
    import os
    import time

    from .helpers import make_server, run_cli

    home = tmp_path / "home"
    srv = make_server(home, tiny_bundle, None)
    data = write_clip(tmp_path / "kept.wav", "chirp", seconds=2.0, seed=5).read_bytes()
    kept_id = srv.post("/v1/tracks", data=data, headers={"Content-Type": "audio/wav"}).json()["id"]
    srv.close()
    uploads = home / "uploads"
    (kept,) = [p for p in uploads.rglob("*") if p.is_file()]

    def crash_leftovers():
        (uploads / "ab").mkdir(exist_ok=True)
        temp, orphan = uploads / "ab" / ".upload.x1y2z3", uploads / "ab" / ("ab" + "0" * 62 + ".wav")
        temp.write_bytes(data[:1000])
        orphan.write_bytes(data)
        old = time.time() - 3600
        for p in (temp, orphan):
            os.utime(p, (old, old))
        fresh = uploads / "ab" / ".upload.inflight"  # another worker's upload in flight: left alone
        fresh.write_bytes(b"x")
        return temp, orphan, fresh

    temp, orphan, fresh = crash_leftovers()
    srv = make_server(home, tiny_bundle, None)  # start-up sweeps
    assert srv.service.state == "ready"
    assert not temp.exists() and not orphan.exists() and fresh.exists() and kept.exists()
    assert srv.get(f"/v1/tracks/{kept_id}/audio").content == data
    srv.close()

    temp, orphan, fresh = crash_leftovers()
    env = {**cli_env, "SONICSORT_HOME": str(home)}
    out = run_cli(["stats", "--repair"], env)
    assert out.returncode == 0, out.stderr
    assert "repair: removed 2 file(s)" in out.stdout and str(orphan) in out.stdout and str(temp) in out.stdout
    assert not temp.exists() and not orphan.exists() and fresh.exists() and kept.exists()


# ---------------------------------------------------------------- slow clients, under `sonicsort serve`
@pytest.mark.slow
def test_slow_clients_hold_no_thread_and_late_bodies_get_408(tmp_path, tiny_bundle, redis_url, cache_prefix):
    """The uvicorn front (SONICSORT_WEB_SERVER=uvicorn), one worker with 2 threads; 16 connections trickle their headers or bodies (as slow-loris
    does) and stay open. Normal requests are still answered, every one; a body that does not
    arrive in SONICSORT_BODY_TIMEOUT_S gets 408; over-limit bodies get 413, chunked or not."""
    import socket
    import time

    import requests

    from .test_serve import fresh_get, launch

    url, proc, env = launch(tmp_path, tiny_bundle, redis_url, cache_prefix, workers=1, threads=2,
                            env_extra={"SONICSORT_BODY_TIMEOUT_S": "4", "SONICSORT_MAX_UPLOAD_MB": "0.05",
                                       "SONICSORT_WEB_SERVER": "uvicorn"})
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    slow = []
    try:
        for i in range(16):
            s = socket.create_connection((host, port))
            if i % 2:  # the headers, never finished
                s.sendall(b"GET /v1/tracks/1/similar HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            else:  # the headers, then 10 of the 40,000 bytes announced
                s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
                          b"Content-Length: 40000\r\n\r\n" + b"RIFF\x00\x00\x00\x00WA")
            slow.append(s)
        time.sleep(0.5)
        for _ in range(20):  # 2 threads, 16 stuck clients: with threads reading bodies none would get through
            r = fresh_get(url + "/v1/tracks/1/similar?k=5", timeout=3)
            assert r.status_code == 200 and len(r.json()["items"]) == 5
        slow[0].settimeout(10)  # the first body is now past its 4 s
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = slow[0].recv(4096)
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        small = write_clip(tmp_path / "small.wav", "drone", seconds=0.5, seed=4).read_bytes()  # ~22 kB < 50 kB
        r = requests.post(url + "/v1/tracks", data=(small[i:i + 4096] for i in range(0, len(small), 4096)),
                          timeout=30, headers={"Content-Type": "audio/wav", "X-API-Key": "k"})
        assert r.status_code == 201, r.text  # chunked and under the limit: stored whole
        data = write_clip(tmp_path / "big.wav", "drone", seconds=2.0, seed=3).read_bytes()  # ~88 kB > 50 kB
        for body in (data, (data[i:i + 8192] for i in range(0, len(data), 8192))):
            r = requests.post(url + "/v1/tracks", data=body, timeout=10,
                              headers={"Content-Type": "audio/wav", "X-API-Key": "k"})
            assert r.status_code == 413 and "0.05 MB" in r.json()["detail"], r.text
        assert fresh_get(url + "/v1/tracks?limit=200").json()["items"].__len__() == 13  # nothing over the limit
        # the master killed with SIGKILL: its workers notice and stop, they do not serve on as orphans
        import os
        import signal
        import subprocess

        workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                  text=True).stdout.split()]
        assert workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
            time.sleep(0.2)
        assert not any(Path(f"/proc/{w}").exists() for w in workers), "workers outlived their master"
    finally:
        for s in slow:
            s.close()
        proc.kill()
        proc.wait(10)


# ---------------------------------------------------------------- round 2: exports, costs, disks, backends
INJECTED = "Song\n#EXTINF:1,x\nhttp://evil.example/a.mp3\r\x0b#EXT-X-KEY:METHOD=AES-128,URI=\"http://evil.example/k\""


def _m3u_entries(text: str) -> tuple[list[str], list[str]]:
    lines = text.splitlines()
    return [ln for ln in lines if ln.startswith("#")], [ln for ln in lines if ln and not ln.startswith("#")]


def test_no_text_field_can_add_a_line_to_any_export(upload_server, tmp_path):
    """A newline in a form field or a file's tag stays inside its line, in the catalog and in
    every export: the API's M3U8 of playlists and paths, and the command line's (``to_m3u8``
    with relative paths), also for rows written before the rule (cleaned on the way out)."""
    import mutagen
    import requests

    from recommender.catalog import Track
    from recommender.recommend import Scored, to_m3u8

    url = upload_server.url
    first = write_clip(tmp_path / "a.wav", "chirp", seconds=2.0, seed=501).read_bytes()
    a = requests.post(url + "/v1/tracks", files={"file": ("a.wav", first, "audio/wav")},
                      data={"title": INJECTED, "artist": "Evil\nArtist", "album": "A\u2028B"}, timeout=60).json()
    tagged = write_clip(tmp_path / "b.flac", "drone", seconds=2.0, seed=502)
    f = mutagen.File(tagged, easy=True)
    f["title"], f["artist"] = INJECTED, "Tag\r\nArtist"
    f.save()
    b = requests.post(url + "/v1/tracks", data=tagged.read_bytes(), headers={"Content-Type": "audio/flac"},
                      timeout=60).json()
    for t in (a, b):
        stored = requests.get(f"{url}/v1/tracks/{t['id']}", timeout=10).json()
        assert not any(ch in (stored["title"] + (stored["artist"] or "") + (stored["album"] or ""))
                       for ch in "\n\r\x0b\u2028"), stored
        assert stored["title"].startswith("Song #EXTINF:1,x http://evil.example/a.mp3")
    for route, body in (("/v1/playlists", {"seeds": [a["id"]], "length": 2}),
                        ("/v1/paths", {"from": a["id"], "to": b["id"], "length": 2})):
        text = requests.post(url + route + "?format=m3u8", json=body, timeout=30).text
        directives, entries = _m3u_entries(text)
        assert entries == [f"{url}/v1/tracks/{i}/audio" for i in (a["id"], b["id"])], text
        assert [d.split(":", 1)[0] for d in directives] == ["#EXTM3U", "#PLAYLIST", "#EXTINF", "#EXTINF"], text
    # an old row that still holds control characters, exported with relative paths
    old = Track(id=1, sha256="0" * 64, title=INJECTED, artist="x\ny", album=None, duration_s=3.0, genre="g",
                probabilities={}, model_version="m", is_silent=False, added_at=0.0,
                paths=[str(tmp_path / "dir" / "#not-a-directive.flac")])
    directives, entries = _m3u_entries(to_m3u8([Scored(old, 1, 1, 1)], relative_to=tmp_path, title="a\nb"))
    assert entries == ["dir/#not-a-directive.flac"] and len(directives) == 3
    _, entries = _m3u_entries(to_m3u8([Scored(old, 1, 1, 1)], relative_to=tmp_path / "dir"))
    assert entries == ["./#not-a-directive.flac"]


@pytest.fixture(scope="module")
def big_home(tmp_path_factory, tiny_bundle):
    from .helpers import ingest_tagged_library

    return ingest_tagged_library(tmp_path_factory.mktemp("big"), tiny_bundle, 20, seed=880, title="Big",
                                 artists=["A", "B", "C", "D", "E"])


def test_the_costliest_requests_answer_within_their_bounds(big_home, tiny_bundle, tmp_path):
    """The largest re-ranking, playlist and path a request may ask for: answered (what the
    catalog holds, said so); past the limits, a 400 that names them; past the time budget or
    while the heavy-request gate is taken, 503 with Retry-After."""
    import shutil

    import requests

    from .helpers import make_server

    home = tmp_path / "home"
    shutil.copytree(big_home, home)
    srv = make_server(home, tiny_bundle, None)
    try:
        n = len(srv.service.catalog)
        r = srv.get("/v1/tracks/1/similar?k=100&mmr_lambda=0.5&artist_cap=100")
        assert r.status_code == 200 and len(r.json()["items"]) == n - 1
        capped = srv.get("/v1/tracks/1/similar?k=100&mmr_lambda=0.5&artist_cap=2").json()["items"]
        assert len(capped) <= 10 and max(map([c["artist"] for c in capped].count, "ABCDE")) <= 2
        pl = srv.post("/v1/playlists", json={"seeds": [1], "length": 1000, "artist_cap": 1000}).json()
        got = [i["id"] for i in pl["items"]]
        assert pl["truncated"] is True and pl["requested_length"] == 1000 and pl["length"] == len(got)
        # every track but those by the artist just played (no artist twice in a row)
        cat = srv.service.catalog
        left = set(cat.ids().tolist()) - set(got)
        assert len(set(got)) == len(got) and {cat.get(i).artist for i in left} <= {cat.get(got[-1]).artist}
        assert srv.post("/v1/paths", json={"from": 1, "to": 2, "length": 1000}).json()["length"] == n
        for route, body in (("/v1/playlists", {"seeds": [1], "length": 1001}),
                            ("/v1/paths", {"from": 1, "to": 2, "length": 1001})):
            r = srv.post(route, json=body)
            assert r.status_code == 400 and "1000" in r.json()["detail"], r.text
        assert srv.get("/v1/tracks/1/similar?k=101").status_code == 400
        svc = srv.service
        with svc._heavy.enter("a test"):  # another long request holds the gate
            r = srv.post("/v1/playlists", json={"seeds": [1], "length": 500})
            assert r.status_code == 503 and r.headers["Retry-After"] and "SONICSORT_HEAVY_REQUESTS" in r.text
            assert srv.post("/v1/playlists", json={"seeds": [1], "length": 20}).status_code == 200  # short: no gate
        svc.settings.request_budget_s = 1e-9
        try:
            r = srv.post("/v1/playlists", json={"seeds": [1], "length": 30})
            assert r.status_code == 503 and "SONICSORT_REQUEST_BUDGET_S" in r.json()["detail"], r.text
            assert r.headers["Retry-After"]
        finally:
            svc.settings.request_budget_s = 10.0
        assert requests.get(srv.url + "/v1/tracks/1/similar", timeout=10).status_code == 200
    finally:
        srv.close()


def test_only_the_backends_a_server_can_use_are_offered(upload_server):
    doc = upload_server.get("/openapi.json").json()
    offered = doc["components"]["parameters"]["backend"]["schema"]["enum"]
    assert "hnsw" in offered and "milvus" not in offered
    r = upload_server.get("/v1/genres")
    r = upload_server.get("/v1/tracks?limit=1")
    for path in ("/v1/tracks/1/similar?backend=milvus", "/v1/predict?backend=milvus"):
        r = upload_server.post(path, data=b"x", headers={"Content-Type": "audio/wav"}) if "predict" in path \
            else upload_server.get(path)
        assert r.status_code == 400 and "SONICSORT_MILVUS_URI" in r.json()["detail"], r.text
        assert "/" not in r.json()["detail"].replace("--backend", ""), r.text  # no server path in the answer


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs of this test's own (needs root, as CI has)."""
    import os

    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0 or os.geteuid() != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_507_loses_nothing_and_writes_resume(small_disk, tiny_bundle, tmp_path, big_home):
    import os
    import shutil

    import requests

    from .helpers import make_server

    home = small_disk / "home"
    shutil.copytree(big_home, home)
    srv = make_server(home, tiny_bundle, None)
    try:
        n = len(srv.service.catalog)
        filler = small_disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        for size in (65536, 512, 1):  # fill the disk to its last byte
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
        os.close(fd)
        data = write_clip(tmp_path / "new.wav", "chirp", seconds=2.0, seed=777).read_bytes()
        r = requests.post(srv.url + "/v1/tracks", data=data, headers={"Content-Type": "audio/wav"}, timeout=60)
        assert r.status_code == 507 and r.headers["Content-Type"] == "application/problem+json", r.text
        assert "full" in r.json()["detail"] and "Traceback" not in r.text
        ready = requests.get(srv.url + "/readyz", timeout=10).json()
        assert ready["status"] == "degraded" and ready["storage"] == "full", ready
        assert len(srv.service.catalog) == n and not [p for p in (home / "uploads").rglob("*") if p.is_file()]
        filler.unlink()
        r = requests.post(srv.url + "/v1/tracks", data=data, headers={"Content-Type": "audio/wav"}, timeout=60)
        assert r.status_code == 201, r.text
        ready = requests.get(srv.url + "/readyz", timeout=10).json()
        assert ready["status"] == "ready" and ready["storage"] == "ok", ready
        assert len(srv.service.catalog) == n + 1
    finally:
        srv.close()


def test_a_killed_ingest_takes_its_workers_with_it(tmp_path, cli_env):
    """``kill -9`` of ``sonicsort ingest --workers 2``: both workers and multiprocessing's
    resource tracker exit within seconds (they watch their parent)."""
    import os
    import signal
    import time

    import psutil

    from .helpers import CLI, music

    music(tmp_path / "music", n=24, seconds=6.0)
    proc = subprocess.Popen(CLI + ["ingest", str(tmp_path / "music"), "--workers", "2"], env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    kids: list = []
    while time.monotonic() < deadline:
        kids = [k for k in parent.children(recursive=True)]
        if sum("spawn_main" in " ".join(k.cmdline()) for k in kids if k.is_running()) >= 2:
            break
        time.sleep(0.2)
    assert len(kids) >= 2, "the ingest never started its workers"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    gone, alive = psutil.wait_procs(kids, timeout=15)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
