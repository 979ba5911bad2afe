"""Ingest beyond one machine: the model's work as RQ (Redis Queue) jobs.

``sonicsort ingest DIR --queue redis://host:6379/0`` scans and hashes as usual, then puts
the files that need the model on the queue ``sonicsort-ingest`` in chunks; any number of
``sonicsort worker --queue redis://host:6379/0`` processes, on any machines that see the
files under the same paths, decode them, run the model and return the predictions; the
ingest process writes them to its catalog as they arrive. Jobs and results are JSON
(RQ's JSON serializer), never pickle. A worker refuses jobs made for another model version.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator


log = logging.getLogger(__name__)

QUEUE_NAME = "sonicsort-ingest"
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


def embed_paths(paths: list[str], model_version: str, limits: dict[str, Any]) -> list[dict[str, Any]]:
    """The job: decode, featurise and predict ``paths`` with this worker's model, within the
    ingesting process's decode limits (``DecodeLimits.to_dict()``)."""
    bundle = _WORKER.get("bundle")
    if bundle is None:
        from embedding import ModelBundle

        from .config import Settings

        bundle = _WORKER["bundle"] = ModelBundle.load(Settings.from_env().model_dir)
        bundle.warm_up()
    if bundle.version != model_version:
        return [{"path": p, "error": f"worker has model {bundle.version}, ingest expects {model_version}"}
                for p in paths]
    from .extract import extract, predict_extracted

    items = [extract(p, bundle.feature_config, bundle.normalizer, limits) for p in paths]
    out = [i for i in items if "error" in i]
    ok = [i for i in items if "error" not in i]
    for item, pred in zip(ok, predict_extracted(bundle, ok)):
        out.append({"path": item["path"], "tags": item["tags"], "prediction": pred.to_json()})
    return out


def embed_on_queue(url: str, paths: list[str], model_version: str, limits: dict[str, Any], *,
                   chunk: int = 32, poll_s: float = 0.2) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """Enqueue ``paths`` in chunks and yield (path, item, prediction) as workers finish them."""
    if not paths:
        return
    from embedding import Prediction

    q = _queue(url)
    jobs = {}
    for i in range(0, len(paths), chunk):
        part = paths[i:i + chunk]
        job = q.enqueue(embed_paths, part, model_version, limits, result_ttl=3600, failure_ttl=3600)
        jobs[job.id] = (job, part)
    log.info("queued %d job(s) of up to %d files on %s (%s); waiting for `sonicsort worker` processes",
             len(jobs), chunk, QUEUE_NAME, url)
    try:
        while jobs:
            finished = []
            for jid, (job, part) in jobs.items():
                status = job.get_status(refresh=True)
                if status == "finished":
                    for r in job.return_value() or []:
                        if "error" in r:
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
                jobs[jid][0].delete()
                del jobs[jid]
            if jobs and not finished:
                time.sleep(poll_s)
    finally:
        for job, _ in jobs.values():  # interrupted: take our unfinished jobs off the queue
            try:
                job.cancel()
                job.delete()
            except Exception:  # best effort on the way out
                pass


def run_worker(url: str, *, burst: bool = False, name: str | None = None) -> None:
    """Process ingest jobs until stopped (or until the queue is empty with ``burst``)."""
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    q = _queue(url)
    # SimpleWorker runs jobs in this process: the model is loaded once, not per forked job
    worker = SimpleWorker([q], connection=q.connection, serializer=JSONSerializer, name=name)
    worker.work(burst=burst, logging_level="WARNING")
