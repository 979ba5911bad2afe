"""Recommendations from the embedding: sonic similarity and paths, similar songs, and top songs by plays."""

from __future__ import annotations

from recommender.browse import MusicIndex, Song

from . import entries as E
from . import lookup as L
from .protocol import Call, method


# ---------------------------------------------------------------- recommendations from the embedding
def _unit_similarity(x: float) -> float:
    """A cosine as the spec's similarity: in [0, 1], 1 for the same song (opposite or unrelated: 0)."""
    return round(min(1.0, max(0.0, float(x))), 6)


@method
def getSonicSimilarTracks(call: Call):
    idx = L.index(call)
    song = L.song(call, idx)
    count = call.int("count", 10, lo=0, hi=L.MAX_LIST)
    found = call.svc.similar_to_track(song.id, k=count) if count else []
    songs = idx.songs_of(s.track.id for s in found)
    data = L.data(call)
    by_id = {s.id: s for s in songs}
    # the genre-aware ranking of /v1 picks the tracks; they are listed most similar first, as the spec asks
    picked = sorted((s for s in found if s.track.id in by_id and s.track.id != song.id), key=lambda s: -s.similarity)
    return {"sonicMatch": [{"entry": E.child(by_id[s.track.id], data), "similarity": _unit_similarity(s.similarity)}
                           for s in picked]}


@method
def findSonicPath(call: Call):
    import numpy as np

    idx = L.index(call)
    start, end = L.song(call, idx, "startSongId"), L.song(call, idx, "endSongId")
    count = call.int("count", 25, lo=2, hi=1000)
    steps = call.svc.path(start.id, end.id, count)
    vecs = call.svc.catalog.vectors([start.id] + [s.track.id for s in steps])
    songs = idx.songs_of(s.track.id for s in steps)
    data = L.data(call)
    origin = vecs[start.id]
    return {"sonicMatch": [{"entry": E.child(s, data),
                            "similarity": _unit_similarity(np.dot(origin, vecs[s.id]) if s.id in vecs else 0.0)}
                           for s in songs]}


def _similar_songs(call: Call, idx: MusicIndex, key: str, count: int) -> list[Song]:
    """A radio of ``count`` songs after a song, an album or an artist: ``Service.queue_next``
    with its songs as the queue (no artist or album again within the usual windows)."""
    from recommender.listening import MAX_COUNT

    if key in idx.albums or key in idx.artists:
        ids = (idx.albums[key].song_ids if key in idx.albums
               else [i for a in idx.artists[key].album_ids for i in idx.albums[a].song_ids])
        queue = ids[:20]
    else:
        queue = [L.song(call, idx).id]
    items, _ = call.svc.queue_next(queue, min(count, MAX_COUNT))
    return idx.songs_of(s.track.id for s in items)


@method
def getSimilarSongs(call: Call):
    """Songs like a song, album or artist (what "instant mix" buttons call), from the embedding."""
    idx = L.index(call)
    count = call.int("count", 50, lo=0, hi=L.MAX_LIST)
    songs = _similar_songs(call, idx, call.need("id"), count) if count else []
    return {"similarSongs": {"song": L.songs_answer(call, songs)}}


@method
def getSimilarSongs2(call: Call):
    """Songs like an artist's (its id, as ``getArtists`` gives it), from the embedding."""
    idx = L.index(call)
    key = L.artist(call, idx).id
    count = call.int("count", 50, lo=0, hi=L.MAX_LIST)
    songs = _similar_songs(call, idx, key, count) if count else []
    return {"similarSongs2": {"song": L.songs_answer(call, songs)}}


@method
def getTopSongs(call: Call):
    """An artist's (by name) most played songs, most first: plays recorded by ``scrobble``."""
    idx = L.index(call)
    name = call.need("artist").casefold()
    count = call.int("count", 50, lo=0, hi=L.MAX_LIST)
    ids = [s.id for s in idx.songs.values() if s.artist.casefold() == name
           or idx.artists[s.artist_id].name.casefold() == name]
    ranked = [t for t, _ in call.svc.catalog.most_played(limit=count, track_ids=ids)] if ids else []
    return {"topSongs": {"song": L.songs_answer(call, idx.songs_of(ranked))}}
