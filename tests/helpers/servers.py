"""Servers the tests talk to: private Redis and PostgreSQL, the app behind a real HTTP server, `sonicsort serve`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from .audio import GENRES, write_clip


# ---------------------------------------------------------------- Redis
REDIS_URL = os.environ.get("SONICSORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class PrivateRedis:
    """A redis-server of our own on a free port, for tests that stop and restart Redis."""

    def __init__(self, folder: Path) -> None:

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder = folder
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        import shutil

        import redis

        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temporary folder, ``pg_ctl`` on a free port,
    run as the ``postgres`` user when the tests run as root), for tests that stop the server.
    ``url``: its ``postgres`` database."""

    def __init__(self) -> None:
        import glob
        import tempfile

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            pytest.skip("no PostgreSQL server binaries (Debian's postgresql package)")
        self.bin = Path(found[-1]).parent
        # its own folder under /tmp: the postgres user cannot enter pytest's private ones
        self.root = Path(tempfile.mkdtemp(prefix="sonicsort-pg-"))
        self.folder = self.root / "pgdata"
        self.running = False
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:

        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> "PrivatePostgres":
        import shutil

        self.folder.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            os.chmod(self.root, 0o755)
        self._run("initdb", "-D", str(self.folder), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self.start()

    def start(self) -> "PrivatePostgres":
        self._run("pg_ctl", "-D", str(self.folder), "-w", "-l", str(self.folder / "log"), "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        self.running = True
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder), "-w", "-m", "fast", "stop")
        self.running = False

    def close(self) -> None:
        """Stop it if it runs and delete its folder."""
        import shutil

        if self.running:
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- a real HTTP server around the app
class Server:
    """A real HTTP server (werkzeug, threaded) around an app, on a free port."""

    def __init__(self, app) -> None:
        from werkzeug.serving import make_server as werkzeug_server

        self.app = app
        self.httpd = werkzeug_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        import requests

        self.http = requests.Session()

    @property
    def service(self):
        return self.app.extensions["sonicsort"]

    def get(self, path, **kw):
        return self.http.get(self.url + path, timeout=30, **kw)

    def post(self, path, **kw):
        return self.http.post(self.url + path, timeout=30, **kw)

    def delete(self, path, **kw):
        return self.http.delete(self.url + path, timeout=30, **kw)

    def close(self) -> None:
        self.httpd.shutdown()
        self.service.close()


def make_server(home: Path, bundle, redis_url: str | None, prefix: str = "sonicsort-test:", *, start: str = "now",
                **settings) -> Server:
    """The app on ``home``'s catalog with ``bundle``, behind a real HTTP server (``start`` as
    create_app's START)."""
    from api import create_app
    from recommender.config import Settings

    s = Settings(home=home, redis_url=redis_url or "", cache_prefix=prefix, **settings)
    return Server(create_app({"SETTINGS": s, "BUNDLE": bundle, "START": start}))


def serve_catalog(home: Path, bundle, redis_url: str):
    """For module fixtures (``yield from``): a ready server on ``home``'s catalog with Redis keys
    under a prefix of its own, removed afterwards."""
    import uuid

    import redis

    prefix = f"sonicsort-test-{uuid.uuid4().hex[:10]}:"
    srv = make_server(home, bundle, redis_url, prefix)
    assert srv.service.state == "ready", srv.service.error
    try:
        yield srv
    finally:
        srv.close()
        r = redis.Redis.from_url(redis_url)
        for k in r.scan_iter(prefix + "*"):
            r.delete(k)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _set_nofile(n: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def fresh_get(url: str, **kw):
    """A new connection each time, so gunicorn may hand it to either worker."""
    with requests.Session() as s:
        s.headers["Connection"] = "close"
        return s.get(url, **{"timeout": 30, **kw})


def launch(tmp_path, bundle, redis_url, cache_prefix, *, workers: int = 2, threads: int = 2,
           env_extra: dict[str, str] | None = None, catalog_url: str = "", home=None, nofile: int | None = None):
    """`sonicsort serve` on 12 ingested clips, ready on every worker: (url, process, env).
    With ``home`` (a node of its own on a shared ``catalog_url``), nothing is ingested.
    ``nofile``: the server's file limit (soft and hard)."""
    from recommender.cache import PredictionCache
    from recommender.config import Settings
    from recommender.ingest import ingest
    from recommender.library import Library

    if home is None:
        music = tmp_path / "music"
        for i in range(12):
            write_clip(music / f"t{i:02d}.wav", GENRES[i % 3], seconds=2.0, seed=900 + i)
        home = tmp_path / "home"
        lib = Library(Settings(home=home, catalog_url=catalog_url), bundle=bundle, cache=PredictionCache(None))
        assert ingest(lib, [music], workers=0).added == 12
        lib.close()
    port = free_port()
    env = {**os.environ, "SONICSORT_HOME": str(home), "SONICSORT_MODEL_DIR": str(bundle.directory),
           "SONICSORT_REDIS_URL": redis_url, "SONICSORT_CACHE_PREFIX": cache_prefix, "SONICSORT_API_KEY": "k",
           "TF_CPP_MIN_LOG_LEVEL": "2", "SONICSORT_CATALOG_URL": catalog_url, **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", str(workers),
                             "--threads", str(threads)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=None if nofile is None else lambda: _set_nofile(nofile))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    ready: set[int] = set()  # the worker pids that answered ready; a run of ready answers from one
    # worker proves nothing of the other, since the kernel may hand every new connection to the same
    streak = 0
    while (len(ready) < workers or streak < 3) and time.monotonic() < deadline:
        try:
            r = fresh_get(url + "/readyz", timeout=10)
            pid = r.json().get("worker_pid")
            if r.status_code == 200:
                ready.add(pid)
                streak += 1
            else:
                ready.discard(pid)
                streak = 0
        except requests.ConnectionError:
            assert proc.poll() is None, proc.stdout.read()
        except (requests.Timeout, ValueError):
            streak = 0
        time.sleep(0.2)
    if len(ready) < workers or streak < 3:
        proc.terminate()
        raise AssertionError("gunicorn did not get ready: " + (proc.stdout.read() or "")[-3000:])
    return url, proc, env
