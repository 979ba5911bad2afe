"""Genre-aware similar tracks, playlists and listening paths over a ``Library``.

Scores are cosine similarities of track embeddings (1 = same direction). Genre agreement
between two tracks is the Bhattacharyya coefficient of their genre distributions,
``Σ_g sqrt(p(g) q(g))``: 1 when they agree exactly, 0 when they share no genre mass.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .catalog import Track
from .errors import BadRequest
from .library import Library

GENRE_MODES = ("any", "same", "boost")


@dataclass
class Query:
    """What a recommendation starts from: a catalog track or uploaded audio."""

    vector: np.ndarray
    probabilities: dict[str, float]
    genre: str
    track_id: int | None = None
    sha256: str | None = None


@dataclass
class Scored:
    track: Track
    similarity: float
    genre_agreement: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        t = self.track
        return {"id": t.id, "title": t.title, "artist": t.artist, "album": t.album, "genre": t.genre,
                "duration_s": round(t.duration_s, 3), "path": t.path,
                "similarity": round(self.similarity, 6), "genre_agreement": round(self.genre_agreement, 6),
                "score": round(self.score, 6)}


def genre_agreement(p: dict[str, float], q: dict[str, float]) -> float:
    total = 0.0
    for g, v in q.items():
        pv = p.get(g)
        if pv is not None and pv > 0.0 and v > 0.0:
            total += math.sqrt(pv * v)
    return total


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between unit vectors ``a`` (t=0) and ``b`` (t=1)."""
    a, b = _unit(a), _unit(b)
    omega = math.acos(float(np.clip(np.dot(a, b), -1.0, 1.0)))
    if omega < 1e-6:
        return a.copy()
    s = math.sin(omega)
    return (math.sin((1 - t) * omega) / s) * a + (math.sin(t * omega) / s) * b


