"""Generated audio: three synthetic "genres" (never real music), written as clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


SR = 22_050


GENRES = ("drone", "clicks", "chirp")


def synth(genre: str, seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    """Three synthetic "genres" with different spectra and rhythm, varied by seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    if genre == "drone":  # low sustained harmonics
        f0 = rng.uniform(80, 160)
        y = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 5))
    elif genre == "clicks":  # broadband percussive pulses
        y = np.zeros_like(t)
        period = int(sr / rng.uniform(3, 6))
        for s in range(0, len(t), period):
            n = min(800, len(t) - s)
            y[s : s + n] += rng.normal(size=n) * np.exp(-np.arange(n) / 120)
    else:  # high sweeping tones
        f = rng.uniform(2000, 3000) + 1500 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t)
        y = np.sin(2 * np.pi * np.cumsum(f) / sr)
    y = y + 0.02 * rng.normal(size=len(t))
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


def set_flac_length(data: bytes, frames: int) -> bytes:
    """The same FLAC with STREAMINFO's 36-bit total-samples field set to ``frames`` (0: unknown,
    as the format allows)."""
    assert data[:4] == b"fLaC"
    head = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1) | frames
    return data[:18] + head.to_bytes(8, "big") + data[26:]


def write_clip(path: Path, genre: str, seconds: float = 2.0, seed: int = 0, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, synth(genre, seconds, seed), SR, **kw)
    return path


def music(folder: Path, n: int = 9, seconds: float = 2.0, offset: int = 0) -> list[Path]:
    return [write_clip(folder / GENRES[i % 3] / f"track-{i + offset:03d}.wav", GENRES[i % 3], seconds=seconds,
                       seed=1000 + i + offset) for i in range(n)]
