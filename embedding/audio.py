"""Decoding audio into mono float32 samples at a fixed rate, and cutting segments.

Decoding goes through libsndfile (``soundfile``), which reads wav, flac, ogg/vorbis,
opus, mp3 and au from a path, bytes or a file object. Formats libsndfile cannot read
(m4a/aac) fall back to librosa's audioread path when a system decoder exists.

What one file may cost is bounded (``DecodeLimits``): its channels, sample rate, duration
and decoded samples (channels × frames) are checked from the header before anything is
decoded, and decoding runs in blocks that are mixed down to mono and resampled as they
come, so memory holds one block plus the mono result whatever the file's channels and rate.
A header that gives no length is read as a stream with the same caps. A file cut short
(fewer frames than its header promises, a WAV whose data chunk runs past the end, an Ogg
stream without its end-of-stream page) is refused as truncated.
"""

from __future__ import annotations

import dataclasses
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
from .integrity import check_complete, check_container, looks_like_text

log = logging.getLogger(__name__)

AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

TARGET_SR = 22_050
MIN_DURATION_S = 0.5
DEFAULT_MAX_DURATION_S = 20 * 60.0
# Peak below this (about -80 dBFS) counts as digital silence.
SILENCE_PEAK = 1e-4
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".au", ".snd", ".aiff", ".aif", ".m4a")
# samples (all channels) decoded per block: 4 MB of float32
_BLOCK_SAMPLES = 1 << 20
# a frame count at or above this is libsndfile's "unknown" (a FLAC header may leave it unset)
_UNKNOWN_FRAMES = 1 << 40


@dataclass(frozen=True)
class DecodeLimits:
    """What decoding one file may cost; a file beyond any limit is refused with a message that
    names the limit and its ``SONICSORT_*`` setting (``recommender.config.Settings``).

    Attributes
    ----------
    max_duration_s : longest audio accepted (``SONICSORT_MAX_DURATION_S``)
    max_channels : most channels (``SONICSORT_MAX_CHANNELS``)
    max_sample_rate : highest native sample rate in Hz (``SONICSORT_MAX_SAMPLE_RATE``)
    max_decoded_samples : most samples decoded, channels × frames
        (``SONICSORT_MAX_DECODED_SAMPLES``; the default is 20 minutes of 96 kHz stereo). It bounds
        the time a file costs: an 8-channel 192 kHz file of 20 minutes holds 1.8 billion.
    """

    max_duration_s: float = DEFAULT_MAX_DURATION_S
    max_channels: int = 8
    max_sample_rate: int = 192_000
    max_decoded_samples: int = 2 * 96_000 * 1200

    def with_duration(self, max_duration_s: float | None) -> "DecodeLimits":
        return self if max_duration_s is None else dataclasses.replace(self, max_duration_s=float(max_duration_s))

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DecodeLimits":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (float(v) if k == "max_duration_s" else int(v)) for k, v in d.items() if k in names})


DEFAULT_LIMITS = DecodeLimits()


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
    if looks_like_text(head):
        raise AudioError(f"{name}: not an audio file (it holds text)")
    return handle, data, name


def _mix_down(y: np.ndarray) -> np.ndarray:
    """Decoded frames (n, channels) → mono (n,): the channels' mean."""
    return y.mean(axis=1) if y.shape[1] > 1 else y[:, 0].copy()


