#!/usr/bin/env bash
# Reproduce the index figures of the docs' results pages (about 30 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
B=.venv/bin
mkdir -p benchmarks/results
$B/python -m benchmarks.perf.index_overhead --n 100000 --dim 128 --rounds 21 \
  --backends hnsw,annoy,faiss,faiss-ivfpq,voyager,usearch | tee benchmarks/results/overhead-100k-all.json
$B/python -m benchmarks.perf.index_overhead --n 100000 --annoy-dims 20,100 --rounds 7 \
  | tee benchmarks/results/annoy-parity.txt
$B/python -m benchmarks.perf.annoy_mmap --n 200000 --dim 128 --procs 4 | tee benchmarks/results/annoy-mmap.txt
$B/sonicsort bench ann --dataset synthetic:100000:128 --out benchmarks/results/ann-100k
# real embeddings: the shipped model's of shared/data (466 tracks), as an ann-benchmarks file
if [ -d ../shared/data ]; then
  REAL=$(mktemp -d)
  SONICSORT_HOME=$REAL $B/sonicsort ingest ../shared/data
  SONICSORT_HOME=$REAL $B/sonicsort bench export "$REAL/sonicsort-shared-data-160-angular.hdf5" --queries 66
  $B/sonicsort bench ann --dataset "$REAL/sonicsort-shared-data-160-angular.hdf5" --runs benchmarks/runs-real.yml --repeat 7 \
    --out benchmarks/results/ann-real
  rm -rf "$REAL"
fi
$B/sonicsort bench ann --dataset synthetic:20000:64:50 --queries 500 --runs benchmarks/runs-milvus.yml \
  --out benchmarks/results/ann-milvus-20k
$B/sonicsort bench ann --dataset synthetic:1000000:128 --runs benchmarks/runs-1m.yml --max-single-queries 500 --out benchmarks/results/ann-1m
