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
