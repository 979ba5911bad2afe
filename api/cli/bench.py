"""Benchmark commands: ``bench ann`` (ANN backends the way ann-benchmarks compares them)."""

from __future__ import annotations

import argparse
import logging
import sys

from .common import EXIT_OK, CliError, emit

log = logging.getLogger("sonicsort")


def add_commands(sub, common) -> None:
    bench = sub.add_parser("bench", help="benchmarks", description="Benchmarks.")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    bsub.required = True
    p = bsub.add_parser(
        "ann", parents=[common], help="compare ANN backends: recall against queries/s, build time, size, memory",
        description="Benchmark the index backends the way ann-benchmarks does: every build-argument × "
                    "query-argument combination of the runs file; recall@k against exact neighbours "
                    "(distance threshold of the k-th true neighbour, distances in float64), single-thread "
                    "and batch queries/s (the fastest of --repeat passes), single-query p50/p99 latency, "
                    "build time, index size on disk, memory (RSS growth while building). Writes runs.csv, runs.json, pareto.md "
                    "and recall_qps.png.")
    p.add_argument("--dataset", default="synthetic:10000:128",
                   help="ann-benchmarks .hdf5 file, a .npy matrix (ground truth cached beside it), or "
                        "synthetic:N:DIM[:CLUSTERS[:SEED]] (default synthetic:10000:128)")
    p.add_argument("--metric", choices=["cosine", "l2", "ip"], default="cosine",
                   help="metric for .npy and synthetic data (HDF5 files name their own; default cosine)")
    p.add_argument("--runs", help="YAML or JSON runs file (default: index/runs.yml in the package)")
    p.add_argument("--backends", help="comma-separated subset of the runs file's backends")
    p.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--queries", type=int, default=1000, help="queries for .npy/synthetic data (default 1000)")
    p.add_argument("--max-single-queries", type=int, default=1000,
                   help="queries timed one at a time per run (default 1000)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed passes per run; the fastest counts, as in ann-benchmarks (default 3)")
    p.add_argument("--out", default="bench-results", help="output folder (default ./bench-results)")
    p.set_defaults(func=cmd_bench_ann)

    p = bsub.add_parser(
        "export", parents=[common], help="write the catalog's embeddings as an ann-benchmarks HDF5 file",
        description="Write the embeddings of the catalog at SONICSORT_HOME (or SONICSORT_CATALOG_URL) as an "
                    "ann-benchmarks HDF5 file for `sonicsort bench ann --dataset FILE`: a seeded random "
                    "--queries of them become `test`, the rest `train`, with the exact --k nearest "
                    "`neighbors` and their `distances` (angular: 1 - cos, the catalog's metric), the "
                    "track ids as `train_ids`/`test_ids` and the model version as an attribute.")
    p.add_argument("out", help="the .hdf5 file to write (replaced atomically)")
    p.add_argument("--queries", type=int, help="vectors held out as queries (default a tenth, at most 1000)")
    p.add_argument("-k", type=int, default=100, help="true neighbours stored per query (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query split (default 0)")
    p.set_defaults(func=cmd_bench_export)


def cmd_bench_ann(args: argparse.Namespace, settings) -> int:
    from index import bench

    if args.k < 1 or args.queries < 1 or args.max_single_queries < 1 or args.repeat < 1:
        raise CliError("-k, --queries, --max-single-queries and --repeat must be positive")
    runs = bench.load_runs(args.runs, args.backends.split(",") if args.backends else None)
    log.info("dataset %s ...", args.dataset)
    ds = bench.load_dataset(args.dataset, metric=args.metric, n_queries=args.queries, k=max(args.k, 100))
    n_runs = sum(len(bench.grid((s or {}).get("build"))) * len(bench.grid((s or {}).get("query"))) for s in runs.values())
    bar = None
    if not args.json:
        from tqdm import tqdm

        bar = tqdm(total=n_runs, desc="runs", unit="run", file=sys.stderr, leave=False)

    def progress(label: str) -> None:
        if bar is not None:
            bar.set_postfix_str(label[:60])
            bar.update(1)

    results = bench.run_benchmark(ds, runs, k=args.k, max_single_queries=args.max_single_queries, progress=progress,
                                  repeats=args.repeat)
    if bar is not None:
        bar.close()
    paths = bench.write_reports(results, args.out, dataset_name=ds.name)
    data = {"dataset": ds.name, "n_train": int(ds.train.shape[0]), "dim": int(ds.train.shape[1]), "metric": ds.metric,
            "runs": [{**r.__dict__, "label": r.label} for r in results], "files": {k: str(v) for k, v in paths.items()}}
    text = bench.markdown_table(bench.pareto_frontier(results), ds.name) + "\n" + "\n".join(
        f"wrote {p}" for p in paths.values())
    emit(args, data, text)
    return EXIT_OK


def cmd_bench_export(args: argparse.Namespace, settings) -> int:
    import numpy as np

    from index import bench
    from recommender.library import METRIC

    if args.k < 1 or (args.queries is not None and args.queries < 1):
        raise CliError("-k and --queries must be positive")
    if not args.out.endswith((".hdf5", ".h5")):
        raise CliError(f"{args.out}: the file name must end in .hdf5 or .h5 (bench ann reads it by its suffix)")
    from .common import service

    catalog = service(args, settings, ready=False).catalog
    parts = list(catalog.embeddings())
    if not parts:
        raise CliError("the catalog holds no tracks: ingest some first (sonicsort ingest DIR)")
    ids = np.concatenate([p[0] for p in parts])
    vecs = np.concatenate([p[1] for p in parts])
    d = bench.export_hdf5(args.out, ids, vecs, metric=METRIC, n_queries=args.queries, k=args.k, seed=args.seed,
                          attrs={"source": "sonicsort catalog", "model_version": catalog.model_version or ""})
    d["model_version"] = catalog.model_version
    emit(args, d, f"wrote {d['path']}: {d['train']} train and {d['test']} test vectors of dimension {d['dim']}, "
                  f"{d['k']} true neighbours each ({d['distance']}), model {d['model_version']}")
    return EXIT_OK
