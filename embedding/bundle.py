"""The versioned model bundle: one folder with ``model.keras`` and ``bundle.json``.

``ModelBundle.predict(audio)`` is the one entry point the rest of sonicsort uses:
audio → segments → normalised frames → BiLSTM → track-level genre probabilities
(mean of segment probabilities) and track embedding (L2-normalised mean of the
segment embeddings).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .audio import DEFAULT_MAX_DURATION_S, Audio, AudioSource, load_audio
from .errors import ModelError
from .features import FeatureConfig, Normalizer, segment_features
from .model import ModelConfig

log = logging.getLogger(__name__)

BUNDLE_FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
META_FILE = "bundle.json"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
_INFER_BATCH = 256


@dataclass
class Prediction:
    """One track's prediction.

    Attributes
    ----------
    genre : the most probable genre
    probabilities : genre → probability (track level, sums to 1)
    embedding : np.ndarray, shape (embedding_dim,), L2-normalised, float32
    model_version : the bundle's content hash
    n_segments : how many segments were averaged
    is_silent : the audio was digital silence (the prediction carries no information)
    """

    genre: str
    probabilities: dict[str, float]
    embedding: np.ndarray
    model_version: str
    n_segments: int
    duration_s: float
    is_silent: bool = False

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]

    def to_dict(self, *, with_embedding: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "genre": self.genre,
            "probabilities": {g: round(float(p), 6) for g, p in self.probabilities.items()},
            "top": [{"genre": g, "probability": round(float(p), 6)} for g, p in self.top(3)],
            "model_version": self.model_version,
            "n_segments": self.n_segments,
            "duration_s": round(self.duration_s, 3),
            "is_silent": self.is_silent,
        }
        if with_embedding:
            d["embedding"] = [float(v) for v in self.embedding]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Prediction":
        return cls(genre=d["genre"], probabilities=dict(d["probabilities"]),
                   embedding=np.asarray(d["embedding"], np.float32), model_version=d["model_version"],
                   n_segments=int(d["n_segments"]), duration_s=float(d["duration_s"]),
                   is_silent=bool(d.get("is_silent", False)))


def _content_version(model, meta_core: dict[str, Any]) -> str:
    """Hash of what determines outputs: architecture, weights, genres, features, normalisation.

    (The ``.keras`` file itself carries a save timestamp, so its bytes would change on
    every save of the same model.)
    """
    h = hashlib.sha256()
    for w in model.get_weights():  # the architecture itself follows from model_config
        h.update(str(w.shape).encode())
        h.update(np.ascontiguousarray(w).tobytes())
    h.update(json.dumps(meta_core, sort_keys=True).encode())
    return h.hexdigest()[:16]


class ModelBundle:
    """A trained genre model plus everything needed to use it on new audio."""

    def __init__(
        self,
        model,
        *,
        genres: list[str],
        feature_config: FeatureConfig,
        normalizer: Normalizer,
        model_config: ModelConfig,
        evaluation: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        version: str | None = None,
    ) -> None:
        self.model = model
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
        return int(self.model.get_layer("embedding").units)

    @property
    def training_hashes(self) -> set[str]:
        """sha256 of the audio files the model was trained on (for leak checks)."""
        return set(self.training.get("track_sha256", []))

    # ------------------------------------------------------------------ inference
    def _inference_fn(self):
        if self._infer is None:
            from ._quiet import import_tensorflow

            import_tensorflow()
            import keras
            import tensorflow as tf

            infer_model = keras.Model(
                self.model.inputs, [self.model.output, self.model.get_layer("embedding").output]
            )
            spec = tf.TensorSpec([None, self.feature_config.n_frames, self.feature_config.n_features], tf.float32)

            @tf.function(input_signature=[spec], reduce_retracing=True)
            def infer(x):
                probs, emb = infer_model(x, training=False)
                return probs, emb

            self._infer = infer
        return self._infer

    def predict_segments(self, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised segments (n_segments, n_frames, n_features) → (probs, embeddings).

        Returns arrays of shape (n_segments, n_genres) and (n_segments, embedding_dim).
        """
        expected = (self.feature_config.n_frames, self.feature_config.n_features)
        if segments.ndim != 3 or segments.shape[1:] != expected:
            raise ModelError(f"segments of shape {segments.shape[1:]} do not match the model's {expected}")
        infer = self._inference_fn()
        probs, embs = [], []
        for i in range(0, len(segments), _INFER_BATCH):
            p, e = infer(segments[i : i + _INFER_BATCH].astype(np.float32))
            probs.append(p.numpy())
            embs.append(e.numpy())
        return np.concatenate(probs), np.concatenate(embs)

    def features(self, audio: Audio) -> np.ndarray:
        """Normalised model input for ``audio``: (n_segments, n_frames, n_features)."""
        return self.normalizer(segment_features(audio, self.feature_config))

    def predict_audio(self, audio: Audio) -> Prediction:
        probs, embs = self.predict_segments(self.features(audio))
        return self._aggregate(probs, embs, duration_s=audio.duration_s, is_silent=audio.is_silent)

    def predict(self, source: AudioSource, *, max_duration_s: float = DEFAULT_MAX_DURATION_S) -> Prediction:
        """Decode ``source`` (path, bytes or file object) and predict its genre and embedding."""
        audio = load_audio(source, sr=self.feature_config.sr, max_duration_s=max_duration_s)
        return self.predict_audio(audio)

    def predict_many(self, audios: Iterable[Audio]) -> list[Prediction]:
        """Batch several tracks' segments through the model in one go."""
        audios = list(audios)
        return self.predict_features([self.features(a) for a in audios],
                                     [a.duration_s for a in audios], [a.is_silent for a in audios])

    def predict_features(self, features: list[np.ndarray], durations_s: list[float],
                         silent: list[bool] | None = None) -> list[Prediction]:
        """Tracks whose normalised features were computed elsewhere (e.g. worker processes).

        ``features[i]``: shape (n_segments_i, n_frames, n_features), from ``features()``.
        All tracks' segments go through the model in shared batches.
        """
        if not features:
            return []
        silent = silent if silent is not None else [False] * len(features)
        probs, embs = self.predict_segments(np.concatenate(features))
        out, start = [], 0
        for f, dur, sil in zip(features, durations_s, silent):
            end = start + len(f)
            out.append(self._aggregate(probs[start:end], embs[start:end], duration_s=dur, is_silent=sil))
            start = end
        return out

    def _aggregate(self, probs: np.ndarray, embs: np.ndarray, *, duration_s: float, is_silent: bool) -> Prediction:
        track_probs = probs.mean(axis=0)
        track_probs = track_probs / track_probs.sum()
        emb = embs.mean(axis=0)
        norm = float(np.linalg.norm(emb))
        emb = (emb / norm) if norm > 0 else emb
        return Prediction(
            genre=self.genres[int(np.argmax(track_probs))],
            probabilities={g: float(p) for g, p in zip(self.genres, track_probs)},
            embedding=emb.astype(np.float32),
            model_version=self.version,
            n_segments=int(len(probs)),
            duration_s=float(duration_s),
            is_silent=is_silent,
        )

    # ------------------------------------------------------------------ persistence
    def _meta_core(self) -> dict[str, Any]:
        return {
            "genres": self.genres,
            "feature_config": self.feature_config.to_dict(),
            "normalizer": self.normalizer.to_dict(),
            "model_config": self.model_config.to_dict(),
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the bundle atomically: a temp folder beside ``directory``, then rename."""
        directory = Path(directory).resolve()
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a saved folder is for everyone
        try:
            model_path = tmp / MODEL_FILE
            self.model.save(model_path)
            core = self._meta_core()
            self.version = _content_version(self.model, core)
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
                    if extra.name not in (MODEL_FILE, META_FILE) and extra.is_file():
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
            model = keras.models.load_model(model_path, compile=False)
        except Exception as exc:
            raise ModelError(f"{model_path}: cannot load Keras model ({exc})") from None
        version = _content_version(model, core)
        if version != meta.get("model_version"):
            raise ModelError(f"{directory}: model files do not match their recorded version (corrupt or edited)")
        bundle = cls(
            model,
            genres=meta["genres"],
            feature_config=FeatureConfig.from_dict(meta["feature_config"]),
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
        t = np.arange(int(sr * self.feature_config.segment_seconds)) / sr
        self.predict_audio(Audio(samples=(0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr=sr, is_silent=False))
