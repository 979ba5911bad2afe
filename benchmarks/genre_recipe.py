"""Choose the genre model's recipe by artist-disjoint two-fold validation.

The shared GTZAN excerpts come with an artist-filtered split (train/valid). Fold A trains on
``train`` and scores ``valid``; fold B swaps them. No artist is on both sides of either
fold, so both figures preview unseen artists. Each recipe trains a fixed number of epochs
and reports the track-level balanced accuracy curve, so the epoch count is part of the
recipe (chosen here, on validation data, never on a test set).

    python benchmarks/genre_recipe.py ../shared/data/gtzan/manifest.csv --recipes base,mfcc --epochs 30
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
from embedding.features import FeatureConfig
from embedding.model import ModelConfig
from embedding.train import baseline_scores, extract_features, fit

FAST = {"time_pool": 4, "segments_per_track": 16}
RECIPES: dict[str, tuple[dict, dict]] = {
    "base": ({}, {}),
    "fast": ({}, FAST),
    "fast_mfcc": ({"kind": "mfcc"}, FAST),
    "fast_small": ({}, {**FAST, "lstm_units": (32, 32), "dropout": 0.5}),
    "fast_mels64": ({"n_mels": 64}, FAST),
    "fast_mixup": ({}, {**FAST, "mixup": 0.4}),
    "reg_mfcc": ({"kind": "mfcc"}, {**FAST, "lstm_units": (48, 48), "dropout": 0.5, "mixup": 0.4}),
    "mfcc": ({"kind": "mfcc"}, {}),
    "mels128": ({"n_mels": 128}, {}),
    "seg5": ({"segment_seconds": 5.0, "segment_hop_seconds": 2.5}, {}),
    "small": ({}, {"lstm_units": (32, 32), "dropout": 0.4}),
    "one_layer": ({}, {"lstm_units": (96,)}),
    "pool4": ({}, {"time_pool": 4}),
    "noaug": ({}, {"spec_augment": False}),
    "lr3e-4": ({}, {"learning_rate": 3e-4}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest")
    ap.add_argument("--recipes", default="base")
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
            mc = ModelConfig(**{**mc_kw, "seed": seed, "patience": 10_000})
            for fold in args.folds.split(","):
                tr_split, va_split = folds[fold]
                tr = [feats[t.path] for t in ds.split(tr_split)]
                va = [feats[t.path] for t in ds.split(va_split)]
                t0 = time.perf_counter()
                _, _, hist = fit(tr, genres, fc, mc, valid=va, epochs=args.epochs,
                                 on_epoch=lambda r: print(f"  [{name} s{seed} {fold}] ep {r['epoch']:2d} loss {r['loss']:.3f} "
                                                          f"bal.acc {r['valid_balanced_accuracy']:.3f} acc {r['valid_accuracy']:.3f}",
                                                          flush=True))
                curve = [h["valid_balanced_accuracy"] for h in hist]
                base = baseline_scores(tr, va, genres)
                results[f"{name}/s{seed}/{fold}"] = {
                    "curve": curve, "acc_curve": [h["valid_accuracy"] for h in hist],
                    "n_train": len(tr), "n_valid": len(va), "seconds": round(time.perf_counter() - t0),
                    "baseline": {k: v["balanced_accuracy"] for k, v in base.items()},
                }
                print(f"[{name} s{seed} {fold}] last {curve[-1]:.3f} mean(last5) {np.mean(curve[-5:]):.3f} "
                      f"baseline {results[f'{name}/s{seed}/{fold}']['baseline']}", flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
