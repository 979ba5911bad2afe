"""Ingest spread over RQ workers, on a private Redis."""

from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import CLI, GENRES, run_cli

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_queue_ingest_with_two_workers(tmp_path, cli_env, private_redis):
    from .conftest import synth
    import soundfile as sf

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(200):
        g = GENRES[i % 3]
        sf.write(folder / f"{g}-{i:03d}.wav", synth(g, 1.0, 5000 + i), 22_050)
    env = dict(cli_env, SONICSORT_REDIS_URL=private_redis.url, SONICSORT_CACHE_PREFIX="q:")
    workers = [subprocess.Popen(CLI + ["worker", "--queue", private_redis.url, "--name", f"w{i}"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
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
        for w in workers:
            w.wait(30)
    r = run_cli(["stats", "--json"], env)
    assert json.loads(r.stdout)["tracks"] == 200
