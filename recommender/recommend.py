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
from .duplicates import deduper
from .errors import BadRequest
from .limits import Deadline, yield_gil
from .library import Library
from .text import clean_text

GENRE_MODES = ("any", "same", "boost")
MAX_LENGTH = 1000  # the longest playlist or path one request may ask for
# playlists and paths score every allowed track at each step (one matrix product) up to this
# many tracks; on a larger catalog they search the index step by step
EXACT_POOL = 50_000


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
                dedupe: bool = True, **search_params: Any) -> list[Scored]:
        """The ``k`` catalog tracks nearest ``query``, itself excluded (and, with ``dedupe``, its
        near-duplicates, and of each recording only the best placed).

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
        dd = deduper(self.library, dedupe, [query.track_id] if query.track_id is not None else ())
        if dd:
            want = 2 * want + 10  # room for the duplicates dropped
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
        if dd:
            scored = [s for s in scored if not dd.blocked(s.track.id) and dd.take(s.track.id) is not None]
        if mmr_lambda is None and artist_cap is None:
            return scored[:k]
        return self._select(scored, k, mmr_lambda, artist_cap)

    def _select(self, scored: list[Scored], k: int, lam: float | None, artist_cap: int | None) -> list[Scored]:
        """The first ``k`` of ``scored`` (best first) chosen greedily: by maximal marginal relevance
        when ``lam`` is given (``lam · score − (1 − lam) · the highest cosine to a track already
        chosen``), skipping a track whose artist already has ``artist_cap``. Ties go to the lower
        id. Vectorised: a step costs one product of the candidates with the last pick."""
        m = len(scored)
        if m == 0:
            return []
        ids = np.array([s.track.id for s in scored], np.int64)
        rel = np.array([s.score for s in scored], np.float64)
        open_ = np.ones(m, bool)
        if lam is not None:
            vecs = self.catalog.vectors(ids.tolist())
            mat = np.stack([vecs[int(i)] for i in ids]).astype(np.float32)
            redundancy = np.full(m, -np.inf)
        artists = [(s.track.artist or "").casefold() for s in scored]
        counts: dict[str, int] = {}
        chosen: list[Scored] = []
        while len(chosen) < k and open_.any():
            yield_gil()
            value = rel if lam is None or not chosen else lam * rel - (1 - lam) * redundancy
            value = np.where(open_, value, -np.inf)
            ties = np.flatnonzero(value == value.max())
            best = int(ties[np.argmin(ids[ties])])
            open_[best] = False
            a = artists[best]
            if a and artist_cap is not None:
                if counts.get(a, 0) >= artist_cap:
                    continue
                counts[a] = counts.get(a, 0) + 1
            chosen.append(scored[best])
            if lam is not None:
                np.maximum(redundancy, mat @ mat[best], out=redundancy)
        return chosen

    # ---------------------------------------------------------------- candidate pools
    def _pool(self, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        """Every catalog track ``allowed`` lets in (all when None), as (ids, unit vectors
        (n, embedding_dim), casefolded artists); None when that is more than ``EXACT_POOL``
        tracks, where long playlists and paths search the index step by step instead."""
        self.library.index  # noqa: B018 - brings this node's index in step with the catalog, as a search does
        n = len(allowed) if allowed is not None else len(self.catalog)
        if n > EXACT_POOL:
            return None
        generation = self.catalog.generation
        cached = self.library.whole_pool
        if allowed is None and cached is not None and cached[0] == generation:
            return cached[1]
        ids, vecs = [], []
        for batch_ids, batch_vecs in self.catalog.embeddings():
            if allowed is not None:
                mask = np.isin(batch_ids, allowed)
                batch_ids, batch_vecs = batch_ids[mask], batch_vecs[mask]
            ids.append(batch_ids)
            vecs.append(batch_vecs)
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, 1), np.float32), []
        ids_a, vecs_a = np.concatenate(ids), np.concatenate(vecs)
        norms = np.linalg.norm(vecs_a, axis=1, keepdims=True)
        vecs_a = vecs_a / np.where(norms > 0, norms, 1.0)
        artist_of = {i: (a or "").casefold() for i, _, a, _ in self.catalog.labels()}
        pool = ids_a, vecs_a.astype(np.float32), [artist_of.get(int(i), "") for i in ids_a]
        if allowed is None:
            self.library.whole_pool = (generation, pool)
        return pool

    # ---------------------------------------------------------------- playlists
    def _check_length(self, length: int, minimum: int = 1) -> None:
        if not isinstance(length, int) or isinstance(length, bool) or length < minimum:
            raise BadRequest(f"length must be an integer of at least {minimum}, not {length!r}")
        if length > MAX_LENGTH:
            raise BadRequest(f"length must be at most {MAX_LENGTH}, not {length}")

    def playlist(self, seeds: Sequence[int], length: int, *, genres: Sequence[str] | None = None,
                 artist_cap: int = 2, centre_weight: float = 0.5, deadline: "Deadline | None" = None,
                 dedupe: bool = True) -> list[Scored]:
        """A playlist that starts with the seeds and flows: each next track is close to the
        previous one and to the seeds' centre; no track twice; no artist twice in a row;
        at most ``artist_cap`` tracks per artist; optional genre constraint. Deterministic.

        Shorter than ``length`` when the catalog (or the constraints) hold fewer tracks: the
        answer is every track that can be placed; a ``length`` below the number of seeds gives
        the first seeds. ``deadline``: a ``limits.Deadline`` the work stops at (``Overloaded``).
        ``dedupe``: no near-duplicate of a seed or of another pick."""
        if not seeds:
            raise BadRequest("a playlist needs at least one seed track")
        if len(set(seeds)) != len(seeds):
            raise BadRequest("seed tracks repeat")
        self._check_length(length, 1)
        if length < len(seeds):
            return [Scored(self.catalog.get(s), 1.0, 1.0, 1.0) for s in seeds[:length]]
        if artist_cap < 1 or not 0.0 <= centre_weight <= 1.0:
            raise BadRequest("artist_cap must be at least 1 and centre_weight between 0 and 1")
        deadline = deadline or Deadline(None)
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
        prev_vec, prev_artist = _unit(seed_tracks[-1].embedding), (seed_tracks[-1].artist or "").casefold()
        dd = deduper(self.library, dedupe, seeds)
        used |= set(dd.blocked_ids())
        pool = self._pool(allowed)
        picks: list[tuple[int, float, float]] = []  # (id, similarity to the previous track, score)
        if pool is not None:
            ids, mat, artists = pool
            open_ = ~np.isin(ids, list(used))
            by_centre = mat @ centre.astype(np.float32)
            artist_ids: dict[str, list[int]] = {}
            for i, a in enumerate(artists):
                if a:
                    artist_ids.setdefault(a, []).append(i)
            for a, c in per_artist.items():
                if c >= artist_cap:
                    open_[artist_ids.get(a, [])] = False
            while len(out) + len(picks) < length:
                deadline.check("the playlist")
                yield_gil()
                ok = open_.copy()
                if prev_artist:
                    ok[artist_ids.get(prev_artist, [])] = False
                if not ok.any():
                    break
                sim_prev = mat @ prev_vec.astype(np.float32)
                score = np.where(ok, (1 - centre_weight) * sim_prev + centre_weight * by_centre, -np.inf)
                ties = np.flatnonzero(score == score.max())
                best = int(ties[np.argmin(ids[ties])])
                picks.append((int(ids[best]), float(sim_prev[best]), float(score[best])))
                open_[best] = False
                same = dd.take(int(ids[best]))
                if same:
                    open_[np.isin(ids, same)] = False
                prev_vec, prev_artist = mat[best], artists[best]
                if prev_artist:
                    per_artist[prev_artist] = per_artist.get(prev_artist, 0) + 1
                    if per_artist[prev_artist] >= artist_cap:
                        open_[artist_ids[prev_artist]] = False
        else:
            picks = self._playlist_by_search(length - len(out), used, per_artist, prev_vec, prev_artist, centre,
                                             allowed, artist_cap, centre_weight, deadline, dd)
        tracks = self.catalog.get_many([i for i, _, _ in picks])
        prev = seed_tracks[-1]
        for tid, sim_prev, score in picks:
            t = tracks.get(tid)
            if t is None:  # removed from the catalog a moment ago
                continue
            out.append(Scored(t, sim_prev, genre_agreement(prev.probabilities, t.probabilities), score))
            prev = t
        return out

    def _playlist_by_search(self, n: int, used: set[int], per_artist: dict[str, int], prev_vec: np.ndarray,
                            prev_artist: str, centre: np.ndarray, allowed, artist_cap: int, centre_weight: float,
                            deadline: "Deadline", dd) -> list[tuple[int, float, float]]:
        """``playlist``'s steps on a catalog too large to score whole: each step scores the
        index's nearest tracks to the previous pick and to the centre."""
        index = self.library.index
        picks: list[tuple[int, float, float]] = []
        vecs: dict[int, np.ndarray] = {}
        artist_of: dict[int, str] = {}
        want = min(len(index), 4 * (n + 10))
        while len(picks) < n:
            deadline.check("the playlist")
            yield_gil()
            best = None
            while best is None:
                cand: dict[int, None] = {}
                for v in (prev_vec, centre):
                    ids, _ = index.search(v, want, allowed=allowed)
                    cand.update((int(i), None) for i in ids if int(i) not in used)
                unseen = [i for i in cand if i not in vecs]
                rows = self.catalog.get_many(unseen)
                artist_of.update((i, (t.artist or "").casefold()) for i, t in rows.items())
                vecs.update(self.catalog.vectors([i for i in unseen if i in rows]))
                for tid in cand:
                    if tid not in vecs:
                        continue
                    a = artist_of[tid]
                    if a and (a == prev_artist or per_artist.get(a, 0) >= artist_cap):
                        continue
                    sim_prev = float(np.dot(vecs[tid], prev_vec))
                    score = (1 - centre_weight) * sim_prev + centre_weight * float(np.dot(vecs[tid], centre))
                    if best is None or (score, -tid) > (best[2], -best[0]):
                        best = (tid, sim_prev, score)
                if best is None:
                    if want >= len(index):
                        return picks
                    want = min(len(index), want * 4)
            picks.append(best)
            used.add(best[0])
            used.update(dd.take(best[0]))
            prev_vec, prev_artist = vecs[best[0]], artist_of[best[0]]
            if prev_artist:
                per_artist[prev_artist] = per_artist.get(prev_artist, 0) + 1
        return picks

    def path(self, start: int, end: int, length: int, *, deadline: "Deadline | None" = None,
             dedupe: bool = True) -> list[Scored]:
        """A listening journey from ``start`` to ``end``: each step is the nearest unused track
        to the next point on the great circle between their embeddings. From a track to itself
        it is a round trip: the track, its nearest tracks, the track again. Shorter than
        ``length`` when the catalog holds fewer tracks. ``dedupe``: no near-duplicate of either
        end or of another step."""
        self._check_length(length, 2)
        deadline = deadline or Deadline(None)
        a = self.catalog.get(start, with_embedding=True)
        b = self.catalog.get(end, with_embedding=True) if end != start else a
        out = [Scored(a, 1.0, 1.0, 1.0)]
        used = {a.id, b.id}
        dd = deduper(self.library, dedupe, used)
        used |= set(dd.blocked_ids())
        steps = length - 2
        if start == end:
            points = [a.embedding] * steps
        else:
            points = [slerp(a.embedding, b.embedding, i / (length - 1)) for i in range(1, length - 1)]
        pool = self._pool(None) if steps else None
        if pool is not None:
            ids, mat, _ = pool
            open_ = ~np.isin(ids, list(used))
            chosen: list[tuple[int, float]] = []
            for lo in range(0, steps, 64):
                deadline.check("the path")
                sims = mat @ np.stack(points[lo:lo + 64]).astype(np.float32).T
                for j in range(sims.shape[1]):
                    if not open_.any():
                        break
                    yield_gil()
                    col = np.where(open_, sims[:, j], -np.inf)
                    ties = np.flatnonzero(col == col.max())
                    best = int(ties[np.argmin(ids[ties])])
                    open_[best] = False
                    same = dd.take(int(ids[best]))
                    if same:
                        open_[np.isin(ids, same)] = False
                    chosen.append((int(ids[best]), float(sims[best, j])))
            rows = self.catalog.get_many([i for i, _ in chosen])
            for tid, sim in chosen:
                t = rows.get(tid)
                if t is not None:
                    out.append(Scored(t, sim, genre_agreement(out[-1].track.probabilities, t.probabilities), sim))
        else:
            index = self.library.index
            for point in points:
                deadline.check("the path")
                ids, dist = index.search(point, min(len(index), len(used) + 1))
                for tid, d in zip(ids.tolist(), dist.tolist()):
                    if tid not in used:
                        t = self.catalog.get(tid)
                        used.add(tid)
                        used.update(dd.take(tid))
                        out.append(Scored(t, 1.0 - float(d), genre_agreement(out[-1].track.probabilities,
                                                                             t.probabilities), 1.0 - float(d)))
                        break
        last = self.catalog.vectors([out[-1].track.id])[out[-1].track.id]
        sim_end = float(np.dot(_unit(last), _unit(b.embedding)))
        out.append(Scored(b, sim_end, genre_agreement(out[-1].track.probabilities, b.probabilities), sim_end))
        return out


