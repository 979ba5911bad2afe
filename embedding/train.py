"""Training and honest, track-level evaluation of the BiLSTM, plus classical baselines.

v2 (``kind="musicnn"``): the front end is frozen, so its per-patch features are computed
once per track (at a hop of half a patch, for varied training sequences), and only the
BiLSTM head trains on random patch sequences of 1 to ``max_patches`` patches, the lengths
a clip and a capped long track give at prediction time.

Everything is track-level: a track's segments are all on one side of a split, a track's
prediction is the mean of its segment probabilities, and figures count tracks.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .audio import load_audio
from .data import Dataset, LabelledTrack, sha256_of
from .errors import AudioError, DatasetError
from .features import FeatureConfig, Normalizer, segment_frames, track_frames
from .model import ModelConfig, build_model

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- feature extraction
@dataclass
class TrackFeatures:
    """Everything training and evaluation need from one decoded track."""

    track: LabelledTrack
    frames: np.ndarray  # (n_total_frames, n_features), unnormalised
    mfcc_stats: np.ndarray  # (40,): mean and std of 20 MFCCs, the classical baseline's input
    sha256: str
    # v2 only, filled by fit/_score: front-end features of patches at a hop of half a patch,
    # (n_positions, 200), and of the patches prediction uses, (n_patches, 200)
    dense_features: np.ndarray | None = None
    patch_features: np.ndarray | None = None
    patch_tags: np.ndarray | None = None  # (n_patches, 50): the front end's tags of those patches


def mfcc_stats(samples: np.ndarray, sr: int) -> np.ndarray:
    """Per-track MFCC mean and standard deviation, shape (40,), as the classic genre papers use."""
    import librosa

    mfcc = librosa.feature.mfcc(y=samples, sr=sr, n_mfcc=20)
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)]).astype(np.float32)


def _extract_one(args: tuple[LabelledTrack, dict[str, Any]]) -> TrackFeatures:
    track, fc = args
    config = FeatureConfig.from_dict(fc)
    audio = load_audio(track.path, sr=config.sr)
    return TrackFeatures(track, track_frames(audio, config), mfcc_stats(audio.samples, audio.sr), sha256_of(track.path))


def extract_features(
    tracks: Sequence[LabelledTrack], config: FeatureConfig, *, workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[TrackFeatures]:
    """Decode and featurise tracks in worker processes. Undecodable tracks are an error."""
    workers = workers or min(4, os.cpu_count() or 1)
    jobs = [(t, config.to_dict()) for t in tracks]
    out: list[TrackFeatures] = []
    if workers <= 1 or len(jobs) < 8:
        for i, job in enumerate(jobs):
            out.append(_run_job(job))
            if progress:
                progress(i + 1, len(jobs))
        return out
    # spawn: TensorFlow may already be imported, and forking it is unsafe
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        for i, feats in enumerate(pool.map(_run_job, jobs, chunksize=4)):
            out.append(feats)
            if progress:
                progress(i + 1, len(jobs))
    return out


def _run_job(job):
    try:
        return _extract_one(job)
    except AudioError as exc:
        raise DatasetError(f"cannot use training track: {exc}") from None


# ---------------------------------------------------------------- training
def _augment(batch: np.ndarray, rng: np.random.Generator, *, kind: str, std: np.ndarray) -> np.ndarray:
    """SpecAugment-style masking and a random gain, on normalised frames."""
    n, t, f = batch.shape
    out = batch.copy()
    for i in range(n):
        for _ in range(2):
            w = rng.integers(0, max(2, f // 8))
            s = rng.integers(0, f - w + 1)
            out[i, :, s : s + w] = 0.0
            w = rng.integers(0, max(2, t // 8))
            s = rng.integers(0, t - w + 1)
            out[i, s : s + w, :] = 0.0
        gain_db = rng.uniform(-6, 6)
        if kind == "logmel":
            out[i] += gain_db / std
        else:
            out[i, :, 0] += gain_db / std[0]
    return out


def sample_crops(
    items: list[np.ndarray], labels: np.ndarray, n_genres: int, *, n_frames: int, n_crops: int,
    rng: np.random.Generator, balance: str = "genre",
) -> tuple[np.ndarray, np.ndarray]:
    """Random crops: pick a genre, a track of it, then an offset.

    ``balance``: "genre" picks genres uniformly; "sqrt" in proportion to the square root of
    their track counts; "track" in proportion to their counts (every track alike).
    """
    by_genre = [np.flatnonzero(labels == g) for g in range(n_genres)]
    present = [g for g in range(n_genres) if len(by_genre[g])]
    power = {"genre": 0.0, "sqrt": 0.5, "track": 1.0}[balance]
    weights = np.array([len(by_genre[g]) ** power for g in present], np.float64)
    weights /= weights.sum()
    x = np.empty((n_crops, n_frames, items[0].shape[1]), np.float32)
    y = np.empty(n_crops, np.int64)
    for i in range(n_crops):
        # uniform genres draw with integers(), as the shipped recipe did, so its runs replay
        g = present[rng.integers(len(present)) if power == 0 else rng.choice(len(present), p=weights)]
        t = by_genre[g][rng.integers(len(by_genre[g]))]
        frames = items[t]
        if len(frames) <= n_frames:
            frames = np.pad(frames, ((0, n_frames - len(frames)), (0, 0)), mode="edge")
            start = 0
        else:
            start = rng.integers(0, len(frames) - n_frames + 1)
        x[i] = frames[start : start + n_frames]
        y[i] = g
    return x, y


def predict_tracks(infer: Callable[[np.ndarray], np.ndarray], tracks_frames: list[np.ndarray],
                   config: FeatureConfig) -> np.ndarray:
    """Track-level probabilities (mean of segment probabilities), shape (n_tracks, n_genres)."""
    segs = [segment_frames(f, config) for f in tracks_frames]
    probs = infer(np.concatenate(segs))
    out, start = [], 0
    for s in segs:
        out.append(probs[start : start + len(s)].mean(axis=0))
        start += len(s)
    return np.stack(out)


def fit(
    train: list[TrackFeatures],
    genres: list[str],
    feature_config: FeatureConfig,
    model_config: ModelConfig,
    *,
    valid: list[TrackFeatures] | None = None,
    epochs: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    restore_best: bool = True,
):
    """Train the BiLSTM on random crops of ``train`` tracks.

    With ``valid``, keeps the weights of the epoch with the best track-level balanced
    accuracy (ties: lower loss) and stops after ``patience`` epochs without improvement.
    Without it, trains exactly ``epochs`` (default ``model_config.max_epochs``) epochs.
    ``restore_best=False`` keeps the last epoch's weights and only scores ``valid`` (for
    recipe comparisons at a fixed epoch count).

    Returns
    -------
    (model, normalizer, history) where history is a list of per-epoch dicts.
    """
    import warnings

    from ._quiet import import_tensorflow

    import_tensorflow()
    import keras
    import tensorflow as tf

    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
    if feature_config.is_sequence:
        return fit_sequence(train, genres, feature_config, model_config, valid=valid, epochs=epochs,
                            on_epoch=on_epoch, restore_best=restore_best)
    if model_config.ensemble != 1:
        raise ValueError("an ensemble of heads is for the musicnn (v2) recipe; the v1 frame model has one")

    keras.utils.set_random_seed(model_config.seed)
    rng = np.random.default_rng(model_config.seed)
    gidx = {g: i for i, g in enumerate(genres)}
    normalizer = Normalizer.fit([t.frames for t in train])
    train_frames = [normalizer(t.frames) for t in train]
    train_labels = np.array([gidx[t.track.genre] for t in train])
    valid_frames = [normalizer(t.frames) for t in valid] if valid else []
    valid_labels = np.array([gidx[t.track.genre] for t in valid]) if valid else np.array([])

    model = build_model(n_frames=feature_config.n_frames, n_features=feature_config.n_features,
                        n_genres=len(genres), config=model_config)
    model.compile(optimizer=keras.optimizers.Adam(model_config.learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=model_config.label_smoothing))

    @tf.function(reduce_retracing=True)
    def _infer(x):
        return model(x, training=False)

    def infer(x: np.ndarray) -> np.ndarray:
        return np.concatenate([_infer(x[i : i + 512]).numpy() for i in range(0, len(x), 512)])

    n_epochs = epochs or model_config.max_epochs
    n_crops = model_config.segments_per_track * len(train)
    history: list[dict[str, Any]] = []
    best = _BestOnValid(valid_labels)
    swa = _LastEpochsAverage(model_config.average_last, n_epochs)
    for epoch in range(1, n_epochs + 1):
        t0 = time.perf_counter()
        x, y = sample_crops(train_frames, train_labels, len(genres), n_frames=feature_config.n_frames,
                            n_crops=n_crops, rng=rng, balance=model_config.balance)
        if model_config.spec_augment:
            x = _augment(x, rng, kind=feature_config.kind, std=normalizer.std)
        targets = np.eye(len(genres), dtype=np.float32)[y]
        if model_config.mixup > 0:
            # mixup between random pairs: smoother decision boundaries from few tracks
            lam = rng.beta(model_config.mixup, model_config.mixup, size=(len(x), 1)).astype(np.float32)
            perm = rng.permutation(len(x))
            x = lam[:, :, None] * x + (1 - lam[:, :, None]) * x[perm]
            targets = lam * targets + (1 - lam) * targets[perm]
        h = model.fit(x, targets, batch_size=model_config.batch_size, epochs=1, verbose=0, shuffle=True)
        swa.after_epoch(model, epoch)
        row: dict[str, Any] = {"epoch": epoch, "loss": float(h.history["loss"][-1])}
        if valid:
            best.score(row, predict_tracks(infer, valid_frames, feature_config), model)
        if best.end_epoch(row, t0, history, on_epoch, patience=model_config.patience if valid and restore_best else None):
            break
    if best.weights is not None and restore_best:
        model.set_weights(best.weights)
    return model, normalizer, history


class _LastEpochsAverage:
    """Stochastic weight averaging: the final weights are the mean of the last ``k`` of
    ``n_epochs`` epochs' (k = 0: the last epoch's). One model, less epoch-to-epoch noise."""

    def __init__(self, k: int, n_epochs: int) -> None:
        self.k, self.n_epochs, self.mean, self.count = k, n_epochs, None, 0

    def after_epoch(self, model, epoch: int) -> None:
        if not self.k or epoch <= self.n_epochs - self.k:
            return
        self.count += 1
        w = model.get_weights()
        self.mean = w if self.mean is None else [a + (b - a) / self.count for a, b in zip(self.mean, w)]
        if epoch == self.n_epochs:
            model.set_weights(self.mean)


class _BestOnValid:
    """Scores each epoch on ``valid`` at track level and keeps the weights of the best one
    (highest balanced accuracy, then lowest loss)."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.best = (-1.0, np.inf)
        self.weights = None
        self.since_best = 0

    def score(self, row: dict[str, Any], probs: np.ndarray, model) -> None:
        """Add valid loss, accuracy and balanced accuracy of track probabilities ``probs`` to ``row``."""
        import warnings

        from sklearn.metrics import balanced_accuracy_score

        pred = probs.argmax(axis=1)
        row["valid_loss"] = float(-np.mean(np.log(probs[np.arange(len(pred)), self.labels] + 1e-9)))
        row["valid_accuracy"] = float(np.mean(pred == self.labels))
        with warnings.catch_warnings():  # a genre predicted but absent from valid is fine here
            warnings.simplefilter("ignore")
            row["valid_balanced_accuracy"] = float(balanced_accuracy_score(self.labels, pred))
        score = (row["valid_balanced_accuracy"], row["valid_loss"])
        if score[0] > self.best[0] or (score[0] == self.best[0] and score[1] < self.best[1]):
            self.best, self.weights, self.since_best = score, model.get_weights(), 0
            row["best"] = True
        else:
            self.since_best += 1

    def end_epoch(self, row: dict[str, Any], t0: float, history: list[dict[str, Any]],
                  on_epoch: Callable[[dict[str, Any]], None] | None, *, patience: int | None) -> bool:
        """Time the epoch, record and report its row; True when training should stop early."""
        row["seconds"] = round(time.perf_counter() - t0, 1)
        history.append(row)
        if on_epoch:
            on_epoch(row)
        return patience is not None and self.since_best >= patience


