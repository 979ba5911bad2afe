"""Recommendation quality on real music: genre precision@10, backend agreement with exact
search, playlist smoothness.

    python -m benchmarks.research.reco_quality ../shared/data/gtzan/manifest.csv \
        [--model DIR] [--heldout-model DIR --heldout-split valid] [--out FILE.json]

For each model: ingest the manifest's folder into a fresh catalog (no cache), then
- genre precision@10: the share of a query track's 10 nearest catalog neighbours (itself
  excluded) whose true genre equals its own, for the BiLSTM embedding on every backend and
  for a baseline of per-track MFCC mean/std features (z-scored, cosine, exact search);
- recall@10 of each backend's top 10 against exact search, at default settings;
- playlist smoothness: mean cosine distance between consecutive tracks of 20 playlists
  (15 tracks, one random seed each) against the same tracks in random orders.
With ``--heldout-model`` (a model trained without the ``--heldout-split`` tracks) the queries
are only those tracks: what unseen music gets. The default model was trained on every
GTZAN track, so its figures there are optimistic.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


def load_manifest(path: Path) -> dict[str, dict[str, str]]:
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out[str((path.parent / row["path"]).resolve())] = row
    return out


def precision_at(neigh: dict[int, list[int]], truth: dict[int, str], k: int = 10) -> float:
    return float(np.mean([np.mean([truth[n] == truth[q] for n in ns[:k]]) for q, ns in neigh.items()]))


def evaluate(model_dir: str | None, manifest: Path, query_split: str | None) -> dict:
    from embedding.audio import load_audio
    from embedding.track_features import mfcc_stats
    from recommender.cache import PredictionCache
    from recommender.config import Settings
    from recommender.ingest import ingest
    from recommender.library import Library
    from recommender.recommend import Recommender

    rows = load_manifest(manifest)
    home = Path(tempfile.mkdtemp(prefix="sonicsort-quality-"))
    s = Settings(home=home, redis_url="")
    if model_dir:
        s.model_dir = Path(model_dir)
    libs = {b: Library(s, backend=b, cache=PredictionCache(None)) for b in ("exact", "hnsw", "annoy")}
    rep = ingest(libs["exact"], [manifest.parent])
    cat = libs["exact"].catalog
    tracks = cat.get_many(cat.ids())
    truth, split = {}, {}
    for tid, t in tracks.items():
        row = next((rows[p] for p in t.paths if p in rows), None)
        if row is not None:
            truth[tid], split[tid] = row["genre"], row.get("split")
    queries = [t for t in truth if query_split is None or split[t] == query_split]
    ids = sorted(truth)
    vecs = cat.vectors(ids)
    out: dict = {"model": libs["exact"].bundle.version, "catalog_tracks": len(ids), "queries": len(queries),
                 "query_split": query_split or "all", "ingest_failed": len(rep.failed), "backends": {}}

    neigh = {}
    for b, lib in libs.items():
        idx = lib.index
        res = {}
        for q in queries:
            found, _ = idx.search(vecs[q], 11, allowed=None)
            res[q] = [int(i) for i in found if int(i) != q and int(i) in truth][:10]
        neigh[b] = res
    for b in libs:
        out["backends"][b] = {
            "genre_precision@10": round(precision_at(neigh[b], truth), 4),
            "recall@10_vs_exact": round(float(np.mean([len(set(neigh[b][q]) & set(neigh["exact"][q])) / 10
                                                       for q in queries])), 4),
        }

    # the classical baseline: MFCC mean/std per track, z-scored, cosine, exact
    feats = {}
    for tid in ids:
        a = load_audio(tracks[tid].path, sr=22_050)
        feats[tid] = mfcc_stats(a.samples, a.sr)
    m = np.stack([feats[i] for i in ids])
    m = (m - m.mean(0)) / np.maximum(m.std(0), 1e-6)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    pos = {t: i for i, t in enumerate(ids)}
    base = {}
    for q in queries:
        sims = m @ m[pos[q]]
        order = [ids[i] for i in np.argsort(-sims, kind="stable") if ids[i] != q]
        base[q] = order[:10]
    out["mfcc_baseline_genre_precision@10"] = round(precision_at(base, truth), 4)
    out["embedding_minus_baseline_points"] = round(
        100 * (out["backends"]["exact"]["genre_precision@10"] - out["mfcc_baseline_genre_precision@10"]), 1)

    # playlists: consecutive distance against random orders of the same tracks
    reco = Recommender(libs["hnsw"])
    rng = np.random.default_rng(7)
    smooth, shuffled = [], []
    for seed in rng.choice(ids, 20, replace=False):
        pl = [x.track.id for x in reco.playlist([int(seed)], 15)]
        dist = lambda order: float(np.mean([1 - float(np.dot(vecs[a], vecs[b])) for a, b in zip(order, order[1:])]))
        smooth.append(dist(pl))
        shuffled.append(np.mean([dist(list(rng.permutation(pl))) for _ in range(20)]))
    out["playlist_mean_step_distance"] = round(float(np.mean(smooth)), 4)
    out["random_order_mean_step_distance"] = round(float(np.mean(shuffled)), 4)
    for lib in libs.values():
        lib.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--model", help="model bundle (default: the shipped one)")
    ap.add_argument("--heldout-model", help="a model bundle trained without the --heldout-split tracks")
    ap.add_argument("--heldout-split", default="valid")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = {"default_model": evaluate(args.model, args.manifest, None)}
    if args.heldout_model:
        result["heldout_model"] = evaluate(args.heldout_model, args.manifest, args.heldout_split)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
