"""Linear probes of the frozen musicnn front end's layers, beside the genre model's head.

For each track of a manifest, the front end runs on the patches prediction uses (at most
``max_patches``, spread over the track) and each layer's per-patch output is averaged over
the track. Logistic regression (class-balanced, standardised inputs, fixed C = 1) trains on
one split and scores the other at track level; genre precision@10 of the raw mean features
(cosine among all tracks, the query excluded) is given beside it, as
``benchmarks/research/genre_recipe.py`` measures the embedding. It answers the question the issue
asks of the model: does a plain probe of the front end beat the BiLSTM heads, and on which
layer?

    python -m benchmarks.research.frontend_probe all.csv --out benchmarks/results/frontend_probe.json

Layers: ``penultimate`` (200, what the heads read), ``tag_logits`` (50), ``pooled`` (1,506:
the max and mean over time of the mid end, after batch norm, under the penultimate layer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--test-split", default="valid")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from embedding._quiet import import_tensorflow

    import_tensorflow()
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from embedding.features import segment_frames
    from embedding.musicnn import PENULTIMATE_DIM, head_inputs
    from .genre_heads import frontend_layers

    feats, fc, run = frontend_layers(args.manifest)
    rows: dict[str, list[np.ndarray]] = {"penultimate": [], "tag_logits": [], "pooled": []}
    for t in feats:
        pen, tags, pooled = run(segment_frames(t.frames, fc))
        rows["penultimate"].append(pen.mean(0))
        rows["tag_logits"].append(np.asarray(head_inputs(pen, tags, tag_inputs=True))[:, PENULTIMATE_DIM:].mean(0))
        rows["pooled"].append(pooled.mean(0))
    y = np.array([t.track.genre for t in feats])
    split = np.array([t.track.split for t in feats])
    tr, te = split == args.train_split, split == args.test_split
    out = {"manifest": args.manifest, "n_train": int(tr.sum()), "n_test": int(te.sum()), "layers": {}}
    for name, r in rows.items():
        x = np.stack(r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced"))
            pred = probe.fit(x[tr], y[tr]).predict(x[te])
        v = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sims = v[te] @ v.T
        sims[np.arange(te.sum()), np.flatnonzero(te)] = -np.inf  # the query itself
        nn = np.argsort(-sims, axis=1, kind="stable")[:, :10]
        recall = {str(g): f"{int(np.sum((y[te] == g) & (pred == g)))}/{int(np.sum(y[te] == g))}" for g in sorted(set(y[te]))}
        out["layers"][name] = {"dim": int(x.shape[1]), "accuracy": round(float(accuracy_score(y[te], pred)), 4),
                               "balanced_accuracy": round(float(balanced_accuracy_score(y[te], pred)), 4),
                               "genre_precision@10_raw": round(float(np.mean(y[nn] == y[te][:, None])), 4),
                               "recall_per_genre": recall}
        print(name, out["layers"][name], flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
