import json

import numpy as np
import pytest

from embedding import ModelBundle, ModelConfig, ModelError, build_sequence_head
from embedding.data import load_dataset
from embedding.errors import DatasetError
from embedding.features import DEFAULT_MAX_PATCHES
from embedding.evaluate import evaluate_bundle, track_metrics

from .helpers import GENRES, SR, write_clip


def test_embedding_is_the_penultimate_layer():
    m = build_sequence_head(n_features=24, n_genres=5, config=ModelConfig(lstm_units=(8, 8), embedding_dim=12, ensemble=1))
    dense = [l for l in m.layers if l.__class__.__name__ == "Dense"]
    assert [l.name for l in dense] == ["embedding", "genre"]
    assert m.get_layer("embedding").units == 12
    assert sum(l.__class__.__name__ == "Bidirectional" for l in m.layers) == 2
    assert m.output_shape == (None, 5)


def test_tiny_model_learns_held_out_tracks(tiny_bundle):
    ev = tiny_bundle.evaluation
    assert ev["split"] == "test"
    assert ev["n_tracks"] >= 3
    # three well-separated synthetic genres: a model that learned nothing scores ~1/3
    assert ev["balanced_accuracy"] >= 0.8
    assert set(ev["baseline"]) == {"logistic_regression", "knn", "linear_probe"}
    assert ev["clips"]["n_tracks"] == ev["n_tracks"]  # the toy clips are 2 s: one patch each


def test_v2_bundle_is_front_end_then_bilstm_then_embedding(tiny_bundle):
    layers = [l.__class__.__name__ for l in tiny_bundle.model.layers]
    assert "Bidirectional" in layers
    dense = [l.name for l in tiny_bundle.model.layers if l.__class__.__name__ == "Dense"]
    assert dense == ["embedding", "genre"]
    assert tiny_bundle.frontend is not None and not tiny_bundle.frontend.trainable
    assert tiny_bundle.feature_config.kind == "musicnn"
    assert len(tiny_bundle.tag_names) == 50


def test_v2_prediction_has_genre_tags_and_embedding_in_one_call(tiny_bundle, tmp_path):
    from embedding import load_audio
    from embedding.musicnn import log_mel_patches

    p = write_clip(tmp_path / "new.wav", "chirp", seconds=3.5, seed=999)
    pred = tiny_bundle.predict(p)
    assert pred.genre == "chirp" and abs(sum(pred.probabilities.values()) - 1) < 1e-5
    assert pred.embedding.shape == (16,) and abs(np.linalg.norm(pred.embedding) - 1) < 1e-5
    assert len(pred.tags) == 50 and all(0.0 <= v <= 1.0 for v in pred.tags.values())
    # the tags are the mean of the front end's per-patch tag probabilities
    patches = log_mel_patches(load_audio(p, sr=16_000).samples, max_patches=tiny_bundle.feature_config.max_patches)
    _, taggram = tiny_bundle.patch_features(patches)
    np.testing.assert_allclose([pred.tags[t] for t in tiny_bundle.tag_names], taggram.mean(0), atol=1e-5)
    d = pred.to_dict(with_embedding=False)
    assert [t["tag"] for t in d["top_tags"]] == [t for t, _ in pred.top_tags(5)]


def test_v2_head_reads_the_tag_logits_beside_the_penultimate_features(toy_dataset, tiny_bundle, tmp_path):
    from embedding import FeatureConfig, load_audio
    from embedding.data import load_dataset
    from embedding.musicnn import MSD_TAGS, PENULTIMATE_DIM, head_inputs, log_mel_patches
    from embedding.train import train_bundle

    from .helpers import TINY_HEAD

    # the shipped recipe's input: 200 features and 50 tag logits a patch
    assert FeatureConfig().tag_inputs
    assert tiny_bundle.feature_config.tag_inputs and tiny_bundle.model.input_shape[-1] == PENULTIMATE_DIM + len(MSD_TAGS)
    p = write_clip(tmp_path / "long.wav", "chirp", seconds=9.5, seed=5)
    patches = log_mel_patches(load_audio(p, sr=16_000).samples, max_patches=tiny_bundle.feature_config.max_patches)
    pen, taggram = tiny_bundle.patch_features(patches)
    t = np.clip(taggram.astype(np.float64), 1e-6, 1 - 1e-6)
    expected = np.concatenate([pen, np.log(t / (1 - t))], axis=1)
    # training computes the head's inputs with the same function, on NumPy arrays
    np.testing.assert_allclose(np.asarray(head_inputs(pen, taggram, tag_inputs=True)), expected, rtol=1e-5, atol=1e-4)
    # and the bundle's one-call prediction feeds the head exactly those
    probs = tiny_bundle.model.predict_on_batch(expected[None].astype(np.float32))[0]
    pred = tiny_bundle.predict(p)
    assert pred.n_segments == 3
    np.testing.assert_allclose([pred.probabilities[g] for g in tiny_bundle.genres], probs, atol=1e-5)

    # --no-tag-inputs: the head reads the 200 features alone, and says so in its bundle
    ds = load_dataset(toy_dataset / "manifest.csv", seed=3)
    plain = train_bundle(ds, feature_config=FeatureConfig(tag_inputs=False),
                         model_config=ModelConfig(**{**TINY_HEAD, "max_epochs": 2}), workers=1)
    plain = ModelBundle.load(plain.save(tmp_path / "plain"))
    assert not plain.feature_config.tag_inputs and plain.model.input_shape[-1] == PENULTIMATE_DIM
    probs = plain.model.predict_on_batch(pen[None].astype(np.float32))[0]
    np.testing.assert_allclose([plain.predict(p).probabilities[g] for g in plain.genres], probs, atol=1e-5)


