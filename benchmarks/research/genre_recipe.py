"""Choose the genre model's recipe by artist-disjoint two-fold validation.

The shared GTZAN excerpts come with an artist-filtered split (train/valid). Fold A trains on
``train`` and scores ``valid``; fold B swaps them. No artist is on both sides of either
fold, so both figures preview unseen artists. Each recipe trains a fixed number of epochs
and reports the track-level balanced accuracy curve, so the epoch count is part of the
recipe (chosen here, on validation data, never on a test set).

Each run also scores what the recommender needs from the embedding: with the last epoch's
weights (no epoch is picked on the scored split), every track of the manifest gets its
track embedding, and genre precision@10 is the share of a scored track's 10 nearest
neighbours (cosine, among all tracks, itself excluded) of its own genre, beside the same
figure for per-track MFCC mean/std features (``benchmarks/research/reco_quality.py``'s baseline).

Recipes (``v2*``: the musicnn front end under a BiLSTM over patch features; the name
goes back to the frame model they replaced) take a manifest of the 30 s excerpts and the
clips together (``gtzan`` + ``gtzan-clips``, 404 tracks, 116 in valid); their figures are
also given apart for tracks and clips:

    python -m benchmarks.research.genre_recipe all.csv --recipes v2,v2_ls --seeds 1,2,3 --folds A --epochs 30

The shipped recipe (6 patches, the mean of the last 5 epochs' weights) was chosen with

    python -m benchmarks.research.genre_recipe all.csv --recipes v2_ls_p6,v2_ls_p6_swa5,v2_ls_p6_tags \
        --seeds 1,2,3,4,5,6 --folds A --epochs 10

and its ensemble of five heads (seeds s … s + 4, so these four ensembles share no head) with

    python -m benchmarks.research.genre_recipe all.csv --recipes v2_ls_p6_swa5_d32_e5,v2_ls_p6_swa5_e5 \
        --seeds 1,6,11,16 --folds A --epochs 10

Ten heads of 16-d (the same 160-d embedding) and genres drawn by the square root of their
counts were tried beside it and kept out (p@10 0.748 and 0.746 over seeds 1234, 1, 11; the
square root's balanced accuracy held 0.68-0.69 on all three, not enough seeds to ship on):

    python -m benchmarks.research.genre_recipe all.csv --recipes v2_ls_p6_swa5_d16_e10,v2_ls_p6_swa5_d32_e5_sqrt \
        --seeds 1234,1,11 --folds A --epochs 10

The shipped recipe adds the front end's tag logits to the heads' inputs and mixup (0.4) of
the training sequences; chosen, against the five-head recipe without them, with

    python -m benchmarks.research.genre_recipe all.csv --recipes v2_ls_p6_swa5_d32_e5,v2_ls_p6_swa5_d32_e5_tags_mix,\
        v2_ls_p6_swa5_d32_e5_mix,v2_ls_p6_swa5_d32_e5_tags --seeds 1,6,11,16,1234 --folds A --epochs 10

(fold B of the first two was measured with ``benchmarks.research.genre_heads``; see the model card)

An ensemble's epoch rows are its heads' one after another; ``final`` holds the model's own
accuracy and balanced accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from embedding.data import load_dataset
from embedding.evaluate import baseline_scores, track_metrics
from embedding.features import FeatureConfig
from embedding.model import ModelConfig, embedding_output
from embedding.track_features import extract_features
from embedding.train import fit

from .reco_quality import precision_at


def track_embeddings(model, feats: list) -> np.ndarray:
    """Each track's embedding, from the patch features ``fit`` computed (the bundle
    L2-normalises it)."""
    import keras

    emb_model = keras.Model(model.inputs, embedding_output(model))
    return np.stack([emb_model.predict_on_batch(t.patch_features[None])[0] for t in feats])


def knn_precision(vecs: np.ndarray, genres: list[str], queries: list[int], k: int = 10) -> float:
    """Genre precision@k of cosine neighbours among all rows, the query excluded."""
    v = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    neigh = {}
    for q in queries:
        order = [int(i) for i in np.argsort(-(v @ v[q]), kind="stable") if i != q]
        neigh[q] = order[:k]
    return precision_at(neigh, dict(enumerate(genres)), k)


def mfcc_baseline(feats: list) -> np.ndarray:
    m = np.stack([t.mfcc_stats for t in feats]).astype(np.float64)
    return (m - m.mean(0)) / np.maximum(m.std(0), 1e-6)

# v2 as first shipped: 4 patches a track, the head reads the 200 penultimate features only
V2_4 = {"max_patches": 4, "tag_inputs": False}
RECIPES: dict[str, tuple[dict, dict]] = {
    # v2: the frozen musicnn front end, then a BiLSTM over the track's patch features
    "v2": (V2_4, {"label_smoothing": 0.0}),
    "v2_ls": (V2_4, {"label_smoothing": 0.1}),
    "v2_ls_p10": ({**V2_4, "max_patches": 10}, {"label_smoothing": 0.1}),
    "v2_ls_p3": ({**V2_4, "max_patches": 3}, {"label_smoothing": 0.1}),
    "v2_ls_p5": ({**V2_4, "max_patches": 5}, {"label_smoothing": 0.1}),
    "v2_ls_p6": ({**V2_4, "max_patches": 6}, {"label_smoothing": 0.1}),  # the v2 default since 6 patches
    "v2_ls_p6_swa5": ({**V2_4, "max_patches": 6}, {"label_smoothing": 0.1, "average_last": 5, "embedding_dim": 64}),
    # 5 such heads trained apart (seeds s, s + 1, ... s + 4) in one model; the shipped recipe
    # with heads of a 32-dimensional embedding (160 in all)
    "v2_ls_p6_swa5_e5": ({**V2_4, "max_patches": 6}, {"label_smoothing": 0.1, "average_last": 5, "ensemble": 5,
                                                      "embedding_dim": 64}),
    "v2_ls_p6_swa5_d32_e5": ({**V2_4, "max_patches": 6}, {"label_smoothing": 0.1, "average_last": 5, "ensemble": 5,
                                                          "embedding_dim": 32}),
    # 10 heads: of 16-d embeddings (the same 160 in all) and of 32-d ones (320)
    "v2_ls_p6_swa5_d16_e10": ({**V2_4, "max_patches": 6}, {"label_smoothing": 0.1, "average_last": 5, "ensemble": 10,
                                                           "embedding_dim": 16}),
    "v2_ls_p6_swa5_d32_e10": ({**V2_4, "max_patches": 6}, {"label_smoothing": 0.1, "average_last": 5, "ensemble": 10,
                                                           "embedding_dim": 32}),
    # the shipped recipe with genres drawn by the square root of their track counts
    "v2_ls_p6_swa5_d32_e5_sqrt": ({**V2_4, "max_patches": 6}, {"label_smoothing": 0.1, "average_last": 5, "ensemble": 5,
                                                               "embedding_dim": 32, "balance": "sqrt"}),
    # the five-head recipe with mixup of the training sequences, with the tag logits as inputs,
    # and with both (the shipped recipe)
    "v2_ls_p6_swa5_d32_e5_mix": ({**V2_4, "max_patches": 6}, {"label_smoothing": 0.1, "average_last": 5, "ensemble": 5,
                                                              "embedding_dim": 32, "mixup": 0.4}),
    "v2_ls_p6_swa5_d32_e5_tags": ({**V2_4, "max_patches": 6, "tag_inputs": True},
                                  {"label_smoothing": 0.1, "average_last": 5, "ensemble": 5, "embedding_dim": 32}),
    "v2_ls_p6_swa5_d32_e5_tags_mix": ({**V2_4, "max_patches": 6, "tag_inputs": True},
                                      {"label_smoothing": 0.1, "average_last": 5, "ensemble": 5, "embedding_dim": 32,
                                       "mixup": 0.4}),
    # the head also reads the front end's 50 tag logits beside its 200 features
    "v2_ls_tags": ({**V2_4, "tag_inputs": True}, {"label_smoothing": 0.1}),
    "v2_ls_p6_tags": ({**V2_4, "max_patches": 6, "tag_inputs": True}, {"label_smoothing": 0.1}),
    "v2_ls_e128": (V2_4, {"label_smoothing": 0.1, "embedding_dim": 128}),
    "v2_ls_d5": (V2_4, {"label_smoothing": 0.1, "dropout": 0.5}),
    "v2_ls_skip": (V2_4, {"label_smoothing": 0.1, "mean_skip": True}),
    # a cosine classifier (NormFace-style) so the loss shapes the embedding's cosine geometry
    "v2_ls_cos10": (V2_4, {"label_smoothing": 0.1, "cosine_scale": 10.0}),
    "v2_ls_cos16": (V2_4, {"label_smoothing": 0.1, "cosine_scale": 16.0}),
    "v2_cos16": (V2_4, {"label_smoothing": 0.0, "cosine_scale": 16.0}),
}


# what a v2 recipe above means where it is silent: one head of a 64-d embedding, the last
# epoch's weights (as when those recipes were run; the shipped recipe names its own)
V2_UNSAID = {"average_last": 0, "ensemble": 1, "embedding_dim": 64, "mixup": 0.0}


def model_config(kw: dict) -> ModelConfig:
    return ModelConfig(**{**V2_UNSAID, **kw})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest")
    ap.add_argument("--recipes", default="v2_ls_p6_swa5_d32_e5_tags_mix")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", default="1234")
    ap.add_argument("--folds", default="A,B")
    ap.add_argument("--out", default="benchmarks/results/genre_recipe.json")
    args = ap.parse_args()

    ds = load_dataset(args.manifest)
    genres = ds.genres
    folds = {"A": ("train", "valid"), "B": ("valid", "train")}
    cache: dict[str, list] = {}
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for name in args.recipes.split(","):
        fc_kw, mc_kw = RECIPES[name]
        fc = FeatureConfig(**fc_kw)
        key = json.dumps(fc.to_dict(), sort_keys=True)
        if key not in cache:
            t0 = time.perf_counter()
            cache[key] = extract_features(ds.tracks, fc, workers=2)
            print(f"[{name}] features for {len(ds.tracks)} tracks in {time.perf_counter() - t0:.0f} s", flush=True)
        feats = {t.track.path: t for t in cache[key]}
        for seed in (int(s) for s in args.seeds.split(",")):
            mc = model_config({**mc_kw, "seed": seed, "patience": 10_000})
            for fold in args.folds.split(","):
                tr_split, va_split = folds[fold]
                tr = [feats[t.path] for t in ds.split(tr_split)]
                va = [feats[t.path] for t in ds.split(va_split)]
                t0 = time.perf_counter()
                model, _, hist = fit(tr, genres, fc, mc, valid=va, epochs=args.epochs, restore_best=False,
                                 on_epoch=lambda r: print(f"  [{name} s{seed} {fold}] ep {r['epoch']:2d} loss {r['loss']:.3f} "
                                                          f"bal.acc {r['valid_balanced_accuracy']:.3f} acc {r['valid_accuracy']:.3f}",
                                                          flush=True))
                curve = [h["valid_balanced_accuracy"] for h in hist]
                apart = {}
                # the final model's accuracy, and of full tracks and clips apart
                gi = {g: i for i, g in enumerate(genres)}
                pred = [int(model.predict_on_batch(t.patch_features[None])[0].argmax()) for t in va]
                m = track_metrics([t.track.genre for t in va], [genres[i] for i in pred], genres)
                # an ensemble's history rows are its heads' one by one; these are the model's
                apart["final"] = {k: round(m[k], 4) for k in ("accuracy", "balanced_accuracy")}
                for part, keep in (("tracks", lambda t: len(t.frames) >= 2 * fc.n_frames),
                                   ("clips", lambda t: len(t.frames) < 2 * fc.n_frames)):
                    idx = [i for i, t in enumerate(va) if keep(t)]
                    if idx:
                        apart[part] = {"n": len(idx), "accuracy": round(float(np.mean(
                            [pred[i] == gi[va[i].track.genre] for i in idx])), 4)}
                base = baseline_scores(tr, va, genres)
                every = [feats[t.path] for t in ds.tracks]
                truth = [t.track.genre for t in every]
                scored = {t.path for t in ds.split(va_split)}
                queries = [i for i, t in enumerate(every) if t.track.path in scored]
                emb = track_embeddings(model, every)
                p10 = knn_precision(emb, truth, queries)
                # post-processing with statistics of the training tracks only (as VGGish ships
                # its PCA/whitening): centred, and standardised per dimension
                fit_rows = [i for i, t in enumerate(every) if t.track.path not in scored]
                mu, sd = emb[fit_rows].mean(0), emb[fit_rows].std(0) + 1e-6
                p10_centred = knn_precision(emb - mu, truth, queries)
                p10_z = knn_precision((emb - mu) / sd, truth, queries)
                p10_base = knn_precision(mfcc_baseline(every), truth, queries)
                results[f"{name}/s{seed}/{fold}"] = {
                    "curve": curve, "acc_curve": [h["valid_accuracy"] for h in hist],
                    "n_train": len(tr), "n_valid": len(va), "seconds": round(time.perf_counter() - t0),
                    "baseline": {k: v["balanced_accuracy"] for k, v in base.items()},
                    "genre_precision@10": round(p10, 4), "mfcc_baseline_precision@10": round(p10_base, 4),
                    "genre_precision@10_centred": round(p10_centred, 4), "genre_precision@10_z": round(p10_z, 4),
                    **apart,
                }
                print(f"[{name} s{seed} {fold}] p@10 {p10:.3f} centred {p10_centred:.3f} z {p10_z:.3f} (MFCC {p10_base:.3f}) "
                      f"acc last {hist[-1]['valid_accuracy']:.3f} {apart} bal.acc last {curve[-1]:.3f} mean(last5) {np.mean(curve[-5:]):.3f} "
                      f"baseline {results[f'{name}/s{seed}/{fold}']['baseline']}", flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
