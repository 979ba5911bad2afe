"""The command line as a user meets it: real processes, real files, one-line errors."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from .helpers import music, postgres_schema, run_cli, write_clip

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "SONICSORT_REDIS_URL": ""}  # no cache unless a test wants one


def run(*args, home=None, check=True):
    env = dict(ENV)
    if home is not None:
        env["SONICSORT_HOME"] = str(home)
    p = subprocess.run([sys.executable, "-m", "api.cli", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=600)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def one_line_error(p):
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = [l for l in p.stderr.splitlines() if l.startswith("sonicsort: error") or ": error:" in l]
    assert len(lines) >= 1, p.stderr
    return lines


@pytest.mark.slow
def two_at_a_time(*calls):
    """The answers of independent ``sonicsort`` runs, two processes at a time (the machine's two cores)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


def test_predict_with_the_shipped_model(tmp_path):
    clip = write_clip(tmp_path / "song.ogg", "drone", seconds=4.0, format="OGG", subtype="VORBIS")
    plain, as_json = two_at_a_time(lambda: run("predict", clip, home=tmp_path),
                                   lambda: run("predict", clip, "--json", home=tmp_path))
    assert str(clip) in plain.stdout and "(" in plain.stdout and "tags: " in plain.stdout
    d = json.loads(as_json.stdout)
    assert len(d["embedding"]) == 5 * 32 and len(d["top"]) == 3  # five heads' 32-d embeddings
    assert d["genre"] in d["probabilities"] and len(d["probabilities"]) == 10
    assert len(d["tags"]) == 50 and len(d["top_tags"]) == 5 and "Mellow" in d["tags"]


def test_predict_bad_files_one_line_each(tmp_path):
    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all\n" * 40)
    good = write_clip(tmp_path / "ok.wav", "chirp", seconds=2.0)
    p = run("predict", text, good, tmp_path / "missing.flac", home=tmp_path, check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert len([l for l in p.stderr.splitlines() if "error" in l]) == 2
    assert all("error" in l for l in p.stderr.splitlines()), p.stderr  # no decoder chatter
    assert "holds text" in p.stderr
    assert "ok.wav" in p.stdout


def test_usage_errors_and_bad_model_dir(tmp_path):
    p = run("predict", home=tmp_path, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    p = run("predict", write_clip(tmp_path / "a.wav", "drone"), "--model", tmp_path / "nope", home=tmp_path, check=False)
    assert one_line_error(p)[0].endswith("no such model folder")
    p = run("train", tmp_path / "nothing", "--out", tmp_path / "m", home=tmp_path, check=False)
    assert "no such file or folder" in one_line_error(p)[0]
    p = run("train", tmp_path, "--out", tmp_path / "m", "--train-on-all", home=tmp_path, check=False)
    assert "--epochs" in one_line_error(p)[0]


@pytest.mark.slow
def test_train_then_evaluate_from_the_command_line(toy_dataset, tmp_path):
    out = tmp_path / "model"

    def train_default():
        # the default recipe: the musicnn front end under a (here tiny) BiLSTM head
        return run("train", toy_dataset / "manifest.csv", "--out", out, "--lstm-units", "8", "--embedding-dim", 16,
                   "--max-epochs", 6, "--patience", 6, "--segments-per-track", 6, "--ensemble", 2, "--workers", 1,
                   "--json", home=tmp_path)

    def refused():
        # options of the frame model of sonicsort 0.1 are gone; a bad recipe value is one line
        features = run("train", toy_dataset / "manifest.csv", "--out", tmp_path / "refused-1", "--features", "logmel",
                       home=tmp_path, check=False)
        balance = run("train", toy_dataset / "manifest.csv", "--out", tmp_path / "refused-2", "--ensemble", 0,
                      home=tmp_path, check=False)
        return features, balance

    p, (features, ensemble) = two_at_a_time(train_default, refused)  # independent: the two cores at once
    summary = json.loads(p.stdout)
    assert summary["evaluation"]["split"] == "test" and (out / "confusion.png").exists()
    assert set(summary["evaluation"]["baseline"]) == {"logistic_regression", "knn", "linear_probe"}
    saved = json.loads((out / "bundle.json").read_text())
    assert saved["feature_config"]["kind"] == "musicnn" and saved["model_config"]["ensemble"] == 2
    # the shipped recipe's defaults: tag logits beside the features, mixup of the sequences
    assert saved["feature_config"]["tag_inputs"] and saved["model_config"]["mixup"] == 0.4
    assert saved["embedding_dim"] == 2 * 16  # the two heads' embeddings side by side
    assert (out / "frontend.weights.h5").is_file()
    assert "head 1  epoch   1" in p.stderr and "head 2  epoch   1" in p.stderr  # progress per head and epoch
    assert features.returncode == 2 and "--features" in features.stderr
    assert one_line_error(ensemble) and "ensemble" in ensemble.stderr
    assert not (tmp_path / "refused-1").exists() and not (tmp_path / "refused-2").exists()
    query = write_clip(tmp_path / "q.wav", "chirp", seconds=2.0, seed=5)
    predicted, evaluated, tested = two_at_a_time(
        lambda: run("predict", query, "--model", out, home=tmp_path),
        lambda: run("evaluate", toy_dataset / "manifest.csv", "--model", out, "--split", "all", "--out",
                    tmp_path / "rep", "--json", home=tmp_path),
        lambda: run("evaluate", toy_dataset / "manifest.csv", "--model", out, "--split", "test", home=tmp_path))
    assert "tags: " in predicted.stdout  # the front end's top tags
    m = json.loads(evaluated.stdout)
    assert m["excluded_training_tracks"] > 0 and m["n_tracks"] > 0
    assert {"accuracy", "balanced_accuracy", "macro_f1", "per_genre", "confusion", "baseline"} <= set(m)
    saved = json.loads((tmp_path / "rep" / "evaluation.json").read_text())
    assert saved["confusion"] == m["confusion"]
    assert (tmp_path / "rep" / "confusion.png").stat().st_size > 1000
    assert "balanced accuracy" in tested.stdout and "baseline logistic_regression" in tested.stdout


def test_demo_builds_and_ingests_a_library(tmp_path):
    p = run("demo", "--no-serve", "--per-style", "2", home=tmp_path)
    assert "sonicsort demo: 12 tracks from" in p.stdout and "predicted genres:" in p.stdout
    assert len(list((tmp_path / "demo" / "generated").rglob("*.flac"))) == 12
    assert (tmp_path / "demo" / "catalog.sqlite3").is_file() and (tmp_path / "demo" / "index" / "hnsw").is_dir()
    p = run("demo", "--no-serve", "--per-style", "2", "--json", home=tmp_path)  # again: nothing new to do
    d = json.loads(p.stdout)
    assert d["tracks"] == 12 and d["ingest"]["unchanged"] == 12 and d["ingest"]["added"] == 0
    # the command it prints reaches the demo's catalog, not the empty one at SONICSORT_HOME
    assert d["serve_command"] == f"SONICSORT_HOME={tmp_path / 'demo'} sonicsort serve"
    stats = json.loads(run("stats", "--json", home=tmp_path / "demo").stdout)
    assert stats["tracks"] == 12 and stats["index"]["count"] == 12
    # the catalog's embeddings as an ann-benchmarks file, which bench ann reads
    p = run("bench", "export", tmp_path / "real.hdf5", "--queries", 3, "-k", 5, "--json", home=tmp_path / "demo")
    d = json.loads(p.stdout)
    assert (d["train"], d["test"], d["k"], d["distance"]) == (9, 3, 5, "angular") and d["model_version"]
    with h5py.File(tmp_path / "real.hdf5", "r") as f:
        assert f["train"].shape == (9, d["dim"]) and f["neighbors"].shape == (3, 5)
        assert sorted(f["train_ids"][:].tolist() + f["test_ids"][:].tolist()) == sorted(
            t["id"] for t in json.loads(run("tracks", "--json", home=tmp_path / "demo").stdout)["items"])
    p = run("bench", "ann", "--dataset", tmp_path / "real.hdf5", "--backends", "exact", "-k", 5,
            "--out", tmp_path / "real", "--json", home=tmp_path)
    assert json.loads(p.stdout)["runs"][0]["recall_ids"] == 1.0
    p = run("bench", "export", tmp_path / "real.hdf5", "--queries", 12, home=tmp_path / "demo", check=False)
    assert one_line_error(p) and "cannot be split" in p.stderr
    p = run("bench", "export", tmp_path / "x.hdf5", home=tmp_path / "empty", check=False)
    assert one_line_error(p) and "no tracks" in p.stderr and not (tmp_path / "x.hdf5").exists()
    p = run("demo", "--no-serve", "--music", tmp_path / "nowhere", home=tmp_path, check=False)
    assert one_line_error(p)


def test_bench_ann_on_tiny_datasets(tmp_path):
    runs = tmp_path / "runs.yml"
    runs.write_text("hnsw:\n  build: {M: [8]}\n  query: {ef: [10, 50]}\nannoy:\n  build: {n_trees: [5]}\n"
                    "  query: {search_k: [200]}\nexact: {}\nmilvus:\n  build: {M: [8]}\n  query: {ef: [20]}\n"
                    "faiss-flat:\n  backend: faiss\n  build: {index_type: Flat}\n"
                    "faiss-ivfpq:\n  backend: faiss\n  build: {index_type: IVFPQ, nlist: [8], m: [4]}\n"
                    "  query: {nprobe: [1, 8]}\n"
                    "voyager:\n  build: {M: [8]}\n  query: {ef: [20]}\nusearch:\n  build: {M: [8]}\n  query: {ef: [20]}\n")
    out = tmp_path / "res"
    p = run("bench", "ann", "--dataset", "synthetic:600:16:5", "--queries", 40, "--runs", runs, "--out", out,
            "--json", home=tmp_path)
    d = json.loads(p.stdout)
    assert len(d["runs"]) == 10
    by_group = {r["backend"]: r for r in d["runs"]}
    assert set(by_group) == {"hnsw", "annoy", "exact", "milvus", "faiss-flat", "faiss-ivfpq", "voyager", "usearch"}
    for exact in ("exact", "faiss-flat"):
        assert by_group[exact]["recall"] == 1.0 and by_group[exact]["recall_ids"] == 1.0
    # IVF-PQ keeps 4 bytes of codes a vector (plus its id and, at this size, codebooks as large
    # as the codes), against 64 for float32
    pq = [r for r in d["runs"] if r["backend"] == "faiss-ivfpq"]
    assert pq[0]["recall"] < pq[1]["recall"] and pq[0]["index_bytes"] < by_group["faiss-flat"]["index_bytes"]
    for r in d["runs"]:
        assert 0 <= r["recall"] <= 1 and 0 <= r["recall_ids"] <= r["recall"] + 1e-9
        assert r["qps_single"] > 0 and r["index_bytes"] > 0
        assert r["p99_ms"] >= r["p50_ms"] > 0 and r["repeats"] == 3
    assert "recall (ids)" in (out / "pareto.md").read_text()
    # --backends picks groups by their own name or by their backend's
    p = run("bench", "ann", "--dataset", "synthetic:300:8:5", "--queries", 20, "--runs", runs, "--backends", "faiss",
            "--repeat", 1, "--out", tmp_path / "f", "--json", home=tmp_path)
    assert {r["backend"] for r in json.loads(p.stdout)["runs"]} == {"faiss-flat", "faiss-ivfpq"}
    for f in ("runs.csv", "runs.json", "pareto.md", "recall_qps.png"):
        assert (out / f).stat().st_size > 0
    assert (out / "recall_qps.png").read_bytes()[:4] == b"\x89PNG"

    # ann-benchmarks HDF5 layout
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    d2 = np.linalg.norm(test[:, None] - train[None], axis=2)
    nb = np.argsort(d2, axis=1)[:, :20]
    with h5py.File(tmp_path / "toy.hdf5", "w") as f:
        f["train"], f["test"], f["neighbors"] = train, test, nb
        f["distances"] = np.take_along_axis(d2, nb, axis=1)
        f.attrs["distance"] = "euclidean"
    p = run("bench", "ann", "--dataset", tmp_path / "toy.hdf5", "--backends", "exact", "--runs", runs, "-k", 10,
            "--out", tmp_path / "h5", "--json", home=tmp_path)
    assert json.loads(p.stdout)["runs"][0]["recall"] == 1.0

    # a plain .npy matrix: ground truth computed once and cached beside it
    np.save(tmp_path / "vecs.npy", rng.normal(size=(500, 8)).astype(np.float32))
    run("bench", "ann", "--dataset", tmp_path / "vecs.npy", "--backends", "exact", "--runs", runs, "--queries", 30,
        "--out", tmp_path / "npy", home=tmp_path)
    assert list(tmp_path.glob("vecs.gt-*.npz"))


def test_bench_ann_bad_input(tmp_path):
    for args, msg in [(["--dataset", "synthetic:abc"], "synthetic"), (["--dataset", tmp_path / "x.hdf5"], "no such"),
                      (["--backends", "nope"], "no runs"), (["-k", "0"], "positive")]:
        p = run("bench", "ann", *args, "--out", tmp_path / "o", home=tmp_path, check=False)
        assert msg in one_line_error(p)[0]


@pytest.mark.slow
def test_cli_ingest_stats_reindex(tmp_path, cli_env, redis_url, cache_prefix):
    cli_env = dict(cli_env, SONICSORT_REDIS_URL=redis_url, SONICSORT_CACHE_PREFIX=cache_prefix)
    music(tmp_path / "music", n=6)
    r = run_cli(["ingest", str(tmp_path / "music"), "--json", "--workers", "0"], cli_env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["added"] == 6 and d["failed"] == 0
    r = run_cli(["stats", "--json"], cli_env)
    s = json.loads(r.stdout)
    assert s["tracks"] == 6 and sum(s["per_genre"].values()) == 6 and s["index"]["count"] == 6
    assert s["cache"]["state"] == "ok"
    r = run_cli(["reindex", "--backend", "annoy"], cli_env)
    assert r.returncode == 0 and "6 tracks" in r.stdout
    r = run_cli(["stats", "--backend", "annoy"], cli_env)
    assert "annoy, 6 vectors" in r.stdout
    r = run_cli(["ingest", str(tmp_path / "nowhere")], cli_env)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr


@pytest.mark.slow
def test_cli_on_a_shared_postgresql_catalog(tmp_path, cli_env, postgres_db):
    """SONICSORT_CATALOG_URL=postgresql://…: ingest on one machine (home), and another (a home
    of its own, the same URL) sees the tracks, builds its own index from them and reports the
    catalog without its password. A server that does not answer is one line and exit 1."""
    shared = postgres_schema(postgres_db)
    music(tmp_path / "music", n=4)
    a = dict(cli_env, SONICSORT_CATALOG_URL=shared)
    r = run_cli(["ingest", str(tmp_path / "music"), "--json", "--workers", "0"], a)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["added"] == 4
    b = dict(a, SONICSORT_HOME=str(tmp_path / "other-node"))
    s = json.loads(run_cli(["stats", "--json"], b).stdout)
    assert s["tracks"] == 4 and s["index"]["count"] == 4 and s["catalog_path"].startswith("postgresql")
    assert not (tmp_path / "other-node" / "catalog.sqlite3").exists()  # no SQLite file beside it
    # and back to a SQLite file of a third home, with `catalog copy`
    third = tmp_path / "third" / "catalog.sqlite3"
    r = run_cli(["catalog", "copy", shared, str(third), "--json"], a)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tracks"] == 4
    c = dict(cli_env, SONICSORT_HOME=str(tmp_path / "third"))
    assert json.loads(run_cli(["stats", "--json"], c).stdout)["tracks"] == 4
    r = run_cli(["catalog", "copy", shared, str(third)], a)  # not empty any more
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "not empty" in r.stderr
    r = run_cli(["stats"], dict(a, SONICSORT_CATALOG_URL="postgresql://someone:hunter2@127.0.0.1:1/x"))
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "cannot open the catalog" in r.stderr
    assert "hunter2" not in r.stderr and "Traceback" not in r.stderr


def test_users_add_list_passwd_apikey_delete(tmp_path):
    """`sonicsort users`: the password from standard input, stored encrypted under a key file
    of mode 0600; bad names and unknown users are one line each."""
    import sqlite3

    def users(*args, stdin=None):
        env = {**ENV, "SONICSORT_HOME": str(tmp_path)}
        return subprocess.run([sys.executable, "-m", "api.cli", "users", *args], input=stdin, capture_output=True,
                              text=True, env=env, timeout=120)

    assert users("add", "alice", "--admin", stdin="s3cret words\n").returncode == 0
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    stored = sqlite3.connect(tmp_path / "catalog.sqlite3").execute("SELECT password FROM users").fetchone()[0]
    assert "s3cret" not in stored and len(stored) > 40  # encrypted, not in clear
    assert one_line_error(users("add", "ALICE", stdin="x\n"))  # the same name in another case
    assert one_line_error(users("add", " bob", stdin="x\n"))
    assert one_line_error(users("add", "bob", stdin=""))  # no password on stdin
    assert users("add", "bob", stdin="pw\n").returncode == 0
    listed = json.loads(users("list", "--json").stdout)
    assert [(u["user"], u["admin"]) for u in listed] == [("alice", True), ("bob", False)]
    key = users("apikey", "bob").stdout.strip()
    assert len(key) >= 32 and json.loads(users("list", "--json").stdout)[1]["api_key"] is True
    assert users("passwd", "bob", stdin="new pw\n").returncode == 0
    assert one_line_error(users("passwd", "nobody", stdin="x\n"))
    assert users("delete", "bob").returncode == 0 and one_line_error(users("delete", "bob"))
    assert [u["user"] for u in json.loads(users("list", "--json").stdout)] == ["alice"]
    os.chmod(tmp_path / "secret.key", 0o644)  # a key others can read is refused
    err = one_line_error(users("add", "carol", stdin="pw\n"))
    assert "chmod 600" in err[0]