# ---------------------------------------------------------------- v2: the BiLSTM over front-end features
def add_frontend_features(tracks: list[TrackFeatures], frontend, config: FeatureConfig, *, dense: bool) -> None:
    """Fill ``patch_features`` (the patches prediction uses) and, with ``dense``,
    ``dense_features`` (patches every half patch) of each track, in shared batches."""
    from .musicnn import frontend_outputs, head_inputs

    n = config.n_frames
    todo: list[tuple[TrackFeatures, str, np.ndarray]] = []
    for t in tracks:
        if t.patch_features is None:
            todo.append((t, "patch_features", segment_frames(t.frames, config)))
        if dense and t.dense_features is None:
            starts = range(0, max(1, len(t.frames) - n + 1), max(1, n // 2))
            todo.append((t, "dense_features", np.stack([t.frames[s:s + n] for s in starts])))
    for i in range(0, len(todo), 16):
        part = todo[i:i + 16]
        feats, tags = frontend_outputs(frontend, np.concatenate([p for _, _, p in part]))
        feats = np.asarray(head_inputs(feats, tags, tag_inputs=config.tag_inputs), np.float32)
        start = 0
        for t, attr, p in part:
            setattr(t, attr, feats[start:start + len(p)])
            if attr == "patch_features":
                t.patch_tags = tags[start:start + len(p)]
            start += len(p)


def tag_priors(tracks: list[TrackFeatures], frontend, config: FeatureConfig) -> np.ndarray:
    """Each front-end tag's mean track probability over ``tracks``, shape (n_tags,).

    A tag's probability means little alone: the MSD's frequent tags (rock, pop) are likely
    for most music, moods (Mellow, happy) rarely pass a few percent. Divided by these, a
    track's probabilities say which tags stand out for it (``recommender`` indexes those).
    """
    add_frontend_features(tracks, frontend, config, dense=False)
    return np.mean([t.patch_tags.mean(axis=0) for t in tracks], axis=0).astype(np.float64)


def pad_sequences(seqs: list[np.ndarray]) -> np.ndarray:
    """Zero-pad (n_i, d) sequences to (len(seqs), max n_i, d); the head masks the zeros."""
    longest = max(len(q) for q in seqs)
    out = np.zeros((len(seqs), longest, seqs[0].shape[1]), np.float32)
    for i, q in enumerate(seqs):
        out[i, :len(q)] = q
    return out


def mix_sequences(x: np.ndarray, targets: np.ndarray, alpha: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """mixup of padded patch-feature sequences (batch, n, d) with a shuffled copy of the
    batch: each pair is mixed patch by patch with one weight ~ Beta(alpha, alpha), and so are
    their targets. Where the partner is padding the sequence keeps its own patch, and its
    own padding stays zero (masked)."""
    lam = rng.beta(alpha, alpha, size=(len(x), 1)).astype(np.float32)
    perm = rng.permutation(len(x))
    both = (np.any(x != 0, axis=-1) & np.any(x[perm] != 0, axis=-1))[..., None]
    mixed = np.where(both, lam[:, :, None] * x + (1 - lam[:, :, None]) * x[perm], x)
    return mixed.astype(np.float32), lam * targets + (1 - lam) * targets[perm]


def sample_sequences(tracks: list[np.ndarray], labels: np.ndarray, n_genres: int, *, n_seqs: int,
                     max_len: int, rng: np.random.Generator, balance: str = "genre") -> tuple[list[np.ndarray], np.ndarray]:
    """Training sequences: pick a genre (as ``sample_crops``), a track of it, a length from 1
    to what the track holds (at most ``max_len`` back-to-back patches), then that many patch
    positions in order, anywhere in the track (patches every half patch are available)."""
    by_genre = [np.flatnonzero(labels == g) for g in range(n_genres)]
    present = [g for g in range(n_genres) if len(by_genre[g])]
    power = {"genre": 0.0, "sqrt": 0.5, "track": 1.0}[balance]
    weights = np.array([len(by_genre[g]) ** power for g in present], np.float64)
    weights /= weights.sum()
    seqs, ys = [], np.empty(n_seqs, np.int64)
    for i in range(n_seqs):
        g = present[rng.integers(len(present)) if power == 0 else rng.choice(len(present), p=weights)]
        feats = tracks[by_genre[g][rng.integers(len(by_genre[g]))]]
        back_to_back = (len(feats) + 1) // 2
        length = int(rng.integers(1, min(max_len, back_to_back) + 1))
        seqs.append(feats[np.sort(rng.choice(len(feats), size=length, replace=False))])
        ys[i] = g
    return seqs, ys


def fit_sequence(train: list[TrackFeatures], genres: list[str], feature_config: FeatureConfig,
                 model_config: ModelConfig, *, valid: list[TrackFeatures] | None = None, epochs: int | None = None,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None, restore_best: bool = True,
                 frontend=None):
    """``fit`` for the v2 recipe: returns (head model, identity normalizer, history).

    The head is built by ``build_sequence_head``; the front end (default: the shipped
    musicnn weights) stays frozen and is not part of the returned model.
    """
    import keras

    from .model import build_sequence_head
    from .musicnn import load_frontend

    frontend = frontend or load_frontend()
    if model_config.ensemble > 1:
        return _fit_ensemble(train, genres, feature_config, model_config, valid=valid, epochs=epochs,
                             on_epoch=on_epoch, restore_best=restore_best, frontend=frontend)
    keras.utils.set_random_seed(model_config.seed)
    rng = np.random.default_rng(model_config.seed)
    gidx = {g: i for i, g in enumerate(genres)}
    add_frontend_features(train, frontend, feature_config, dense=True)
    if valid:
        add_frontend_features(valid, frontend, feature_config, dense=False)
    train_feats = [t.dense_features for t in train]
    train_labels = np.array([gidx[t.track.genre] for t in train])
    valid_labels = np.array([gidx[t.track.genre] for t in valid]) if valid else np.array([])
    max_len = feature_config.max_patches or max(len(t.patch_features) for t in train)

    # the head is as wide as what it reads (``musicnn.head_inputs``: features, and tag logits if asked)
    model = build_sequence_head(n_features=train_feats[0].shape[1], n_genres=len(genres), config=model_config)
    model.compile(optimizer=keras.optimizers.Adam(model_config.learning_rate),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=model_config.label_smoothing))
    n_epochs = epochs or model_config.max_epochs
    history: list[dict[str, Any]] = []
    best = _BestOnValid(valid_labels)
    swa = _LastEpochsAverage(model_config.average_last, n_epochs)
    bs = model_config.batch_size
    for epoch in range(1, n_epochs + 1):
        t0 = time.perf_counter()
        seqs, y = sample_sequences(train_feats, train_labels, len(genres), n_seqs=model_config.segments_per_track * len(train),
                                   max_len=max_len, rng=rng, balance=model_config.balance)
        targets = np.eye(len(genres), dtype=np.float32)[y]
        # batches of similar lengths (little padding), in random order
        order = np.argsort([len(q) for q in seqs], kind="stable")
        starts = np.arange(0, len(order), bs)
        rng.shuffle(starts)
        losses = []
        for s in starts:
            idx = order[s:s + bs]
            x, t = pad_sequences([seqs[i] for i in idx]), targets[idx]
            if model_config.mixup > 0:
                x, t = mix_sequences(x, t, model_config.mixup, rng)
            losses.append(float(model.train_on_batch(x, t)))
        swa.after_epoch(model, epoch)
        row: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses))}
        if valid:
            best.score(row, np.stack([model.predict_on_batch(t.patch_features[None])[0] for t in valid]), model)
        if best.end_epoch(row, t0, history, on_epoch, patience=model_config.patience if valid and restore_best else None):
            break
    if best.weights is not None and restore_best:
        model.set_weights(best.weights)
    return model, Normalizer.identity(feature_config.n_features), history


