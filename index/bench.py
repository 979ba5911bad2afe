"""ANN benchmark harness, the way ann-benchmarks measures backends.

Datasets
    * ann-benchmarks HDF5 files (``train``, ``test``, ``neighbors``, ``distances``, attribute
      ``distance``: angular / euclidean / dot)
    * any ``.npy`` matrix: queries are split off and the ground truth is computed by exact
      search once and cached beside the file
    * ``synthetic:N:DIM[:CLUSTERS[:SEED]]``: clustered Gaussian data generated here

Runs are data: build-argument grid × query-argument grid per run group (``index/runs.yml``).
A group is named after its backend, or names it with ``backend:`` (faiss's flat, HNSW and
IVF-PQ types are three groups with their own grids).

Per run, two recalls, labelled apart:

- ``recall``: ann-benchmarks' own, from the file's distances: a returned neighbour counts
  when its true distance (recomputed in float64) is within the k-th true neighbour's distance
  plus 1e-3, so ties at the k-th distance count;
- ``recall_ids``: by exact ids, the share of the file's k true neighbour ids returned.

Then single-thread and batch queries/s, single-query p50/p99 latency, build time, index size
on disk (and per vector) and memory grown by the build (RSS).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .distances import exact_distances
from .errors import InvalidInput
from .registry import backend_class, create_index

log = logging.getLogger(__name__)

DEFAULT_RUNS = Path(__file__).with_name("runs.yml")
_HDF5_METRIC = {"angular": "cosine", "cosine": "cosine", "euclidean": "l2", "l2": "l2", "dot": "ip", "ip": "ip"}
RECALL_EPSILON = 1e-3


@dataclass
class Dataset:
    name: str
    train: np.ndarray  # (n, dim)
    test: np.ndarray  # (n_queries, dim)
    neighbors: np.ndarray  # (n_queries, >= k) true neighbour positions in train
    distances: np.ndarray  # (n_queries, >= k) true distances, ascending
    metric: str


@dataclass
class RunResult:
    backend: str  # the run group (a backend's name, or e.g. faiss-ivfpq)
    build_args: dict[str, Any]
    query_args: dict[str, Any]
    k: int
    recall: float
    qps_single: float
    qps_batch: float
    build_s: float
    index_bytes: int
    memory_bytes: int
    n_train: int
    n_queries: int
    dim: int
    metric: str
    p50_ms: float = 0.0  # single-query latency, of the best of the timed passes
    p99_ms: float = 0.0
    repeats: int = 1
    recall_ids: float = 0.0  # the share of the true k neighbour ids returned

    @property
    def bytes_per_vector(self) -> float:
        return self.index_bytes / max(self.n_train, 1)

    @property
    def label(self) -> str:
        args = {**self.build_args, **self.query_args}
        return f"{self.backend}(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")"


# ---------------------------------------------------------------- datasets
def ground_truth(train: np.ndarray, test: np.ndarray, metric: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours with the ``exact`` backend (batched BLAS)."""
    idx = create_index("exact", train.shape[1], metric)
    idx.add(np.arange(len(train)), train)
    ids, dist = idx.search(test, k)
    return ids, dist


def synthetic(n: int, dim: int, *, clusters: int = 100, n_queries: int = 1000, seed: int = 0,
              metric: str = "cosine", k: int = 100) -> Dataset:
    """Clustered Gaussian data: centres ~ N(0, I), points = centre + N(0, 0.25 I)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    which = rng.integers(clusters, size=n + n_queries)
    data = np.empty((n + n_queries, dim), np.float32)
    for s in range(0, len(data), 200_000):  # bounded temporaries for large n
        e = min(s + 200_000, len(data))
        data[s:e] = centres[which[s:e]] + 0.5 * rng.normal(size=(e - s, dim)).astype(np.float32)
    train, test = data[:n], data[n:]
    nb, dist = ground_truth(train, test, metric, k)
    return Dataset(f"synthetic-{n}x{dim}-c{clusters}-s{seed}", train, test, nb, dist, metric)


def _attr_text(value) -> str:
    """An HDF5 string attribute in any form h5py hands it over: str (variable-length),
    bytes or numpy.bytes_ (fixed-length), or a one-element array of either."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size == 1 else value
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value).decode("utf-8", "replace")
    return str(value).strip().strip("\x00").lower()


