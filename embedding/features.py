"""The model's input: the musicnn front end's log-mel patches of a track.

Audio is resampled to 16 kHz and turned into 96-band log-compressed mel frames
(``embedding.musicnn.log_mel``), cut into back-to-back patches of 187 frames (3 s); a long
track keeps at most ``max_patches`` of them, spread evenly over it, so its cost is bounded.
Features are computed once over the whole track and then windowed, so training can draw
patches at any hop from the same frames.

Bundles of sonicsort 0.1 whose features were ``logmel`` or ``mfcc`` frames (the frame
BiLSTM) are refused with a message that says so: see ``docs/decisions/one-model-generation.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .audio import Audio, AudioSource, DecodeLimits, Excerpts, load_audio, load_excerpts
from .errors import ModelError
from . import fingerprint as _fp
from . import musicnn as _m

FEATURE_KIND = "musicnn"
# the cap on a track's musicnn patches: a 4-minute track costs what an 18 s clip costs
DEFAULT_MAX_PATCHES = 6


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes the model's patch sequence. Round-trips through ``to_dict``/``from_dict``.

    Parameters
    ----------
    max_patches : at most this many 3 s patches per track, spread evenly over it (0: every patch)
    tag_inputs : the head also reads the front end's 50 tag logits beside its 200
        penultimate features (``musicnn.head_inputs``); the shipped recipe does
    kind : always ``"musicnn"``; stored in the bundle so that a reader knows the input
    """

    max_patches: int = DEFAULT_MAX_PATCHES
    tag_inputs: bool = True
    kind: str = FEATURE_KIND

    # the front end's fixed input: 16 kHz, STFT 512 / hop 256, 96 mel bands, 187-frame patches
    sr = _m.SR
    n_fft = _m.N_FFT
    hop_length = _m.HOP_LENGTH
    n_mels = _m.N_MELS
    n_frames = _m.N_FRAMES
    n_features = _m.N_MELS
    segment_seconds = (_m.N_FRAMES - 1) * _m.HOP_LENGTH / _m.SR

    def __post_init__(self) -> None:
        if self.kind != FEATURE_KIND:
            raise ValueError(f"feature kind must be {FEATURE_KIND!r}, not {self.kind!r}")
        if self.max_patches < 0:
            raise ValueError("max_patches must be 0 (no cap) or positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureConfig":
        """Read a bundle's ``feature_config``. Keys this version does not use (the fixed STFT
        settings older bundles spelled out) are ignored; a bundle written before ``max_patches``
        or ``tag_inputs`` existed used every patch and no tags."""
        kind = data.get("kind", "logmel")  # the first bundles had no musicnn, and logmel by default
        if kind != FEATURE_KIND:
            raise ModelError(f"this model reads {kind!r} frames, a frame-BiLSTM bundle of sonicsort 0.1; this "
                             "version reads musicnn-patch models only: train a new one with 'sonicsort train'")
        return cls(max_patches=int(data.get("max_patches", 0)), tag_inputs=bool(data.get("tag_inputs", False)))


def track_frames(audio: Audio) -> np.ndarray:
    """Log-mel frames of a whole decoded track (16 kHz), shape (n_total_frames, 96), float32."""
    if audio.sr != FeatureConfig.sr:
        raise ModelError(f"audio at {audio.sr} Hz but features expect {FeatureConfig.sr} Hz")
    return _m.log_mel(audio.samples, sr=audio.sr)


def segment_frames(frames: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """A track's frames → the patches prediction reads, shape (n_patches, 187, 96)."""
    return _m.patches_of(frames, max_patches=config.max_patches or None)


def decode_for_features(source: AudioSource, config: FeatureConfig, *, max_duration_s: float | None = None,
                        limits: DecodeLimits | None = None, fingerprint: bool = True) -> Audio | Excerpts:
    """Decode what ``segment_features`` reads of ``source``, and no more, within ``limits``
    (``embedding.audio.DecodeLimits``; ``max_duration_s`` overrides its duration), and with
    ``fingerprint`` the stretch ``embedding.fingerprint`` reads.

    With a cap on patches that is only the capped patches' stretches (``load_excerpts``:
    a 20-minute track decodes about 18 s, 28 s with the fingerprint's); otherwise the whole track.
    """
    if config.max_patches:
        def spans(n: int) -> list[tuple[int, int]]:
            wanted = _m.patch_spans(n, max_patches=config.max_patches)
            return wanted + [_fp.window(n, config.sr)] if fingerprint else wanted

        return load_excerpts(source, spans, sr=config.sr, max_duration_s=max_duration_s, limits=limits)
    return load_audio(source, sr=config.sr, max_duration_s=max_duration_s, limits=limits)


def segment_features(audio: Audio | Excerpts, config: FeatureConfig) -> np.ndarray:
    """Audio (or ``Excerpts`` from ``decode_for_features``) → patches, shape (n_patches, 187, 96)."""
    if audio.sr != config.sr:
        raise ModelError(f"audio at {audio.sr} Hz but features expect {config.sr} Hz")
    return _m.log_mel_patches(audio if isinstance(audio, Excerpts) else audio.samples, sr=audio.sr,
                              max_patches=config.max_patches or None)


@dataclass(frozen=True)
class Normalizer:
    """Per-feature standardisation of the model input, stored in the bundle. The musicnn
    front end normalises its input itself, so models have the identity."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def identity(cls, n_features: int) -> "Normalizer":
        return cls(mean=np.zeros(n_features, np.float32), std=np.ones(n_features, np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> "Normalizer":
        return cls(mean=np.asarray(data["mean"], np.float32), std=np.asarray(data["std"], np.float32))