def _fit_ensemble(train: list[TrackFeatures], genres: list[str], feature_config: FeatureConfig,
                  model_config: ModelConfig, *, valid, epochs, on_epoch, restore_best: bool, frontend):
    """``fit_sequence`` with ``model_config.ensemble`` = N > 1: N heads trained one after the
    other, each as a one-head model of seed ``seed + m`` (its own initial weights, crops and
    dropout), then copied into one N-head model (``build_sequence_head``). Each history
    row says which ``head`` it is of."""
    from .model import build_sequence_head

    history: list[dict[str, Any]] = []
    heads = []
    for m in range(model_config.ensemble):
        def tagged(row: dict[str, Any], m: int = m) -> None:
            row["head"] = m + 1
            if on_epoch:
                on_epoch(row)

        one = dataclasses.replace(model_config, ensemble=1, seed=model_config.seed + m)
        head, normalizer, rows = fit_sequence(train, genres, feature_config, one, valid=valid, epochs=epochs,
                                              on_epoch=tagged, restore_best=restore_best, frontend=frontend)
        heads.append(head)
        history.extend(rows)
    model = build_sequence_head(n_features=heads[0].input_shape[-1], n_genres=len(genres), config=model_config)
    for m, head in enumerate(heads):
        for layer in head.layers:
            if layer.weights:
                model.get_layer(f"h{m}_{layer.name}").set_weights(layer.get_weights())
    return model, normalizer, history


