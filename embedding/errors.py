"""Errors raised by the embedding room.

The CLI and the API map these to one clear line / a 4xx body; nothing here
ever needs a traceback to be understood.
"""

from __future__ import annotations


class EmbeddingError(Exception):
    """Base class for everything the embedding room raises on purpose."""


class AudioError(EmbeddingError, ValueError):
    """The audio cannot be used: empty, truncated, not audio, too short or too long."""


class ModelError(EmbeddingError):
    """A model bundle is missing, corrupt, or does not match the data it is given."""


class DatasetError(EmbeddingError, ValueError):
    """A training/evaluation dataset (folder, manifest, split lists) is unusable."""
