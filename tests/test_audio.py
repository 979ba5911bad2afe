import numpy as np
import pytest
import soundfile as sf

from embedding import AudioError, FeatureConfig, load_audio, segment_features

from .helpers import SR, set_flac_length, synth, write_clip

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


@pytest.mark.parametrize("ext,kw", [f for f in FORMATS if f[0] != "au"])
def test_a_file_cut_in_half_is_refused_as_truncated(tmp_path, ext, kw):
    p = write_clip(tmp_path / f"full.{ext}", "clicks", seconds=2.0, **kw)
    data = p.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated|damaged|decode"):
        load_audio(cut)
    with pytest.raises(AudioError, match="truncated|damaged|decode"):
        load_audio(data[: len(data) // 2])


def test_flac_without_a_length_streams_under_the_caps(tmp_path):
    from embedding.audio import DecodeLimits

    p = write_clip(tmp_path / "full.flac", "chirp", seconds=3.0)
    blind = set_flac_length(p.read_bytes(), 0)
    with sf.SoundFile(tmp_path / "full.flac") as f:
        assert f.frames == 3 * SR
    a, b = load_audio(p), load_audio(blind)
    np.testing.assert_array_equal(a.samples, b.samples)  # the whole stream, not "418293516410647 s"
    with pytest.raises(AudioError, match="over the limit of 2 s"):
        load_audio(blind, max_duration_s=2.0)
    with pytest.raises(AudioError, match="SONICSORT_MAX_DECODED_SAMPLES"):
        load_audio(blind, limits=DecodeLimits(max_decoded_samples=SR))


def test_header_limits_refuse_before_decoding(tmp_path):
    from embedding.audio import DecodeLimits

    y = np.zeros((4800, 4), np.float32)
    p = tmp_path / "quad.wav"
    sf.write(p, y, 48_000)
    with pytest.raises(AudioError, match=r"4 channels, over the limit of 2 \(SONICSORT_MAX_CHANNELS\)"):
        load_audio(p, limits=DecodeLimits(max_channels=2))
    with pytest.raises(AudioError, match="48000 Hz, over the limit of 44100 Hz"):
        load_audio(p, limits=DecodeLimits(max_sample_rate=44_100))
    with pytest.raises(AudioError, match="19,200 samples .*over the limit of 10,000"):
        load_audio(p, limits=DecodeLimits(max_decoded_samples=10_000))
    assert load_audio(p, min_duration_s=0.05).duration_s == pytest.approx(0.1, abs=1e-3)


def test_too_short(tmp_path):
    p = write_clip(tmp_path / "blip.wav", "drone", seconds=0.3)
    with pytest.raises(AudioError, match="shorter"):
        load_audio(p)


def test_silence_is_flagged_not_fatal(tmp_path):
    p = tmp_path / "silence.wav"
    sf.write(p, np.zeros(SR * 2, np.float32), SR)
    a = load_audio(p, sr=16_000)
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


def test_feature_shapes(tmp_path):
    """musicnn patches: 187 frames of 96 bands (3 s), back to back; the cap spreads them."""
    a = load_audio(write_clip(tmp_path / "c.wav", "chirp", seconds=10.0), sr=16_000)
    x = segment_features(a, FeatureConfig(max_patches=0))
    assert x.shape == (3, 187, 96)  # 10 s hold three whole patches
    assert segment_features(a, FeatureConfig(max_patches=2)).shape == (2, 187, 96)
    fc = FeatureConfig(max_patches=2, tag_inputs=False)
    assert FeatureConfig.from_dict(fc.to_dict()) == fc


def test_short_track_is_looped_to_one_patch(tmp_path):
    a = load_audio(write_clip(tmp_path / "c.wav", "chirp", seconds=1.0), sr=16_000)
    x = segment_features(a, FeatureConfig())
    assert x.shape[0] == 1


# ---------------------------------------------------------------- excerpts: decoding only what the model reads
def _stereo_44k(path, seconds, **kw):
    y = np.stack([synth("chirp", seconds, seed=1, sr=44_100), synth("clicks", seconds, seed=2, sr=44_100)], axis=1)
    sf.write(path, 0.5 * y, 44_100, **kw)
    return path


@pytest.mark.parametrize("ext,kw", [("flac", {}), ("ogg", {"format": "OGG", "subtype": "VORBIS"}),
                                    ("mp3", {"format": "MP3", "subtype": "MPEG_LAYER_III"})])
def test_excerpts_match_a_whole_decode_and_skip_the_rest(tmp_path, monkeypatch, ext, kw):
    from embedding import load_excerpts
    from embedding import audio as audio_mod
    from embedding.musicnn import log_mel_patches, patch_spans

    p = _stereo_44k(tmp_path / f"long.{ext}", 40.0, **kw)
    whole = load_audio(p, sr=16_000)
    spans = lambda n: patch_spans(n, max_patches=3)  # noqa: E731
    with monkeypatch.context() as m:  # a seekable file with a length never takes the whole-decode road
        m.setattr(audio_mod, "load_audio", lambda *a, **k: pytest.fail("decoded the whole track"))
        part = load_excerpts(p, spans, sr=16_000)
    assert part.n_samples == len(whole.samples) and part.sr == 16_000 and not part.is_silent
    assert len(part.pieces) == 3 and sum(len(y) for _, y in part.pieces) < 0.3 * part.n_samples
    for a, y in part.pieces:  # the same samples, up to the resampler's rounding at the edges
        np.testing.assert_allclose(y, whole.samples[a : a + len(y)], atol=2e-4)
    np.testing.assert_allclose(log_mel_patches(part, max_patches=3), log_mel_patches(whole.samples, max_patches=3),
                               atol=1e-3)
    assert abs(load_excerpts(p.read_bytes(), spans, sr=16_000).duration_s - whole.duration_s) < 1e-9


def test_excerpts_fall_back_to_a_whole_decode_with_the_same_errors(tmp_path):
    from embedding import load_excerpts
    from embedding.musicnn import log_mel_patches, patch_spans

    spans = lambda n: patch_spans(n, max_patches=4)  # noqa: E731
    short = write_clip(tmp_path / "short.wav", "drone", seconds=1.0)  # under one patch: looped, as a whole decode
    np.testing.assert_allclose(log_mel_patches(load_excerpts(short, spans, sr=16_000), max_patches=4),
                               log_mel_patches(load_audio(short, sr=16_000).samples, max_patches=4), atol=1e-3)
    data = _stereo_44k(tmp_path / "full.wav", 20.0).read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])  # header promises 20 s: both refuse it as truncated
    for load in (load_audio, lambda p, sr: load_excerpts(p, spans, sr=sr)):
        with pytest.raises(AudioError, match="truncated"):
            load(cut, sr=16_000)
    (tmp_path / "notes.mp3").write_text("not a song\n" * 50)
    for bad, match in [(tmp_path / "notes.mp3", "text"), (b"", "empty"), (tmp_path / "nope.wav", "no such file")]:
        with pytest.raises(AudioError, match=match):
            load_excerpts(bad, spans, sr=16_000)
    with pytest.raises(AudioError, match="over the limit"):
        load_excerpts(tmp_path / "full.wav", spans, sr=16_000, max_duration_s=10.0)
