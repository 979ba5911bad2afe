"""The versioned model bundle: one folder with ``model.keras`` (the BiLSTM head),
``frontend.weights.h5`` (the frozen musicnn front end it was trained on) and ``bundle.json``.

``ModelBundle.predict(audio)`` is the one entry point the rest of sonicsort uses, one call
from audio to genre, tags and embedding: audio → at most ``max_patches`` 3 s log-mel
patches → musicnn front end → (per-patch features, per-patch tags) → BiLSTM over the
patch sequence → genre probabilities and the track embedding (L2-normalised ``embedding``
layer); tags are the mean of the patches' tag probabilities.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .audio import Audio, AudioSource, DecodeLimits, Excerpts
from .errors import ModelError
from .fingerprint import fingerprint as fingerprint_of
from .features import FeatureConfig, Normalizer, decode_for_features, segment_features
from .model import ModelConfig

log = logging.getLogger(__name__)

BUNDLE_FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
META_FILE = "bundle.json"
FRONTEND_FILE = "frontend.weights.h5"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


@dataclass
class Prediction:
    """One track's prediction.

    Attributes
    ----------
    genre : the most probable genre
    probabilities : genre → probability (track level, sums to 1)
    embedding : np.ndarray, shape (embedding_dim,), L2-normalised, float32
    model_version : the bundle's content hash
    n_segments : how many 3 s patches the model read
    is_silent : the audio was digital silence (the prediction carries no information)
    tags : tag → probability from the front end (50 Last.fm tags of the Million Song
        Dataset: moods, styles, eras, instruments; not GTZAN labels)
    fingerprint : the audio's ``embedding.fingerprint`` (None for silence, very short audio,
        or a decode without the fingerprint's stretch); the catalog finds near-duplicates by it
    """

    genre: str
    probabilities: dict[str, float]
    embedding: np.ndarray
    model_version: str
    n_segments: int
    duration_s: float
    is_silent: bool = False
    tags: dict[str, float] = field(default_factory=dict)
    fingerprint: bytes | None = None

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]

    def top_tags(self, k: int = 5) -> list[tuple[str, float]]:
        return sorted(self.tags.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self, *, with_embedding: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "genre": self.genre,
            "probabilities": {g: round(float(p), 6) for g, p in self.probabilities.items()},
            "top": [{"genre": g, "probability": round(float(p), 6)} for g, p in self.top(3)],
            "model_version": self.model_version,
            "n_segments": self.n_segments,
            "duration_s": round(self.duration_s, 3),
            "is_silent": self.is_silent,
            "tags": {t: round(float(p), 6) for t, p in self.tags.items()},
            "top_tags": [{"tag": t, "probability": round(float(p), 6)} for t, p in self.top_tags(5)],
        }
        if with_embedding:
            d["embedding"] = [float(v) for v in self.embedding]
        return d

    def to_json(self) -> str:
        """Lossless JSON (the embedding as base64 of little-endian float32, bit for bit): what the
        prediction cache and the ingest queue store and send; ``from_json`` reads it back."""
        import base64

        return json.dumps({
            "genre": self.genre, "probabilities": self.probabilities, "model_version": self.model_version,
            "n_segments": self.n_segments, "duration_s": self.duration_s, "is_silent": self.is_silent,
            "tags": self.tags,
            "embedding_f32": base64.b64encode(np.asarray(self.embedding, "<f4").tobytes()).decode("ascii"),
            "fingerprint": base64.b64encode(self.fingerprint).decode("ascii") if self.fingerprint else None,
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> "Prediction":
        import base64

        d = json.loads(raw)
        return cls(
            genre=d["genre"], probabilities={k: float(v) for k, v in d["probabilities"].items()},
            embedding=np.frombuffer(base64.b64decode(d["embedding_f32"]), dtype="<f4").astype(np.float32),
            model_version=d["model_version"], n_segments=int(d["n_segments"]),
            duration_s=float(d["duration_s"]), is_silent=bool(d["is_silent"]),
            tags={k: float(v) for k, v in (d.get("tags") or {}).items()},
            fingerprint=base64.b64decode(d["fingerprint"]) if d.get("fingerprint") else None,
        )


def _content_version(model, meta_core: dict[str, Any], frontend=None) -> str:
    """Hash of what determines outputs: architecture, weights (the front end's too), genres,
    features, normalisation.

    (The ``.keras`` file itself carries a save timestamp, so its bytes would change on
    every save of the same model.)
    """
    h = hashlib.sha256()
    weights = model.get_weights() + (frontend.get_weights() if frontend is not None else [])
    for w in weights:  # the architecture itself follows from model_config
        h.update(str(w.shape).encode())
        h.update(np.ascontiguousarray(w).tobytes())
    h.update(json.dumps(meta_core, sort_keys=True).encode())
    return h.hexdigest()[:16]


class ModelBundle:
    """A trained genre model plus everything needed to use it on new audio.

    ``model`` is the Keras BiLSTM head (input: the patch-feature sequence); ``frontend`` the
    frozen musicnn model under it.
    """

    def __init__(
        self,
        model,
        *,
        frontend,
        genres: list[str],
        feature_config: FeatureConfig,
        normalizer: Normalizer,
        model_config: ModelConfig,
        evaluation: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        version: str | None = None,
    ) -> None:
        self.model = model
        self.frontend = frontend
        if frontend is None:
            raise ModelError("a model needs its musicnn front end")
        self.genres = list(genres)
        self.feature_config = feature_config
        self.normalizer = normalizer
        self.model_config = model_config
        self.evaluation = evaluation or {}
        self.training = training or {}
        self.version = version or "unsaved"
        self.directory: Path | None = None  # set by load()
        self._infer = None

    # ------------------------------------------------------------------ properties
    @property
    def embedding_dim(self) -> int:
        from .model import embedding_size

        return embedding_size(self.model)

    @property
    def tag_names(self) -> list[str]:
        """The front end's tags, in its output order."""
        from .musicnn import MSD_TAGS

        return list(MSD_TAGS)

    @property
    def tag_priors(self) -> dict[str, float] | None:
        """Each tag's mean probability over the training tracks (``train.tag_priors``), or None."""
        return self.training.get("tag_priors") or None

    @property
    def training_hashes(self) -> set[str]:
        """sha256 of the audio files the model was trained on (for leak checks)."""
        return set(self.training.get("track_sha256", []))

    # ------------------------------------------------------------------ inference
    def _track_fn(self):
        """One track's patches (n_patches, 187, 96) → (probs (G,), embedding (E,), tags (T,))."""
        if self._infer is None:
            from ._quiet import import_tensorflow

            import_tensorflow()
            import keras
            import tensorflow as tf

            from .model import build_sequence_head, embedding_output
            from .musicnn import head_inputs

            # the same layers and weights without the padding mask: one track a call pads nothing
            unmasked = build_sequence_head(n_features=self.model.input_shape[-1], n_genres=len(self.genres),
                                           config=self.model_config, masking=False)
            for layer in unmasked.layers:
                if layer.weights:
                    layer.set_weights(self.model.get_layer(layer.name).get_weights())
            head = keras.Model(unmasked.inputs, [unmasked.output, embedding_output(unmasked)])
            frontend, tag_inputs = self.frontend, self.feature_config.tag_inputs
            spec = tf.TensorSpec([None, self.feature_config.n_frames, self.feature_config.n_features], tf.float32)

            @tf.function(input_signature=[spec], reduce_retracing=True)
            def infer(x):
                features, tags = frontend(x, training=False)
                features = head_inputs(features, tags, tag_inputs=tag_inputs)
                probs, emb = head(features[None], training=False)
                return probs[0], emb[0], tf.reduce_mean(tags, axis=0)

            self._infer = infer
        return self._infer

    def patch_features(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The front end on patches (n, 187, 96) → (features (n, 200), tags (n, 50))."""
        from .musicnn import frontend_outputs

        return frontend_outputs(self.frontend, patches)

    def predict_tracks(self, features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Track-level outputs of several tracks' normalised features (each from ``features()``).

        Returns probabilities (n_tracks, n_genres), embeddings (n_tracks, embedding_dim)
        (not normalised) and tags (n_tracks, n_tags).
        """
        expected = (self.feature_config.n_frames, self.feature_config.n_features)
        infer = self._track_fn()
        out = []
        for f in features:
            if f.ndim != 3 or f.shape[1:] != expected or len(f) == 0:
                raise ModelError(f"patches of shape {f.shape} do not match the model's (n, {expected[0]}, {expected[1]})")
            out.append([t.numpy() for t in infer(f.astype(np.float32, copy=False))])
        return (np.stack([o[0] for o in out]), np.stack([o[1] for o in out]), np.stack([o[2] for o in out]))

    def decode(self, source: AudioSource, *, max_duration_s: float | None = None,
               limits: DecodeLimits | None = None) -> Audio | Excerpts:
        """Decode what the model reads of ``source``: with the patch cap, only those patches'
        stretches (``decode_for_features``), so a long track decodes in about the time a short one does.
        ``limits`` bound what the file may cost (``embedding.audio.DecodeLimits``)."""
        return decode_for_features(source, self.feature_config, max_duration_s=max_duration_s, limits=limits)

    def features(self, audio: Audio | Excerpts) -> np.ndarray:
        """The model input for ``audio``: its patches, (n_patches, 187, 96)."""
        return self.normalizer(segment_features(audio, self.feature_config))

    def predict_audio(self, audio: Audio | Excerpts) -> Prediction:
        """The prediction for decoded audio, with its fingerprint when ``audio`` holds its stretch."""
        pred = self.predict_features([self.features(audio)], [audio.duration_s], [audio.is_silent])[0]
        pred.fingerprint = fingerprint_of(audio)
        return pred

    def predict(self, source: AudioSource, *, max_duration_s: float | None = None,
                limits: DecodeLimits | None = None) -> Prediction:
        """Decode ``source`` (path, bytes or file object) and predict its genre and embedding."""
        return self.predict_audio(self.decode(source, max_duration_s=max_duration_s, limits=limits))

    def predict_many(self, audios: Iterable[Audio | Excerpts]) -> list[Prediction]:
        """Several tracks' predictions, one call each through the model."""
        audios = list(audios)
        return self.predict_features([self.features(a) for a in audios],
                                     [a.duration_s for a in audios], [a.is_silent for a in audios])

    def predict_features(self, features: list[np.ndarray], durations_s: list[float],
                         silent: list[bool] | None = None) -> list[Prediction]:
        """Tracks whose normalised features were computed elsewhere (e.g. worker processes).

        ``features[i]``: shape (n_patches_i, 187, 96), from ``features()``.
        """
        if not features:
            return []
        silent = silent if silent is not None else [False] * len(features)
        probs, embs, tags = self.predict_tracks(features)
        return [self._aggregate(probs[i], embs[i], tags[i], n_segments=len(f),
                                duration_s=dur, is_silent=sil)
                for i, (f, dur, sil) in enumerate(zip(features, durations_s, silent))]

    def _aggregate(self, track_probs: np.ndarray, emb: np.ndarray, tags: np.ndarray, *,
                   n_segments: int, duration_s: float, is_silent: bool) -> Prediction:
        track_probs = track_probs / track_probs.sum()
        norm = float(np.linalg.norm(emb))
        emb = (emb / norm) if norm > 0 else emb
        return Prediction(
            genre=self.genres[int(np.argmax(track_probs))],
            probabilities={g: float(p) for g, p in zip(self.genres, track_probs)},
            embedding=emb.astype(np.float32),
            model_version=self.version,
            n_segments=int(n_segments),
            duration_s=float(duration_s),
            is_silent=is_silent,
            tags={t: float(p) for t, p in zip(self.tag_names, tags)},
        )

    # ------------------------------------------------------------------ persistence
    def _meta_core(self) -> dict[str, Any]:
        core = {
            "genres": self.genres,
            "feature_config": self.feature_config.to_dict(),
            "normalizer": self.normalizer.to_dict(),
            "model_config": self.model_config.to_dict(),
            "frontend": {"name": "MSD_musicnn", "file": FRONTEND_FILE, "tags": self.tag_names},
        }
        return core

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the bundle atomically: a temp folder beside ``directory``, then rename."""
        directory = Path(directory).resolve()
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a saved folder is for everyone
        try:
            model_path = tmp / MODEL_FILE
            self.model.save(model_path)
            self.frontend.save_weights(tmp / FRONTEND_FILE)
            core = self._meta_core()
            self.version = _content_version(self.model, core, self.frontend)
            meta = {
                "format_version": BUNDLE_FORMAT_VERSION,
                "model_version": self.version,
                "embedding_dim": self.embedding_dim,
                **core,
                "evaluation": self.evaluation,
                "training": self.training,
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
            # keep extra files (model card, plots) that live in an existing bundle folder
            if directory.exists():
                for extra in directory.iterdir():
                    if extra.name not in (MODEL_FILE, META_FILE, FRONTEND_FILE) and extra.is_file():
                        shutil.copy2(extra, tmp / extra.name)
                old = directory.with_name(f".{directory.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(directory, old)
                os.replace(tmp, directory)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike | None = None) -> "ModelBundle":
        """Load a bundle folder (default: the model shipped in the package)."""
        from ._quiet import import_tensorflow

        import_tensorflow()
        import keras

        directory = Path(directory) if directory is not None else DEFAULT_MODEL_DIR
        model_path, meta_path = directory / MODEL_FILE, directory / META_FILE
        if not directory.is_dir():
            raise ModelError(f"{directory}: no such model folder")
        if not model_path.is_file() or not meta_path.is_file():
            raise ModelError(f"{directory}: not a model bundle (needs {MODEL_FILE} and {META_FILE})")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{meta_path}: unreadable bundle metadata ({exc})") from None
        if meta.get("format_version") != BUNDLE_FORMAT_VERSION:
            raise ModelError(f"{directory}: bundle format {meta.get('format_version')!r} is not supported "
                             f"(expected {BUNDLE_FORMAT_VERSION})")
        try:
            core = {k: meta[k] for k in ("genres", "feature_config", "normalizer", "model_config")}
        except KeyError as exc:
            raise ModelError(f"{meta_path}: bundle metadata lacks {exc}") from None
        try:
            feature_config = FeatureConfig.from_dict(meta["feature_config"])
        except ModelError as exc:
            raise ModelError(f"{directory}: {exc}") from None
        if "frontend" not in meta:
            raise ModelError(f"{directory}: the bundle has no front end (a model of sonicsort 0.1); "
                             "train a new one with 'sonicsort train'")
        core["frontend"] = meta["frontend"]
        try:
            model = keras.models.load_model(model_path, compile=False)
        except Exception as exc:
            raise ModelError(f"{model_path}: cannot load Keras model ({exc})") from None
        from .musicnn import load_frontend

        frontend = load_frontend(directory / FRONTEND_FILE)
        version = _content_version(model, core, frontend)
        if version != meta.get("model_version"):
            raise ModelError(f"{directory}: model files do not match their recorded version (corrupt or edited)")
        bundle = cls(
            model,
            frontend=frontend,
            genres=meta["genres"],
            feature_config=feature_config,
            normalizer=Normalizer.from_dict(meta["normalizer"]),
            model_config=ModelConfig.from_dict(meta["model_config"]),
            evaluation=meta.get("evaluation", {}),
            training=meta.get("training", {}),
            version=version,
        )
        bundle.directory = directory  # where it was loaded from
        return bundle

    def warm_up(self) -> None:
        """Compile the inference graph and librosa's numba kernels once, at start-up."""
        sr = self.feature_config.sr
        # as many patches as a long track gets: oneDNN prepares its kernels per batch shape
        n = max(1, self.feature_config.max_patches)
        t = np.arange(int(sr * self.feature_config.segment_seconds * n) + 1) / sr
        self.predict_audio(Audio(samples=(0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr=sr, is_silent=False))
