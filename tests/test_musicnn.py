"""The Keras port of musicnn against the original TensorFlow 1 graph, and its input pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedding.musicnn import (MSD_TAGS, N_FRAMES, N_MELS, PATCH_SAMPLES, SR, load_frontend, log_mel,
                               log_mel_patches, patch_starts, patches_of)

FIXTURE = Path(__file__).parent / "fixtures" / "musicnn_reference.npz"


@pytest.fixture(scope="module")
def frontend():
    return load_frontend()


def test_port_matches_the_original_graph(frontend):
    """Reference outputs of the wheel's own graph, computed by scripts/convert_musicnn.py."""
    ref = np.load(FIXTURE)
    penultimate, taggram = (np.asarray(o) for o in frontend(ref["patches"], training=False))
    assert taggram.shape == (len(ref["patches"]), len(MSD_TAGS)) and penultimate.shape[1] == 200
    assert np.abs(taggram - ref["taggram"]).max() <= 1e-4
    assert np.abs(penultimate - ref["penultimate"]).max() <= 1e-4
    # and the comparison can fail: other weights give other outputs
    other = np.asarray(frontend(ref["patches"][::-1].copy(), training=False)[1])
    assert np.abs(other - ref["taggram"]).max() > 1e-3


def test_frontend_is_frozen(frontend):
    assert not frontend.trainable and frontend.trainable_weights == []


def _tone(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=len(t))).astype(np.float32)


def test_patches_equal_whole_track_frames_and_stay_finite_when_loud():
    y = _tone(20.0)
    full = patches_of(log_mel(y))
    assert full.shape == (int((1 + len(y) // 256) // N_FRAMES), N_FRAMES, N_MELS)
    np.testing.assert_allclose(log_mel_patches(y), full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_mel_patches(y, max_patches=3), patches_of(log_mel(y), max_patches=3),
                               rtol=1e-5, atol=1e-5)
    square = np.sign(np.sin(2 * np.pi * 110 * np.arange(3 * SR) / SR)).astype(np.float32)
    assert np.all(np.isfinite(log_mel_patches(square)))  # float16 would overflow here


def test_short_audio_is_looped_to_one_patch():
    y = _tone(0.7)
    p = log_mel_patches(y)
    assert p.shape == (1, N_FRAMES, N_MELS)
    looped = np.tile(y, int(np.ceil(PATCH_SAMPLES / len(y))))[:PATCH_SAMPLES]
    np.testing.assert_allclose(p, log_mel_patches(looped), rtol=1e-6)


def test_long_tracks_are_capped_and_spread():
    starts = patch_starts(10_000, max_patches=4)
    assert len(starts) == 4 and starts[0] == 0 and starts[-1] == 10_000 - N_FRAMES
    assert list(patch_starts(1_000)) == [0, 187, 374, 561, 748]
    assert list(patch_starts(1_000, max_patches=8)) == [0, 187, 374, 561, 748]


def test_wrong_rate_is_refused():
    from embedding import ModelError

    with pytest.raises(ModelError, match="16000 Hz"):
        log_mel_patches(np.zeros(30_000, np.float32), sr=22_050)