# ---------------------------------------------------------------- export
def to_m3u8(items: Sequence[Scored], *, relative_to: str | Path | None = None, title: str = "sonicsort",
            locate: Callable[[Track], str] | None = None) -> str:
    """Extended M3U (UTF-8). Paths are relative to ``relative_to`` (the playlist's folder) when
    possible; ``locate`` gives each track's entry instead (e.g. its URL on the server).

    Every text written passes ``clean_text``: a line break in a title cannot start a line (an
    entry or a directive) of its own, and an entry's location is never empty or a directive."""
    lines = ["#EXTM3U", f"#PLAYLIST:{clean_text(title) or 'sonicsort'}"]
    base = Path(relative_to).resolve() if relative_to else None
    for s in items:
        t = s.track
        path = locate(t) if locate is not None else (t.path or "")
        if base is not None and path and locate is None:
            try:
                path = os.path.relpath(path, base)
            except ValueError:  # another drive
                pass
        artist, name = clean_text(t.artist), clean_text(t.title) or "Untitled"
        location = clean_text(path)
        if location is None:
            continue  # a track with no file to point at: no entry rather than a broken one
        if location.startswith("#"):  # a relative path is never read as a directive
            location = "./" + location
        lines.append(f"#EXTINF:{int(round(t.duration_s))},{f'{artist} - {name}' if artist else name}")
        lines.append(location)
    return "\n".join(lines) + "\n"


def to_json(items: Sequence[Scored]) -> list[dict[str, Any]]:
    return [dict(position=i + 1, **s.to_dict()) for i, s in enumerate(items)]


__all__ = ["GENRE_MODES", "Query", "Recommender", "Scored", "genre_agreement", "slerp", "to_json", "to_m3u8"]
