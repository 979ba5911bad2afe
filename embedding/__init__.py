"""Audio → genre probabilities + track embedding.

    >>> from embedding import ModelBundle
    >>> bundle = ModelBundle.load()            # the model shipped in the package
    >>> p = bundle.predict("song.ogg")         # path, bytes or file object
    >>> p.genre, p.top(3), p.embedding.shape
"""

from .audio import Audio, Excerpts, load_audio, load_excerpts
from .bundle import DEFAULT_MODEL_DIR, ModelBundle, Prediction
from .errors import AudioError, DatasetError, EmbeddingError, ModelError
from .features import FeatureConfig, Normalizer, segment_features, track_frames
from .model import ModelConfig, build_sequence_head

__all__ = [
    "Audio", "AudioError", "Excerpts", "DatasetError", "DEFAULT_MODEL_DIR", "EmbeddingError", "FeatureConfig",
    "ModelBundle", "ModelConfig", "ModelError", "Normalizer", "Prediction", "build_sequence_head", "load_audio", "load_excerpts",
    "segment_features", "track_frames",
]
