"""Does audio augmentation of the training tracks help the v2 genre head? (fold A)

Each training track of fold A gets extra views, decoded and transformed again: pitch shifted
by ±2 semitones and time stretched by 0.9 and 1.1 (librosa), the first ``--views`` of
those. Their front-end patch features join the track's own as further training tracks of its
genre (the genre-balanced sampling keeps the class balance); ``--seqs-per-track`` keeps the
sequences an epoch about the same. Scored as ``benchmarks.research.genre_recipe`` scores: last epoch (10),
``valid`` accuracy and balanced accuracy, and genre precision@10 of the embedding among all
tracks of the manifest. ``--views 0`` is the shipped recipe.

    python -m benchmarks.research.genre_augment all.csv --views 4 --seeds 1,2,3 --seqs-per-track 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np


VIEWS = [("pitch", -2), ("pitch", 2), ("stretch", 0.9), ("stretch", 1.1)]


def augmented_frames(path: str) -> list[np.ndarray]:
    """musicnn log-mel frames of each augmented view of one track."""
    import librosa

    from embedding.audio import load_audio
    from embedding.musicnn import log_mel

    a = load_audio(path, sr=16000)
    out = []
    for kind, v in VIEWS:
        y = (librosa.effects.pitch_shift(a.samples, sr=16000, n_steps=v) if kind == "pitch"
             else librosa.effects.time_stretch(a.samples, rate=v))
        out.append(log_mel(y.astype(np.float32), sr=16000))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest")
    ap.add_argument("--views", type=int, default=4, help=f"augmented views per training track (0..{len(VIEWS)})")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--seqs-per-track", type=int, default=2, help="training sequences per (augmented) track an epoch")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/genre_augment.json")
    args = ap.parse_args()

    from embedding.data import load_dataset
    from embedding.features import FeatureConfig
    from embedding.model import ModelConfig
    from embedding.track_features import TrackFeatures, extract_features
    from embedding.train import fit
    from .genre_recipe import knn_precision, track_embeddings

    ds = load_dataset(args.manifest)
    fc = FeatureConfig()
    feats = extract_features(ds.tracks, fc, workers=2)
    by_path = {t.track.path: t for t in feats}
    train = [by_path[t.path] for t in ds.split("train")]
    valid = [by_path[t.path] for t in ds.split("valid")]
    extra: list[TrackFeatures] = []
    if args.views:
        t0 = time.perf_counter()
        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
            views = list(pool.map(augmented_frames, [t.track.path for t in train], chunksize=4))
        extra = [TrackFeatures(t.track, v[j], t.mfcc_stats, t.sha256) for t, v in zip(train, views)
                 for j in range(args.views)]
        print(f"{len(extra)} augmented views in {time.perf_counter() - t0:.0f} s", flush=True)
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    every = [by_path[t.path] for t in ds.tracks]
    truth = [t.track.genre for t in every]
    scored = {t.path for t in ds.split("valid")}
    queries = [i for i, t in enumerate(every) if t.track.path in scored]
    for seed in (int(s) for s in args.seeds.split(",")):
        mc = ModelConfig(label_smoothing=0.1, seed=seed, patience=10_000, segments_per_track=args.seqs_per_track)
        model, _, hist = fit(train + extra, ds.genres, fc, mc, valid=valid, epochs=args.epochs, restore_best=False)
        p10 = knn_precision(track_embeddings(model, every), truth, queries)
        row = {"views": args.views, "seed": seed, "seqs_per_track": args.seqs_per_track, "n_train": len(train) + len(extra),
               "valid_accuracy": round(hist[-1]["valid_accuracy"], 4),
               "valid_balanced_accuracy": round(hist[-1]["valid_balanced_accuracy"], 4), "genre_precision@10": round(p10, 4)}
        print(json.dumps(row), flush=True)
        results[f"views{args.views}/spt{args.seqs_per_track}/s{seed}"] = row
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