def test_v2_mixup_mixes_patch_sequences_and_keeps_padding_masked():
    from embedding.train import mix_sequences, pad_sequences

    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 5)).astype(np.float32) + 3 for n in (1, 3, 3, 2)]
    x = pad_sequences(seqs)
    y = np.eye(4, dtype=np.float32)
    assert ModelConfig().mixup == 0.4  # the shipped recipe mixes
    mixed, targets = mix_sequences(x, y, 0.4, np.random.default_rng(1))
    assert mixed.shape == x.shape and mixed.dtype == np.float32
    # padding stays all-zero (masked); every real patch stays non-zero
    np.testing.assert_array_equal(np.any(mixed != 0, axis=-1), np.any(x != 0, axis=-1))
    # the same draws by hand: one weight per pair, patch by patch where both hold a patch
    r = np.random.default_rng(1)
    lam, perm = r.beta(0.4, 0.4, size=(4, 1)).astype(np.float32), r.permutation(4)
    assert (perm != np.arange(4)).any()
    np.testing.assert_allclose(targets, lam * y + (1 - lam) * y[perm], rtol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    for i in range(4):
        for step in range(x.shape[1]):
            both = step < len(seqs[i]) and step < len(seqs[perm[i]])
            want = lam[i, 0] * x[i, step] + (1 - lam[i, 0]) * x[perm[i], step] if both else x[i, step]
            np.testing.assert_allclose(mixed[i, step], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(mixed, x)  # something was mixed
    for bad in (-1.0, float("nan")):  # refused, not silently off
        with pytest.raises(ValueError, match="mixup"):
            ModelConfig(mixup=bad)


def test_v2_ensemble_is_heads_trained_apart_in_one_model(toy_dataset, tmp_path):
    from embedding import FeatureConfig, load_audio
    from embedding.musicnn import head_inputs, log_mel_patches
    from embedding.train import train_bundle

    from .helpers import TINY_HEAD

    assert ModelConfig().ensemble == 5  # the shipped recipe
    ds = load_dataset(toy_dataset / "manifest.csv", seed=3)
    config = ModelConfig(**{**TINY_HEAD, "max_epochs": 3, "patience": 3, "ensemble": 2})
    trained = train_bundle(ds, feature_config=FeatureConfig(), model_config=config, workers=1)
    assert [h["head"] for h in trained.training["history"]] == [1, 1, 1, 2, 2, 2]
    assert trained.training["epochs_run"] == 3
    b = ModelBundle.load(trained.save(tmp_path / "ensemble"))
    assert b.model_config.ensemble == 2 and b.embedding_dim == 2 * 16
    p = write_clip(tmp_path / "q.wav", "chirp", seconds=7.0, seed=8)
    patches = log_mel_patches(load_audio(p, sr=16_000).samples, max_patches=b.feature_config.max_patches)
    feats = np.asarray(head_inputs(*b.patch_features(patches), tag_inputs=b.feature_config.tag_inputs))
    # each head on its own: its softmax and embedding, as a one-head model of its layers
    import keras

    probs, embs = [], []
    for m in range(2):
        head = keras.Model(b.model.inputs, [b.model.get_layer(f"h{m}_genre").output,
                                            b.model.get_layer(f"h{m}_embedding").output])
        pr, e = head.predict_on_batch(feats[None])
        probs.append(pr[0])
        embs.append(e[0] / np.linalg.norm(e[0]))
    assert not np.allclose(embs[0], embs[1], atol=0.05)  # two heads, not one twice (seeds differ)
    pred = b.predict(p)
    np.testing.assert_allclose([pred.probabilities[g] for g in b.genres], np.mean(probs, 0), atol=1e-5)
    np.testing.assert_allclose(pred.embedding, np.concatenate(embs) / np.sqrt(2), atol=1e-5)
    # cosine similarity of two tracks is the mean of the heads' cosines
    q = b.predict(write_clip(tmp_path / "r.wav", "drone", seconds=4.0, seed=9))
    f2 = np.asarray(head_inputs(*b.patch_features(log_mel_patches(load_audio(tmp_path / "r.wav", sr=16_000).samples,
                                                              max_patches=b.feature_config.max_patches)),
                                tag_inputs=b.feature_config.tag_inputs))
    cos = []
    for m in range(2):
        e = keras.Model(b.model.inputs, b.model.get_layer(f"h{m}_embedding").output).predict_on_batch(f2[None])[0]
        cos.append(float(embs[m] @ (e / np.linalg.norm(e))))
    assert float(pred.embedding @ q.embedding) == pytest.approx(np.mean(cos), abs=1e-5)
    with pytest.raises(ValueError, match="ensemble"):
        ModelConfig(ensemble=0)


def test_feature_configs_saved_before_tag_inputs_load_without_them():
    from embedding import FeatureConfig

    old = FeatureConfig(max_patches=4).to_dict()
    del old["tag_inputs"]
    assert FeatureConfig.from_dict(old) == FeatureConfig(max_patches=4, tag_inputs=False)
    # a bundle of sonicsort 0.2 and earlier spelled out the front end's fixed STFT settings
    spelled = {**old, "sr": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 96, "segment_seconds": 2.976}
    assert FeatureConfig.from_dict(spelled) == FeatureConfig(max_patches=4, tag_inputs=False)


def test_frame_models_of_sonicsort_0_1_are_refused_with_what_to_do(tiny_bundle, tmp_path):
    """The frame BiLSTM (log-mel or MFCC segments) is gone: its bundles say so, in one line."""
    import shutil

    from embedding import FeatureConfig

    for kind in ("logmel", "mfcc", None):
        with pytest.raises(ModelError, match="sonicsort 0.1.*sonicsort train"):
            FeatureConfig.from_dict({"n_mels": 96} if kind is None else {"kind": kind})
    with pytest.raises(ValueError, match="musicnn"):
        FeatureConfig(kind="logmel")
    old = tmp_path / "old-model"
    shutil.copytree(tiny_bundle.directory, old)
    meta = json.loads((old / "bundle.json").read_text())
    meta["feature_config"] = {"kind": "logmel", "sr": 22050, "n_mels": 96, "segment_seconds": 3.0}
    del meta["frontend"]
    (old / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=f"{old}: .*'logmel' frames.*sonicsort 0.1"):
        ModelBundle.load(old)


def test_v2_short_clips_are_looped_and_long_tracks_capped(tiny_bundle, tmp_path):
    clip = tiny_bundle.predict(write_clip(tmp_path / "short.wav", "drone", seconds=0.6, seed=3))
    assert clip.n_segments == 1 and np.all(np.isfinite(clip.embedding))
    long = tiny_bundle.predict(write_clip(tmp_path / "long.wav", "drone", seconds=40.0, seed=3))
    assert long.n_segments == tiny_bundle.feature_config.max_patches == DEFAULT_MAX_PATCHES < 40 // 3
    with pytest.raises(__import__("embedding").AudioError, match="shorter than the minimum"):
        tiny_bundle.predict(write_clip(tmp_path / "tiny.wav", "drone", seconds=0.3, seed=3))


def test_bundle_round_trip_gives_identical_outputs(tiny_bundle, tmp_path):
    p = write_clip(tmp_path / "x.wav", "drone", seconds=2.5, seed=5)
    a = tiny_bundle.predict(p)
    out = tiny_bundle.save(tmp_path / "copy")
    b = ModelBundle.load(out).predict(p)
    assert b.model_version == a.model_version
    np.testing.assert_array_equal(a.embedding, b.embedding)
    assert a.probabilities == b.probabilities
    meta = json.loads((out / "bundle.json").read_text())
    for key in ("genres", "feature_config", "normalizer", "embedding_dim", "model_version", "evaluation"):
        assert key in meta


def test_corrupt_or_missing_bundle_fails_clearly(tiny_bundle, tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        ModelBundle.load(tmp_path / "none")
    out = tiny_bundle.save(tmp_path / "b")
    meta = json.loads((out / "bundle.json").read_text())
    meta["genres"] = list(reversed(meta["genres"]))
    (out / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="do not match"):
        ModelBundle.load(out)
    (out / "model.keras").unlink()
    with pytest.raises(ModelError, match="not a model bundle"):
        ModelBundle.load(out)


def test_silent_audio_is_flagged(tiny_bundle):
    import soundfile as sf, io

    buf = io.BytesIO()
    sf.write(buf, np.zeros(SR, np.float32), SR, format="WAV")
    pred = tiny_bundle.predict(buf.getvalue())
    assert pred.is_silent and np.all(np.isfinite(pred.embedding))


def test_predict_many_matches_predict(tiny_bundle, tmp_path):
    from embedding import load_audio

    paths = [write_clip(tmp_path / f"{g}.wav", g, seconds=2.0, seed=77) for g in GENRES]
    many = tiny_bundle.predict_many(load_audio(p, sr=tiny_bundle.feature_config.sr) for p in paths)
    for p, m in zip(paths, many):
        one = tiny_bundle.predict(p)
        np.testing.assert_allclose(one.embedding, m.embedding, atol=1e-5)


def test_evaluate_leaves_out_training_tracks(tiny_bundle, toy_dataset):
    ds = load_dataset(toy_dataset / "manifest.csv", seed=3)
    m = evaluate_bundle(tiny_bundle, ds, split="all", workers=1)
    n_train = len(ds.split("train"))
    assert m["excluded_training_tracks"] == n_train
    assert m["n_tracks"] == len(ds.tracks) - n_train
    with pytest.raises(DatasetError, match="training data"):
        evaluate_bundle(tiny_bundle, ds, split="train", workers=1)


def test_split_keeps_artists_and_tracks_on_one_side(toy_dataset):
    ds = load_dataset(toy_dataset / "manifest.csv", seed=11)
    sides = {}
    for t in ds.tracks:
        sides.setdefault(t.artist, set()).add(t.split)
    assert all(len(s) == 1 for s in sides.values())
    assert {t.split for t in ds.tracks} == {"train", "valid", "test"}
    for g in GENRES:
        assert any(t.split == "train" and t.genre == g for t in ds.tracks)


def test_folder_dataset_and_split_lists(toy_dataset, tmp_path):
    ds = load_dataset(toy_dataset)
    assert ds.genres == sorted(GENRES) and len(ds.tracks) == 24
    train = tmp_path / "train.txt"
    test = tmp_path / "test.txt"
    train.write_text("\n".join(f"{g}/{g}.{i:03d}.au" for g in GENRES for i in range(5)))
    test.write_text("\n".join(f"{g}/{g}.{i:03d}.au" for g in GENRES for i in range(5, 8)))
    ds = load_dataset(toy_dataset, split_lists={"train": train, "test": test})
    assert len(ds.split("train")) == 15 and len(ds.split("test")) == 9
    with pytest.raises(DatasetError, match="more than one"):
        load_dataset(toy_dataset, split_lists={"train": train, "test": train})


def test_bad_manifests(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("file,label\nx.wav,rock\n")
    with pytest.raises(DatasetError, match="path,genre"):
        load_dataset(bad)
    bad.write_text("path,genre\nmissing.wav,rock\n")
    with pytest.raises(DatasetError, match="do not exist"):
        load_dataset(bad)
    with pytest.raises(DatasetError, match="no such"):
        load_dataset(tmp_path / "nothing")


def test_track_metrics_by_hand():
    m = track_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b", "c"])
    assert m["accuracy"] == 0.75
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["confusion"]["matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert m["per_genre"]["b"]["precision"] == pytest.approx(2 / 3)


def test_weight_averaging_keeps_the_mean_of_the_last_epochs():
    import keras

    from embedding.train import _LastEpochsAverage

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    avg = _LastEpochsAverage(3, n_epochs=5)
    for epoch in range(1, 6):  # epochs 3, 4, 5 are averaged: weights 3, 4, 5 → 4
        model.set_weights([np.full(w.shape, float(epoch), np.float32) for w in model.get_weights()])
        avg.after_epoch(model, epoch)
    assert all(np.allclose(w, 4.0) for w in model.get_weights())
    off = _LastEpochsAverage(0, n_epochs=5)
    off.after_epoch(model, 5)
    assert all(np.allclose(w, 4.0) for w in model.get_weights())  # k = 0 leaves the last epoch's
