"""The system methods and browsing by tags: artists, albums, songs, genres, lists and search."""

from __future__ import annotations

import random
from typing import Any

from recommender.browse import IGNORED_ARTICLES, MusicIndex

from . import entries as E
from . import lookup as L
from .protocol import GENERIC, NOT_FOUND, Call, SubsonicError, method

EXTENSIONS = [{"name": "formPost", "versions": [1]}, {"name": "apiKeyAuthentication", "versions": [1]},
              {"name": "sonicSimilarity", "versions": [1]}]


# ---------------------------------------------------------------- system
@method
def ping(call: Call):
    return {}


@method
def getLicense(call: Call):
    return {"license": {"valid": True}}


@method
def getOpenSubsonicExtensions(call: Call):
    return {"openSubsonicExtensions": EXTENSIONS}


@method
def getMusicFolders(call: Call):
    return {"musicFolders": {"musicFolder": [{"id": 1, "name": "Music"}]}}


# ---------------------------------------------------------------- browsing by tags
def _letters(idx: MusicIndex, entry) -> list[dict[str, Any]]:
    return [{"name": letter, "artist": [entry(idx.artists[a]) for a in ids]} for letter, ids in idx.letters]


@method
def getArtists(call: Call):
    idx = L.index(call)
    data = L.data(call)
    return {"artists": {"ignoredArticles": " ".join(IGNORED_ARTICLES),
                        "index": _letters(idx, lambda ar: E.artist(ar, data))}}


@method
def getIndexes(call: Call):
    idx = L.index(call)
    data = L.data(call)

    def entry(ar):
        d = {"id": ar.id, "name": ar.name}
        if data.stars.get(ar.id):
            d["starred"] = E.iso(data.stars[ar.id])
        return d

    return {"indexes": {"ignoredArticles": " ".join(IGNORED_ARTICLES), "lastModified": int(idx.last_modified * 1000),
                        "index": _letters(idx, entry)}}


@method
def getArtist(call: Call):
    idx = L.index(call)
    ar = L.artist(call, idx)
    data = L.data(call)
    return {"artist": {**E.artist(ar, data), "album": [E.album(idx, idx.albums[a], data) for a in ar.album_ids]}}


@method
def getAlbum(call: Call):
    idx = L.index(call)
    al = L.album(call, idx)
    return {"album": E.album(idx, al, L.data(call), songs=True)}


@method
def getSong(call: Call):
    idx = L.index(call)
    song = L.song(call, idx)
    return {"song": E.child(song, L.data(call))}


@method
def getMusicDirectory(call: Call):
    """Artist → its albums as folders; album → its songs (for clients that browse by folders)."""
    idx = L.index(call)
    key = call.need("id")
    if key in idx.artists:
        ar = idx.artists[key]
        return {"directory": {"id": ar.id, "name": ar.name, "child": [E.album_dir(idx.albums[a]) for a in ar.album_ids]}}
    if key in idx.albums:
        al = idx.albums[key]
        return {"directory": {"id": al.id, "parent": al.artist_id, "name": al.name,
                              "child": L.songs_answer(call, idx.songs_of(al.song_ids))}}
    raise SubsonicError(NOT_FOUND, f"directory not found: {key}")


@method
def getGenres(call: Call):
    idx = L.index(call)
    return {"genres": {"genre": [{"value": g, "songCount": n, "albumCount": idx.genre_albums.get(g, 0)}
                                 for g, n in sorted(idx.genres.items(), key=lambda kv: (-kv[1], kv[0]))]}}


@method
def getSongsByGenre(call: Call):
    idx = L.index(call)
    genre = call.need("genre")
    count, offset = call.int("count", 10, lo=0, hi=L.MAX_LIST), call.int("offset", 0)
    found = [s for s in idx.songs.values() if s.genre.lower() == genre.lower()][offset:offset + count]
    return {"songsByGenre": {"song": L.songs_answer(call, found)}}