def _mono_at(y: np.ndarray, native_sr: int, sr: int) -> np.ndarray:
    """Decoded frames (n, channels) → mono float32 at ``sr``: the mix-down and resampler an
    excerpt goes through (``_read_mono`` streams the same ones over a whole decode)."""
    import librosa

    mono = _mix_down(y)
    if native_sr != sr:
        mono = librosa.resample(mono, orig_sr=native_sr, target_sr=sr, res_type="soxr_hq")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _check_header(f: sf.SoundFile, name: str, lim: DecodeLimits) -> bool:
    """Refuse, before decoding, a file whose header is beyond ``lim``; True when it gives a length."""
    channels, native_sr, frames = int(f.channels), int(f.samplerate), int(f.frames)
    if channels > lim.max_channels:
        raise AudioError(f"{name}: audio has {channels} channels, over the limit of {lim.max_channels} "
                         "(SONICSORT_MAX_CHANNELS)")
    if native_sr > lim.max_sample_rate:
        raise AudioError(f"{name}: audio is sampled at {native_sr} Hz, over the limit of {lim.max_sample_rate} Hz "
                         "(SONICSORT_MAX_SAMPLE_RATE)")
    if native_sr <= 0 or channels <= 0:
        raise AudioError(f"{name}: not a decodable audio file (its header gives no sample rate or channels)")
    known = 0 < frames < _UNKNOWN_FRAMES
    if known and frames / native_sr > lim.max_duration_s:
        raise AudioError(f"{name}: audio is {frames / native_sr:.0f} s long, over the limit of "
                         f"{lim.max_duration_s:.0f} s (SONICSORT_MAX_DURATION_S)")
    if known and frames * channels > lim.max_decoded_samples:
        raise AudioError(f"{name}: audio holds {frames * channels:,} samples ({channels} channels "
                         f"× {frames / native_sr:.0f} s at {native_sr} Hz), over the limit of "
                         f"{lim.max_decoded_samples:,} (SONICSORT_MAX_DECODED_SAMPLES)")
    return known


def _read_block(f: sf.SoundFile, frames: int, known: bool) -> np.ndarray:
    """Up to ``frames`` frames (frames, channels) float32 from where ``f`` stands.

    For a stream whose header gives no length, libsndfile reads to its end correctly, but
    ``SoundFile.read`` then seeks its bookkeeping position past the end, which fails and
    drops the block. There the block is read through soundfile's own libsndfile binding,
    without that seek."""
    if known:
        return f.read(frames=frames, dtype="float32", always_2d=True)
    try:
        from soundfile import _ffi, _snd
    except ImportError:  # another soundfile: its own read
        return f.read(frames=frames, dtype="float32", always_2d=True)
    buf = np.empty((frames, int(f.channels)), np.float32)
    got = int(_snd.sf_readf_float(f._file, _ffi.cast("float *", buf.ctypes.data), frames))
    if got < 0 or _snd.sf_error(f._file):
        raise sf.LibsndfileError(_snd.sf_error(f._file))
    return buf[:max(got, 0)]


