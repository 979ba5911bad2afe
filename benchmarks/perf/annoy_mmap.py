"""Annoy indexes are loaded with mmap: N server processes share one copy of the file.

Builds and saves an Annoy index, then starts N processes that each load it and answer
queries, and prints each process's resident memory (RSS) and proportional share (PSS,
which splits shared pages between the processes that map them).

    python -m benchmarks.perf.annoy_mmap --n 200000 --dim 128 --procs 4
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
from pathlib import Path

import numpy as np


def _mem_kb(field: str) -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def worker(path: str, dim: int, barrier, queue) -> None:
    from index import load_index

    base_rss = _mem_kb("Rss")
    idx = load_index(path)
    q = np.random.default_rng(0).normal(size=(2000, dim)).astype(np.float32)
    for v in q:  # touch the index like a server would
        idx.search(v, 10)
    barrier.wait()  # everyone has the file mapped now: PSS splits it between us
    queue.put((_mem_kb("Rss") - base_rss, _mem_kb("Pss")))
    barrier.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--procs", type=int, default=4)
    args = ap.parse_args()
    from index import create_index

    x = np.random.default_rng(1).normal(size=(args.n, args.dim)).astype(np.float32)
    idx = create_index("annoy", args.dim, "cosine", n_trees=25)
    idx.add(np.arange(args.n), x)
    with tempfile.TemporaryDirectory() as tmp:
        path = idx.save(Path(tmp) / "annoy-index")
        size_mb = (path / "annoy.ann").stat().st_size / 1e6
        del idx, x
        ctx = mp.get_context("spawn")
        barrier, queue = ctx.Barrier(args.procs), ctx.Queue()
        procs = [ctx.Process(target=worker, args=(str(path), args.dim, barrier, queue)) for _ in range(args.procs)]
        for p in procs:
            p.start()
        rows = [queue.get() for _ in procs]
        for p in procs:
            p.join()
    print(f"annoy file: {size_mb:.0f} MB, {args.procs} processes each loaded it and ran 2000 queries")
    for i, (rss, pss) in enumerate(rows):
        print(f"  process {i}: RSS grown by loading+querying {rss / 1024:.0f} MB, PSS {pss / 1024:.0f} MB")
    print(f"  sum of RSS growth {sum(r for r, _ in rows) / 1024:.0f} MB for {args.procs} × {size_mb:.0f} MB of index: "
          "the pages are shared, the PSS shows each process's share")


if __name__ == "__main__":
    main()
