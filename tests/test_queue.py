"""Ingest spread over RQ workers, on a private Redis."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from .helpers import CLI, GENRES, run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_queue_ingest_with_two_workers(tmp_path, cli_env, private_redis):
    from .helpers import synth
    import soundfile as sf

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(200):
        g = GENRES[i % 3]
        sf.write(folder / f"{g}-{i:03d}.wav", synth(g, 1.0, 5000 + i), 22_050)
    env = dict(cli_env, SONICSORT_REDIS_URL=private_redis.url, SONICSORT_CACHE_PREFIX="q:", PYTHONFAULTHANDLER="1")
    logs = [open(tmp_path / f"w{i}.log", "w") for i in range(2)]  # a file, not a pipe no one reads: a
    # full pipe would block the worker's next log line (the shutdown message) for good
    workers = [subprocess.Popen(CLI + ["worker", "--queue", private_redis.url, "--name", f"w{i}"], env=env,
                                stdout=subprocess.DEVNULL, stderr=logs[i], text=True) for i in range(2)]
    try:
        r = run_cli(["ingest", str(folder), "--queue", private_redis.url, "--batch", "8", "--json"], env)
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        assert d["added"] == 200 and d["failed"] == 0
        from rq import Worker

        import redis

        conn = redis.Redis.from_url(private_redis.url)
        done = {w.name: w.successful_job_count for w in Worker.all(connection=conn)}
        assert set(done) == {"w0", "w1"} and all(n > 0 for n in done.values()) and sum(done.values()) == 25
    finally:
        for w in workers:
            w.terminate()
        stuck = []
        for i, w in enumerate(workers):
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack into its log
                w.wait(10)
                stuck.append(i)
        for log in logs:
            log.close()
        assert not stuck, "a worker ignored SIGTERM for 30 s; its log: " + "\n".join(
            (tmp_path / f"w{i}.log").read_text()[-4000:] for i in stuck)
    r = run_cli(["stats", "--json"], env)
    assert json.loads(r.stdout)["tracks"] == 200


def test_queue_workers_store_tracks_straight_into_a_postgresql_catalog(tmp_path, cli_env, private_redis,
                                                                        postgres_db):
    """With a PostgreSQL catalog the workers open too, they store the tracks themselves: the
    catalog has no single writer. A worker killed with SIGKILL mid-job loses nothing: its job
    is retried on another worker, and what it had stored is found by hash, never doubled."""
    import os
    import shutil
    import signal
    import time

    import redis
    import soundfile as sf
    from rq import Queue
    from rq.registry import StartedJobRegistry

    from recommender.queue import QUEUE_NAME

    from .helpers import postgres_schema, synth

    folder = tmp_path / "music"
    folder.mkdir()
    for i in range(40):
        g = GENRES[i % 3]
        sf.write(folder / f"{g}-{i:03d}.wav", synth(g, 1.0, 7000 + i), 22_050)
    shutil.copy(sorted(folder.iterdir())[0], folder / "copy.wav")  # the same audio twice: one track, two paths
    env = dict(cli_env, SONICSORT_REDIS_URL=private_redis.url, SONICSORT_CACHE_PREFIX="q2:",
               SONICSORT_CATALOG_URL=postgres_schema(postgres_db))

    def worker(name):
        with open(tmp_path / f"{name}.log", "w") as log:  # a file, not a pipe no one reads
            return subprocess.Popen(CLI + ["worker", "--queue", private_redis.url, "--name", name], env=env,
                                    stdout=subprocess.DEVNULL, stderr=log, text=True)

    doomed = worker("doomed")
    ingest = subprocess.Popen(CLI + ["ingest", str(folder), "--queue", private_redis.url, "--batch", "4", "--json"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    conn = redis.Redis.from_url(private_redis.url)
    started = StartedJobRegistry(queue=Queue(QUEUE_NAME, connection=conn))
    survivor = None
    try:
        deadline = time.monotonic() + 120
        while not started.get_job_ids():  # the doomed worker is in the middle of a job
            assert time.monotonic() < deadline and ingest.poll() is None, ingest.stderr.read() if ingest.poll() else ""
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
        survivor = worker("survivor")
        out, err = ingest.communicate(timeout=240)
        assert ingest.returncode == 0, err
        d = json.loads(out)
        assert "enqueued for retry" in err, err  # the killed worker's job ran again, on the survivor
        assert d["added"] + d["skipped"] == 41 and d["failed"] == 0, d  # (a job stored before the kill: found by hash)
        assert d["stored_by_workers"] == 40  # every track stored by a worker, none by the ingest process
    finally:
        for p in (doomed, survivor, ingest):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(30)
    r = run_cli(["stats", "--json"], env)
    stats = json.loads(r.stdout)
    assert stats["tracks"] == 40 and stats["index"]["count"] == 40, stats


def test_an_idle_worker_stops_promptly_on_a_warm_shutdown(private_redis):
    """RQ's warm shutdown unsubscribes from the worker's command channel and then waits for the
    listening thread. A thread that has already read the unsubscribe reply sleeps out its whole
    wait first: with RQ's own 60 s wait, a SIGTERM to an idle worker could take a minute."""
    import time

    import redis
    from rq import Queue

    from recommender.queue import PUBSUB_WAKE_S, QUEUE_NAME, _worker_class

    conn = redis.Redis.from_url(private_redis.url)
    worker = _worker_class()([Queue(QUEUE_NAME, connection=conn)], connection=conn, name="prompt")
    worker.subscribe()
    deadline = time.monotonic() + 10
    while not worker.pubsub.subscribed:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    worker.pubsub.unsubscribe()  # the thread reads this reply and goes back to waiting
    time.sleep(0.3)
    t0 = time.monotonic()
    worker.unsubscribe()
    took = time.monotonic() - t0
    assert not worker.pubsub_thread.is_alive()
    assert took < 4 * PUBSUB_WAKE_S + 1, f"the command-channel thread took {took:.1f} s to stop"