# ---------------------------------------------------------------- evaluation
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
    when the tracks carry front-end features (v2), ``linear_probe``: logistic regression on
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


# ---------------------------------------------------------------- workflows used by the CLI
def train_bundle(
    dataset: Dataset,
    *,
    feature_config: FeatureConfig,
    model_config: ModelConfig,
    train_on_all: bool = False,
    epochs: int | None = None,
    workers: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    restore_best: bool = True,
):
    """Train a ``ModelBundle`` on a dataset's splits.

    ``restore_best=False``: keep the last epoch's weights (with ``epochs``: exactly that
    many), so ``valid`` only scores the model and picks nothing.

    Default: train on ``train``, early-stop on ``valid``, then score ``test`` (or ``valid``
    when there is no test split) into the bundle's evaluation summary.
    ``train_on_all``: train on every track for exactly ``epochs`` epochs (the recipe and
    epoch count having been chosen beforehand on a validation split); no evaluation.
    """
    from .bundle import ModelBundle

    genres = dataset.genres
    if len(genres) < 2:
        raise DatasetError("training needs at least two genres")
    if train_on_all:
        train_tracks, valid_tracks, test_tracks = list(dataset.tracks), [], []
    else:
        train_tracks = dataset.split("train")
        valid_tracks = dataset.split("valid")
        test_tracks = dataset.split("test")
    if not train_tracks:
        raise DatasetError("the dataset has no training tracks")
    feats = extract_features(train_tracks + valid_tracks + test_tracks, feature_config, workers=workers,
                             progress=progress)
    tr = feats[: len(train_tracks)]
    va = feats[len(train_tracks) : len(train_tracks) + len(valid_tracks)]
    te = feats[len(train_tracks) + len(valid_tracks) :]
    train_hashes = {t.sha256 for t in tr}
    leaked = [t.track.key for t in va + te if t.sha256 in train_hashes]
    if leaked:
        raise DatasetError(f"{len(leaked)} held-out track(s) are byte-identical to training tracks, e.g. {leaked[0]}")

    frontend = None
    if feature_config.is_sequence:
        from .musicnn import load_frontend

        frontend = load_frontend()
        model, normalizer, history = fit_sequence(tr, genres, feature_config, model_config, valid=va or None,
                                                  epochs=epochs, on_epoch=on_epoch, frontend=frontend,
                                                  restore_best=restore_best)
    else:
        model, normalizer, history = fit(tr, genres, feature_config, model_config, valid=va or None,
                                         epochs=epochs, on_epoch=on_epoch, restore_best=restore_best)
    bundle = ModelBundle(model, frontend=frontend, genres=genres, feature_config=feature_config,
                         normalizer=normalizer, model_config=model_config)
    evaluation: dict[str, Any] = {}
    scored, split_name = (te, "test") if te else (
        va, "valid (also used for early stopping)" if restore_best else "valid (not used for training or stopping)")
    if scored:
        evaluation = _score(bundle, scored, tr, genres)
        evaluation["split"] = split_name
    bundle.evaluation = evaluation
    bundle.training = {
        "n_tracks": len(tr),
        "genre_counts": {g: sum(t.track.genre == g for t in tr) for g in genres},
        "epochs_run": max((h["epoch"] for h in history), default=0),  # the most any head of an ensemble ran
        "history": history,
        "train_on_all": train_on_all,
        "track_sha256": sorted(train_hashes),
    }
    if frontend is not None:
        bundle.training["tag_priors"] = dict(zip(bundle.tag_names, map(float, tag_priors(tr, frontend, feature_config))))
    return bundle


def _score(bundle, tracks: list[TrackFeatures], baseline_train: list[TrackFeatures], genres: list[str]) -> dict[str, Any]:
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
    if bundle.frontend is not None and baseline_train:
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
    metrics = _score(bundle, held_out, baseline_train, bundle.genres)
    metrics["split"] = split
    metrics["excluded_training_tracks"] = excluded
    metrics["model_version"] = bundle.version
    return metrics
