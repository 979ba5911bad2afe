"""Frame features cut into fixed-length segments: musicnn patches, log-mel or MFCC with deltas.

Features are computed once over the whole track and then windowed, so overlapping
segments cost nothing extra and training can draw random crops from the same frames.

``kind="musicnn"`` (the default recipe of ``sonicsort train``, ``FeatureConfig.musicnn()``)
is the input of the pretrained front end (``embedding.musicnn``): 16 kHz, 96-band
log-compressed mel patches of 187 frames (3 s), back to back, at most ``max_patches`` of
them spread over a long track. ``logmel`` and ``mfcc`` feed the v1 frame BiLSTM.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .audio import Audio, AudioSource, DecodeLimits, Excerpts, load_audio, load_excerpts, segment_starts
from .errors import ModelError

FEATURE_KINDS = ("musicnn", "logmel", "mfcc")
# the cap on a track's musicnn patches: a 4-minute track costs what an 18 s clip costs
DEFAULT_MAX_PATCHES = 6


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes a frame sequence. Round-trips through ``to_dict``/``from_dict``.

    Parameters
    ----------
    kind : "logmel" (the dataclass default), "mfcc" (with first and second deltas when
        ``deltas``) or "musicnn" (patches for the pretrained front end; build it with
        ``FeatureConfig.musicnn()``, which sets the rate, STFT and patch length it needs)
    sr : sample rate in Hz the audio is resampled to
    n_fft, hop_length : STFT window and hop in samples
    n_mels : mel bands (log-mel features, and the MFCC filterbank)
    n_mfcc : coefficients when ``kind == "mfcc"``
    deltas : append delta and delta-delta to MFCCs
    segment_seconds : length of one model input
    segment_hop_seconds : hop between segments at prediction time
    max_patches : musicnn only: at most this many patches per track, spread evenly over it
        (0: every patch)
    tag_inputs : musicnn only: the head also reads the front end's 50 tag logits beside
        its 200 penultimate features (``musicnn.head_inputs``). ``FeatureConfig.musicnn()``
        turns it on (the shipped recipe); the dataclass default stays off so that a bundle
        saved before the option existed loads as it was trained, reading the features only
    """

    kind: str = "logmel"
    sr: int = 22_050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 96
    n_mfcc: int = 20
    deltas: bool = True
    fmax: float = 11_025.0
    segment_seconds: float = 3.0
    segment_hop_seconds: float = 1.5
    max_patches: int = 0
    tag_inputs: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, not {self.kind!r}")
        if self.segment_seconds <= 0 or self.segment_hop_seconds <= 0:
            raise ValueError("segment_seconds and segment_hop_seconds must be positive")
        if self.max_patches < 0:
            raise ValueError("max_patches must be 0 (no cap) or positive")
        if self.tag_inputs and self.kind != "musicnn":
            raise ValueError(f"tag_inputs are the musicnn front end's tags; this is a {self.kind!r} model")
        if self.kind == "musicnn":
            from . import musicnn as m

            fixed = {"sr": m.SR, "n_fft": m.N_FFT, "hop_length": m.HOP_LENGTH, "n_mels": m.N_MELS}
            wrong = {k: getattr(self, k) for k, v in fixed.items() if getattr(self, k) != v}
            if wrong:
                raise ValueError(f"musicnn features are fixed at {fixed}; use FeatureConfig.musicnn(), not {wrong}")

    @classmethod
    def musicnn(cls, *, max_patches: int = DEFAULT_MAX_PATCHES, tag_inputs: bool = True) -> "FeatureConfig":
        """The pretrained front end's input: 16 kHz, n_fft 512, hop 256, 96 bands, 3 s patches;
        the head reads the patch features and the tag logits (the shipped recipe)."""
        from . import musicnn as m

        patch_s = (m.N_FRAMES - 1) * m.HOP_LENGTH / m.SR
        return cls(kind="musicnn", sr=m.SR, n_fft=m.N_FFT, hop_length=m.HOP_LENGTH, n_mels=m.N_MELS,
                   fmax=m.SR / 2, segment_seconds=patch_s, segment_hop_seconds=patch_s, max_patches=max_patches,
                   tag_inputs=tag_inputs)

    @property
    def is_sequence(self) -> bool:
        """Patches go through the front end and one BiLSTM reads the track's patch sequence."""
        return self.kind == "musicnn"

    @property
    def n_frames(self) -> int:
        """Frames per segment."""
        if self.kind == "musicnn":
            from .musicnn import N_FRAMES

            return N_FRAMES
        return int(round(self.segment_seconds * self.sr / self.hop_length)) + 1

    @property
    def hop_frames(self) -> int:
        if self.kind == "musicnn":
            return self.n_frames
        return max(1, int(round(self.segment_hop_seconds * self.sr / self.hop_length)))

    @property
    def n_features(self) -> int:
        if self.kind in ("logmel", "musicnn"):
            return self.n_mels
        return self.n_mfcc * (3 if self.deltas else 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def track_frames(audio: Audio, config: FeatureConfig) -> np.ndarray:
    """Unnormalised features of a whole track.

    Parameters
    ----------
    audio : decoded mono audio at ``config.sr``
    config : feature settings

    Returns
    -------
    np.ndarray, shape (n_total_frames, n_features), float32.
    A track shorter than one segment is zero-padded to one segment first.
    """
    import librosa

    if audio.sr != config.sr:
        raise ModelError(f"audio at {audio.sr} Hz but features expect {config.sr} Hz")
    if config.kind == "musicnn":
        from .musicnn import log_mel

        return log_mel(audio.samples, sr=audio.sr)
    y = audio.samples
    seg_samples = int(round(config.segment_seconds * config.sr))
    if len(y) < seg_samples:
        y = np.pad(y, (0, seg_samples - len(y)))
    mel = librosa.feature.melspectrogram(
        y=y, sr=config.sr, n_fft=config.n_fft, hop_length=config.hop_length,
        n_mels=config.n_mels, fmax=config.fmax, power=2.0,
    )
    logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    if config.kind == "logmel":
        feats = logmel
    else:
        mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=config.n_mfcc)
        parts = [mfcc]
        if config.deltas:
            parts += [librosa.feature.delta(mfcc, order=1), librosa.feature.delta(mfcc, order=2)]
        feats = np.concatenate(parts, axis=0)
    # -100 dB floor keeps digital silence finite and comparable across tracks
    return np.maximum(feats.T, -100.0).astype(np.float32)


