"""A compact audio fingerprint that tells the same recording in another file from another song.

The fingerprint is the Haitsma–Kalker scheme ("A Highly Robust Audio Fingerprinting System",
ISMIR 2002) on the middle ``WINDOW_S`` seconds of a track at 16 kHz: every 20 ms, 32 bits, one
per pair of neighbouring bands among 33 log-spaced bands from 300 to 3000 Hz; a bit is set when
the energy difference of its two bands grew since the previous frame. Signs of energy
differences do not change with gain, and coarse bands below 3 kHz survive lossy codecs and
resampling. The middle of the track moves by half of what is cut from either end, so two files
of one recording whose ends were trimmed differently are compared at every offset up to
``MAX_SHIFT_S``.

``distance`` is the bit error rate at the best offset: about 0.5 between unrelated audio, below
0.2 for a re-encoded file; ``SAME_RECORDING`` is the threshold the catalog uses.
"""

from __future__ import annotations

import numpy as np

from .audio import Audio, Excerpts

SR = 16000
WINDOW_S = 10.0  # the stretch fingerprinted, centred on the middle of the track
HOP = 320  # 20 ms
N_FFT = 2048
BANDS = 33  # → 32 bits a frame
F_LO, F_HI = 300.0, 3000.0
MAX_SHIFT_S = 1.5  # the largest offset between two files' middles that ``distance`` tries
MIN_OVERLAP = 0.6  # of the shorter fingerprint, at any offset tried
SAME_RECORDING = 0.30  # bit error rate at or below which two fingerprints are one recording
VERSION = 1  # first byte of a stored fingerprint: a change of scheme makes old ones unreadable


def window(n_samples: int, sr: int = SR) -> tuple[int, int]:
    """The samples ``[start, stop)`` of a track of ``n_samples`` the fingerprint reads."""
    half = int(WINDOW_S * sr) // 2
    mid = n_samples // 2
    return max(0, mid - half), min(n_samples, mid + half)


def _band_matrix() -> np.ndarray:
    """(BANDS, N_FFT // 2 + 1): which FFT bins sum into each band."""
    edges = np.geomspace(F_LO, F_HI, BANDS + 1)
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SR)
    m = np.zeros((BANDS, len(freqs)), np.float32)
    for b in range(BANDS):
        m[b, (freqs >= edges[b]) & (freqs < edges[b + 1])] = 1.0
    return m


_BANDS = _band_matrix()
_WINDOW = np.hanning(N_FFT).astype(np.float32)
_WEIGHTS = (1 << np.arange(BANDS - 1, dtype=np.uint64)).astype(np.uint32)


def fingerprint(audio: Audio | Excerpts) -> bytes | None:
    """The fingerprint of decoded 16 kHz audio; None for digital silence, audio too short to
    fingerprint (under 0.14 s), audio at another rate, or ``Excerpts`` that do not hold
    ``window(n_samples)`` (``embedding.features.decode_for_features`` decodes it)."""
    if audio.sr != SR or audio.is_silent:
        return None
    n = audio.n_samples if isinstance(audio, Excerpts) else len(audio.samples)
    lo, hi = window(n)
    try:
        y = audio.span(lo, hi) if isinstance(audio, Excerpts) else audio.samples[lo:hi]
    except ValueError:  # not decoded
        return None
    if len(y) < N_FFT + HOP:
        return None
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(y, np.float32), N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=1)) ** 2
    energy = power.astype(np.float32) @ _BANDS.T  # (frames, BANDS)
    diff = energy[:, :-1] - energy[:, 1:]
    bits = (diff[1:] - diff[:-1]) > 0  # (frames - 1, BANDS - 1)
    words = (bits.astype(np.uint32) * _WEIGHTS).sum(axis=1, dtype=np.uint32)
    return bytes([VERSION]) + words.astype("<u4").tobytes()


def words(fp: bytes) -> np.ndarray:
    """A stored fingerprint as its 32-bit words (one per 20 ms)."""
    if not fp or fp[0] != VERSION:
        raise ValueError("not a fingerprint of this scheme")
    return np.frombuffer(fp, dtype="<u4", offset=1)


def distance(a: bytes | np.ndarray, b: bytes | np.ndarray, *, max_shift_s: float = MAX_SHIFT_S) -> float:
    """The bit error rate of two fingerprints at the offset (up to ``max_shift_s``) where they
    agree best: 0 for the same audio, about 0.5 for unrelated audio; 1.0 when they do not
    overlap enough to compare.

    The middle of ``a`` is slid along ``b``: every offset is scored on a quarter of the frames
    (aligned frames, so the best offset stands out as clearly), and the best few again on all."""
    wa = words(a) if isinstance(a, (bytes, bytearray)) else a
    wb = words(b) if isinstance(b, (bytes, bytearray)) else b
    reach = int(max_shift_s * SR / HOP)
    core = len(wa) - 2 * reach
    if core < MIN_OVERLAP * min(len(wa), len(wb)) or len(wb) < core:
        return _distance_slow(wa, wb, reach)
    x = wa[reach:reach + core]
    windows = np.lib.stride_tricks.sliding_window_view(wb, core)  # start in b: 0 .. len(b) - core
    coarse = np.bitwise_count(windows[:, ::4] ^ x[::4]).sum(axis=1, dtype=np.int64)
    best = 1.0
    for start in np.argsort(coarse, kind="stable")[:3]:
        for s in range(max(0, start - 2), min(len(windows), start + 3)):
            errors = int(np.bitwise_count(windows[s] ^ x).sum(dtype=np.int64))
            best = min(best, errors / (32.0 * core))
    return best


def _distance_slow(wa: np.ndarray, wb: np.ndarray, reach: int) -> float:
    """``distance`` for short fingerprints: every offset up to ``reach`` frames, on all frames."""
    need = max(1, int(MIN_OVERLAP * min(len(wa), len(wb))))
    best = 1.0
    for shift in range(-reach, reach + 1):
        x = wa[max(0, shift):]
        y = wb[max(0, -shift):]
        m = min(len(x), len(y))
        if m < need:
            continue
        errors = int(np.bitwise_count(x[:m] ^ y[:m]).sum(dtype=np.int64))
        best = min(best, errors / (32.0 * m))
    return best
