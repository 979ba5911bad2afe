"""Training the BiLSTM head over the frozen musicnn front end.

The front end is frozen, so its per-patch features are computed once per track (at a hop
of half a patch, for varied training sequences), and only the BiLSTM head trains, on
random patch sequences of 1 to ``max_patches`` patches: the lengths a clip and a capped
long track give at prediction time. ``embedding.evaluate`` scores the result.

Everything is track-level: a track's patches are all on one side of a split, and figures
count tracks.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

import numpy as np

from .data import Dataset
from .evaluate import score_tracks
from .errors import DatasetError
from .features import FeatureConfig, Normalizer
from .model import ModelConfig
from .track_features import TrackFeatures, add_frontend_features, extract_features

log = logging.getLogger(__name__)


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
    """Training sequences: pick a genre (``balance``: uniformly, by the square root of its
    track count, or by its count), a track of it, a length from 1
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


def fit(train: list[TrackFeatures], genres: list[str], feature_config: FeatureConfig,
        model_config: ModelConfig, *, valid: list[TrackFeatures] | None = None, epochs: int | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None, restore_best: bool = True,
        frontend=None):
    """Train the BiLSTM head (``build_sequence_head``) on random patch sequences of ``train``.

    With ``valid``, keeps the weights of the epoch with the best track-level balanced
    accuracy (ties: lower loss) and stops after ``patience`` epochs without improvement.
    Without it, trains exactly ``epochs`` (default ``model_config.max_epochs``) epochs.
    ``restore_best=False`` keeps the last epoch's weights and only scores ``valid`` (for
    recipe comparisons at a fixed epoch count). The front end (default: the shipped musicnn
    weights) stays frozen and is not part of the returned model.

    Returns
    -------
    (head model, identity normalizer, history) where history is a list of per-epoch dicts.
    """
    import warnings

    from ._quiet import import_tensorflow

    import_tensorflow()
    import keras

    from .model import build_sequence_head
    from .musicnn import load_frontend

    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
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
    """``fit`` with ``model_config.ensemble`` = N > 1: N heads trained one after the
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
        head, normalizer, rows = fit(train, genres, feature_config, one, valid=valid, epochs=epochs,
                                              on_epoch=tagged, restore_best=restore_best, frontend=frontend)
        heads.append(head)
        history.extend(rows)
    model = build_sequence_head(n_features=heads[0].input_shape[-1], n_genres=len(genres), config=model_config)
    for m, head in enumerate(heads):
        for layer in head.layers:
            if layer.weights:
                model.get_layer(f"h{m}_{layer.name}").set_weights(layer.get_weights())
    return model, normalizer, history


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

    from .musicnn import load_frontend

    frontend = load_frontend()
    model, normalizer, history = fit(tr, genres, feature_config, model_config, valid=va or None, epochs=epochs,
                                     on_epoch=on_epoch, frontend=frontend, restore_best=restore_best)
    bundle = ModelBundle(model, frontend=frontend, genres=genres, feature_config=feature_config,
                         normalizer=normalizer, model_config=model_config)
    evaluation: dict[str, Any] = {}
    scored, split_name = (te, "test") if te else (
        va, "valid (also used for early stopping)" if restore_best else "valid (not used for training or stopping)")
    if scored:
        evaluation = score_tracks(bundle, scored, tr, genres)
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
    bundle.training["tag_priors"] = dict(zip(bundle.tag_names, map(float, tag_priors(tr, frontend, feature_config))))
    return bundle
