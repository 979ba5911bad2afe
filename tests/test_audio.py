import numpy as np
import pytest
import soundfile as sf

from embedding import AudioError, FeatureConfig, load_audio, segment_features
from embedding.audio import segment_starts

from .conftest import SR, synth, write_clip

FORMATS = [("wav", {}), ("flac", {}), ("ogg", {"format": "OGG", "subtype": "VORBIS"}),
           ("mp3", {"format": "MP3", "subtype": "MPEG_LAYER_III"}), ("au", {"format": "AU", "subtype": "PCM_16"})]


@pytest.mark.parametrize("ext,kw", FORMATS)
def test_decodes_every_format_from_path_bytes_and_file(tmp_path, ext, kw):
    p = write_clip(tmp_path / f"clip.{ext}", "drone", seconds=1.5, **kw)
    a = load_audio(p)
    assert a.sr == SR and a.samples.ndim == 1 and a.samples.dtype == np.float32
    assert abs(a.duration_s - 1.5) < 0.1  # mp3 adds encoder padding
    b = load_audio(p.read_bytes())
    with open(p, "rb") as f:
        c = load_audio(f)
    np.testing.assert_allclose(a.samples, b.samples)
    np.testing.assert_allclose(a.samples, c.samples)
    assert not a.is_silent


def test_six_channels_at_48k_mixes_down_and_resamples(tmp_path):
    y = np.stack([synth("chirp", 1.0, seed=i, sr=48_000) for i in range(6)], axis=1)
    p = tmp_path / "surround.wav"
    sf.write(p, y, 48_000)
    a = load_audio(p)
    assert a.sr == SR
    assert abs(len(a.samples) - SR) <= 2
    np.testing.assert_allclose(a.samples[:100], 0, atol=1.0)  # finite, in range


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(p)
    with pytest.raises(AudioError, match="empty"):
        load_audio(b"")


def test_text_named_mp3(tmp_path):
    p = tmp_path / "notes.mp3"
    p.write_text("these are my notes, not a song\n" * 50)
    with pytest.raises(AudioError):
        load_audio(p)


def test_truncated_file(tmp_path):
    p = write_clip(tmp_path / "full.flac", "clicks", seconds=2.0)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(p.read_bytes()[:60])  # header fragment only
    with pytest.raises(AudioError):
        load_audio(cut)


def test_truncated_wav_keeps_what_is_there_or_fails_clearly(tmp_path):
    p = write_clip(tmp_path / "full.wav", "clicks", seconds=2.0)
    data = p.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    a = load_audio(cut)  # the header promises 2 s; half the samples are there
    assert 0.9 < a.duration_s < 1.1


def test_too_short(tmp_path):
    p = write_clip(tmp_path / "blip.wav", "drone", seconds=0.3)
    with pytest.raises(AudioError, match="shorter"):
        load_audio(p)


def test_silence_is_flagged_not_fatal(tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(p, np.zeros(SR * 2, np.float32), SR)
    a = load_audio(p)
    assert a.is_silent
    x = segment_features(a, FeatureConfig())
    assert np.all(np.isfinite(x))


def test_longer_than_limit(tmp_path):
    p = write_clip(tmp_path / "long.wav", "drone", seconds=3.0)
    with pytest.raises(AudioError, match="limit"):
        load_audio(p, max_duration_s=2.0)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


@pytest.mark.parametrize("kind,n_features", [("logmel", 96), ("mfcc", 60)])
def test_feature_shapes(tmp_path, kind, n_features):
    a = load_audio(write_clip(tmp_path / "c.wav", "chirp", seconds=7.0))
    fc = FeatureConfig(kind=kind)
    x = segment_features(a, fc)
    assert x.shape[1:] == (fc.n_frames, n_features)
    # 7 s with 3 s segments every 1.5 s: starts 0, 1.5, 3.0, and one aligned to the end
    assert x.shape[0] == 4
    assert FeatureConfig.from_dict(fc.to_dict()) == fc


def test_short_track_is_padded_to_one_segment(tmp_path):
    a = load_audio(write_clip(tmp_path / "c.wav", "chirp", seconds=1.0))
    x = segment_features(a, FeatureConfig())
    assert x.shape[0] == 1


def test_segment_starts_cover_the_end():
    s = segment_starts(100, segment_len=30, hop_len=25)
    assert s[0] == 0 and s[-1] + 30 == 100
    assert list(segment_starts(10, segment_len=30, hop_len=25)) == [0]
