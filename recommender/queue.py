"""Ingest beyond one machine: the model's work as RQ (Redis Queue) jobs.

``sonicsort ingest DIR --queue redis://host:6379/0`` scans and hashes as usual, then puts
the files that need the model on the queue ``sonicsort-ingest`` in chunks; any number of
``sonicsort worker --queue redis://host:6379/0`` processes, on any machines that see the
files under the same paths, decode them and run the model. Jobs and results are JSON
(RQ's JSON serializer), never pickle. A worker refuses jobs made for another model version.

Where the results go depends on the catalog:

- a PostgreSQL catalog the worker opens too (its ``SONICSORT_CATALOG_URL`` names the same
  database): the worker writes its tracks straight into it, one transaction per job, found by
  content hash (a job done twice links paths, it never makes a second track), and returns
  only their ids. The catalog needs no single writer; the nodes' indexes catch up from its
  change log;
- any other (the ingest machine's SQLite file): the worker returns the predictions and the
  ingest process writes them as they arrive.

A worker killed mid-job loses nothing: its job is retried (``RETRIES``) once RQ finds it
abandoned (its heartbeat lapses: about a minute), on another worker; what it had committed is
found by hash.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator


log = logging.getLogger(__name__)

QUEUE_NAME = "sonicsort-ingest"
RETRIES = 2  # a job whose worker died (or failed) runs again this many times
_WORKER: dict[str, Any] = {}


def _connect(url: str):
    import redis

    from .errors import BadRequest

    conn = redis.Redis.from_url(url)
    try:
        conn.ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise BadRequest(f"the queue's Redis at {url} does not answer ({exc})") from None
    return conn


def _queue(url: str):
    from rq import Queue
    from rq.serializers import JSONSerializer

    return Queue(QUEUE_NAME, connection=_connect(url), serializer=JSONSerializer, default_timeout=3600)


def _worker_catalog(where: str):
    """This worker's own catalog (``SONICSORT_CATALOG_URL``) when it is the PostgreSQL catalog
    ``where`` names (as ``Catalog.where`` writes it, without a password), else None."""
    if "catalog" not in _WORKER:
        from .catalog import Catalog
        from .config import Settings

        settings = Settings.from_env()
        cat = Catalog(settings.catalog_url) if settings.catalog_url.startswith("postgresql") else None
        _WORKER["catalog"] = cat
    cat = _WORKER["catalog"]
    return cat if cat is not None and cat.where == where else None


def embed_paths(paths: list[str], model_version: str, limits: dict[str, Any],
                catalog: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The job: decode, featurise and predict ``paths`` with this worker's model, within the
    ingesting process's decode limits (``DecodeLimits.to_dict()``).

    ``catalog``: ``{"where": Catalog.where, "files": {path: [sha256, [[path, size, mtime_ns], ...]]}}``
    from an ingest into PostgreSQL. When this worker opens that catalog too, it stores the
    tracks itself and returns ``{"path", "id", "created", "duration_s"}`` per file; otherwise
    the predictions."""
    from .config import Settings

    bundle = _WORKER.get("bundle")
    if bundle is None:
        from embedding import ModelBundle

        bundle = _WORKER["bundle"] = ModelBundle.load(Settings.from_env().model_dir)
        bundle.warm_up()
    if bundle.version != model_version:
        return [{"path": p, "error": f"worker has model {bundle.version}, ingest expects {model_version}"}
                for p in paths]
    from .extract import extract, predict_extracted

    fingerprints = Settings.from_env().find_duplicates
    items = [extract(p, bundle.feature_config, bundle.normalizer, limits, fingerprint=fingerprints) for p in paths]
    out = [i for i in items if "error" in i]
    ok = [i for i in items if "error" not in i]
    preds = predict_extracted(bundle, ok)
    cat = _worker_catalog(catalog["where"]) if catalog else None
    if cat is None:
        for item, pred in zip(ok, preds):
            out.append({"path": item["path"], "tags": item["tags"], "prediction": pred.to_json()})
        return out
    from pathlib import Path

    from .cache import PredictionCache
    from .catalog import NewTrack

    records, first = [], []
    for item, pred in zip(ok, preds):
        sha, where = catalog["files"][item["path"]]
        tags = item["tags"]
        first.append(len(records))
        for p, size, mtime_ns in where:
            records.append(NewTrack.from_prediction(pred, path=p, sha256=sha, size=int(size), mtime_ns=int(mtime_ns),
                                                    **{**tags, "title": tags["title"] or Path(p).stem}))
    created: list[bool] = []
    ids = cat.add(records, tag_priors=bundle.tag_priors, created=created)  # one transaction for the job
    try:  # later /v1/predict calls on this audio are answered from the cache, as after a local ingest
        PredictionCache.from_settings(Settings.from_env()).put_many(
            [(catalog["files"][i["path"]][0], pr) for i, pr in zip(ok, preds)])
    except Exception as exc:  # the cache is optional
        log.warning("predictions not cached: %s", exc)
    for item, pred, at in zip(ok, preds, first):
        out.append({"path": item["path"], "id": ids[at], "created": created[at], "duration_s": pred.duration_s})
    return out


