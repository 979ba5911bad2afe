"""What training and evaluation read of a labelled track: its log-mel frames, the MFCC
statistics of the classical baseline, its file hash (for leak checks) and, once computed,
the frozen front end's features of its patches."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .audio import load_audio
from .data import LabelledTrack, sha256_of
from .errors import AudioError, DatasetError
from .features import FeatureConfig, segment_frames, track_frames


@dataclass
class TrackFeatures:
    """Everything training and evaluation need from one decoded track."""

    track: LabelledTrack
    frames: np.ndarray  # (n_total_frames, n_features), unnormalised
    mfcc_stats: np.ndarray  # (40,): mean and std of 20 MFCCs, the classical baseline's input
    sha256: str
    # filled by fit and scoring: front-end features of patches at a hop of half a patch,
    # (n_positions, 200), and of the patches prediction uses, (n_patches, 200)
    dense_features: np.ndarray | None = None
    patch_features: np.ndarray | None = None
    patch_tags: np.ndarray | None = None  # (n_patches, 50): the front end's tags of those patches


def mfcc_stats(samples: np.ndarray, sr: int) -> np.ndarray:
    """Per-track MFCC mean and standard deviation, shape (40,), as the classic genre papers use."""
    import librosa

    mfcc = librosa.feature.mfcc(y=samples, sr=sr, n_mfcc=20)
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)]).astype(np.float32)


def _extract_one(args: tuple[LabelledTrack, dict[str, Any]]) -> TrackFeatures:
    track, fc = args
    config = FeatureConfig.from_dict(fc)
    audio = load_audio(track.path, sr=config.sr)
    return TrackFeatures(track, track_frames(audio), mfcc_stats(audio.samples, audio.sr), sha256_of(track.path))


def extract_features(
    tracks: Sequence[LabelledTrack], config: FeatureConfig, *, workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[TrackFeatures]:
    """Decode and featurise tracks in worker processes. Undecodable tracks are an error."""
    workers = workers or min(4, os.cpu_count() or 1)
    jobs = [(t, config.to_dict()) for t in tracks]
    out: list[TrackFeatures] = []
    if workers <= 1 or len(jobs) < 8:
        for i, job in enumerate(jobs):
            out.append(_run_job(job))
            if progress:
                progress(i + 1, len(jobs))
        return out
    # spawn: TensorFlow may already be imported, and forking it is unsafe
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        for i, feats in enumerate(pool.map(_run_job, jobs, chunksize=4)):
            out.append(feats)
            if progress:
                progress(i + 1, len(jobs))
    return out


def _run_job(job):
    try:
        return _extract_one(job)
    except AudioError as exc:
        raise DatasetError(f"cannot use training track: {exc}") from None



def add_frontend_features(tracks: list[TrackFeatures], frontend, config: FeatureConfig, *, dense: bool) -> None:
    """Fill ``patch_features`` (the patches prediction uses) and, with ``dense``,
    ``dense_features`` (patches every half patch) of each track, in shared batches."""
    from .musicnn import frontend_outputs, head_inputs

    n = config.n_frames
    todo: list[tuple[TrackFeatures, str, np.ndarray]] = []
    for t in tracks:
        if t.patch_features is None:
            todo.append((t, "patch_features", segment_frames(t.frames, config)))
        if dense and t.dense_features is None:
            starts = range(0, max(1, len(t.frames) - n + 1), max(1, n // 2))
            todo.append((t, "dense_features", np.stack([t.frames[s:s + n] for s in starts])))
    for i in range(0, len(todo), 16):
        part = todo[i:i + 16]
        feats, tags = frontend_outputs(frontend, np.concatenate([p for _, _, p in part]))
        feats = np.asarray(head_inputs(feats, tags, tag_inputs=config.tag_inputs), np.float32)
        start = 0
        for t, attr, p in part:
            setattr(t, attr, feats[start:start + len(p)])
            if attr == "patch_features":
                t.patch_tags = tags[start:start + len(p)]
            start += len(p)