class Recommender:
    """Genre-aware ranking over one library: similar tracks, playlists and paths (``Service`` calls it)."""

    def __init__(self, library: Library) -> None:
        self.library = library

    # ---------------------------------------------------------------- helpers
    @property
    def catalog(self):
        return self.library.catalog

    def query_for_track(self, track_id: int) -> Query:
        t = self.catalog.get(track_id, with_embedding=True)
        return Query(vector=t.embedding, probabilities=t.probabilities, genre=t.genre, track_id=t.id, sha256=t.sha256)

    def query_for_audio(self, data: bytes, *, sha256: str | None = None) -> tuple[Query, Any, bool]:
        pred, sha, cached = self.library.predict_bytes(data, sha256=sha256)
        known = self.catalog.ids_for_hashes([sha]).get(sha)
        return Query(vector=pred.embedding, probabilities=pred.probabilities, genre=pred.genre, track_id=known,
                     sha256=sha), pred, cached

    def check_genre(self, genre: str) -> str:
        genres = self.library.bundle.genres
        if genre not in genres:
            raise BadRequest(f"unknown genre {genre!r}; the model knows: {', '.join(genres)}")
        return genre

    def _allowed(self, genres: Sequence[str] | None) -> np.ndarray | None:
        if not genres:
            return None
        ids = [self.catalog.ids_with_genre(self.check_genre(g)) for g in genres]
        return np.unique(np.concatenate(ids)) if ids else None

    # ---------------------------------------------------------------- similar
    def similar(self, query: Query, k: int = 10, *, genre: str | None = None, genre_mode: str = "any",
                boost_weight: float = 0.3, artist_cap: int | None = None, mmr_lambda: float | None = None,
                **search_params: Any) -> list[Scored]:
        """The ``k`` catalog tracks nearest ``query``, itself excluded.

        Parameters
        ----------
        genre : only tracks of this (predicted) genre; exactly ``k`` come back when ``k`` exist
        genre_mode : ``any``; ``same`` (the query's predicted genre); ``boost`` (re-rank by
            ``(1 − boost_weight) · similarity + boost_weight · genre agreement``)
        artist_cap : at most this many tracks per artist
        mmr_lambda : maximal marginal relevance re-ranking, 1 = relevance only, lower = more diverse
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise BadRequest(f"k must be a positive integer, not {k!r}")
        if genre_mode not in GENRE_MODES:
            raise BadRequest(f"genre_mode must be one of {', '.join(GENRE_MODES)}, not {genre_mode!r}")
        if not 0.0 <= boost_weight <= 1.0:
            raise BadRequest("boost_weight must be between 0 and 1")
        if mmr_lambda is not None and not 0.0 <= mmr_lambda <= 1.0:
            raise BadRequest("mmr_lambda must be between 0 and 1")
        if artist_cap is not None and artist_cap < 1:
            raise BadRequest("artist_cap must be at least 1")
        genres = [genre] if genre else ([query.genre] if genre_mode == "same" else None)
        allowed = self._allowed(genres)
        if query.track_id is not None:
            allowed = (np.setdiff1d(allowed, [query.track_id]) if allowed is not None
                       else None)
        rerank = genre_mode == "boost" or artist_cap is not None or mmr_lambda is not None
        want = k + 1 if not rerank else max(4 * k, 50)
        index = self.library.index
        ids, dist = index.search(query.vector, want, allowed=allowed, **search_params)
        keep = ids != (query.track_id if query.track_id is not None else -1)
        ids, dist = ids[keep], dist[keep]
        tracks = self.catalog.get_many(ids.tolist())
        scored = []
        for i, d in zip(ids.tolist(), dist.tolist()):
            t = tracks.get(i)
            if t is None:  # removed from the catalog a moment ago
                continue
            sim = 1.0 - float(d)
            agree = genre_agreement(query.probabilities, t.probabilities)
            score = (1 - boost_weight) * sim + boost_weight * agree if genre_mode == "boost" else sim
            scored.append(Scored(t, sim, agree, score))
        scored.sort(key=lambda s: (-s.score, s.track.id))
        if mmr_lambda is not None:
            scored = self._mmr(scored, mmr_lambda, k if artist_cap is None else len(scored))
        if artist_cap is not None:
            counts: dict[str, int] = {}
            capped = []
            for s in scored:
                a = (s.track.artist or "").casefold()
                if a and counts.get(a, 0) >= artist_cap:
                    continue
                counts[a] = counts.get(a, 0) + 1
                capped.append(s)
            scored = capped
        return scored[:k]

    def _mmr(self, scored: list[Scored], lam: float, n: int) -> list[Scored]:
        vecs = self.catalog.vectors([s.track.id for s in scored])
        chosen: list[Scored] = []
        rest = list(scored)
        while rest and len(chosen) < n:
            def value(s: Scored) -> float:
                if not chosen:
                    return s.score
                red = max(float(np.dot(vecs[s.track.id], vecs[c.track.id])) for c in chosen)
                return lam * s.score - (1 - lam) * red
            best = max(rest, key=lambda s: (value(s), -s.track.id))
            chosen.append(best)
            rest.remove(best)
        return chosen

    # ---------------------------------------------------------------- playlists
    def _check_length(self, length: int, minimum: int = 1) -> None:
        n = len(self.catalog)
        if not isinstance(length, int) or isinstance(length, bool) or length < minimum:
            raise BadRequest(f"length must be an integer of at least {minimum}, not {length!r}")
        if length > n:
            raise BadRequest(f"length {length} is larger than the catalog ({n} tracks)")

    def playlist(self, seeds: Sequence[int], length: int, *, genres: Sequence[str] | None = None,
                 artist_cap: int = 2, centre_weight: float = 0.5) -> list[Scored]:
        """A playlist that starts with the seeds and flows: each next track is close to the
        previous one and to the seeds' centre; no track twice; no artist twice in a row;
        at most ``artist_cap`` tracks per artist; optional genre constraint. Deterministic."""
        if not seeds:
            raise BadRequest("a playlist needs at least one seed track")
        if len(set(seeds)) != len(seeds):
            raise BadRequest("seed tracks repeat")
        self._check_length(length, len(seeds))
        if artist_cap < 1 or not 0.0 <= centre_weight <= 1.0:
            raise BadRequest("artist_cap must be at least 1 and centre_weight between 0 and 1")
        seed_tracks = [self.catalog.get(s, with_embedding=True) for s in seeds]
        allowed = self._allowed(genres)
        centre = _unit(np.mean([t.embedding for t in seed_tracks], axis=0))
        out = [Scored(t, 1.0, 1.0, 1.0) for t in seed_tracks]
        used = {t.id for t in seed_tracks}
        per_artist: dict[str, int] = {}
        for t in seed_tracks:
            a = (t.artist or "").casefold()
            if a:
                per_artist[a] = per_artist.get(a, 0) + 1
        prev = seed_tracks[-1]
        index = self.library.index
        # candidates recur from step to step: read each one's row and vector once
        tracks: dict[int, Track] = {}
        vecs: dict[int, np.ndarray] = {}
        while len(out) < length:
            pick = None
            want = min(len(index), 4 * (length + 10))
            while pick is None:
                cand: dict[int, None] = {}
                for v in (prev.embedding, centre):
                    ids, _ = index.search(v, want, allowed=allowed)
                    cand.update((int(i), None) for i in ids if int(i) not in used)
                unseen = [i for i in cand if i not in tracks]
                tracks.update(self.catalog.get_many(unseen))
                vecs.update(self.catalog.vectors(unseen))
                best = None
                for tid in cand:
                    t = tracks.get(tid)
                    if t is None:  # removed from the catalog a moment ago
                        continue
                    a = (t.artist or "").casefold()
                    if a and (a == (prev.artist or "").casefold() or per_artist.get(a, 0) >= artist_cap):
                        continue
                    sim_prev = float(np.dot(vecs[tid], prev.embedding))
                    sim_centre = float(np.dot(vecs[tid], centre))
                    score = (1 - centre_weight) * sim_prev + centre_weight * sim_centre
                    key = (score, -tid)
                    if best is None or key > best[0]:
                        best = (key, t, sim_prev)
                if best is not None:
                    _, t, sim_prev = best
                    t.embedding = vecs[t.id]
                    pick = Scored(t, sim_prev, genre_agreement(prev.probabilities, t.probabilities), best[0][0])
                elif want >= len(index):
                    break
                else:
                    want = min(len(index), want * 4)
            if pick is None:
                raise BadRequest(f"only {len(out)} tracks satisfy the constraints (genre, artist cap); "
                                 f"ask for fewer or relax them")
            out.append(pick)
            used.add(pick.track.id)
            a = (pick.track.artist or "").casefold()
            if a:
                per_artist[a] = per_artist.get(a, 0) + 1
            prev = pick.track
        return out

    def path(self, start: int, end: int, length: int) -> list[Scored]:
        """A listening journey from ``start`` to ``end``: each step is the nearest unused track
        to the next point on the great circle between their embeddings."""
        self._check_length(length, 2)
        if start == end:
            raise BadRequest("a path needs two different tracks")
        a = self.catalog.get(start, with_embedding=True)
        b = self.catalog.get(end, with_embedding=True)
        index = self.library.index
        out = [Scored(a, 1.0, 1.0, 1.0)]
        used = {a.id, b.id}
        for i in range(1, length - 1):
            point = slerp(a.embedding, b.embedding, i / (length - 1))
            ids, dist = index.search(point, min(len(index), len(used) + 1))
            for tid, d in zip(ids.tolist(), dist.tolist()):
                if tid not in used:
                    t = self.catalog.get(tid)
                    used.add(tid)
                    out.append(Scored(t, 1.0 - float(d), genre_agreement(out[-1].track.probabilities, t.probabilities),
                                      1.0 - float(d)))
                    break
        last = self.catalog.vectors([out[-1].track.id])[out[-1].track.id]
        sim_end = float(np.dot(last, b.embedding))
        out.append(Scored(b, sim_end, genre_agreement(out[-1].track.probabilities, b.probabilities), sim_end))
        return out


# ---------------------------------------------------------------- export
def to_m3u8(items: Sequence[Scored], *, relative_to: str | Path | None = None, title: str = "sonicsort",
            locate: Callable[[Track], str] | None = None) -> str:
    """Extended M3U (UTF-8). Paths are relative to ``relative_to`` (the playlist's folder) when
    possible; ``locate`` gives each track's entry instead (e.g. its URL on the server)."""
    lines = ["#EXTM3U", f"#PLAYLIST:{title}"]
    base = Path(relative_to).resolve() if relative_to else None
    for s in items:
        t = s.track
        path = locate(t) if locate is not None else (t.path or "")
        if base is not None and path and locate is None:
            try:
                path = os.path.relpath(path, base)
            except ValueError:  # another drive
                pass
        name = f"{t.artist} - {t.title}" if t.artist else t.title
        lines.append(f"#EXTINF:{int(round(t.duration_s))},{name}")
        lines.append(path)
    return "\n".join(lines) + "\n"


def to_json(items: Sequence[Scored]) -> list[dict[str, Any]]:
    return [dict(position=i + 1, **s.to_dict()) for i, s in enumerate(items)]


__all__ = ["GENRE_MODES", "Query", "Recommender", "Scored", "genre_agreement", "slerp", "to_json", "to_m3u8"]
