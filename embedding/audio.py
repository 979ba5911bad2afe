"""Decoding audio into mono float32 samples at a fixed rate, and cutting segments.

Decoding goes through libsndfile (``soundfile``), which reads wav, flac, ogg/vorbis,
opus, mp3 and au from a path, bytes or a file object. Formats libsndfile cannot read
(m4a/aac) fall back to librosa's audioread path when a system decoder exists.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf

from .errors import AudioError

log = logging.getLogger(__name__)

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

TARGET_SR = 22_050
MIN_DURATION_S = 0.5
DEFAULT_MAX_DURATION_S = 20 * 60.0
# Peak below this (about -80 dBFS) counts as digital silence.
SILENCE_PEAK = 1e-4
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".au", ".snd", ".aiff", ".aif", ".m4a")


@dataclass(frozen=True)
class Audio:
    """Decoded mono audio.

    Attributes
    ----------
    samples : np.ndarray, shape (n_samples,), float32 in [-1, 1]
    sr : int, sample rate in Hz
    is_silent : bool, True when the whole clip is (near-)digital silence
    """

    samples: np.ndarray
    sr: int
    is_silent: bool

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sr)


def _describe(source: AudioSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return "<uploaded audio>"


def _as_file(source: AudioSource):
    """Return something soundfile can open, plus the raw bytes when we had to read them."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return io.BytesIO(data), data
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{path}: no such file")
        if path.is_dir():
            raise AudioError(f"{path}: is a directory, not an audio file")
        if path.stat().st_size == 0:
            raise AudioError(f"{path}: file is empty")
        return str(path), None
    # file object: read it once so we can retry with another decoder
    data = source.read()
    if not isinstance(data, (bytes, bytearray)):
        raise AudioError("file object must be opened in binary mode")
    return io.BytesIO(bytes(data)), bytes(data)


def _decode_fallback(source: AudioSource, data: bytes | None, name: str, max_duration_s: float):
    """m4a and friends: librosa → audioread (needs a system decoder such as ffmpeg)."""
    import warnings

    import librosa

    if data is not None:
        raise AudioError(f"{name}: not a decodable audio format")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            y, sr = librosa.load(os.fspath(source), sr=None, mono=False, duration=max_duration_s + 1.0)
        except Exception as exc:  # audioread raises a zoo of types
            raise AudioError(f"{name}: not a decodable audio format ({type(exc).__name__})") from None
    y = np.asarray(y, dtype=np.float32)
    return (y.T if y.ndim == 2 else y), int(sr)


_TEXT_BYTES = set(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def _looks_like_text(head: bytes) -> bool:
    """No audio container starts with only printable ASCII; decoders (mpg123) would scan
    such a file for frames and print notes to stderr, so text is refused up front."""
    return len(head) > 0 and all(b in _TEXT_BYTES for b in head)


def load_audio(
    source: AudioSource,
    *,
    sr: int = TARGET_SR,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    min_duration_s: float = MIN_DURATION_S,
) -> Audio:
    """Decode ``source`` to mono float32 at ``sr`` Hz.

    Parameters
    ----------
    source : path, bytes or binary file object
    sr : target sample rate in Hz
    max_duration_s : longer audio is refused (checked from the header before decoding
        where the format allows)
    min_duration_s : shorter audio is refused

    Returns
    -------
    Audio with ``samples`` of shape (n_samples,)

    Raises
    ------
    AudioError
        empty, truncated or non-audio input, too short, too long.
    """
    import librosa

    name = _describe(source)
    if isinstance(source, (bytes, bytearray, memoryview)) and len(source) == 0:
        raise AudioError(f"{name}: file is empty")
    handle, data = _as_file(source)
    if data is not None and len(data) == 0:
        raise AudioError(f"{name}: file is empty")

    if isinstance(handle, io.BytesIO):
        head = handle.getvalue()[:512]
    else:
        with open(handle, "rb") as fh:
            head = fh.read(512)
    if _looks_like_text(head):
        raise AudioError(f"{name}: not an audio file (it holds text)")

    try:
        with sf.SoundFile(handle) as f:
            native_sr = int(f.samplerate)
            if f.frames > 0 and f.frames / native_sr > max_duration_s:
                raise AudioError(
                    f"{name}: audio is {f.frames / native_sr:.0f} s long, over the limit of {max_duration_s:.0f} s"
                )
            max_frames = int((max_duration_s + 1.0) * native_sr)
            y = f.read(frames=max_frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
        msg = str(exc).lower()
        if "format not recognised" in msg or "unknown format" in msg or "unimplemented" in msg:
            y, native_sr = _decode_fallback(source, data, name, max_duration_s)
            y = y.reshape(len(y), -1)
        elif msg.startswith("error opening"):
            # libsndfile's open errors ("file does not exist", "unknown error in flac
            # decoder") mislead: the file exists, its bytes are not audio it can read
            raise AudioError(f"{name}: not a decodable audio file (unrecognised format, or damaged/truncated)") from None
        else:
            raise AudioError(f"{name}: cannot decode audio ({str(exc).strip() or type(exc).__name__})") from None

    if y.size == 0:
        raise AudioError(f"{name}: no audio frames (empty or truncated file)")
    if not np.all(np.isfinite(y)):
        raise AudioError(f"{name}: audio contains invalid (NaN/infinite) samples")
    duration_s = y.shape[0] / native_sr
    if duration_s > max_duration_s:
        raise AudioError(f"{name}: audio is over the limit of {max_duration_s:.0f} s")
    if duration_s < min_duration_s:
        raise AudioError(f"{name}: audio is {duration_s:.2f} s long, shorter than the minimum {min_duration_s} s")

    mono = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]
    if native_sr != sr:
        mono = librosa.resample(mono, orig_sr=native_sr, target_sr=sr, res_type="soxr_hq")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    is_silent = bool(np.max(np.abs(mono)) < SILENCE_PEAK) if mono.size else True
    if is_silent:
        log.warning("%s: audio is silent; its prediction carries no information", name)
    return Audio(samples=mono, sr=sr, is_silent=is_silent)


def segment_starts(n_total: int, *, segment_len: int, hop_len: int) -> np.ndarray:
    """Start offsets of fixed-length windows covering ``n_total`` units.

    A final window is aligned to the end so the tail of the track is never dropped;
    a track shorter than one window yields one window (the caller pads).
    """
    if n_total <= segment_len:
        return np.zeros(1, dtype=np.int64)
    starts = list(range(0, n_total - segment_len + 1, hop_len))
    if starts[-1] + segment_len < n_total:
        starts.append(n_total - segment_len)
    return np.asarray(starts, dtype=np.int64)