def segment_frames(frames: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Cut a track's frames into overlapping segments.

    Parameters
    ----------
    frames : shape (n_total_frames, n_features)

    Returns
    -------
    np.ndarray, shape (n_segments, n_frames, n_features)
    """
    if config.kind == "musicnn":
        from .musicnn import patches_of

        return patches_of(frames, max_patches=config.max_patches or None)
    n = config.n_frames
    if len(frames) < n:
        frames = np.pad(frames, ((0, n - len(frames)), (0, 0)), mode="edge")
    starts = segment_starts(len(frames), segment_len=n, hop_len=config.hop_frames)
    return np.stack([frames[s : s + n] for s in starts]).astype(np.float32)


def decode_for_features(source: AudioSource, config: FeatureConfig, *, max_duration_s: float | None = None,
                        limits: DecodeLimits | None = None) -> Audio | Excerpts:
    """Decode what ``segment_features`` reads of ``source``, and no more, within ``limits``
    (``embedding.audio.DecodeLimits``; ``max_duration_s`` overrides its duration).

    With a cap on musicnn patches that is only the capped patches' stretches
    (``load_excerpts``: a 20-minute track decodes about 12 s); otherwise the whole track.
    """
    if config.kind == "musicnn" and config.max_patches:
        from .musicnn import patch_spans

        return load_excerpts(source, lambda n: patch_spans(n, max_patches=config.max_patches),
                             sr=config.sr, max_duration_s=max_duration_s, limits=limits)
    return load_audio(source, sr=config.sr, max_duration_s=max_duration_s, limits=limits)


def segment_features(audio: Audio | Excerpts, config: FeatureConfig) -> np.ndarray:
    """Audio → segments of frames, shape (n_segments, n_frames, n_features), unnormalised.

    ``Excerpts`` (from ``decode_for_features``) serve the musicnn recipe only."""
    if audio.sr != config.sr:
        raise ModelError(f"audio at {audio.sr} Hz but features expect {config.sr} Hz")
    if config.kind == "musicnn":
        from .musicnn import log_mel_patches

        return log_mel_patches(audio if isinstance(audio, Excerpts) else audio.samples, sr=audio.sr,
                               max_patches=config.max_patches or None)
    if isinstance(audio, Excerpts):
        raise ModelError(f"{config.kind} features need the whole track, not excerpts")
    return segment_frames(track_frames(audio, config), config)


@dataclass(frozen=True)
class Normalizer:
    """Per-feature standardisation learned from training frames."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def identity(cls, n_features: int) -> "Normalizer":
        """No change (the musicnn front end normalises its input itself)."""
        return cls(mean=np.zeros(n_features, np.float32), std=np.ones(n_features, np.float32))

    @classmethod
    def fit(cls, frames: list[np.ndarray] | np.ndarray) -> "Normalizer":
        """``frames``: arrays whose last axis is the feature axis."""
        if isinstance(frames, list):
            flat = np.concatenate([f.reshape(-1, f.shape[-1]) for f in frames])
        else:
            flat = frames.reshape(-1, frames.shape[-1])
        flat = flat.astype(np.float64)
        return cls(mean=flat.mean(axis=0).astype(np.float32),
                   std=np.maximum(flat.std(axis=0), 1e-3).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> "Normalizer":
        return cls(mean=np.asarray(data["mean"], np.float32), std=np.asarray(data["std"], np.float32))
