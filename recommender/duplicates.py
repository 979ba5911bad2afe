"""Near-duplicates: tracks that hold the same recording in other files (another album, container,
bit rate or sample rate, a second trimmed at either end, another gain).

Two tracks are the same recording when all three agree:

1. their embeddings are close: the other is among the ``NEIGHBOURS`` nearest in the index, at a
   cosine of at least ``MIN_SIMILARITY``;
2. their lengths agree within ``DURATION_SLACK_S`` plus ``DURATION_SLACK`` of the longer;
3. their audio fingerprints (``embedding.fingerprint``, taken at ingest) agree: a bit error
   rate of at most ``fingerprint.SAME_RECORDING`` at the best offset.

The embedding finds candidates cheaply; the fingerprint tells the same recording from another
song of the same artist, which the embedding puts just as close. ``Duplicates.find`` compares
every track not yet compared (``Catalog.ids_to_compare``) and stores the pairs; ingest and
uploads call it after they add tracks. Groups are the connected pairs. Recommendations,
playlists, paths and queues drop the near-duplicates of their seeds and of each other
(``dedupe``), keeping the first of a group they meet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from embedding import fingerprint as fp

log = logging.getLogger(__name__)

NEIGHBOURS = 20  # the index's nearest tracks each new track is compared with
MIN_SIMILARITY = 0.5  # cosine of the embeddings below which two tracks are never compared (re-encodes reach 0.4 to 1)
DURATION_SLACK_S, DURATION_SLACK = 2.5, 0.01


def durations_agree(a: float, b: float) -> bool:
    """Whether two lengths in seconds may be one recording trimmed by a second or two at its ends."""
    return abs(a - b) <= DURATION_SLACK_S + DURATION_SLACK * max(a, b)


@dataclass(frozen=True)
class Group:
    """Tracks that hold one recording: ``ids`` lowest first; the largest fingerprint distance
    and the smallest embedding similarity among the pairs that join them."""

    ids: tuple[int, ...]
    distance: float
    similarity: float


class Duplicates:
    """The near-duplicates of one library's catalog: finding them, and the groups they form
    (kept until the catalog's next write)."""

    def __init__(self, library) -> None:  # a ``recommender.library.Library`` (which imports this module)
        self.library = library
        self._groups: tuple[Any, list[Group], dict[int, int]] | None = None

    @property
    def enabled(self) -> bool:
        return self.library.settings.find_duplicates

    # ---------------------------------------------------------------- finding
    def find(self, *, batch: int = 500) -> int:
        """Compare every fingerprinted track not yet compared with its nearest tracks; store the
        pairs that hold one recording. Returns how many pairs it found. Safe to run in several
        processes at once (a pair stored twice is one pair)."""
        if not self.enabled:
            return 0
        cat = self.library.catalog
        found = 0
        while True:
            ids = cat.ids_to_compare(batch)
            if not ids:
                return found
            pairs = self._compare(ids)
            cat.record_duplicates(pairs, through=ids[-1])
            found += len(pairs)

    def _compare(self, ids: list[int]) -> list[tuple[int, int, float, float]]:
        cat = self.library.catalog
        index = self.library.index
        mine = cat.fingerprints(ids)
        vectors = cat.vectors(list(mine))
        candidates: dict[int, list[tuple[int, float]]] = {}
        for tid, vec in vectors.items():
            near, dist = index.search(vec, min(NEIGHBOURS + 1, len(index)))
            candidates[tid] = [(int(o), 1.0 - float(d)) for o, d in zip(near.tolist(), dist.tolist())
                               if int(o) != tid and 1.0 - float(d) >= MIN_SIMILARITY]
        others = cat.fingerprints({o for c in candidates.values() for o, _ in c} - set(mine))
        others.update(mine)
        pairs: dict[tuple[int, int], tuple[float, float]] = {}
        for tid, near in candidates.items():
            f_a, d_a = mine[tid]
            for other, sim in near:
                key = (min(tid, other), max(tid, other))
                if key in pairs or other not in others:
                    continue
                f_b, d_b = others[other]
                if not durations_agree(d_a, d_b):
                    continue
                dist = fp.distance(f_a, f_b)
                if dist <= fp.SAME_RECORDING:
                    pairs[key] = (dist, sim)
        return [(a, b, d, s) for (a, b), (d, s) in pairs.items()]

    def fingerprint_missing(self, *, progress=None) -> int:
        """Fingerprint the tracks that have none (ingested before fingerprints) from their files;
        a track whose files are gone or unreadable keeps none. Returns how many got one."""
        from embedding.errors import AudioError
        from embedding.features import decode_for_features
        from embedding.fingerprint import fingerprint

        cat = self.library.catalog
        config = self.library.bundle.feature_config
        todo = cat.ids_without_fingerprint()
        done: dict[int, bytes] = {}
        for n, (tid, track) in enumerate(cat.get_many(todo).items(), 1):
            for path in track.paths:
                try:
                    got = fingerprint(decode_for_features(path, config, limits=self.library.settings.decode_limits))
                except (AudioError, OSError) as exc:
                    log.info("%s: not fingerprinted (%s)", path, exc)
                    continue
                if got is not None:
                    done[tid] = got
                break
            if len(done) >= 200:
                cat.set_fingerprints(done)
                done.clear()
            if progress:
                progress(n, len(todo))
        cat.set_fingerprints(done)
        return len(todo) - len(cat.ids_without_fingerprint())

    # ---------------------------------------------------------------- groups
    def _state(self) -> tuple[list[Group], dict[int, int]]:
        cat = self.library.catalog
        token = cat.write_token()
        cached = self._groups
        if cached is not None and cached[0] == token:
            return cached[1], cached[2]
        parent: dict[int, int] = {}

        def root(x: int) -> int:
            while parent.get(x, x) != x:
                parent[x] = parent.get(parent[x], parent[x])
                x = parent[x]
            return x

        pairs = cat.duplicate_pairs() if self.enabled else []
        for a, b, _, _ in pairs:
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        members: dict[int, list[int]] = {}
        for x in {t for a, b, _, _ in pairs for t in (a, b)}:
            members.setdefault(root(x), []).append(x)
        worst: dict[int, list[float]] = {}
        for a, b, d, s in pairs:
            w = worst.setdefault(root(a), [0.0, 1.0])
            w[0], w[1] = max(w[0], d), min(w[1], s)
        groups = [Group(tuple(sorted(m)), worst[r][0], worst[r][1]) for r, m in sorted(members.items())]
        group_of = {t: k for k, g in enumerate(groups) for t in g.ids}
        self._groups = (token, groups, group_of)
        return groups, group_of

    def groups(self) -> list[Group]:
        """Every group of two or more tracks that hold one recording, by their lowest id."""
        return self._state()[0]

    def of(self, track_id: int) -> tuple[int, ...]:
        """The tracks that hold the same recording as ``track_id``, itself included (just itself
        when it has no duplicate)."""
        groups, group_of = self._state()
        k = group_of.get(int(track_id))
        return groups[k].ids if k is not None else (int(track_id),)

    def dedupe(self, seeds: Iterable[int] = ()) -> "Deduper":
        """A ``Deduper`` that already holds ``seeds``."""
        groups, group_of = self._state()
        d = Deduper(groups, group_of)
        for s in seeds:
            d.take(s)
        return d


class Deduper:
    """The running state of one answer's deduplication: ``take`` a track as it is placed, ask
    ``blocked`` of a candidate (a track whose recording is already placed)."""

    def __init__(self, groups: Sequence[Group], group_of: dict[int, int]) -> None:
        self._groups = groups
        self._group_of = group_of
        self._taken: set[int] = set()

    def __bool__(self) -> bool:
        """Whether the catalog has any duplicate at all (else nothing is ever blocked)."""
        return bool(self._group_of)

    def blocked(self, track_id: int) -> bool:
        k = self._group_of.get(int(track_id))
        return k is not None and k in self._taken

    def take(self, track_id: int) -> tuple[int, ...]:
        """Place ``track_id``: returns the other tracks of its recording, now blocked."""
        k = self._group_of.get(int(track_id))
        if k is None:
            return ()
        self._taken.add(k)
        return tuple(t for t in self._groups[k].ids if t != int(track_id))

    def blocked_ids(self) -> list[int]:
        """Every track blocked so far."""
        return [t for k in self._taken for t in self._groups[k].ids]


class NoDedupe(Deduper):
    """``dedupe=false``: nothing is blocked."""

    def __init__(self) -> None:
        super().__init__((), {})


def deduper(library, dedupe: bool, seeds: Iterable[int] = ()) -> Deduper:
    """The deduplication an answer uses: the catalog's groups, or none (``dedupe=false``)."""
    return library.duplicates.dedupe(seeds) if dedupe else NoDedupe()


def check_dedupe(value: Any) -> bool:
    """``dedupe`` as given to an answer: a boolean."""
    from .errors import BadRequest

    if not isinstance(value, bool):
        raise BadRequest(f"dedupe must be true or false, not {value!r}")
    return value


__all__ = ["DURATION_SLACK", "DURATION_SLACK_S", "Deduper", "Duplicates", "Group", "MIN_SIMILARITY", "NEIGHBOURS",
           "check_dedupe", "deduper", "durations_agree"]
