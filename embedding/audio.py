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
from math import gcd
from typing import BinaryIO, Callable, Sequence, Union

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


Spans = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class Excerpts:
    """Stretches of one track decoded without the rest of it: mono float32 at ``sr``.

    Attributes
    ----------
    n_samples : int, the whole track's length at ``sr`` (as a whole decode would give it)
    sr : int, sample rate in Hz
    pieces : tuple of (start, samples), sorted and disjoint: ``samples`` are the whole
        track's samples ``[start, start + len(samples))``
    is_silent : bool, True when the decoded audio is (near-)digital silence
    """

    n_samples: int
    sr: int
    pieces: tuple[tuple[int, np.ndarray], ...]
    is_silent: bool

    @property
    def duration_s(self) -> float:
        return self.n_samples / float(self.sr)

    def span(self, start: int, stop: int) -> np.ndarray:
        """The track's samples ``[start, stop)``; they must lie inside one decoded piece."""
        for a, y in self.pieces:
            if a <= start and stop <= a + len(y):
                return y[start - a : stop - a]
        raise ValueError(f"samples {start}:{stop} of the track were not decoded")

    @classmethod
    def of(cls, audio: Audio, spans: Spans) -> "Excerpts":
        """The given spans cut from a whole decode."""
        pieces = tuple((a, audio.samples[a:b]) for a, b in _merge(spans))
        return cls(n_samples=len(audio.samples), sr=audio.sr, pieces=pieces, is_silent=audio.is_silent)


def _merge(spans: Spans) -> list[tuple[int, int]]:
    """Sorted, disjoint (start, stop) ranges covering ``spans``; touching or overlapping ones join."""
    out: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in spans if b > a):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


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


def _prepare(source: AudioSource):
    """(handle soundfile can open, raw bytes or None, name for messages), after the cheap checks."""
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
    return handle, data, name


def _mono_at(y: np.ndarray, native_sr: int, sr: int) -> np.ndarray:
    """Decoded frames (n, channels) → mono float32 at ``sr``: the one mix-down and resampler
    both a whole decode and its excerpts go through, so they agree."""
    import librosa

    mono = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]
    if native_sr != sr:
        mono = librosa.resample(mono, orig_sr=native_sr, target_sr=sr, res_type="soxr_hq")
    return np.ascontiguousarray(mono, dtype=np.float32)


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
    handle, data, name = _prepare(source)
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

    mono = _mono_at(y, native_sr, sr)
    is_silent = bool(np.max(np.abs(mono)) < SILENCE_PEAK) if mono.size else True
    if is_silent:
        log.warning("%s: audio is silent; its prediction carries no information", name)
    return Audio(samples=mono, sr=sr, is_silent=is_silent)


class _DecodeWhole(Exception):
    """The excerpts cannot (or need not) be read on their own: decode the whole track."""


# native samples decoded beyond each side of an excerpt, so the resampler's edges fall outside it
_RESAMPLE_MARGIN_S = 0.05


def load_excerpts(
    source: AudioSource,
    spans: Callable[[int], Spans],
    *,
    sr: int = TARGET_SR,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    min_duration_s: float = MIN_DURATION_S,
    whole_above: float = 0.6,
) -> Excerpts:
    """Decode only the stretches of ``source`` that ``spans`` asks for, at ``sr`` Hz, mono.

    Parameters
    ----------
    source : path, bytes or binary file object
    spans : the track's length in samples at ``sr`` → the (start, stop) sample ranges wanted
    whole_above : when the wanted stretches (with their margins) cover more than this share
        of the track, the whole track is decoded and cut instead
    max_duration_s, min_duration_s : as for ``load_audio``

    Returns
    -------
    Excerpts holding each wanted range, with the samples a whole decode by ``load_audio``
    gives there (the same decoder; resampled with a margin on each side, so they agree to
    float rounding).

    Notes
    -----
    The file is seeked, so a long track costs about what its excerpts do. A file whose
    header gives no length, one that cannot seek, a format libsndfile does not read, or a
    read that comes back short goes through ``load_audio`` and is cut afterwards, with the
    same errors ``load_audio`` raises.
    """
    handle, data, name = _prepare(source)
    whole_source = data if data is not None else source
    try:
        with sf.SoundFile(handle) as f:
            native_sr, frames = int(f.samplerate), int(f.frames)
            if frames <= 0 or not f.seekable() or frames / native_sr < min_duration_s:
                raise _DecodeWhole
            if frames / native_sr > max_duration_s:
                raise AudioError(f"{name}: audio is {frames / native_sr:.0f} s long, over the limit of {max_duration_s:.0f} s")
            n = frames if native_sr == sr else int(np.ceil(frames * sr / native_sr))
            wanted = _merge(spans(n))
            # a range of native samples that starts on a multiple of ``step`` starts on a whole target sample
            step = native_sr // gcd(native_sr, sr)
            margin = int(_RESAMPLE_MARGIN_S * native_sr) if native_sr != sr else 0
            ranges = []
            for a, b in wanted:
                lo = max(0, a * native_sr // sr - margin)
                ranges.append((lo - lo % step, min(frames, -(-b * native_sr // sr) + margin)))
            ranges = _merge(ranges)
            if sum(b - a for a, b in ranges) > whole_above * frames:
                raise _DecodeWhole
            pieces = []
            for lo, hi in ranges:
                f.seek(lo)
                y = f.read(hi - lo, dtype="float32", always_2d=True)
                if len(y) < hi - lo or not np.all(np.isfinite(y)):
                    raise _DecodeWhole  # damaged or truncated: the whole decode says what it is
                mono = _mono_at(y, native_sr, sr)
                first = lo * sr // native_sr
                for a, b in wanted:
                    if first <= a and b <= first + len(mono):
                        pieces.append((a, mono[a - first : b - first]))
            if len(pieces) != len(wanted):
                raise _DecodeWhole
    except AudioError:
        raise
    except (_DecodeWhole, sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        audio = load_audio(whole_source, sr=sr, max_duration_s=max_duration_s, min_duration_s=min_duration_s)
        return Excerpts.of(audio, spans(len(audio.samples)))
    peak = max((float(np.max(np.abs(y))) for _, y in pieces if y.size), default=0.0)
    is_silent = peak < SILENCE_PEAK
    if is_silent:
        log.warning("%s: audio is silent; its prediction carries no information", name)
    return Excerpts(n_samples=n, sr=sr, pieces=tuple(pieces), is_silent=is_silent)


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
