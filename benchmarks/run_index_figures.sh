#!/usr/bin/env bash
# Reproduce the index figures in the README (about 15 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
B=.venv/bin
mkdir -p benchmarks/results
$B/python benchmarks/index_overhead.py --n 100000 --dim 128 | tee benchmarks/results/overhead-100k.json
$B/python benchmarks/annoy_mmap.py --n 200000 --dim 128 --procs 4 | tee benchmarks/results/annoy-mmap.txt
$B/sonicsort bench ann --dataset synthetic:100000:128 --out benchmarks/results/ann-100k
$B/sonicsort bench ann --dataset synthetic:1000000:128 --runs benchmarks/runs-1m.yml --max-single-queries 500 --out benchmarks/results/ann-1m
