"""A catalog track as read (``Track``) and as written by ingest and uploads (``NewTrack``): both
are ``TrackFacts`` with what each side adds."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..text import clean_text

TOP_TAGS = 5  # a track "has" the front end's tags it ranks highest; ``search(tag=...)`` finds them
# ... and the few that stand out most against their usual probability (moods rarely rank high)
SALIENT_TAGS, SALIENT_LIFT = 3, 3.0


@dataclass(kw_only=True)
class TrackFacts:
    """What the catalog keeps of every track: its audio's hash, its file's tags (title, artist,
    album, album artist, track and disc number, year, genre tag: None where the file has
    none), its length, and the model's view of it (genre, probabilities, front-end tags)."""

    sha256: str
    title: str
    artist: str | None
    album: str | None
    duration_s: float
    genre: str
    probabilities: dict[str, float]
    model_version: str
    is_silent: bool = False
    tags: dict[str, float] = field(default_factory=dict)
    album_artist: str | None = None
    track_no: int | None = None
    disc_no: int | None = None
    year: int | None = None
    tag_genre: str | None = None


FILE_TAGS = ("title", "artist", "album", "album_artist", "track_no", "disc_no", "year", "tag_genre")


@dataclass(kw_only=True)
class Track(TrackFacts):
    """One catalog track as read. ``path`` is its first known file; ``paths`` all of them;
    ``embedding`` is there when asked for."""

    id: int
    added_at: float
    paths: list[str] = field(default_factory=list)
    embedding: np.ndarray | None = None

    @property
    def path(self) -> str | None:
        return self.paths[0] if self.paths else None

    def top_tags(self, k: int = TOP_TAGS) -> list[tuple[str, float]]:
        # the catalog hands out ``tags`` most probable first (sorted once per row read)
        return list(itertools.islice(self.tags.items(), k))

    def to_dict(self, *, with_embedding: bool = False) -> dict[str, Any]:
        d = {
            "id": self.id, "title": self.title, "artist": self.artist, "album": self.album,
            "duration_s": round(self.duration_s, 3), "genre": self.genre,
            "probabilities": {g: round(p, 6) for g, p in self.probabilities.items()},
            "sha256": self.sha256, "path": self.path, "paths": self.paths,
            "model_version": self.model_version, "is_silent": self.is_silent, "added_at": self.added_at,
            "tags": {t: round(p, 6) for t, p in self.tags.items()},
            "top_tags": [{"tag": t, "probability": round(p, 6)} for t, p in self.top_tags()],
            "album_artist": self.album_artist, "track_no": self.track_no, "disc_no": self.disc_no,
            "year": self.year, "tag_genre": self.tag_genre,
        }
        if with_embedding and self.embedding is not None:
            d["embedding"] = [round(float(v), 6) for v in self.embedding]
        return d


@dataclass(kw_only=True)
class NewTrack(TrackFacts):
    """What ingest and uploads hand the catalog for one file of new audio: the file's facts
    and its embedding and fingerprint beside the track's."""

    path: str
    size: int
    mtime_ns: int
    embedding: np.ndarray
    fingerprint: bytes | None = None  # the audio's ``embedding.fingerprint``

    def __post_init__(self) -> None:
        # the one door of new rows: titles, artists and albums carry no control characters
        self.title = (clean_text(self.title) or "Untitled")[:500]
        self.artist = clean_text(self.artist)
        self.album = clean_text(self.album)
        self.album_artist = clean_text(self.album_artist)
        self.tag_genre = clean_text(self.tag_genre)

    @classmethod
    def from_prediction(cls, pred, *, path: str, sha256: str, size: int, mtime_ns: int, title: str,
                        **file_tags: Any) -> "NewTrack":
        """The record of one file of new audio: its file facts, its tags (``FILE_TAGS``, as
        ``recommender.extract.read_tags`` reads them) and the model's ``Prediction`` (ingest
        and uploads both build it here)."""
        unknown = set(file_tags) - set(FILE_TAGS)
        if unknown:
            raise TypeError(f"not file tags: {sorted(unknown)}")
        return cls(path=path, size=size, mtime_ns=mtime_ns, sha256=sha256, title=title, **file_tags,
                   duration_s=pred.duration_s, genre=pred.genre,
                   probabilities=pred.probabilities, embedding=pred.embedding, model_version=pred.model_version,
                   is_silent=pred.is_silent, tags=pred.tags, fingerprint=getattr(pred, "fingerprint", None))


def _top_tag_rows(track_id: int, tags: dict[str, float],
                  priors: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The tags ``search(tag=)`` finds a track by: its ``TOP_TAGS`` most probable, plus, given the
    model's tag priors, up to ``SALIENT_TAGS`` whose probability is at least ``SALIENT_LIFT``
    times their prior (a mellow track's Mellow at 0.07 against a usual 0.01)."""
    keep = dict(sorted(tags.items(), key=lambda kv: -kv[1])[:TOP_TAGS])
    if priors:
        lift = sorted(((p / priors[t], t) for t, p in tags.items() if priors.get(t)), reverse=True)
        keep.update({t: tags[t] for ratio, t in lift[:SALIENT_TAGS] if ratio >= SALIENT_LIFT})
    return [{"track_id": track_id, "tag": t, "probability": float(p)} for t, p in keep.items()]


def _vector(blob: bytes) -> np.ndarray:
    """A stored embedding as a read-only float32 array (the caches share it between callers)."""
    v = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    v.flags.writeable = False
    return v