def _read_mono(f: sf.SoundFile, name: str, lim: DecodeLimits, sr: int, known: bool) -> tuple[np.ndarray, int]:
    """Decode ``f`` from its start in blocks, each mixed down and resampled as it comes.

    Returns (mono float32 at ``sr``, native frames decoded). The caps of ``lim`` hold while
    reading, so a header that gives no (or a false) length costs no more than one that does.
    Mix-down and resampler are ``_mono_at``'s (the streaming soxr resampler at the same
    quality gives the one-shot call's samples). ``known``: the header gives the length."""
    import librosa

    channels, native_sr = int(f.channels), int(f.samplerate)
    cap_duration = int((lim.max_duration_s + 1.0) * native_sr)
    cap_samples = lim.max_decoded_samples // channels
    cap = min(cap_duration, cap_samples)
    block = max(4096, _BLOCK_SAMPLES // channels)
    stream = None
    if native_sr != sr:
        import soxr

        stream = soxr.ResampleStream(native_sr, sr, 1, dtype="float32", quality="HQ")
    out: list[np.ndarray] = []
    n = 0
    while n <= cap:
        y = _read_block(f, min(block, cap + 1 - n), known)
        if len(y) == 0:
            break
        n += len(y)
        if not np.all(np.isfinite(y)):
            raise AudioError(f"{name}: audio contains invalid (NaN/infinite) samples")
        mono = _mix_down(y)
        out.append(stream.resample_chunk(mono) if stream is not None else mono)
    if n > cap:
        if cap == cap_duration:
            raise AudioError(f"{name}: audio is over the limit of {lim.max_duration_s:.0f} s (SONICSORT_MAX_DURATION_S)")
        raise AudioError(f"{name}: audio holds more than {lim.max_decoded_samples:,} samples "
                         f"({channels} channels at {native_sr} Hz), over the limit (SONICSORT_MAX_DECODED_SAMPLES)")
    if stream is not None:
        out.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    mono = np.concatenate(out) if out else np.zeros(0, np.float32)
    del out
    if stream is not None:  # the length librosa.resample gives
        mono = librosa.util.fix_length(mono, size=int(np.ceil(n * sr / native_sr)))
    return np.ascontiguousarray(mono, dtype=np.float32), n


def load_audio(
    source: AudioSource,
    *,
    sr: int = TARGET_SR,
    max_duration_s: float | None = None,
    min_duration_s: float = MIN_DURATION_S,
    limits: DecodeLimits | None = None,
) -> Audio:
    """Decode ``source`` to mono float32 at ``sr`` Hz.

    Parameters
    ----------
    source : path, bytes or binary file object
    sr : target sample rate in Hz
    max_duration_s : longer audio is refused (checked from the header before decoding
        where the format allows); overrides ``limits.max_duration_s``
    min_duration_s : shorter audio is refused
    limits : what the file may cost (default ``DEFAULT_LIMITS``)

    Returns
    -------
    Audio with ``samples`` of shape (n_samples,)

    Raises
    ------
    AudioError
        empty, truncated or non-audio input, too short, beyond a limit of ``limits``.
    """
    lim = (limits or DEFAULT_LIMITS).with_duration(max_duration_s)
    max_duration_s = lim.max_duration_s
    handle, data, name = _prepare(source)
    try:
        with sf.SoundFile(handle) as f:
            native_sr = int(f.samplerate)
            known = _check_header(f, name, lim)
            mono, n_native = _read_mono(f, name, lim, sr, known)
            if known:
                check_complete(f, handle, name, n_native)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
        msg = str(exc).lower()
        if "format not recognised" in msg or "unknown format" in msg or "unimplemented" in msg:
            y, native_sr = _decode_fallback(source, data, name, max_duration_s)
            y = y.reshape(len(y), -1)
            if y.size and not np.all(np.isfinite(y)):
                raise AudioError(f"{name}: audio contains invalid (NaN/infinite) samples") from None
            n_native, mono = len(y), (_mono_at(y, native_sr, sr) if y.size else np.zeros(0, np.float32))
        elif msg.startswith("error opening"):
            # libsndfile's open errors ("file does not exist", "unknown error in flac
            # decoder") mislead: the file exists, its bytes are not audio it can read
            raise AudioError(f"{name}: not a decodable audio file (unrecognised format, or damaged/truncated)") from None
        else:
            raise AudioError(f"{name}: cannot decode audio ({str(exc).strip() or type(exc).__name__})") from None

    if n_native == 0:
        raise AudioError(f"{name}: no audio frames (empty or truncated file)")
    duration_s = n_native / native_sr
    if duration_s > max_duration_s:
        raise AudioError(f"{name}: audio is over the limit of {max_duration_s:.0f} s (SONICSORT_MAX_DURATION_S)")
    if duration_s < min_duration_s:
        raise AudioError(f"{name}: audio is {duration_s:.2f} s long, shorter than the minimum {min_duration_s} s")

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
    max_duration_s: float | None = None,
    min_duration_s: float = MIN_DURATION_S,
    whole_above: float = 0.6,
    limits: DecodeLimits | None = None,
) -> Excerpts:
    """Decode only the stretches of ``source`` that ``spans`` asks for, at ``sr`` Hz, mono.

    Parameters
    ----------
    source : path, bytes or binary file object
    spans : the track's length in samples at ``sr`` → the (start, stop) sample ranges wanted
    whole_above : when the wanted stretches (with their margins) cover more than this share
        of the track, the whole track is decoded and cut instead
    max_duration_s, min_duration_s, limits : as for ``load_audio``

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
    lim = (limits or DEFAULT_LIMITS).with_duration(max_duration_s)
    handle, data, name = _prepare(source)
    whole_source = data if data is not None else source
    try:
        with sf.SoundFile(handle) as f:
            native_sr, frames = int(f.samplerate), int(f.frames)
            if not _check_header(f, name, lim) or not f.seekable() or frames / native_sr < min_duration_s:
                raise _DecodeWhole
            check_container(f, handle, name)
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
        audio = load_audio(whole_source, sr=sr, min_duration_s=min_duration_s, limits=lim)
        return Excerpts.of(audio, spans(len(audio.samples)))
    peak = max((float(np.max(np.abs(y))) for _, y in pieces if y.size), default=0.0)
    is_silent = peak < SILENCE_PEAK
    if is_silent:
        log.warning("%s: audio is silent; its prediction carries no information", name)
    return Excerpts(n_samples=n, sr=sr, pieces=tuple(pieces), is_silent=is_silent)
