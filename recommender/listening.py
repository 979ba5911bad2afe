"""What a listener does with similar tracks: continue a queue, mix tracks by adding and
subtracting them (alchemy), get a mix from what they played, and put a list in flowing order.

Every answer is a list of ``Scored`` tracks, ranked on the same embeddings and the same
genre agreement as ``Recommender``; none of them ever holds one of its inputs.

- **Continue a queue** (``queue_next``): the next tracks are those nearest the queue's
  recent past, a track's weight halving every ``QUEUE_HALF_LIFE`` tracks back (and the
  picks joining the queue as they are made). No artist comes back within
  ``no_repeat_artist`` tracks of queue and picks together, no album within
  ``no_repeat_album`` (the music-similarity mixers' rules). When the catalog cannot satisfy
  a window, it is halved until it can (the album's first) and the answer says what it used.
- **Alchemy** (``alchemy``): near the added tracks and away from the subtracted ones:
  ``cos(v, centre of the added) − subtract_weight · max cos(v, a subtracted track)``.
- **A mix from plays** (``mix``): every play weighs ``0.5 ** (age / MIX_HALF_LIFE_DAYS)``;
  a track scores by a soft maximum of its cosines to the played tracks (so two tastes stay
  two, not their average), what was played in the last ``MIX_RECENT_S`` is left out, and
  no artist has more than ``artist_cap`` tracks.
- **Similar artists** (``similar_artists``): artists (album artists, as ``browse.MusicIndex``
  groups them) compared by their tracks' embeddings as sets, not by one mean vector each:
  the Chamfer similarity, the mean of each track's best cosine to the other artist's
  tracks, both ways, averaged.
- **Flowing order** (``flow_order``): the same tracks ordered so that consecutive tracks
  are close: a greedy nearest-neighbour walk and the order given, each improved by 2-opt
  moves until none shortens it; the shorter of the two.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from .catalog import Track
from .duplicates import deduper
from .errors import BadRequest, UnknownArtist, UnknownTrack
from .limits import Deadline, yield_gil
from .recommend import Recommender, Scored, _unit, genre_agreement

QUEUE_HALF_LIFE = 3.0  # tracks
QUEUE_CONTEXT = 25  # the most recent queue tracks that shape what comes next
MIX_HALF_LIFE_DAYS = 30.0
MIX_RECENT_S = 86_400.0
MIX_ANCHORS = 50  # the most weighed played tracks a mix scores against
MIX_TEMPERATURE = 0.05  # of the soft maximum over the played tracks' cosines
MAX_COUNT = 200
MAX_INPUTS = 500


def _check_count(count: int) -> None:
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise BadRequest(f"count must be an integer from 1 to {MAX_COUNT}, not {count!r}")


def _artist_key(t: Track) -> str:
    return (t.artist or "").strip().casefold()


def _album_key(t: Track) -> str:
    album = (t.album or "").strip().casefold()
    return f"{(t.album_artist or t.artist or '').strip().casefold()}\x00{album}" if album else ""


def mean_step(vectors: np.ndarray) -> float:
    """The mean cosine distance between consecutive rows (unit vectors)."""
    if len(vectors) < 2:
        return 0.0
    return float(np.mean(1.0 - np.sum(vectors[1:] * vectors[:-1], axis=1)))


def flow_order(vectors: np.ndarray, *, keep_first: int = 1, keep_last: bool = False,
               deadline: Deadline | None = None, max_passes: int = 50) -> list[int]:
    """An order of the rows of ``vectors`` (unit vectors) in which consecutive rows are close:
    the first ``keep_first`` rows stay where they are (at least the first), and the last
    too with ``keep_last``. Two walks are improved by 2-opt moves (reversing a stretch) while
    one shortens them: a greedy nearest-neighbour walk from the last kept row, and the rows
    as given; the shorter wins, so the answer is never longer than the order it was given."""
    n = len(vectors)
    keep_first = max(1, min(keep_first, n))
    if n - keep_first - (1 if keep_last else 0) < 2:
        return list(range(n))
    deadline = deadline or Deadline(None)
    v = vectors.astype(np.float64)
    dist = 1.0 - v @ v.T
    order = list(range(keep_first))
    free = np.ones(n, bool)
    free[:keep_first] = False
    if keep_last:
        free[n - 1] = False
    while free.any():
        row = np.where(free, dist[order[-1]], np.inf)
        best = int(np.argmin(row))
        order.append(best)
        free[best] = False
    if keep_last:
        order.append(n - 1)
    walks = [_two_opt(np.array(start), dist, keep_first, keep_last, deadline, max_passes)
             for start in (order, list(range(n)))]
    return min(walks, key=lambda w: (float(dist[w[:-1], w[1:]].sum()), w.tolist())).tolist()


def _two_opt(p: np.ndarray, dist: np.ndarray, keep_first: int, keep_last: bool, deadline: Deadline,
             max_passes: int) -> np.ndarray:
    """``p`` improved by reversals of stretches that start at or after ``keep_first`` and end
    before the last position with ``keep_last``, best gain first at each start, until none helps."""
    n = len(p)
    lo, hi = keep_first, (n - 1 if keep_last else n)
    for _ in range(max_passes):
        deadline.check("the flowing order")
        improved = False
        for i in range(lo, hi - 1):
            yield_gil()
            j = np.arange(i + 1, hi)
            a, b = p[i - 1], p[i]
            c = p[j]
            nxt = j + 1
            has_next = nxt < n
            d = np.where(has_next, p[np.minimum(nxt, n - 1)], 0)
            before = dist[a, b] + np.where(has_next, dist[c, d], 0.0)
            after = dist[a, c] + np.where(has_next, dist[b, d], 0.0)
            gain = before - after
            k = int(np.argmax(gain))
            if gain[k] > 1e-12:
                p[i:j[k] + 1] = p[i:j[k] + 1][::-1].copy()
                improved = True
        if not improved:
            break
    return p


class Listening:
    """The listening features over one ``Recommender`` (``Service`` calls it)."""

    def __init__(self, reco: Recommender, music=None) -> None:
        self.reco = reco
        self.music = music  # a browse.MusicIndex of the catalog: artists, albums, durations without a query

    @property
    def catalog(self):
        return self.reco.catalog

    # ---------------------------------------------------------------- shared
    def _vectors_of(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        found = self.catalog.vectors(list(dict.fromkeys(ids)))
        for i in ids:
            if i not in found:
                raise UnknownTrack(f"unknown track {i}")
        return {i: _unit(np.asarray(v, np.float32)) for i, v in found.items()}

    def _nearest(self, targets: Sequence[np.ndarray], want: int, exclude: set[int],
                 allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Candidates near any of ``targets``: (ids, unit vectors), at most ``want`` per target,
        none in ``exclude``; from every allowed track when the catalog is small enough to score
        whole (``Recommender._pool``), else from the index."""
        pool = self.reco._pool(allowed)
        if pool is not None:
            ids, mat, _ = pool
            if len(ids) == 0:
                return ids, mat
            open_ = ~np.isin(ids, list(exclude)) if exclude else np.ones(len(ids), bool)
            chosen: set[int] = set()
            for t in targets:
                sims = np.where(open_, mat @ t.astype(np.float32), -np.inf)
                n = min(want, int(open_.sum()))
                if n <= 0:
                    break
                top = np.argpartition(-sims, n - 1)[:n]
                chosen.update(top.tolist())
            rows = np.array(sorted(chosen), np.int64)
            return ids[rows], mat[rows]
        index = self.reco.library.index
        found: dict[int, None] = {}
        for t in targets:
            got, _ = index.search(t, min(len(index), want + len(exclude)), allowed=allowed)
            found.update((int(i), None) for i in got if int(i) not in exclude)
        vecs = self.catalog.vectors(list(found))
        ids = np.array([i for i in found if i in vecs], np.int64)
        mat = np.stack([_unit(np.asarray(vecs[int(i)], np.float32)) for i in ids]) if len(ids) else np.zeros((0, 1))
        return ids, mat.astype(np.float32)

    # ---------------------------------------------------------------- continue a queue
    def queue_next(self, queue: Sequence[int], count: int, *, no_repeat_artist: int = 15, no_repeat_album: int = 25,
                   min_duration_s: float | None = None, max_duration_s: float | None = None,
                   genres: Sequence[str] | None = None, deadline: Deadline | None = None, dedupe: bool = True
                   ) -> tuple[list[Scored], dict[str, int]]:
        """The next ``count`` tracks after ``queue`` (ids, most recent last), and the windows
        relaxed to find them (``{"no_repeat_artist": used, ...}``; empty when none was).
        Fewer when the catalog (with the duration bounds and genres) holds fewer. ``dedupe``:
        no near-duplicate of a queued track or of another pick."""
        if not queue:
            raise BadRequest("the queue needs at least one track")
        if len(queue) > MAX_INPUTS:
            raise BadRequest(f"the queue may hold at most {MAX_INPUTS} tracks, not {len(queue)}")
        _check_count(count)
        for name, w in (("no_repeat_artist", no_repeat_artist), ("no_repeat_album", no_repeat_album)):
            if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 1000:
                raise BadRequest(f"{name} must be an integer from 0 to 1000, not {w!r}")
        if min_duration_s is not None and max_duration_s is not None and min_duration_s > max_duration_s:
            raise BadRequest(f"min_duration_s ({min_duration_s}) is above max_duration_s ({max_duration_s})")
        deadline = deadline or Deadline(None)
        vecs = self._vectors_of(queue)
        queued = self.catalog.get_many(list(vecs))
        recent = list(queue)[-QUEUE_CONTEXT:]
        decay = 0.5 ** (1.0 / QUEUE_HALF_LIFE)
        taste = np.zeros_like(next(iter(vecs.values())), dtype=np.float64)
        for i in recent:
            taste = taste * decay + vecs[i]
        allowed = self.reco._allowed(genres)
        want = min(max(20 * count, 400), len(self.catalog))
        dd = deduper(self.reco.library, dedupe, vecs)
        every_ids, every_mat = self._nearest([_unit(taste)], want, set(vecs) | set(dd.blocked_ids()), allowed)
        first = np.argsort(-(every_mat @ _unit(taste).astype(np.float32)), kind="stable") if len(every_ids) else []
        every_ids, every_mat = every_ids[first], every_mat[first]  # nearest first

        def candidates(n: int):
            """The ``n`` nearest candidates that keep the duration bounds: ids, vectors, and
            (artist, album, duration) of each, from the music index when there is one."""
            facts = self._facts(every_ids[:n].tolist())
            keep = [k for k, i in enumerate(every_ids[:n].tolist()) if i in facts
                    and (min_duration_s is None or facts[i][2] >= min_duration_s)
                    and (max_duration_s is None or facts[i][2] <= max_duration_s)]
            return every_ids[:n][keep], every_mat[:n][keep], facts

        # the nearest few are looked at first; the rest only when the windows need them
        n_read = min(len(every_ids), 3 * count + 30)
        ids, mat, facts = candidates(n_read)
        artists = [facts[i][0] for i in ids.tolist()]
        albums = [facts[i][1] for i in ids.tolist()]
        queued_facts = self._facts(list(dict.fromkeys(queue)))
        history = [queued_facts[i][:2] for i in queue if i in queued_facts]
        windows = {"no_repeat_artist": no_repeat_artist, "no_repeat_album": no_repeat_album}
        relaxed: dict[str, int] = {}
        open_ = np.ones(len(ids), bool)
        centre_probs = _mean_probabilities([queued[i] for i in recent if i in queued])
        picks: list[tuple[int, float]] = []  # (track id, similarity to the queue when picked)
        while len(picks) < count:
            deadline.check("the queue")
            yield_gil()
            best = None
            if open_.any():
                sims = mat @ _unit(taste).astype(np.float32)
                order = np.argsort(np.where(open_, -sims, np.inf), kind="stable")[: int(open_.sum())]
                recent_artists = {a for a, _ in history[-windows["no_repeat_artist"]:]} if windows["no_repeat_artist"] else set()
                recent_albums = {b for _, b in history[-windows["no_repeat_album"]:]} if windows["no_repeat_album"] else set()
                best = next((int(k) for k in order if not (artists[k] and artists[k] in recent_artists)
                             and not (albums[k] and albums[k] in recent_albums)
                             and not (dd and dd.blocked(int(ids[k])))), None)
            if best is None and n_read < len(every_ids):  # read every candidate before narrowing a window
                n_read = len(every_ids)
                taken = {tid for tid, _ in picks}
                ids, mat, facts = candidates(n_read)
                artists = [facts[i][0] for i in ids.tolist()]
                albums = [facts[i][1] for i in ids.tolist()]
                open_ = ~np.isin(ids, list(taken)) if taken else np.ones(len(ids), bool)
                continue
            if best is None:
                if not open_.any():
                    break  # the catalog holds no more
                # the windows cannot be kept: halve the album's, then the artist's
                key = "no_repeat_album" if windows["no_repeat_album"] > 0 else "no_repeat_artist"
                windows[key] //= 2
                relaxed[key] = windows[key]
                continue
            open_[best] = False
            same = dd.take(int(ids[best]))
            if same:
                open_[np.isin(ids, same)] = False
            picks.append((int(ids[best]), float(sims[best])))
            history.append((artists[best], albums[best]))
            taste = taste * decay + mat[best]
        rows = self.catalog.get_many([tid for tid, _ in picks])
        return [Scored(rows[tid], sim, genre_agreement(centre_probs, rows[tid].probabilities), sim)
                for tid, sim in picks if tid in rows], relaxed

    def _facts(self, ids: list[int]) -> dict[int, tuple[str, str, float]]:
        """track id → (artist key, album key, duration s); "" where the tags say nothing."""
        from .browse import UNKNOWN_ALBUM, UNKNOWN_ARTIST

        if self.music is not None:
            out = {}
            for i in ids:
                s = self.music.songs.get(i)
                if s is not None:
                    artist = "" if s.artist == UNKNOWN_ARTIST else s.artist.strip().casefold()
                    out[i] = (artist, "" if s.album == UNKNOWN_ALBUM else s.album_id, s.duration_s)
            return out
        rows = self.catalog.get_many(ids)
        return {i: (_artist_key(t), _album_key(t), t.duration_s) for i, t in rows.items()}

    # ---------------------------------------------------------------- alchemy
    def alchemy(self, add: Sequence[int], subtract: Sequence[int] = (), count: int = 20, *,
                subtract_weight: float = 0.5, dedupe: bool = True) -> list[Scored]:
        """Tracks near the ``add`` tracks and away from the ``subtract`` ones, best first (with
        ``dedupe``, none the same recording as an input or as a better placed one)."""
        if not add:
            raise BadRequest("alchemy needs at least one track to add")
        if len(add) + len(subtract) > MAX_INPUTS:
            raise BadRequest(f"alchemy takes at most {MAX_INPUTS} tracks in all")
        both = set(add) & set(subtract)
        if both:
            raise BadRequest(f"track {min(both)} is both added and subtracted")
        _check_count(count)
        if not 0.0 <= subtract_weight <= 1.0:
            raise BadRequest("subtract_weight must be between 0 and 1")
        vecs = self._vectors_of([*add, *subtract])
        centre = _unit(np.mean([vecs[i] for i in add], axis=0))
        away = np.stack([vecs[i] for i in subtract]) if subtract else None
        targets = [centre]
        if away is not None:
            targets.append(_unit(centre - subtract_weight * _unit(away.mean(axis=0))))
        dd = deduper(self.reco.library, dedupe, vecs)
        ids, mat = self._nearest(targets, max(10 * count, 200), set(vecs) | set(dd.blocked_ids()), None)
        if len(ids) == 0:
            return []
        sims = mat @ centre.astype(np.float32)
        score = sims - subtract_weight * (mat @ away.T.astype(np.float32)).max(axis=1) if away is not None else sims
        order = np.lexsort((ids, -score)).tolist()  # best first, ties to the lower id
        if dd:
            order = [k for k in order if not dd.blocked(int(ids[k])) and dd.take(int(ids[k])) is not None]
        order = order[:count]
        rows = self.catalog.get_many([int(ids[k]) for k in order])
        probs = _mean_probabilities(list(self.catalog.get_many(list(add)).values()))
        return [Scored(rows[int(ids[k])], float(sims[k]), genre_agreement(probs, rows[int(ids[k])].probabilities),
                       float(score[k])) for k in order if int(ids[k]) in rows]

    # ---------------------------------------------------------------- a mix from plays
    def mix(self, user: str, count: int = 30, *, artist_cap: int = 2, now: float | None = None,
            dedupe: bool = True) -> list[Scored]:
        """A mix for ``user`` from their recorded plays (empty when they have none); with
        ``dedupe``, no recording twice and none played in the last day in another file."""
        _check_count(count)
        now = time.time() if now is None else now
        weights: dict[int, float] = {}
        recent: set[int] = set()
        for track_id, played_at in self.catalog.plays_of(user):
            age = max(0.0, now - played_at)
            weights[track_id] = weights.get(track_id, 0.0) + 0.5 ** (age / 86_400.0 / MIX_HALF_LIFE_DAYS)
            if age < MIX_RECENT_S:
                recent.add(track_id)
        if not weights:
            return []
        anchors = sorted(weights, key=lambda t: (-weights[t], t))[:MIX_ANCHORS]
        vecs = self.catalog.vectors(anchors)
        anchors = [a for a in anchors if a in vecs]
        if not anchors:
            return []
        amat = np.stack([_unit(np.asarray(vecs[a], np.float32)) for a in anchors])
        w = np.array([weights[a] for a in anchors])
        taste = _unit((w[:, None] * amat).sum(axis=0))
        dd = deduper(self.reco.library, dedupe, recent)
        ids, mat = self._nearest([taste, *amat[:10]], max(5 * count, 100), recent | set(dd.blocked_ids()), None)
        if len(ids) == 0:
            return []
        cos = mat @ amat.T  # (candidates, anchors)
        z = (cos - cos.max(axis=1, keepdims=True)) / MIX_TEMPERATURE
        score = cos.max(axis=1) + MIX_TEMPERATURE * np.log((np.exp(z) * w).sum(axis=1) / w.sum())
        order = np.lexsort((ids, -score)).tolist()  # best first, ties to the lower id
        rows = self.catalog.get_many([int(ids[k]) for k in order[: 4 * count]])
        probs = _mean_probabilities(list(self.catalog.get_many(anchors[:10]).values()))
        out: list[Scored] = []
        per_artist: dict[str, int] = {}
        for k in order[: 4 * count]:
            t = rows.get(int(ids[k]))
            if t is None:
                continue
            a = _artist_key(t)
            if (a and per_artist.get(a, 0) >= artist_cap) or dd.blocked(t.id):
                continue
            dd.take(t.id)
            per_artist[a] = per_artist.get(a, 0) + 1
            out.append(Scored(t, float(cos[k].max()), genre_agreement(probs, t.probabilities), float(score[k])))
            if len(out) == count:
                break
        return out

    # ---------------------------------------------------------------- similar artists
    def similar_artists(self, index, artist_id: str, count: int = 10) -> list[tuple[Any, float]]:
        """(artist, similarity) of the ``count`` artists of ``index`` (a ``browse.MusicIndex``)
        nearest ``artist_id``'s, best first (see the module docs)."""
        _check_count(count)
        if artist_id not in index.artists:
            raise UnknownArtist(f"unknown artist {artist_id!r}")
        owner: dict[int, int] = {}
        names = list(index.artists)
        for n, a in enumerate(names):
            for al in index.artists[a].album_ids:
                for s in index.albums[al].song_ids:
                    owner[s] = n
        me = names.index(artist_id)
        mine = [s for s, n in owner.items() if n == me][:MAX_INPUTS]
        query = np.stack(list(self._vectors_of(mine).values())) if mine else None
        if query is None:
            return []
        best_of_mine = np.full((len(mine), len(names)), -np.inf, np.float32)  # each of my tracks' best per artist
        theirs_sum = np.zeros(len(names))  # each artist's tracks' best cosines to mine, summed
        theirs_n = np.zeros(len(names))
        pool = self.reco._pool(None)
        batches = [(pool[0], pool[1])] if pool is not None else self.catalog.embeddings()
        for ids, mat in batches:
            yield_gil()
            mat = np.asarray(mat, np.float32)
            norms = np.linalg.norm(mat, axis=1, keepdims=True)
            mat = mat / np.where(norms > 0, norms, 1.0)
            who = np.array([owner.get(int(i), -1) for i in ids])
            keep = who >= 0
            if not keep.any():
                continue
            who, cos = who[keep], query @ mat[keep].T  # (mine, these tracks)
            order = np.argsort(who, kind="stable")
            who, cos = who[order], cos[:, order]
            starts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
            groups = who[starts]
            best_of_mine[:, groups] = np.maximum(best_of_mine[:, groups], np.maximum.reduceat(cos, starts, axis=1))
            theirs_sum[groups] += np.add.reduceat(cos.max(axis=0), starts)
            theirs_n[groups] += np.diff(np.r_[starts, len(who)])
        mine_side = best_of_mine.mean(axis=0)
        theirs_side = np.where(theirs_n > 0, theirs_sum / np.maximum(theirs_n, 1), -np.inf)
        score = (mine_side + theirs_side) / 2
        score[me] = -np.inf
        ranked = [n for n in np.argsort(-score, kind="stable") if np.isfinite(score[n])][:count]
        return [(index.artists[names[n]], float(score[n])) for n in ranked]

    # ---------------------------------------------------------------- flowing order
    def in_flow(self, items: list[Scored], *, keep_first: int = 1, keep_last: bool = False,
                deadline: Deadline | None = None) -> list[Scored]:
        """``items`` in flowing order (``flow_order``); each item's similarity becomes its
        cosine to the one before it."""
        if len(items) < 3:
            return items
        vecs = self.catalog.vectors([s.track.id for s in items])
        mat = np.stack([_unit(np.asarray(vecs[s.track.id], np.float32)) for s in items])
        order = flow_order(mat, keep_first=keep_first, keep_last=keep_last, deadline=deadline)
        out = [items[order[0]]]
        for prev, cur in zip(order, order[1:]):
            s = items[cur]
            sim = float(mat[prev] @ mat[cur])
            out.append(Scored(s.track, sim, genre_agreement(items[prev].track.probabilities, s.track.probabilities),
                              sim))
        return out