def load_hdf5(path: str | Path) -> Dataset:
    import h5py

    with h5py.File(path, "r") as f:
        if "distance" not in f.attrs:
            raise InvalidInput(f"{path}: no 'distance' attribute: an ann-benchmarks file names its metric "
                               f"({', '.join(_HDF5_METRIC)})")
        name = _attr_text(f.attrs["distance"])
        metric = _HDF5_METRIC.get(name)
        if metric is None:
            raise InvalidInput(f"{path}: distance {name!r} is not supported ({', '.join(_HDF5_METRIC)})")
        train = np.asarray(f["train"], np.float32)
        test = np.asarray(f["test"], np.float32)
        neighbors = np.asarray(f["neighbors"], np.int64)
        distances = np.asarray(f["distances"], np.float32)
    return Dataset(Path(path).stem, train, test, neighbors, distances, metric)


def load_npy(path: str | Path, *, metric: str = "cosine", n_queries: int = 1000, k: int = 100, seed: int = 0) -> Dataset:
    """A plain matrix: the last ``n_queries`` rows (after a seeded shuffle) become queries."""
    path = Path(path)
    data = np.load(path, mmap_mode="r")
    if data.ndim != 2:
        raise InvalidInput(f"{path}: expected a 2-D matrix, got shape {data.shape}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    n_queries = min(n_queries, len(data) // 10 or 1)
    test = np.asarray(data[np.sort(order[:n_queries])], np.float32)
    train = np.asarray(data[np.sort(order[n_queries:])], np.float32)
    cache = path.with_name(f"{path.stem}.gt-{metric}-q{n_queries}-k{k}-s{seed}.npz")
    if cache.exists():
        gt = np.load(cache)
        nb, dist = gt["neighbors"], gt["distances"]
    else:
        nb, dist = ground_truth(train, test, metric, k)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, neighbors=nb, distances=dist)
        os.replace(tmp, cache)
    return Dataset(path.stem, train, test, nb, dist, metric)


def load_dataset(spec: str, *, metric: str = "cosine", n_queries: int = 1000, k: int = 100) -> Dataset:
    """``synthetic:N:DIM[:CLUSTERS[:SEED]]``, ``*.hdf5``/``*.h5`` or ``*.npy``."""
    if spec.startswith("synthetic"):
        parts = spec.split(":")[1:]
        try:
            n, dim = int(parts[0]), int(parts[1])
            clusters = int(parts[2]) if len(parts) > 2 else 100
            seed = int(parts[3]) if len(parts) > 3 else 0
        except (IndexError, ValueError):
            raise InvalidInput(f"synthetic dataset spec is synthetic:N:DIM[:CLUSTERS[:SEED]], not {spec!r}") from None
        if n < 1 or dim < 1 or clusters < 1:
            raise InvalidInput(f"synthetic dataset needs positive sizes, not {spec!r}")
        return synthetic(n, dim, clusters=clusters, seed=seed, n_queries=n_queries, metric=metric, k=k)
    path = Path(spec)
    if not path.is_file():
        raise InvalidInput(f"{spec}: no such dataset file (or use synthetic:N:DIM)")
    if path.suffix in (".hdf5", ".h5"):
        return load_hdf5(path)
    if path.suffix == ".npy":
        return load_npy(path, metric=metric, n_queries=n_queries, k=k)
    raise InvalidInput(f"{spec}: unsupported dataset format (use .hdf5, .npy or synthetic:N:DIM)")


_METRIC_HDF5 = {"cosine": "angular", "l2": "euclidean", "ip": "dot"}


