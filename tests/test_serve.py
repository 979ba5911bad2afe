"""`sonicsort serve`: gunicorn with two worker processes over a real catalog, through HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from .helpers import fresh_get, launch, write_clip

pytestmark = pytest.mark.slow  # gunicorn and sonicsort processes end to end










@pytest.fixture
def served(request, tmp_path, tiny_bundle, redis_url, cache_prefix):
    """``sonicsort serve`` with its default front, or the ``SONICSORT_WEB_SERVER`` of an indirect parameter."""
    web = getattr(request, "param", None)
    url, proc, env = launch(tmp_path, tiny_bundle, redis_url, cache_prefix,
                            env_extra={"SONICSORT_WEB_SERVER": web} if web else None)
    yield url, proc, env, tmp_path
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("served", ["uvicorn", "gthread"], indirect=True)
def test_serve_two_workers_follow_catalog_changes(served):
    url, proc, env, tmp = served
    for _ in range(20):
        body = fresh_get(url + "/readyz").json()
        assert body["status"] == "ready"
    # an upload answered by one worker is in every worker's index before its next query
    data = write_clip(tmp / "new.wav", "chirp", seconds=2.0, seed=4040).read_bytes()
    r = requests.post(url + "/v1/tracks", data=data, headers={"Content-Type": "audio/wav", "X-API-Key": "k"}, timeout=30)
    assert r.status_code == 201, r.text
    new_id = r.json()["id"]
    for _ in range(12):
        items = fresh_get(url + "/v1/tracks/1/similar?k=12").json()["items"]
        assert new_id in [s["id"] for s in items]
    # so is a track ingested by another process while the server runs
    extra = write_clip(tmp / "more" / "late.wav", "drone", seconds=2.0, seed=5050)
    p = subprocess.run([sys.executable, "-m", "api.cli", "ingest", str(extra.parent), "--workers", "0", "--json"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    late = fresh_get(url + "/v1/tracks?q=late").json()["items"]
    assert len(late) == 1
    for _ in range(12):
        items = fresh_get(url + "/v1/tracks/1/similar?k=13").json()["items"]
        assert late[0]["id"] in [s["id"] for s in items]
    # /metrics sums over both workers
    for _ in range(6):
        m = fresh_get(url + "/metrics").text
        total = sum(float(line.rsplit(" ", 1)[1]) for line in m.splitlines()
                    if line.startswith('sonicsort_http_requests_total{') and '/similar' in line)
        assert total >= 24
        assert "pid=" not in [l for l in m.splitlines() if l.startswith("sonicsort_http_requests_total")][0]
    # SIGTERM: a clean stop; the first worker to start said it was ready, once
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert proc.stdout.read().count("sonicsort is ready: open " + url) == 1


def test_serve_refuses_a_busy_port(served):
    url, proc, env, tmp = served
    port = url.rsplit(":", 1)[1]
    p = subprocess.run([sys.executable, "-m", "api.cli", "serve", "--port", port], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in p.stderr


@pytest.mark.parametrize("backend", ["hnsw", "milvus"])
def test_two_nodes_share_one_postgresql_catalog(tmp_path, tiny_bundle, redis_url, cache_prefix, postgres_db, backend):
    """Two `sonicsort serve` nodes (their own ports and SONICSORT_HOMEs, one worker each) on one
    PostgreSQL catalog and one Redis: an upload answered by A is in B's /similar within 1 s, a
    delete on B never comes back on A, and /readyz says how far each node's index is behind.
    With Milvus (milvus-lite's server, as a Milvus server would be) the nodes hold no vectors."""
    from api.serve import MilvusLiteServer

    from .helpers import postgres_schema

    shared = postgres_schema(postgres_db)
    milvus = MilvusLiteServer(str(tmp_path / "milvus.db")) if backend == "milvus" else None
    # the nodes share the uploads folder too (one mount in a deployment): one upload, one file
    extra = {"SONICSORT_BACKEND": backend, "SONICSORT_MILVUS_URI": milvus.start() if milvus else "",
             "SONICSORT_UPLOADS": str(tmp_path / "shared-uploads")}
    a_url, a, _ = launch(tmp_path, tiny_bundle, redis_url, cache_prefix, workers=1, catalog_url=shared, env_extra=extra)
    b_url, b, _ = launch(tmp_path, tiny_bundle, redis_url, cache_prefix, workers=1, catalog_url=shared,
                         home=tmp_path / "node-b", env_extra=extra)
    try:
        data = write_clip(tmp_path / "new.wav", "chirp", seconds=2.0, seed=4041).read_bytes()
        r = requests.post(a_url + "/v1/tracks", data=data, headers={"Content-Type": "audio/wav", "X-API-Key": "k"},
                          timeout=30)
        assert r.status_code == 201, r.text
        new_id, t0 = r.json()["id"], time.monotonic()
        while new_id not in [s["id"] for s in fresh_get(b_url + "/v1/tracks/1/similar?k=13").json()["items"]]:
            assert time.monotonic() - t0 < 1.0, "node B did not see node A's upload within 1 s"
            time.sleep(0.05)
        assert fresh_get(b_url + "/readyz").json()["index"]["behind"] == 0
        r = requests.delete(f"{b_url}/v1/tracks/{new_id}", headers={"X-API-Key": "k"}, timeout=30)
        assert r.status_code in (200, 204), r.text
        for _ in range(5):  # on A: gone from /similar and from the catalog, every time
            assert new_id not in [s["id"] for s in fresh_get(a_url + "/v1/tracks/1/similar?k=13").json()["items"]]
            assert fresh_get(f"{a_url}/v1/tracks/{new_id}").status_code == 404
        ready = fresh_get(a_url + "/readyz").json()["index"]
        assert ready["tracks"] == 12 and ready["behind"] == 0
        assert not (tmp_path / "node-b" / "catalog.sqlite3").exists()
        # the same new audio uploaded to both nodes at once: one track, one file
        from concurrent.futures import ThreadPoolExecutor

        same = write_clip(tmp_path / "same.wav", "drone", seconds=2.0, seed=4044).read_bytes()

        def upload(node_url):
            with requests.Session() as s:
                return s.post(node_url + "/v1/tracks", data=same, timeout=60,
                              headers={"Content-Type": "audio/wav", "X-API-Key": "k"})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(upload, [a_url, b_url] * 4))
        assert sorted(r.status_code for r in answers) == [200] * 7 + [201], [r.text for r in answers]
        assert len({r.json()["id"] for r in answers}) == 1
        assert fresh_get(b_url + "/readyz").json()["index"]["tracks"] == 13
        stored = [f for f in (tmp_path / "shared-uploads").rglob("*") if f.is_file()]
        assert len(stored) == 1, stored  # B's delete removed A's upload; the race made one file
        assert not (tmp_path / "home" / "uploads").exists() and not (tmp_path / "node-b" / "uploads").exists()
        if milvus:  # each node keeps a pointer to the collection, no vectors
            for home in (tmp_path / "home", tmp_path / "node-b"):
                assert [f.name for f in (home / "index" / "milvus").iterdir()] == ["header.json"]
    finally:
        for p in (a, b):
            p.terminate()
            p.wait(30)
        if milvus:
            milvus.stop()