class ListeningFacade:
    """The listening features' part of ``recommender.service.Service`` (a mixin: it uses the
    service's ``recommender``, ``catalog`` and ``_costly``)."""

    def listening(self) -> Listening:
        return Listening(self.recommender(), self.music_index())

    def queue_next(self, queue: Sequence[int], count: int, **options: Any) -> tuple[list[Scored], dict[str, int]]:
        """``Listening.queue_next``: the tracks that continue ``queue``, and the windows relaxed."""
        lst = self.listening()
        return self._costly("the queue", count, lambda deadline: lst.queue_next(queue, count, deadline=deadline,
                                                                                **options))

    def alchemy(self, add: Sequence[int], subtract: Sequence[int], count: int, **options: Any) -> list[Scored]:
        """``Listening.alchemy``: near the added tracks, away from the subtracted ones."""
        lst = self.listening()
        return self._costly("the alchemy", count, lambda _: lst.alchemy(add, subtract, count, **options))

    def record_plays(self, user: str, track_ids: Sequence[int], times: Sequence[float] | None = None) -> None:
        """Plays of ``user`` (a user of ``sonicsort users``), at ``times`` (default now)."""
        self.catalog.user(user)  # UnknownUser
        self.catalog.add_plays(user, track_ids, times)

    def similar_artists(self, artist_id: str, count: int = 10) -> list[tuple[Any, float]]:
        """``Listening.similar_artists`` over the catalog's ``music_index``."""
        lst = self.listening()
        return self._costly("the similar artists", 0, lambda _: lst.similar_artists(self.music_index(), artist_id, count))

    def mix(self, user: str, count: int, **options: Any) -> list[Scored]:
        """``Listening.mix``: a mix from ``user``'s plays."""
        self.catalog.user(user)
        lst = self.listening()
        return self._costly("the mix", count, lambda _: lst.mix(user, count, **options))


def _mean_probabilities(tracks: Sequence[Track]) -> dict[str, float]:
    if not tracks:
        return {}
    out: dict[str, float] = {}
    for t in tracks:
        for g, p in t.probabilities.items():
            out[g] = out.get(g, 0.0) + p / len(tracks)
    return out


__all__ = ["Listening", "ListeningFacade", "flow_order", "mean_step", "MAX_COUNT", "QUEUE_HALF_LIFE", "MIX_HALF_LIFE_DAYS"]
