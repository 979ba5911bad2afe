"""``sonicsort serve``: the app under gunicorn, in uvicorn workers (the default; ``api.asgi``: slow
clients wait in each worker's event loop, the Flask app runs complete requests in a thread
pool) or, with ``SONICSORT_WEB_SERVER=gthread``, in gunicorn's threaded workers.

The master process prepares the index once (opens it, reconciles it with the catalog,
saves it) without loading TensorFlow, then forks the workers. Each worker builds its own
app, so TensorFlow and the model load once per worker, after the fork; Annoy indexes are
loaded with mmap, so the workers share their pages. Every worker notices catalog changes
(an ingest, an upload answered by another worker) through the catalog's generation and
brings its index in step before its next query.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from uvicorn_worker import UvicornWorker

from recommender.config import Settings

from .connections import ConnectionLimits, Protocol, accept_burst, connection_cap, quiet_exception_handler

log = logging.getLogger("sonicsort.serve")


class Worker(UvicornWorker):
    """uvicorn's gunicorn worker: pure-Python HTTP (h11) on asyncio, no ASGI lifespan (the app
    starts itself when it is built).

    Its connections are ``api.connections.Protocol``'s (a header timeout, a connection cap
    below the file limit, a lingering close), and the event loop reports its own errors at
    most once a minute each.

    gunicorn's own workers leave when their master dies (they watch their parent pid);
    uvicorn's only hear from it through signals, so a master killed with SIGKILL would leave
    them serving, with TensorFlow loaded, forever. A watchdog thread makes them stop
    gracefully (SIGTERM to themselves) within a second of losing the master."""

    CONFIG_KWARGS = {"loop": "asyncio", "http": Protocol, "lifespan": "off"}

    async def _serve(self) -> None:
        asyncio.get_running_loop().set_exception_handler(quiet_exception_handler)
        await super()._serve()

    def run(self) -> None:
        settings = Settings.from_env()
        self.config.backlog = burst = accept_burst(self.config.backlog)
        Protocol.limits = ConnectionLimits(header_timeout_s=settings.header_timeout_s,
                                           max_connections=connection_cap(settings.max_connections, burst=burst))
        log.info("worker %d keeps at most %d connections", os.getpid(), Protocol.limits.max_connections)
        master = self.ppid

        def watch() -> None:
            while True:
                time.sleep(1.0)
                if os.getppid() != master:
                    log.warning("worker %d: the gunicorn master %d is gone; stopping", os.getpid(), master)
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

        threading.Thread(target=watch, daemon=True, name="sonicsort-master-watch").start()
        super().run()


def prepare_index(settings: Settings) -> int:
    """Open, reconcile and save the index in this process (no model needed unless the catalog is
    empty), and sweep what crashed uploads left: before the workers fork none is in flight."""
    from recommender.library import Library
    from recommender.uploads import UploadStore

    lib = Library(settings)
    try:
        UploadStore(settings.uploads_dir).sweep_against(lib.catalog, grace_s=0)
        n = len(lib.catalog)
        if n:
            lib.index  # noqa: B018 - loads or rebuilds, reconciles, saves
        return n
    finally:
        lib.close()


def _prepare_in_child(settings: Settings, conn, parent_pid: int) -> None:
    from recommender.lifeline import die_with_parent

    die_with_parent(parent_pid)
    try:
        conn.send(("ok", prepare_index(settings)))
    except BaseException as exc:  # handed to the master, which reports it as it would its own
        conn.send(("error", exc))


def prepare_index_apart(settings: Settings) -> int:
    """``prepare_index`` in a spawned child: Milvus clients start gRPC threads, and the master
    must hold no thread of ours when it forks (see ``announce_once``)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_prepare_in_child, args=(settings, theirs, os.getpid()),
                        name="sonicsort-prepare")
    child.start()
    theirs.close()
    try:
        kind, value = ours.recv()
    except EOFError:
        child.join()
        raise RuntimeError(f"preparing the index failed (the process exited with {child.exitcode})") from None
    child.join()
    if kind == "error":
        raise value
    return value


class MilvusLiteServer:
    """milvus-lite's own server on the data folder under ``SONICSORT_HOME``, for the workers of
    one ``serve``: milvus-lite lets one process open its folder, so the workers reach it over
    gRPC, as they would a Milvus server (``SONICSORT_MILVUS_URI``)."""

    def __init__(self, data_dir: str, host: str = "127.0.0.1") -> None:
        self.data_dir, self.host = data_dir, host
        self.proc = None
        self.port = 0

    def start(self, timeout_s: float = 60.0) -> str:
        import subprocess

        with socket.socket() as s:
            s.bind((self.host, 0))
            self.port = s.getsockname()[1]
        from recommender.lifeline import die_with_parent

        parent = os.getpid()
        self.proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", self.data_dir,
                                      "--host", self.host, "--port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=lambda: die_with_parent(parent))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise RuntimeError(f"milvus-lite could not serve {self.data_dir}: {err[-1] if err else 'it exited'}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return f"http://{self.host}:{self.port}"
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"milvus-lite did not answer on port {self.port} within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
        self.proc = None


