"""musicnn (Pons & Serra, 2019) in Keras 3: the frozen, pretrained front end of the genre model.

The architecture follows the paper and the ``musicnn`` package (ISC licence, Music
Technology Group, Universitat Pompeu Fabra; see ``pretrained/LICENSE-musicnn.md``); this is
our own Keras port, loaded with the ``MSD_musicnn`` weights that
``scripts/convert_musicnn.py`` converts from that package's TensorFlow 1 checkpoint. The
package itself is never needed at run time.

One input patch is a log-compressed mel spectrogram, shape (187, 96): 16 kHz, n_fft 512,
hop 256, 96 mel bands, ``log10(10000 * S + 1)`` of the power spectrogram, 187 frames (3 s).

patch (187, 96)
  → batch norm
  → front end: timbral convolutions 7×38 and 7×67 (204 filters each) and temporal
    convolutions 128×1, 64×1, 32×1 (51 filters each), each max-pooled over frequency
  → mid end: three 7-frame convolutions of 64 filters, densely connected (753 per frame)
  → back end: max and mean over time (1506) → batch norm → Dense 200 ReLU → batch norm
    = ``penultimate`` (200) → Dense 50 → sigmoid = ``taggram`` (50 Last.fm tags of the MSD)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ModelError

SR = 16_000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
N_FRAMES = 187  # 3 s at 16 kHz, hop 256 (librosa.time_to_frames(3, ...) + 1)
PENULTIMATE_DIM = 200
PATCH_SAMPLES = (N_FRAMES - 1) * HOP_LENGTH + 1  # the fewest samples whose centred frames fill a patch
_SPAN = (N_FRAMES - 1) * HOP_LENGTH + N_FFT  # samples under one patch's frames

# The 50 tags of MSD_musicnn, in the order of its output layer (the wheel's configuration.py).
MSD_TAGS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock",
    "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental",
    "punk", "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist",
    "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy", "catchy", "funk",
    "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
)

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
WEIGHTS_FILE = PRETRAINED_DIR / "msd_musicnn.weights.h5"


def _check_sr(sr: int) -> None:
    if sr != SR:
        raise ModelError(f"musicnn expects {SR} Hz audio, not {sr} Hz")


def _loop_to_patch(samples: np.ndarray) -> np.ndarray:
    """Audio shorter than one patch, repeated until it fills one (a clip is never refused for it)."""
    y = np.asarray(samples, np.float32)
    if len(y) == 0:
        raise ModelError("no samples to make patches of")
    if len(y) < PATCH_SAMPLES:
        y = np.tile(y, int(np.ceil(PATCH_SAMPLES / len(y))))[:PATCH_SAMPLES]
    return y


def log_mel(samples: np.ndarray, *, sr: int = SR) -> np.ndarray:
    """musicnn's log-compressed mel frames of a whole track.

    Parameters
    ----------
    samples : np.ndarray, shape (n_samples,), float32 mono at ``sr`` (must be 16 kHz)

    Returns
    -------
    np.ndarray, shape (n_total_frames, 96), float32, ``log10(10000 * S + 1)`` of the power
    mel spectrogram (centred frames, ``reflect`` padding as the 2019 librosa the weights were
    trained with). Audio shorter than one patch is looped to fill it first.

    Notes
    -----
    Computed in float32: the musicnn package casts the mel spectrogram to float16 before
    the log, which overflows to +inf on loud music.
    """
    import librosa

    _check_sr(sr)
    y = _loop_to_patch(samples)
    spec = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP_LENGTH, center=True, pad_mode="reflect")) ** 2
    return np.log10(10000.0 * (_mel_basis() @ spec).T + 1.0).astype(np.float32)


def patch_starts(n_total_frames: int, *, max_patches: int | None = None) -> np.ndarray:
    """First frame of each patch: back to back from the start, or, when there are more than
    ``max_patches``, that many spread evenly from the first frame to the last."""
    n = max(1, n_total_frames // N_FRAMES)
    if max_patches is not None and 0 < max_patches < n:
        return np.round(np.linspace(0, n_total_frames - N_FRAMES, max_patches)).astype(np.int64)
    return np.arange(n, dtype=np.int64) * N_FRAMES


def patches_of(frames: np.ndarray, *, max_patches: int | None = None) -> np.ndarray:
    """Cut ``log_mel`` frames (n_total_frames, 96) into patches (n_patches, 187, 96)."""
    starts = patch_starts(len(frames), max_patches=max_patches)
    return np.stack([frames[s : s + N_FRAMES] for s in starts]).astype(np.float32)


def patch_spans(n_samples: int, *, max_patches: int | None = None) -> list[tuple[int, int]]:
    """The samples ``log_mel_patches`` reads from a track of ``n_samples`` (16 kHz): one
    (start, stop) range per patch, so a decoder can read only those (``load_excerpts``)."""
    if n_samples < PATCH_SAMPLES:
        return [(0, n_samples)]  # looped to one patch
    starts = patch_starts(1 + n_samples // HOP_LENGTH, max_patches=max_patches)
    return [(max(0, s * HOP_LENGTH - N_FFT // 2), min(n_samples, s * HOP_LENGTH - N_FFT // 2 + _SPAN)) for s in starts]


def log_mel_patches(samples, *, sr: int = SR, max_patches: int | None = None) -> np.ndarray:
    """``patches_of(log_mel(samples))``, transforming only the stretches the patches cover.

    Parameters
    ----------
    samples : np.ndarray, shape (n_samples,), float32 mono at 16 kHz; or ``Excerpts`` of a
        track at 16 kHz holding at least its ``patch_spans``
    max_patches : keep at most this many patches, spread evenly over the track, so a long
        track costs a bounded amount; None keeps them all

    Returns
    -------
    np.ndarray, shape (n_patches, 187, 96), float32; the same values as
    ``patches_of(log_mel(samples), max_patches=max_patches)``.
    """
    import librosa

    from .audio import Excerpts

    _check_sr(sr)
    if isinstance(samples, Excerpts):
        if samples.sr != sr:
            raise ModelError(f"excerpts at {samples.sr} Hz but musicnn expects {sr} Hz")
        n, read = samples.n_samples, samples.span
        if n < PATCH_SAMPLES:
            y = _loop_to_patch(read(0, n))
            n, read = len(y), lambda a, b: y[a:b]
    else:
        y = _loop_to_patch(samples)
        n, read = len(y), lambda a, b: y[a:b]
    starts = patch_starts(1 + n // HOP_LENGTH, max_patches=max_patches)
    out = np.empty((len(starts), N_FRAMES, N_MELS), np.float32)
    for i, s in enumerate(starts):
        # centred frame j of the patch covers samples [(s + j) * hop - n_fft / 2, ... + n_fft),
        # reflected at the ends of the track as librosa pads a whole track
        lo, hi = s * HOP_LENGTH - N_FFT // 2, s * HOP_LENGTH - N_FFT // 2 + _SPAN
        seg = read(max(0, lo), min(n, hi))
        if lo < 0 or hi > n:
            seg = np.pad(seg, (max(0, -lo), max(0, hi - n)), mode="reflect")
        spec = np.abs(librosa.stft(seg, n_fft=N_FFT, hop_length=HOP_LENGTH, center=False)) ** 2
        out[i] = np.log10(10000.0 * (_mel_basis() @ spec).T + 1.0)
    return out


_MEL: np.ndarray | None = None


def _mel_basis() -> np.ndarray:
    global _MEL
    if _MEL is None:
        import librosa

        _MEL = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32)
    return _MEL


def build_musicnn(*, n_tags: int = len(MSD_TAGS), name: str = "musicnn"):
    """The musicnn architecture (its "MSD_musicnn" size) as a Keras model.

    Input: patches (batch, 187, 96). Outputs: ``[penultimate (batch, 200), taggram (batch, n_tags)]``.
    Layer names mirror the checkpoint's variable scopes (``bn_input`` … ``dense_tags``).
    """
    from ._quiet import import_tensorflow

    import_tensorflow()
    import keras
    from keras import layers

    def bn(name: str):
        return layers.BatchNormalization(epsilon=1e-3, momentum=0.99, name=name)

    x_in = keras.Input(shape=(N_FRAMES, N_MELS), name="patch")
    x = layers.Reshape((N_FRAMES, N_MELS, 1), name="expand")(x_in)
    x = bn("bn_input")(x)

    def freq_pooled(h, conv_name: str, filters: int, kernel: tuple[int, int], padding: str):
        h = layers.Conv2D(filters, kernel, padding=padding, activation="relu", name=conv_name)(h)
        h = bn(f"bn_{conv_name}")(h)
        h = layers.MaxPooling2D(pool_size=(1, h.shape[2]), name=f"pool_{conv_name}")(h)
        return layers.Reshape((N_FRAMES, filters), name=f"squeeze_{conv_name}")(h)

    # timbral: 7 frames × 40% / 70% of the bands, zero-padded in time only
    padded = layers.ZeroPadding2D(((3, 3), (0, 0)), name="pad_timbral")(x)
    f74 = freq_pooled(padded, "timbral_74", 204, (7, int(0.4 * N_MELS)), "valid")
    f77 = freq_pooled(padded, "timbral_77", 204, (7, int(0.7 * N_MELS)), "valid")
    # temporal: 128, 64 and 32 frames, one band
    s1 = freq_pooled(x, "temporal_128", 51, (128, 1), "same")
    s2 = freq_pooled(x, "temporal_64", 51, (64, 1), "same")
    s3 = freq_pooled(x, "temporal_32", 51, (32, 1), "same")
    front = layers.Concatenate(axis=-1, name="frontend")([f74, f77, s1, s2, s3])  # (187, 561)

    # mid end: 7-frame convolutions over all channels (the checkpoint's 7×C 2-D kernels)
    def mid(h, i: int):
        h = layers.ZeroPadding1D(3, name=f"pad_mid_{i}")(h)
        h = layers.Conv1D(64, 7, padding="valid", activation="relu", name=f"mid_{i}")(h)
        return bn(f"bn_mid_{i}")(h)

    m1 = mid(front, 1)
    m2 = layers.Add(name="res_mid_2")([mid(m1, 2), m1])
    m3 = layers.Add(name="res_mid_3")([mid(m2, 3), m2])
    midend = layers.Concatenate(axis=-1, name="midend")([front, m1, m2, m3])  # (187, 753)

    # back end: per-feature max and mean over time, interleaved as the checkpoint flattens them
    mx = layers.Reshape((-1, 1), name="max_pool")(layers.GlobalMaxPooling1D(name="time_max")(midend))
    mean = layers.Reshape((-1, 1), name="mean_pool")(layers.GlobalAveragePooling1D(name="time_mean")(midend))
    pooled = layers.Flatten(name="pooled")(layers.Concatenate(axis=-1, name="max_mean")([mx, mean]))
    pooled = bn("bn_pooled")(pooled)
    dense = layers.Dense(PENULTIMATE_DIM, activation="relu", name="dense_penultimate")(pooled)
    penultimate = bn("penultimate")(dense)
    tags = layers.Dense(n_tags, activation="sigmoid", name="taggram")(penultimate)
    model = keras.Model(x_in, [penultimate, tags], name=name)
    model.trainable = False
    return model


# checkpoint scope of each Keras layer (tf.compat.v1.layers names, in graph construction order)
CHECKPOINT_SCOPES = {
    "bn_input": "batch_normalization",
    "timbral_74": "conv2d", "bn_timbral_74": "batch_normalization_1",
    "timbral_77": "conv2d_1", "bn_timbral_77": "batch_normalization_2",
    "temporal_128": "conv2d_2", "bn_temporal_128": "batch_normalization_3",
    "temporal_64": "conv2d_3", "bn_temporal_64": "batch_normalization_4",
    "temporal_32": "conv2d_4", "bn_temporal_32": "batch_normalization_5",
    "mid_1": "conv2d_5", "bn_mid_1": "batch_normalization_6",
    "mid_2": "conv2d_6", "bn_mid_2": "batch_normalization_7",
    "mid_3": "conv2d_7", "bn_mid_3": "batch_normalization_8",
    "bn_pooled": "batch_normalization_9",
    "dense_penultimate": "dense", "penultimate": "batch_normalization_10",
    "taggram": "dense_1",
}


def load_frontend(weights: str | Path | None = None):
    """The musicnn model with the shipped MSD weights (frozen)."""
    path = Path(weights) if weights is not None else WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(f"{path}: the musicnn weights are missing (run scripts/convert_musicnn.py)")
    model = build_musicnn()
    try:
        model.load_weights(path)
    except Exception as exc:
        raise ModelError(f"{path}: cannot load the musicnn weights ({exc})") from None
    model.trainable = False
    return model


def head_inputs(penultimate, taggram, *, tag_inputs: bool):
    """What the genre head reads of each patch: the 200 penultimate features and, with
    ``tag_inputs``, beside them the logits of the 50 tag probabilities (clipped at 1e-6).

    The logits are a fixed linear map of the penultimate features, learnt on the MSD's
    Last.fm tags; given them, a head trained on a few hundred tracks starts from directions
    such as *country*, *blues* or *Hip-Hop* instead of having to find them. One function for
    training (NumPy arrays) and inference (tensors in a ``tf.function``), so both compute
    the same numbers.
    """
    if not tag_inputs:
        return penultimate
    from keras import ops

    p = ops.clip(taggram, 1e-6, 1.0 - 1e-6)
    return ops.concatenate([penultimate, ops.log(p) - ops.log1p(-p)], axis=-1)


def frontend_outputs(frontend, patches: np.ndarray, *, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The front end on many patches (n, 187, 96) → (penultimate (n, 200), taggram (n, 50))."""
    import tensorflow as tf

    fn = getattr(frontend, "_sonicsort_infer", None)
    if fn is None:
        spec = tf.TensorSpec([None, N_FRAMES, N_MELS], tf.float32)
        fn = tf.function(lambda x: frontend(x, training=False), input_signature=[spec], reduce_retracing=True)
        frontend._sonicsort_infer = fn
    pen, tags = [], []
    for i in range(0, len(patches), batch):
        p, t = fn(np.asarray(patches[i:i + batch], np.float32))
        pen.append(p.numpy())
        tags.append(t.numpy())
    if not pen:
        return np.zeros((0, PENULTIMATE_DIM), np.float32), np.zeros((0, len(MSD_TAGS)), np.float32)
    return np.concatenate(pen), np.concatenate(tags)