@method
def getRandomSongs(call: Call):
    idx = L.index(call)
    size = call.int("size", 10, lo=0, hi=L.MAX_LIST)
    genre = call.get("genre")
    lo, hi = call.int("fromYear", None, hi=9999), call.int("toYear", None, hi=9999)
    pool = [s for s in idx.songs.values() if (not genre or s.genre.lower() == genre.lower())
            and (lo is None or (s.year or 0) >= lo) and (hi is None or (s.year or 10**4) <= hi)]
    return {"randomSongs": {"song": L.songs_answer(call, random.sample(pool, min(size, len(pool))))}}


def _album_list(call: Call, idx: MusicIndex) -> list:
    kind = call.need("type")
    size, offset = call.int("size", 10, lo=0, hi=L.MAX_LIST), call.int("offset", 0)
    albums = list(idx.albums.values())
    cat, user = call.svc.catalog, call.user.name
    if kind == "random":
        return random.sample(albums, min(size, len(albums)))
    if kind == "newest":
        albums.sort(key=lambda a: -a.created)
    elif kind == "alphabeticalByName":
        albums = [idx.albums[a] for a in idx.album_order]
    elif kind == "alphabeticalByArtist":
        albums.sort(key=lambda a: (a.artist.casefold(), a.name.casefold()))
    elif kind == "byYear":
        lo, hi = call.int("fromYear", hi=9999), call.int("toYear", hi=9999)
        if lo is None or hi is None:
            raise SubsonicError(10, "required parameter is missing: fromYear and toYear (type byYear)")
        albums = sorted((a for a in albums if a.year and min(lo, hi) <= a.year <= max(lo, hi)),
                        key=lambda a: a.year, reverse=lo > hi)
    elif kind == "byGenre":
        genre = call.need("genre").lower()
        albums = [idx.albums[a] for a in idx.album_order if (idx.albums[a].genre or "").lower() == genre]
    elif kind in ("frequent", "recent"):
        if kind == "frequent":
            counts: dict[str, int] = {}
            for tid, n in cat.play_counts().items():
                if tid in idx.songs:
                    counts[idx.songs[tid].album_id] = counts.get(idx.songs[tid].album_id, 0) + n
            order = sorted(counts, key=lambda a: -counts[a])
        else:
            order = []
            for tid in cat.recently_played(limit=(offset + size) * 20 + 100):
                s = idx.songs.get(tid)
                if s is not None and s.album_id not in order:
                    order.append(s.album_id)
        albums = [idx.albums[a] for a in order]
    elif kind == "starred":
        stars = cat.starred(user)
        albums = [idx.albums[a] for a in stars if a in idx.albums]
    elif kind == "highest":
        rated = {t: r for t, r in cat.ratings(user).items() if t in idx.songs}
        mean: dict[str, list[int]] = {}
        for tid, r in rated.items():
            mean.setdefault(idx.songs[tid].album_id, []).append(r)
        albums = [idx.albums[a] for a in sorted(mean, key=lambda a: -sum(mean[a]) / len(mean[a]))]
    else:
        raise SubsonicError(GENERIC, f"unknown list type {kind!r}: random, newest, alphabeticalByName, "
                                     "alphabeticalByArtist, byYear, byGenre, frequent, recent, starred or highest")
    return albums[offset:offset + size]


@method
def getAlbumList2(call: Call):
    idx = L.index(call)
    data = L.data(call)
    return {"albumList2": {"album": [E.album(idx, a, data) for a in _album_list(call, idx)]}}


@method
def search3(call: Call):
    idx = L.index(call)

    def window(prefix: str) -> tuple[int, int]:
        return (call.int(prefix + "Count", 20, lo=0, hi=L.MAX_LIST), call.int(prefix + "Offset", 0))

    artists, albums, songs = idx.search(call.get("query", "") or "", artists=window("artist"),
                                        albums=window("album"), songs=window("song"))
    data = L.data(call)
    return {"searchResult3": {"artist": [E.artist(a, data) for a in artists],
                              "album": [E.album(idx, a, data) for a in albums],
                              "song": [E.child(s, data) for s in songs]}}
