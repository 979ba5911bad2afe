"""The BiLSTM genre classifier over the frozen musicnn front end.

The front end (``embedding.musicnn``) turns each 3 s patch into 200 features (and, with
``tag_inputs``, its 50 tag logits); ``build_sequence_head`` builds the model that reads the
track's sequence of them:

patch features (n_patches, 200 or 250)
  → Bidirectional LSTM layers
  → Dense "embedding" (the penultimate layer: the track embedding)
  → Dense softmax "genre"

``ModelConfig()`` is the shipped recipe; ``ensemble`` > 1 puts several such heads side by side.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and training hyper-parameters (round-trips to JSON)."""

    lstm_units: tuple[int, ...] = (32,)
    embedding_dim: int = 32
    dropout: float = 0.3
    recurrent_dropout: float = 0.0
    learning_rate: float = 1e-3
    batch_size: int = 32
    max_epochs: int = 30
    patience: int = 10
    # random patch sequences drawn per training track and epoch
    segments_per_track: int = 8
    # mixup Beta(a, a) of training patch-feature sequences and their targets
    mixup: float = 0.4
    label_smoothing: float = 0.1
    # how training sequences pick a genre: uniformly ("genre"), by sqrt of its track count, or by count
    balance: str = "genre"
    embedding_activation: str = "relu"
    # > 0: the final weights are the mean of the last N epochs' (stochastic weight averaging)
    average_last: int = 5
    # the embedding also sees the mean of the patch features beside the BiLSTM's state
    mean_skip: bool = False
    # > 0 makes the genre layer a cosine classifier of this scale (unit-length embedding and
    # class vectors, as in NormFace / CosFace): softmax over scaled cosines, so the training
    # loss itself shapes the embedding's cosine neighbourhoods the recommender searches
    cosine_scale: float = 0.0
    # > 1 trains that many heads apart (seeds seed, seed + 1, ...; a deep ensemble); the
    # model's genre probabilities are their mean, and its embedding their unit-length
    # embeddings side by side (cosine similarity = the mean of the heads' cosines)
    ensemble: int = 5
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.balance not in ("genre", "sqrt", "track"):
            raise ValueError(f"balance must be genre, sqrt or track, not {self.balance!r}")
        if self.average_last < 0:
            raise ValueError(f"average_last must be 0 (off) or a number of epochs, not {self.average_last}")
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be 1 (one head) or more, not {self.ensemble}")
        if not self.mixup >= 0:  # also refuses NaN
            raise ValueError(f"mixup must be 0 (off) or a positive Beta parameter, not {self.mixup}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lstm_units"] = list(self.lstm_units)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {**_ABSENT_MEANT, **{k: v for k, v in data.items() if k in known}}
        if "lstm_units" in d:
            d["lstm_units"] = tuple(int(u) for u in d["lstm_units"])
        return cls(**d)


# what a key missing from a saved bundle's model_config meant: the values the first bundles,
# saved before the key existed, were trained with (the defaults of sonicsort 0.1)
_ABSENT_MEANT: dict[str, Any] = dict(lstm_units=(48, 48), embedding_dim=128, dropout=0.5, max_epochs=40, patience=8,
                                     segments_per_track=16, label_smoothing=0.0, average_last=0, ensemble=1)


def _bilstm_stack(x, config: ModelConfig, *, prefix: str = ""):
    """``config.lstm_units`` Bidirectional LSTM layers (the last returns its final state),
    then dropout. ``prefix`` starts the layers' names."""
    from keras import layers

    for i, units in enumerate(config.lstm_units):
        last = i == len(config.lstm_units) - 1
        x = layers.Bidirectional(
            layers.LSTM(units, return_sequences=not last, recurrent_dropout=config.recurrent_dropout),
            name=f"{prefix}bilstm_{i + 1}",
        )(x)
    return layers.Dropout(config.dropout, name=f"{prefix}dropout_lstm")(x)