def export_hdf5(path: str | Path, ids: np.ndarray, vectors: np.ndarray, *, metric: str = "cosine",
                n_queries: int | None = None, k: int = 100, seed: int = 0,
                attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write vectors as an ann-benchmarks HDF5 file: a seeded random ``n_queries`` of them
    become ``test`` (default: a tenth, at most 1,000), the rest ``train``; ``neighbors`` and
    ``distances`` are the exact k nearest (k capped at the train size) by the ``exact``
    backend, distances in the file's convention (angular: 1 − cos). ``train_ids`` and
    ``test_ids`` keep the caller's ids. Written to a temporary file and renamed."""
    import h5py

    vectors = np.asarray(vectors, np.float32)
    ids = np.asarray(ids, np.int64)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise InvalidInput(f"need (n, dim) vectors and n ids, got {vectors.shape} and {ids.shape}")
    if metric not in _METRIC_HDF5:
        raise InvalidInput(f"metric must be one of {', '.join(_METRIC_HDF5)}, not {metric!r}")
    n = len(vectors)
    if n_queries is None:
        n_queries = min(1000, max(1, n // 10))
    if n < 2 or not 1 <= n_queries < n:
        raise InvalidInput(f"{n} vectors cannot be split into {n_queries} queries and a train set")
    order = np.random.default_rng(seed).permutation(n)
    test_pos, train_pos = np.sort(order[:n_queries]), np.sort(order[n_queries:])
    k = min(k, len(train_pos))
    nb, dist = ground_truth(vectors[train_pos], vectors[test_pos], metric, k)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["distance"] = _METRIC_HDF5[metric]
            f.attrs["point_type"] = "float"
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            f["train"], f["test"] = vectors[train_pos], vectors[test_pos]
            f["neighbors"], f["distances"] = nb.astype(np.int64), dist.astype(np.float32)
            f["train_ids"], f["test_ids"] = ids[train_pos], ids[test_pos]
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"path": str(path), "train": int(len(train_pos)), "test": int(n_queries), "dim": int(vectors.shape[1]),
            "k": int(k), "distance": _METRIC_HDF5[metric]}


# ---------------------------------------------------------------- runs
def group_backend(name: str, spec: dict | None) -> str:
    """The backend a run group runs: its ``backend:`` key, else its own name."""
    return str((spec or {}).get("backend") or name)


def load_runs(path: str | Path | None = None, backends: Iterable[str] | None = None) -> dict[str, dict[str, dict]]:
    """Run groups by name. ``backends`` selects groups by their name or by their backend's."""
    import yaml

    path = Path(path) if path else DEFAULT_RUNS
    try:
        text = path.read_text()
        runs = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: cannot read runs file ({exc})") from None
    if not isinstance(runs, dict):
        raise InvalidInput(f"{path}: runs file must map backend names to {{build: ..., query: ...}}")
    if backends:
        wanted = list(backends)
        missing = [b for b in wanted if not any(b in (g, group_backend(g, s)) for g, s in runs.items())]
        if missing:
            raise InvalidInput(f"{path}: no runs for backend(s) {', '.join(missing)}")
        runs = {g: s for g, s in runs.items() if g in wanted or group_backend(g, s) in wanted}
    for name, spec in runs.items():
        if spec is not None and not isinstance(spec, dict):
            raise InvalidInput(f"{path}: {name} must map build/query to parameter grids")
        cls = backend_class(group_backend(name, spec))
        spec = spec or {}
        unknown = set(spec) - {"backend", "build", "query"}
        if unknown:
            raise InvalidInput(f"{path}: {name} has unknown key(s) {', '.join(sorted(unknown))} (backend, build, query)")
        for part, known in (("build", cls.default_params), ("query", cls.query_param_names)):
            bad = set(spec.get(part) or {}) - set(known)
            if bad:
                raise InvalidInput(f"{path}: {name} has no {part} parameter(s) {', '.join(sorted(bad))}")
    return runs


def grid(spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    spec = spec or {}
    keys = list(spec)
    values = [v if isinstance(v, list) else [v] for v in spec.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)] or [{}]


def recall_at_k(dataset: Dataset, found: np.ndarray, k: int) -> float:
    """ann-benchmarks' recall: a result counts if its true distance ≤ k-th true distance + ε."""
    hits = 0
    for qi, row in enumerate(found):
        row = row[row >= 0][:k]
        if not len(row):
            continue
        d = exact_distances(dataset.test[qi : qi + 1], dataset.train[row], dataset.metric)[0]  # float64, direct
        hits += int(np.sum(d <= dataset.distances[qi, k - 1] + RECALL_EPSILON))
    return hits / float(len(found) * k)


def recall_ids_at_k(dataset: Dataset, found: np.ndarray, k: int) -> float:
    """Recall by exact ids: the share of each query's k true neighbour ids that came back."""
    hits = sum(len(set(row[row >= 0][:k].tolist()) & set(dataset.neighbors[qi, :k].tolist()))
               for qi, row in enumerate(found))
    return hits / float(len(found) * k)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_benchmark(
    dataset: Dataset, runs: dict[str, dict], *, k: int = 10, max_single_queries: int = 1000,
    progress: Callable[[str], None] | None = None, repeats: int = 3,
) -> list[RunResult]:
    """Build every backend × build-args index once, then time every query-args setting: the
    single queries ``repeats`` times over, keeping the fastest pass (as ann-benchmarks does:
    noise only ever slows a pass down), and the batch once per pass too."""
    if dataset.neighbors.shape[1] < k:
        raise InvalidInput(f"dataset ground truth has {dataset.neighbors.shape[1]} neighbours, fewer than k={k}")
    results: list[RunResult] = []
    n, dim = dataset.train.shape
    ids = np.arange(n, dtype=np.int64)
    single = dataset.test[: max_single_queries]
    for backend, spec in runs.items():
        spec = spec or {}
        for build_args in grid(spec.get("build")):
            gc_before = _rss()
            t0 = time.perf_counter()
            idx = create_index(group_backend(backend, spec), dim, dataset.metric, **build_args)
            for s in range(0, n, 100_000):
                idx.add(ids[s : s + 100_000], dataset.train[s : s + 100_000])
            if hasattr(idx, "build"):
                idx.build()
            build_s = time.perf_counter() - t0
            memory = max(0, _rss() - gc_before)
            if hasattr(idx, "disk_bytes"):  # a server's data (milvus-lite's folder), not what save() points to
                index_bytes = idx.disk_bytes()
            else:
                with tempfile.TemporaryDirectory(prefix="sonicsort-bench-") as tmp:
                    index_bytes = _dir_size(idx.save(Path(tmp) / "index"))
            for query_args in grid(spec.get("query")):
                if progress:
                    progress(f"{backend} {build_args} {query_args}")
                idx.search(single[0], k, **query_args)  # warm-up
                best, lat = float("inf"), np.zeros(len(single))
                qps_batch = 0.0
                for _ in range(max(1, repeats)):
                    times = np.empty(len(single))
                    clock = time.perf_counter
                    t_all = clock()
                    for i, q in enumerate(single):  # only the calls are timed
                        t0 = clock()
                        idx.search(q, k, **query_args)
                        times[i] = clock() - t0
                    total = clock() - t_all
                    if total < best:
                        best, lat = total, times
                    t0 = time.perf_counter()
                    found, _ = idx.search(dataset.test, k, **query_args)
                    qps_batch = max(qps_batch, len(dataset.test) / (time.perf_counter() - t0))
                qps_single = len(single) / best
                results.append(RunResult(
                    backend=backend, build_args=build_args, query_args=query_args, k=k,
                    recall=recall_at_k(dataset, found, k), recall_ids=recall_ids_at_k(dataset, found, k),
                    qps_single=qps_single, qps_batch=qps_batch,
                    build_s=build_s, index_bytes=index_bytes, memory_bytes=memory,
                    n_train=n, n_queries=len(dataset.test), dim=dim, metric=dataset.metric,
                    p50_ms=float(np.percentile(lat, 50) * 1000), p99_ms=float(np.percentile(lat, 99) * 1000),
                    repeats=max(1, repeats),
                ))
            idx.close()
            del idx
    return results


# ---------------------------------------------------------------- reports
def pareto_frontier(results: list[RunResult], *, qps: str = "qps_single") -> list[RunResult]:
    """Per backend, the runs no other run of it beats on both recall and queries/s."""
    out = []
    for backend in dict.fromkeys(r.backend for r in results):
        best = -1.0
        for r in sorted((r for r in results if r.backend == backend), key=lambda r: -getattr(r, qps)):
            if r.recall > best:
                out.append(r)
                best = r.recall
    return out


def write_reports(results: list[RunResult], out_dir: str | Path, *, dataset_name: str) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{**asdict(r), "label": r.label, "bytes_per_vector": round(r.bytes_per_vector, 1)} for r in results]
    paths = {"json": out / "runs.json", "csv": out / "runs.csv", "markdown": out / "pareto.md", "plot": out / "recall_qps.png"}

    def atomic(path: Path, write: Callable[[Path], None]) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        write(tmp)
        os.replace(tmp, path)

    import platform

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    atomic(paths["json"], lambda p: p.write_text(json.dumps({"dataset": dataset_name, "machine": machine,
                                                              "date": time.strftime("%Y-%m-%d"), "runs": rows}, indent=1)))

    def write_csv(p: Path) -> None:
        fields = ["label", "backend", "build_args", "query_args", "k", "recall", "recall_ids", "qps_single",
                  "qps_batch", "p50_ms", "p99_ms", "build_s", "index_bytes", "bytes_per_vector", "memory_bytes",
                  "n_train", "n_queries", "dim", "metric", "repeats"]
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for r in rows:
                w.writerow({k: json.dumps(r[k]) if isinstance(r[k], dict) else r[k] for k in fields})

    atomic(paths["csv"], write_csv)
    atomic(paths["markdown"], lambda p: p.write_text(markdown_table(pareto_frontier(results), dataset_name)))
    atomic(paths["plot"], lambda p: plot(results, p, dataset_name))
    return paths


def markdown_table(results: list[RunResult], dataset_name: str) -> str:
    k = results[0].k if results else 10
    lines = [f"Pareto frontier on `{dataset_name}` (recall@{k}, single-thread queries/s). recall: ann-benchmarks' "
             f"(true distance within the {k}-th true distance + {RECALL_EPSILON:g}); recall (ids): the true {k} ids returned.", "",
             "| backend | parameters | recall | recall (ids) | queries/s (1 thread) | queries/s (batch) | p50 ms | p99 ms "
             "| build s | index MB | bytes/vector | memory MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        args = ", ".join(f"{k}={v}" for k, v in {**r.build_args, **r.query_args}.items()) or "-"
        lines.append(f"| {r.backend} | {args} | {r.recall:.3f} | {r.recall_ids:.3f} | {r.qps_single:,.0f} | {r.qps_batch:,.0f} | "
                     f"{r.p50_ms:.3f} | {r.p99_ms:.3f} | "
                     f"{r.build_s:.1f} | {r.index_bytes / 1e6:.1f} | {r.bytes_per_vector:,.0f} | {r.memory_bytes / 1e6:.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[RunResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backend in dict.fromkeys(r.backend for r in results):
        front = [r for r in pareto_frontier(results) if r.backend == backend]
        front.sort(key=lambda r: r.recall)
        ax.plot([r.recall for r in front], [r.qps_single for r in front], "o-", label=backend)
        others = [r for r in results if r.backend == backend and r not in front]
        ax.scatter([r.recall for r in others], [r.qps_single for r in others], s=8, alpha=0.4)
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{results[0].k if results else 10}")
    ax.set_ylabel("queries per second (1 thread, log scale)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
