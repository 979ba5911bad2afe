"""The demo: generate a few clips and predict their genres with the shipped model.

The generated clips are not music, so their predicted genres show the pipeline working
end to end, not the model's accuracy (see the model card for that).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SR = 22_050


def _clip(kind: str, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    beat = (np.sin(2 * np.pi * 2.0 * t) > 0.95).astype(np.float32)
    if kind == "kick-and-bass":
        y = 0.6 * np.sin(2 * np.pi * 55 * t) * (0.5 + 0.5 * beat) + 0.4 * beat * rng.normal(size=len(t))
    elif kind == "sine-chords":
        y = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)) / 3
    elif kind == "noise-bursts":
        y = rng.normal(size=len(t)) * (np.sin(2 * np.pi * 4 * t) > 0)
    else:  # arpeggio
        notes = 440 * 2 ** (np.array([0, 3, 7, 12]) / 12)
        y = np.sin(2 * np.pi * notes[(t * 8).astype(int) % 4] * t)
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


DEMO_CLIPS = ("kick-and-bass", "sine-chords", "noise-bursts", "arpeggio")


def write_demo_clips(folder: Path, *, seconds: float = 10.0) -> list[Path]:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, kind in enumerate(DEMO_CLIPS):
        p = folder / f"{kind}.flac"
        if not p.exists():
            sf.write(p, _clip(kind, seconds, i), SR)
        paths.append(p)
    return paths
