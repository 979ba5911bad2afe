"""Honest, track-level evaluation of a model bundle, beside classical baselines.

Tracks the model was trained on (the same audio bytes) are never scored; a track's
prediction is one output of its patch sequence, and every figure counts tracks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .data import Dataset
from .errors import DatasetError
from .features import segment_frames
from .track_features import TrackFeatures, add_frontend_features, extract_features


def track_metrics(y_true: Sequence[str], y_pred: Sequence[str], genres: list[str]) -> dict[str, Any]:
    """Track-level accuracy, balanced accuracy, macro-F1, per-genre P/R/F1 and confusion matrix.

    Balanced accuracy and macro-F1 average over the genres present in ``y_true``.
    """
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                                 f1_score, precision_recall_fscore_support)
    import warnings

    present = [g for g in genres if g in set(y_true)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=genres, zero_division=0)
        out = {
            "n_tracks": len(y_true),
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        }
    out["per_genre"] = {
        g: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, g in enumerate(genres)
    }
    out["confusion"] = {"labels": genres, "matrix": confusion_matrix(y_true, y_pred, labels=genres).tolist()}
    return out


def baseline_scores(train: list[TrackFeatures], test: list[TrackFeatures], genres: list[str]) -> dict[str, Any]:
    """Classical baselines on per-track MFCC mean/std: logistic regression and k-NN; and,
    when the tracks carry front-end features, ``linear_probe``: logistic regression on
    the mean of the front end's penultimate features of the patches prediction uses."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .musicnn import PENULTIMATE_DIM

    xtr = np.stack([t.mfcc_stats for t in train])
    ytr = [t.track.genre for t in train]
    xte = np.stack([t.mfcc_stats for t in test])
    yte = [t.track.genre for t in test]
    models = {
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced")),
        "knn": make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=min(5, len(train)))),
    }
    inputs = {name: (xtr, xte) for name in models}
    if all(t.patch_features is not None for t in train + test):
        models["linear_probe"] = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
        inputs["linear_probe"] = (np.stack([t.patch_features[:, :PENULTIMATE_DIM].mean(axis=0) for t in train]),
                                  np.stack([t.patch_features[:, :PENULTIMATE_DIM].mean(axis=0) for t in test]))
    out = {}
    for name, clf in models.items():
        a, b = inputs[name]
        clf.fit(a, ytr)
        m = track_metrics(yte, list(clf.predict(b)), genres)
        out[name] = {k: m[k] for k in ("n_tracks", "accuracy", "balanced_accuracy", "macro_f1")}
    return out


def plot_confusion(metrics: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = metrics["confusion"]["labels"]
    m = np.asarray(metrics["confusion"]["matrix"])
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(labels), 1 + 0.55 * len(labels)))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center",
                        color="white" if m[i, j] > m.max() / 2 else "black", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def score_tracks(bundle, tracks: list[TrackFeatures], baseline_train: list[TrackFeatures], genres: list[str]) -> dict[str, Any]:
    """Track-level metrics of ``bundle`` on ``tracks``, apart for full tracks and short clips
    (shorter than two segments) as well as together, beside the baselines."""
    probs, _, _ = bundle.predict_tracks([bundle.normalizer(segment_frames(t.frames, bundle.feature_config))
                                         for t in tracks])
    y_true = [t.track.genre for t in tracks]
    y_pred = [bundle.genres[int(p.argmax())] for p in probs]
    metrics = track_metrics(y_true, y_pred, bundle.genres)
    metrics["predictions"] = [{"track": t.track.key, "true": a, "predicted": b}
                              for t, a, b in zip(tracks, y_true, y_pred)]
    # a clip is audio under two segments long (at most one patch); its frames say so
    short = [len(t.frames) < 2 * bundle.feature_config.n_frames for t in tracks]
    for name, keep in (("tracks", [not s for s in short]), ("clips", short)):
        if any(keep):
            m = track_metrics([a for a, k in zip(y_true, keep) if k], [b for b, k in zip(y_pred, keep) if k], bundle.genres)
            metrics[name] = {k: m[k] for k in ("n_tracks", "accuracy", "balanced_accuracy", "macro_f1")}
    if baseline_train:
        add_frontend_features(tracks + baseline_train, bundle.frontend, bundle.feature_config, dense=False)
    if baseline_train:
        metrics["baseline"] = baseline_scores(baseline_train, tracks, genres)
    return metrics


def evaluate_bundle(bundle, dataset: Dataset, *, split: str = "auto", workers: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score ``bundle`` on one split of ``dataset`` at track level, beside the baseline.

    ``split="auto"`` picks ``test``, else ``valid``, else every track. Tracks the bundle
    was trained on (same audio bytes) are left out and counted, so figures stay honest.
    The baseline is trained on the dataset's ``train`` tracks plus the left-out ones.
    """
    if split == "auto":
        split = next((s for s in ("test", "valid") if dataset.split(s)), "all")
    tracks = list(dataset.tracks) if split == "all" else dataset.split(split)
    if not tracks:
        raise DatasetError(f"the dataset has no tracks in split {split!r}")
    unknown = sorted({t.genre for t in tracks} - set(bundle.genres))
    if unknown:
        raise DatasetError(f"genres unknown to the model: {', '.join(unknown)} (model knows {', '.join(bundle.genres)})")
    eval_set = set(id(t) for t in tracks)
    others = [t for t in dataset.tracks if id(t) not in eval_set and t.split == "train"]
    feats = extract_features(tracks + others, bundle.feature_config, workers=workers, progress=progress)
    scored, rest = feats[: len(tracks)], feats[len(tracks) :]
    seen = bundle.training_hashes
    held_out = [t for t in scored if t.sha256 not in seen]
    excluded = len(scored) - len(held_out)
    if not held_out:
        raise DatasetError(f"all {len(scored)} tracks of split {split!r} were in the model's training data; "
                           "nothing honest to score")
    held_hashes = {t.sha256 for t in held_out}
    # the baseline learns from what the model learned from where we can see it: the
    # dataset's train split and the scored split's tracks that were left out as seen
    baseline_train = [t for t in rest if t.sha256 not in held_hashes] + [t for t in scored if t.sha256 in seen]
    metrics = score_tracks(bundle, held_out, baseline_train, bundle.genres)
    metrics["split"] = split
    metrics["excluded_training_tracks"] = excluded
    metrics["model_version"] = bundle.version
    return metrics