def test_serve_runs_milvus_lite_for_its_workers(tmp_path, tiny_bundle, redis_url, cache_prefix):
    """The milvus backend without SONICSORT_MILVUS_URI: milvus-lite lets one process open its
    folder, so serve runs its server for the two workers, and stops it when it stops."""
    url, proc, env = launch(tmp_path, tiny_bundle, redis_url, cache_prefix, env_extra={"SONICSORT_BACKEND": "milvus"})
    try:
        data = write_clip(tmp_path / "new.wav", "chirp", seconds=2.0, seed=4042).read_bytes()
        r = requests.post(url + "/v1/tracks", data=data, headers={"Content-Type": "audio/wav", "X-API-Key": "k"},
                          timeout=30)
        assert r.status_code == 201, r.text
        new_id = r.json()["id"]
        for _ in range(6):  # either worker: the upload is among track 1's neighbours
            items = fresh_get(url + "/v1/tracks/1/similar?k=12").json()["items"]
            assert new_id in [s["id"] for s in items] and len(items) == 12
        assert fresh_get(url + "/readyz").json()["index"]["backend"] == "milvus"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    assert "milvus-lite serves" in out, out[-2000:]
    assert (tmp_path / "home" / "milvus.db").is_dir()
    from index import create_index

    # the server went with serve: the folder can be opened again, holding every track
    idx = create_index("milvus", tiny_bundle.embedding_dim, uri=str(tmp_path / "home" / "milvus.db"))
    assert len(idx) == 13
    idx.close()