def _delete_job(job) -> None:
    """``job.delete()``, past an RQ 3 snag: the job's execution log outlives (by a minute) the
    record of an execution whose worker died, and deleting the job reads every record it lists
    (ValueError). The job is done by then: its stale log goes first."""
    try:
        job.delete()
    except ValueError:
        job.connection.delete(job.execution_registry.key)
        job.delete()


def embed_on_queue(url: str, paths: list[str], model_version: str, limits: dict[str, Any], *,
                   chunk: int = 32, poll_s: float = 0.2, catalog: dict[str, Any] | None = None,
                   sweep_s: float = 5.0) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Enqueue ``paths`` in chunks and yield (path, item, prediction) as workers finish them;
    a worker that stored the track itself (``catalog``, see ``embed_paths``) yields
    (path, {"path", "id", "created", "duration_s"}, None)."""
    if not paths:
        return
    from embedding import Prediction
    from rq import Retry
    from rq.registry import StartedJobRegistry

    q = _queue(url)
    jobs = {}
    for i in range(0, len(paths), chunk):
        part = paths[i:i + chunk]
        job_catalog = ({"where": catalog["where"], "files": {p: catalog["files"][p] for p in part}}
                       if catalog else None)
        job = q.enqueue(embed_paths, part, model_version, limits, job_catalog, result_ttl=3600, failure_ttl=3600,
                        retry=Retry(max=RETRIES))
        jobs[job.id] = (job, part)
    log.info("queued %d job(s) of up to %d files on %s (%s); waiting for `sonicsort worker` processes",
             len(jobs), chunk, QUEUE_NAME, url)
    started = StartedJobRegistry(queue=q)
    last_sweep = time.monotonic()
    try:
        while jobs:
            if time.monotonic() - last_sweep > sweep_s:  # jobs of dead workers: back on the queue
                started.cleanup()
                last_sweep = time.monotonic()
            finished = []
            for jid, (job, part) in jobs.items():
                status = job.get_status(refresh=True)
                if status == "finished":
                    for r in job.return_value() or []:
                        if "error" in r or "id" in r:
                            yield r["path"], r, None
                        else:
                            yield r["path"], {"path": r["path"], "tags": r["tags"]}, Prediction.from_json(r["prediction"])
                    finished.append(jid)
                elif status in ("failed", "stopped", "canceled"):
                    reason = f"queue job {status}"
                    info = (job.latest_result().exc_string if job.latest_result() else "") or ""
                    if info.strip():
                        reason += f": {info.strip().splitlines()[-1]}"
                    for p in part:
                        yield p, {"path": p, "error": reason}, None
                    finished.append(jid)
            for jid in finished:
                _delete_job(jobs[jid][0])
                del jobs[jid]
            if jobs and not finished:
                time.sleep(poll_s)
    finally:
        for job, _ in jobs.values():  # interrupted: take our unfinished jobs off the queue
            try:
                job.cancel()
                _delete_job(job)
            except Exception:  # best effort on the way out
                pass


PUBSUB_WAKE_S = 0.5  # how often the worker's command-channel thread looks up; bounds a warm shutdown
HEARTBEAT_S = 5.0  # a running job's heartbeat; three missed ones and RQ takes the job for abandoned


def _worker_class():
    import threading

    from rq import SimpleWorker
    from rq.worker import WorkerStatus

    class Worker(SimpleWorker):
        """RQ's SimpleWorker (jobs run in this process: the model loads once, not per forked
        job), with a heartbeat while a job runs. SimpleWorker alone keeps a job's lease for its
        whole timeout (an hour here), so the job of a worker killed mid-way would wait that long
        to be retried; with the heartbeat it is retried within ``3 × HEARTBEAT_S`` and a sweep."""

        def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
            return int(3 * HEARTBEAT_S)

        def subscribe(self) -> None:
            """RQ's command channel, with its listening thread waking every ``PUBSUB_WAKE_S``
            instead of every 60 s. On a warm shutdown RQ unsubscribes and then joins that thread
            (redis-py 8 joins without a limit); a thread that had already read the unsubscribe
            reply sleeps out its whole wait first, so a SIGTERM took up to 60 s to stop an idle
            worker (seen in CI as a worker ignoring SIGTERM for 30 s)."""
            self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
            self.pubsub = self.connection.pubsub()
            self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
            self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=PUBSUB_WAKE_S, daemon=True,
                                                           exception_handler=self._pubsub_exception_handler)

        def execute_job(self, job, queue):
            execution = self.prepare_execution(job)
            done = threading.Event()

            def beat() -> None:
                while not done.wait(HEARTBEAT_S):
                    try:
                        self.maintain_heartbeats(job, execution)
                    except Exception as exc:  # Redis away for a moment: the next beat tries again
                        log.warning("heartbeat of job %s failed: %s", job.id, exc)

            t = threading.Thread(target=beat, name="sonicsort-heartbeat", daemon=True)
            t.start()
            try:
                self.perform_job(job, queue, execution)
            finally:
                done.set()
                t.join()
            self.set_state(WorkerStatus.IDLE)

    return Worker


def run_worker(url: str, *, burst: bool = False, name: str | None = None) -> None:
    """Process ingest jobs until stopped (or until the queue is empty with ``burst``)."""
    from rq.serializers import JSONSerializer

    q = _queue(url)
    worker = _worker_class()([q], connection=q.connection, serializer=JSONSerializer, name=name)
    worker.work(burst=burst, logging_level="WARNING")