def build_sequence_head(*, n_features: int, n_genres: int, config: ModelConfig, masking: bool = True):
    """Keras model: front-end features (batch, n_patches, n_features) → genre softmax.

    ``n_patches`` may vary (None). With ``masking``, zero vectors are padding (masked), so
    tracks of different lengths train in one batch; prediction, one track a call, uses the
    same layers and weights without the mask. The layer named ``embedding`` is the
    penultimate layer, whose activations are the track embedding.

    With ``config.ensemble`` = N > 1 the model holds N heads side by side (the layers of
    head m are named ``h{m}_…``, as one head's are without the prefix): ``genre`` is the
    mean of their softmaxes, and the track embedding (``embedding_output``) their
    unit-length penultimate layers side by side (N × ``embedding_dim``). ``train.fit``
    trains the heads apart and puts them together.
    """
    from ._quiet import import_tensorflow

    import_tensorflow()
    import keras
    from keras import layers

    inputs = keras.Input(shape=(None, n_features), name="patch_features")
    masked = layers.Masking(mask_value=0.0, name="padding")(inputs) if masking else inputs
    if config.ensemble == 1:
        _, outputs = _sequence_branch(masked, n_genres, config, "")
    else:
        heads = [_sequence_branch(masked, n_genres, config, f"h{m}_") for m in range(config.ensemble)]
        outputs = layers.Average(name="genre")([o for _, o in heads])
    return keras.Model(inputs, outputs, name="sonicsort_sequence_bilstm")


def _head_embeddings(model) -> list[str]:
    """The names of an ensemble's per-head embedding layers (``h0_embedding``, ...), in order."""
    found = [layer.name for layer in model.layers if re.fullmatch(r"h\d+_embedding", layer.name)]
    return sorted(found, key=lambda n: int(n[1:].split("_", 1)[0]))


def embedding_output(model):
    """The track embedding of a model built here, as a symbolic tensor to build an inference
    model on: the ``embedding`` layer's output; for an ensemble (no such layer) its heads'
    unit-length embeddings side by side, so cosine similarity is the mean of the heads'."""
    if any(layer.name == "embedding" for layer in model.layers):
        return model.get_layer("embedding").output
    from keras import layers

    heads = _head_embeddings(model)
    return layers.Concatenate(name="embedding")(
        [layers.UnitNormalization(name=f"{n}_unit_length")(model.get_layer(n).output) for n in heads])


def embedding_size(model) -> int:
    """The length of ``embedding_output(model)``."""
    if any(layer.name == "embedding" for layer in model.layers):
        return int(model.get_layer("embedding").units)
    return sum(int(model.get_layer(n).units) for n in _head_embeddings(model))


def _sequence_branch(masked, n_genres: int, config: ModelConfig, prefix: str):
    """One head of ``build_sequence_head``: (its embedding, its genre softmax)."""
    import keras
    from keras import layers

    x = layers.Dropout(config.dropout / 2, name=f"{prefix}dropout_features")(masked)
    x = _bilstm_stack(x, config, prefix=prefix)
    if config.mean_skip:
        mean = layers.GlobalAveragePooling1D(name=f"{prefix}feature_mean")(masked)
        x = layers.Concatenate(name=f"{prefix}state_and_mean")(
            [x, layers.Dropout(config.dropout, name=f"{prefix}dropout_mean")(mean)])
    embedding = layers.Dense(config.embedding_dim, activation=config.embedding_activation, name=f"{prefix}embedding")(x)
    x = layers.Dropout(config.dropout, name=f"{prefix}dropout_embedding")(embedding)
    if config.cosine_scale > 0:
        x = layers.UnitNormalization(name=f"{prefix}embedding_unit")(x)
        x = layers.Dense(n_genres, use_bias=False, kernel_constraint=keras.constraints.UnitNorm(axis=0),
                         name=f"{prefix}genre_cosine")(x)
        x = layers.Rescaling(config.cosine_scale, name=f"{prefix}cosine_scale")(x)
        return embedding, layers.Activation("softmax", name=f"{prefix}genre")(x)
    return embedding, layers.Dense(n_genres, activation="softmax", name=f"{prefix}genre")(x)
