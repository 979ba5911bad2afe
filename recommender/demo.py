"""The demo library: generated clips with tags, for `make demo` when no music folder is given.

The generated clips are not music, so their predicted genres show the pipeline working
end to end, not the model's accuracy (see the model card for that).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SR = 22_050


def _clip(kind: str, seconds: float, seed: int, variant: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tempo_hz = 2.0 * (1 + 0.08 * variant)  # each variant a little faster and higher
    shift = 2 ** (variant / 12)
    beat = (np.sin(2 * np.pi * tempo_hz * t) > 0.95).astype(np.float32)
    if kind == "kick-and-bass":
        y = 0.6 * np.sin(2 * np.pi * 55 * shift * t) * (0.5 + 0.5 * beat) + 0.4 * beat * rng.normal(size=len(t))
    elif kind == "sine-chords":
        y = sum(np.sin(2 * np.pi * f * shift * t) for f in (261.6, 329.6, 392.0)) / 3
    elif kind == "noise-bursts":
        y = rng.normal(size=len(t)) * (np.sin(2 * np.pi * 2 * tempo_hz * t) > 0)
    elif kind == "slow-pad":
        y = sum(np.sin(2 * np.pi * f * shift * t + rng.uniform(0, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.2 * t))
                for f in (110.0, 164.8, 220.0, 277.2)) / 4
    elif kind == "hihat-groove":
        hats = (np.sin(2 * np.pi * 4 * tempo_hz * t) > 0.9) * rng.normal(size=len(t))
        y = 0.5 * hats + 0.5 * np.sin(2 * np.pi * 82.4 * shift * t) * beat
    else:  # arpeggio
        notes = 440 * shift * 2 ** (np.array([0, 3, 7, 12]) / 12)
        y = np.sin(2 * np.pi * notes[(t * 4 * tempo_hz).astype(int) % 4] * t)
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


DEMO_STYLES = ("kick-and-bass", "sine-chords", "noise-bursts", "arpeggio", "slow-pad", "hihat-groove")


def write_demo_library(folder: Path, *, per_style: int = 6, seconds: float = 12.0) -> list[Path]:
    """``per_style`` variants of each style as tagged FLAC files (title, artist, album): a small
    library to ingest and serve. Existing files are kept, so a second run is instant."""
    import soundfile as sf
    from mutagen.flac import FLAC

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s_i, kind in enumerate(DEMO_STYLES):
        for v in range(per_style):
            p = folder / kind / f"{kind}-{v + 1:02d}.flac"
            if not p.exists():
                p.parent.mkdir(exist_ok=True)
                tmp = p.with_name("." + p.name)
                sf.write(tmp, _clip(kind, seconds, 100 * s_i + v, v), SR, format="FLAC")
                f = FLAC(tmp)
                f["title"] = f"{kind.replace('-', ' ').title()} no. {v + 1}"
                f["artist"] = f"The {kind.split('-')[0].title()} Ensemble {'AB'[v % 2]}"
                f["album"] = "sonicsort demo (generated)"
                f.save()
                tmp.replace(p)
            paths.append(p)
    return paths


def ingest_demo(settings, roots: list[Path]) -> dict:
    """Ingest the demo's folders into ``settings``' catalog; the ingest report as a dict.

    ``sonicsort demo`` runs this in a spawned process, so the server it forks afterwards
    never has TensorFlow loaded."""
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .service import Service

    svc = Service(settings)
    try:
        return svc.ingest(roots).to_dict()
    finally:
        svc.close()