def test_postgresql_stopped_under_load(tmp_path, tiny_bundle, redis_url, cache_prefix):
    """The catalog's PostgreSQL (a private cluster, so it may be stopped) goes away under a
    stream of /similar requests: what the node has cached still answers, writes get 503
    problem+json and leave nothing behind, /readyz says degraded, and all of it comes back by
    itself when the server returns."""
    import threading

    from .helpers import PrivatePostgres

    pg = PrivatePostgres().init()
    url, proc, _ = launch(tmp_path, tiny_bundle, redis_url, cache_prefix, workers=1, catalog_url=pg.url)
    answers: list[int] = []
    stop = threading.Event()
    try:
        before = fresh_get(url + "/v1/tracks/1/similar?k=5").json()["items"]
        fresh_get(url + "/v1/tracks/1")

        def load() -> None:
            with requests.Session() as s:
                while not stop.is_set():
                    answers.append(s.get(url + "/v1/tracks/1/similar?k=5", timeout=30).status_code)
                    time.sleep(0.01)

        t = threading.Thread(target=load)
        t.start()
        time.sleep(0.3)
        pg.stop()
        time.sleep(0.5)
        assert fresh_get(url + "/v1/tracks/1/similar?k=5").json()["items"] == before  # from the row cache
        assert fresh_get(url + "/v1/tracks/1").status_code == 200
        data = write_clip(tmp_path / "new.wav", "chirp", seconds=2.0, seed=4043).read_bytes()
        r = requests.post(url + "/v1/tracks", data=data, headers={"Content-Type": "audio/wav", "X-API-Key": "k"},
                          timeout=30)
        assert r.status_code == 503 and r.headers["Content-Type"] == "application/problem+json", r.text
        assert "does not answer" in r.json()["detail"] and r.headers["Retry-After"]
        # a raw-body prediction too (answered before Flask when repeated): problem+json 503, not a plain 500
        for _ in range(2):
            r = requests.post(url + "/v1/predict", data=data, headers={"Content-Type": "audio/wav"}, timeout=30)
            assert r.status_code == 503 and r.headers["Content-Type"] == "application/problem+json", r.text
            assert r.headers["Retry-After"]
        ready = fresh_get(url + "/readyz").json()
        assert (ready["status"], ready["catalog"]) == ("degraded", "unreachable")
        assert not any((tmp_path / "home" / "uploads").rglob("*.wav"))  # the refused upload left no file
        pg.start()
        t0 = time.monotonic()
        while fresh_get(url + "/readyz").json()["status"] != "ready":
            assert time.monotonic() - t0 < 10, "the node did not notice PostgreSQL came back"
            time.sleep(0.2)
        r = requests.post(url + "/v1/tracks", data=data, headers={"Content-Type": "audio/wav", "X-API-Key": "k"},
                          timeout=30)
        assert r.status_code == 201, r.text
        assert r.json()["id"] in [s["id"] for s in fresh_get(url + "/v1/tracks/1/similar?k=12").json()["items"]]
        stop.set()
        t.join(30)
        assert len(answers) > 20 and set(answers) == {200}, sorted(set(answers))
    finally:
        stop.set()
        proc.terminate()
        proc.wait(30)
        pg.close()


def test_uploads_cut_by_sigkill_on_a_postgresql_node_leave_no_orphan(tmp_path, tiny_bundle, redis_url, cache_prefix,
                                                                      postgres_db):
    """Each of 6 uploads to a node on a PostgreSQL catalog has its worker SIGKILLed at a moment
    of the request; each is sent again until answered. Then (after the start-up sweep of a
    restarted node) every row has its file, every file its row, no temporary file is left, and
    every answered upload is in the catalog once."""
    import random
    import threading

    from recommender.catalog import Catalog

    from .helpers import postgres_schema

    shared = postgres_schema(postgres_db)
    url, proc, _ = launch(tmp_path, tiny_bundle, redis_url, cache_prefix, workers=1, catalog_url=shared)
    rng = random.Random(5)
    answered = {}
    try:
        for i in range(6):
            data = write_clip(tmp_path / f"k{i}.wav", "chirp", seconds=2.0, seed=6000 + i).read_bytes()
            while True:
                with requests.Session() as http:
                    try:
                        ready = http.get(url + "/readyz", timeout=30)
                    except requests.RequestException:
                        ready = None
                    if ready is None or ready.status_code != 200:
                        time.sleep(0.3)  # the killed worker is being replaced
                        continue
                    pid = ready.json()["worker_pid"]
                    killer = threading.Timer(rng.uniform(0.0, 0.4), os.kill, (pid, signal.SIGKILL)) \
                        if i not in answered else None
                    if killer:
                        killer.start()
                    try:
                        r = http.post(url + "/v1/tracks", data=data, timeout=60,
                                      headers={"Content-Type": "audio/wav", "X-API-Key": "k"})
                    except requests.RequestException:
                        r = None
                    if killer:
                        killer.join()
                answered.setdefault(i, None)  # from now on, sent unkilled
                if r is not None and r.status_code in (200, 201):
                    answered[i] = r.json()["id"]
                    break
    finally:
        proc.terminate()
        proc.wait(30)
    # a restarted node sweeps what the kills left before it serves
    url, proc, _ = launch(tmp_path, tiny_bundle, redis_url, cache_prefix, workers=1, catalog_url=shared,
                          home=tmp_path / "home")
    proc.terminate()
    proc.wait(30)
    cat = Catalog(shared)
    ids = set(cat.ids().tolist())
    referenced = {p for t in cat.get_many(sorted(ids)).values() for p in t.paths if "/uploads/" in p}
    cat.close()
    uploads = tmp_path / "home" / "uploads"
    files = {str(p) for p in uploads.rglob("*") if p.is_file()}
    assert not [f for f in files if "/.upload." in f]  # no temporary file
    assert files == referenced  # every file has its row, every row its file
    assert len(ids) == 12 + 6 and all(tid in ids for tid in answered.values())
    assert len(set(answered.values())) == 6
