"""Quick comparisons of what the genre heads read, over cached front-end outputs.

``benchmarks.research.genre_recipe`` recomputes the front end for each feature configuration and scores
each epoch; this script runs the front end once, keeps several of its layers for every
track (at a hop of a quarter patch, and on the patches prediction uses), and then trains
five-head ensembles (``embedding.train.fit``) over any of those inputs in about
half a minute each. It was used to explore; the recipe choice itself is reproduced by
``benchmarks.research.genre_recipe`` (its docstring has the command).

    python -m benchmarks.research.genre_heads features all.csv --cache /tmp/heads.pkl
    python -m benchmarks.research.genre_heads heads --cache /tmp/heads.pkl --inputs features_tags \
        --model '{"mixup": 0.4}' --seeds 1,6,11,16,1234 --fold A

Inputs: ``features`` (the 200 penultimate features, as the shipped recipe before tag
inputs), ``features_tags`` (beside them the 50 tag logits: the shipped recipe),
``pooled`` (the 1,506 pooled mid-level features under the penultimate layer),
``features_pooled`` (both). ``--hop 2`` trains on positions every half patch, as
``fit`` does; 1 every quarter. Figures per seed and their mean: accuracy and balanced
accuracy of the ensemble on the scored split, apart for 30 s tracks and clips, and genre
precision@10 of its embedding among all tracks (as ``benchmarks.research.genre_recipe``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def _with_tags(o: list[np.ndarray]) -> np.ndarray:
    from embedding.musicnn import head_inputs  # what the shipped heads read, computed as they do

    return np.asarray(head_inputs(o[0], o[1], tag_inputs=True))


INPUTS = {  # outputs of one patch: (penultimate, taggram, pooled) → what the head reads
    "features": lambda o: o[0],
    "features_tags": _with_tags,
    "pooled": lambda o: o[2],
    "features_pooled": lambda o: np.concatenate([o[0], o[2]], 1),
}


def frontend_layers(manifest: str):
    """The manifest's tracks featurised for the front end, and a function that runs it on
    patches (n, 187, 96) → [penultimate (n, 200), taggram (n, 50), pooled (n, 1506)]."""
    import keras
    import tensorflow as tf

    from embedding.data import load_dataset
    from embedding.features import FeatureConfig
    from embedding.musicnn import N_FRAMES, N_MELS, load_frontend
    from embedding.track_features import extract_features

    fc = FeatureConfig()
    feats = extract_features(load_dataset(manifest).tracks, fc, workers=2)
    fe = load_frontend()
    model = keras.Model(fe.input, [fe.get_layer("penultimate").output, fe.get_layer("taggram").output,
                                   fe.get_layer("bn_pooled").output])
    fn = tf.function(lambda x: model(x, training=False),
                     input_signature=[tf.TensorSpec([None, N_FRAMES, N_MELS], tf.float32)])

    def run(p: np.ndarray) -> list[np.ndarray]:
        outs = [fn(p[i:i + 64]) for i in range(0, len(p), 64)]
        return [np.concatenate([o[k].numpy() for o in outs]) for k in range(3)]

    return feats, fc, run


def cmd_features(args) -> None:
    from embedding.features import segment_frames

    feats, fc, run = frontend_layers(args.manifest)
    n = fc.n_frames
    rows = []
    for t in feats:
        starts = range(0, max(1, len(t.frames) - n + 1), max(1, n // 4))
        rows.append(dict(path=t.track.path, n_frames=len(t.frames), patch=run(segment_frames(t.frames, fc)),
                         quarter=run(np.stack([t.frames[s:s + n] for s in starts]))))
    with open(args.cache, "wb") as f:
        pickle.dump({"manifest": args.manifest, "tracks": rows}, f)
    print(f"cached {len(rows)} tracks in {args.cache}")


def cmd_heads(args) -> None:
    from embedding._quiet import import_tensorflow

    import_tensorflow()
    import keras

    from embedding.data import load_dataset
    from embedding.features import FeatureConfig
    from embedding.model import ModelConfig, embedding_output
    from embedding.evaluate import track_metrics
    from embedding.track_features import TrackFeatures
    from embedding.train import fit

    with open(args.cache, "rb") as f:
        cache = pickle.load(f)
    ds = load_dataset(cache["manifest"])
    by_path = {t.path: t for t in ds.tracks}
    read = INPUTS[args.inputs]
    tracks = []
    for row in cache["tracks"]:
        t = TrackFeatures(by_path[row["path"]], np.zeros((row["n_frames"], 0), np.float32), np.zeros(40), "")
        t.patch_features = read(row["patch"]).astype(np.float32)
        t.dense_features = read(row["quarter"]).astype(np.float32)[::args.hop]
        tracks.append(t)
    genres = ds.genres
    fit_split, score_split = ("train", "valid") if args.fold == "A" else ("valid", "train")
    train = [t for t in tracks if t.track.split == fit_split]
    scored = [t for t in tracks if t.track.split == score_split]
    y = np.array([genres.index(t.track.genre) for t in tracks])
    queries = np.flatnonzero([t.track.split == score_split for t in tracks])
    fc = FeatureConfig()
    base = dict(label_smoothing=0.1, average_last=5, ensemble=5, embedding_dim=32, mixup=0.0)
    base.update(json.loads(args.model))
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.perf_counter()
        mc = ModelConfig(**base, seed=seed, patience=10_000)
        model, _, _ = fit(train, genres, fc, mc, epochs=args.epochs, restore_best=False, frontend=object())
        emb = keras.Model(model.inputs, embedding_output(model))
        probs = np.stack([model.predict_on_batch(t.patch_features[None])[0] for t in scored])
        vecs = np.stack([emb.predict_on_batch(t.patch_features[None])[0] for t in tracks])
        m = track_metrics([t.track.genre for t in scored], [genres[i] for i in probs.argmax(1)], genres)
        v = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        sims = v[queries] @ v.T
        sims[np.arange(len(queries)), queries] = -np.inf
        nn = np.argsort(-sims, axis=1, kind="stable")[:, :10]
        right = probs.argmax(1) == np.array([genres.index(t.track.genre) for t in scored])
        clip = np.array([len(t.frames) < 2 * fc.n_frames for t in scored])
        r = {"seed": seed, "precision@10": round(float(np.mean(y[nn] == y[queries][:, None])), 4),
             "accuracy": round(m["accuracy"], 4), "balanced_accuracy": round(m["balanced_accuracy"], 4),
             "accuracy_30s": round(float(right[~clip].mean()), 4), "accuracy_clips": round(float(right[clip].mean()), 4),
             "seconds": round(time.perf_counter() - t0)}
        results.append(r)
        print(json.dumps(r), flush=True)
    mean = {k: round(float(np.mean([r[k] for r in results])), 4) for k in results[0] if k not in ("seed", "seconds")}
    print(json.dumps({"inputs": args.inputs, "hop": args.hop, "model": base, "fold": args.fold, "mean": mean}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("features", help="run the front end once over a manifest and cache its layers")
    p.add_argument("manifest")
    p.add_argument("--cache", required=True)
    p = sub.add_parser("heads", help="train five-head ensembles over cached inputs and score them")
    p.add_argument("--cache", required=True)
    p.add_argument("--inputs", choices=sorted(INPUTS), default="features_tags")
    p.add_argument("--model", default="{}", help="ModelConfig overrides as JSON (default: the five-head recipe, no mixup)")
    p.add_argument("--hop", type=int, default=2, help="training positions every HOP quarter patches (default 2)")
    p.add_argument("--seeds", default="1,6,11,16,1234")
    p.add_argument("--fold", choices=["A", "B"], default="A")
    p.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    (cmd_features if args.cmd == "features" else cmd_heads)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