def check_port_free(host: str, port: int) -> None:
    from recommender.errors import BadRequest

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise BadRequest(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port") from None


def announce_once(service, marker: str, url: str, banner: Callable[[], str]) -> None:
    """Print the banner when the first worker has started (``Service.on_started``); the other
    workers, and those gunicorn starts later, find ``marker`` taken and stay quiet.

    The master runs no thread of ours: a fork that lands while a thread is importing a module
    leaves that module's import lock held in the child by a thread the child does not have
    (see the decision record ``docs/decisions/no-thread-in-the-master.md``)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return
    if service.state == "ready":
        print(banner(), file=sys.stderr, flush=True)
    else:
        print(f"sonicsort: the service could not start: {service.error}; see {url}/readyz", file=sys.stderr,
              flush=True)


def freeze_gc() -> None:
    """Once the worker has loaded TensorFlow, the model and the index: collect, then move every
    object alive to the collector's permanent generation (``gc.freeze``).

    TensorFlow and Keras leave about half a million objects, and one full collection over them
    takes ~0.2 s here, a stall of every request of the worker that shows in the p99 latency.
    Frozen, they are never scanned again; later collections only see what requests create."""
    import gc

    gc.collect()
    gc.freeze()
    log.info("froze %d start-up objects out of the garbage collector's way", gc.get_freeze_count())


def serve(settings: Settings, *, workers: int | None = None, threads: int | None = None,
          banner: Callable[[str], str] | None = None, access_log: bool = False) -> int:
    """Run gunicorn in the foreground until it is stopped (Ctrl-C, SIGTERM). With the ``milvus``
    backend and no ``SONICSORT_MILVUS_URI``, a milvus-lite server on the data folder under home
    runs beside it for as long."""
    from recommender.errors import BadRequest

    if settings.web_server not in ("uvicorn", "gthread"):
        raise BadRequest(f"SONICSORT_WEB_SERVER={settings.web_server!r}: choose uvicorn or gthread")
    host, port = settings.host, settings.port
    check_port_free(host, port)
    milvus = None
    if settings.backend == "milvus" and not settings.milvus_uri:
        milvus = MilvusLiteServer(settings.milvus_location)
        settings.milvus_uri = milvus.start()  # the workers' too, through the environment below
        log.info("milvus-lite serves %s at %s", settings.milvus_location, settings.milvus_uri)
    try:
        return _serve(settings, workers=workers, threads=threads, banner=banner, access_log=access_log)
    finally:
        if milvus is not None:
            milvus.stop()


def _serve(settings: Settings, *, workers, threads, banner, access_log) -> int:
    from gunicorn.app.base import BaseApplication

    host, port = settings.host, settings.port
    n = prepare_index_apart(settings) if settings.backend == "milvus" else prepare_index(settings)
    log.info("catalog: %d tracks; index %s ready", n, settings.backend)

    # metrics from every worker, summed on /metrics (prometheus_client's multiprocess mode)
    metrics_dir = tempfile.mkdtemp(prefix="sonicsort-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    for f, v in settings.to_dict().items():  # workers build their Settings from the environment
        if v not in ("None", ""):
            os.environ[f"SONICSORT_{f.upper()}"] = v

    url = f"http://{host if ':' not in host else '[' + host + ']'}:{port}"

    def child_exit(server, worker) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    n_threads = threads or settings.web_threads
    options: dict[str, Any] = {
        "bind": f"{host}:{port}" if ":" not in host else f"[{host}]:{port}",
        "workers": workers or settings.web_workers,
        # uvicorn (the default): slow clients wait in an event loop (api.asgi); gthread: a
        # thread per connection being read
        "worker_class": "api.serve.Worker" if settings.web_server == "uvicorn" else "gthread",
        # this instance's own control socket (gunicornc -s PATH), not one per user that a second
        # instance would take over and delete when it stops
        "control_socket": os.path.join(metrics_dir, "gunicorn.ctl"),
        "threads": n_threads,  # gthread's; the uvicorn front gives them to its thread pool
        "timeout": 120,  # a worker loads TensorFlow in the background; requests stay short
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "child_exit": child_exit,
        "proc_name": "sonicsort",
    }

    log.info("gunicorn control socket of this instance: %s", options["control_socket"])

    class App(BaseApplication):
        def load_config(self) -> None:
            for k, v in options.items():
                if v is not None:
                    self.cfg.set(k, v)

        def load(self):
            from . import create_app
            from .asgi import asgi_app

            app = create_app({"PERSIST_INDEX": False})
            service = app.extensions["sonicsort"]
            service.on_started(freeze_gc)
            if banner is not None:
                marker = os.path.join(metrics_dir, "announced")
                service.on_started(lambda: announce_once(service, marker, url, lambda: banner(url)))
            if settings.web_server != "uvicorn":
                return app
            from .asgi import BodyBudget

            spool = settings.home / "tmp"
            spool.mkdir(parents=True, exist_ok=True)
            budget = BodyBudget(memory_bytes=int(settings.body_memory_mb * 1_000_000), spool_dir=str(spool))
            return asgi_app(app, threads=n_threads, max_bytes=int(app.config["MAX_CONTENT_LENGTH"]),
                            body_timeout_s=settings.body_timeout_s, budget=budget)

    try:
        App().run()
    finally:
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
