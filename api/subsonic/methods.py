"""The OpenSubsonic methods sonicsort answers (``docs/subsonic.md`` lists them, and what it does not)."""

from __future__ import annotations

import random
from typing import Any

from flask import Response, send_file

from recommender.browse import IGNORED_ARTICLES, MusicIndex, Song

from . import entries as E
from .protocol import GENERIC, NOT_AUTHORISED, NOT_FOUND, Call, SubsonicError, method

MAX_LIST = 500  # the most albums or songs one list answer holds
EXTENSIONS = [{"name": "formPost", "versions": [1]}, {"name": "apiKeyAuthentication", "versions": [1]},
              {"name": "sonicSimilarity", "versions": [1]}]


def _index(call: Call) -> MusicIndex:
    return call.svc.music_index()


def _song(call: Call, idx: MusicIndex, key: str = "id") -> Song:
    raw = call.need(key)
    try:
        song = idx.songs.get(int(raw))
    except ValueError:
        song = None
    if song is None:
        raise SubsonicError(NOT_FOUND, f"song not found: {raw}")
    return song


def _data(call: Call, songs=()) -> E.UserData:
    return E.UserData(call.svc.users, call.user.name)


def _songs_answer(call: Call, songs: list[Song]) -> list[dict[str, Any]]:
    data = _data(call, songs)
    return [E.child(s, data) for s in songs]


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
    idx = _index(call)
    data = _data(call)
    return {"artists": {"ignoredArticles": " ".join(IGNORED_ARTICLES),
                        "index": _letters(idx, lambda ar: E.artist(ar, data))}}


@method
def getIndexes(call: Call):
    idx = _index(call)
    data = _data(call)

    def entry(ar):
        d = {"id": ar.id, "name": ar.name}
        if data.stars.get(ar.id):
            d["starred"] = E.iso(data.stars[ar.id])
        return d

    return {"indexes": {"ignoredArticles": " ".join(IGNORED_ARTICLES), "lastModified": int(idx.last_modified * 1000),
                        "index": _letters(idx, entry)}}


@method
def getArtist(call: Call):
    idx = _index(call)
    ar = idx.artists.get(call.need("id"))
    if ar is None:
        raise SubsonicError(NOT_FOUND, f"artist not found: {call.need('id')}")
    data = _data(call)
    return {"artist": {**E.artist(ar, data), "album": [E.album(idx, idx.albums[a], data) for a in ar.album_ids]}}


@method
def getAlbum(call: Call):
    idx = _index(call)
    al = idx.albums.get(call.need("id"))
    if al is None:
        raise SubsonicError(NOT_FOUND, f"album not found: {call.need('id')}")
    return {"album": E.album(idx, al, _data(call, idx.songs_of(al.song_ids)), songs=True)}


@method
def getSong(call: Call):
    idx = _index(call)
    song = _song(call, idx)
    return {"song": E.child(song, _data(call, [song]))}


@method
def getMusicDirectory(call: Call):
    """Artist → its albums as folders; album → its songs (for clients that browse by folders)."""
    idx = _index(call)
    key = call.need("id")
    if key in idx.artists:
        ar = idx.artists[key]
        return {"directory": {"id": ar.id, "name": ar.name, "child": [E.album_dir(idx.albums[a]) for a in ar.album_ids]}}
    if key in idx.albums:
        al = idx.albums[key]
        return {"directory": {"id": al.id, "parent": al.artist_id, "name": al.name,
                              "child": _songs_answer(call, idx.songs_of(al.song_ids))}}
    raise SubsonicError(NOT_FOUND, f"directory not found: {key}")


@method
def getGenres(call: Call):
    idx = _index(call)
    return {"genres": {"genre": [{"value": g, "songCount": n, "albumCount": idx.genre_albums.get(g, 0)}
                                 for g, n in sorted(idx.genres.items(), key=lambda kv: (-kv[1], kv[0]))]}}


@method
def getSongsByGenre(call: Call):
    idx = _index(call)
    genre = call.need("genre")
    count, offset = call.int("count", 10, lo=0, hi=MAX_LIST), call.int("offset", 0)
    found = [s for s in idx.songs.values() if s.genre.lower() == genre.lower()][offset:offset + count]
    return {"songsByGenre": {"song": _songs_answer(call, found)}}


@method
def getRandomSongs(call: Call):
    idx = _index(call)
    size = call.int("size", 10, lo=0, hi=MAX_LIST)
    genre = call.get("genre")
    lo, hi = call.int("fromYear", None, hi=9999), call.int("toYear", None, hi=9999)
    pool = [s for s in idx.songs.values() if (not genre or s.genre.lower() == genre.lower())
            and (lo is None or (s.year or 0) >= lo) and (hi is None or (s.year or 10**4) <= hi)]
    return {"randomSongs": {"song": _songs_answer(call, random.sample(pool, min(size, len(pool))))}}


def _album_list(call: Call, idx: MusicIndex) -> list:
    kind = call.need("type")
    size, offset = call.int("size", 10, lo=0, hi=MAX_LIST), call.int("offset", 0)
    albums = list(idx.albums.values())
    cat, user = call.svc.catalog, call.user.name
    if kind == "random":
        picked = random.sample(albums, min(size, len(albums)))
        return picked
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
    idx = _index(call)
    data = _data(call)
    return {"albumList2": {"album": [E.album(idx, a, data) for a in _album_list(call, idx)]}}


@method
def search3(call: Call):
    idx = _index(call)

    def window(prefix: str) -> tuple[int, int]:
        return (call.int(prefix + "Count", 20, lo=0, hi=MAX_LIST), call.int(prefix + "Offset", 0))

    artists, albums, songs = idx.search(call.get("query", "") or "", artists=window("artist"),
                                        albums=window("album"), songs=window("song"))
    data = _data(call, songs)
    return {"searchResult3": {"artist": [E.artist(a, data) for a in artists],
                              "album": [E.album(idx, a, data) for a in albums],
                              "song": [E.child(s, data) for s in songs]}}


# ---------------------------------------------------------------- media
def _file_of(call: Call, song: Song):
    from recommender.errors import UnknownTrack

    try:
        return call.svc.audio_file(song.id)
    except UnknownTrack as exc:
        raise SubsonicError(NOT_FOUND, str(exc)) from None


def _send(call: Call, *, attachment: bool) -> Response:
    idx = _index(call)
    song = _song(call, idx)
    path = _file_of(call, song)
    # no transcoding: every format= is answered with the file as it is (the spec allows a
    # server to ignore format and maxBitRate); X-Content-Duration helps players seek
    resp = send_file(path, mimetype=song.content_type, conditional=True, etag=True, max_age=3600,
                     as_attachment=attachment, download_name=f"{song.title}.{song.suffix or 'audio'}")
    resp.headers["X-Content-Duration"] = f"{song.duration_s:.3f}"
    return resp


@method
def stream(call: Call):
    return _send(call, attachment=False)


@method
def download(call: Call):
    return _send(call, attachment=True)


_ART = None


@method
def getCoverArt(call: Call):
    """The picture in a song's tags (for an album or artist: of its first song that has one),
    else a generated placeholder; ``size`` fits it into size × size pixels."""
    from recommender import artwork

    global _ART
    if _ART is None:
        _ART = artwork.ArtworkCache()
    idx = _index(call)
    key = call.need("id")
    size = call.int("size", None, lo=1, hi=10_000)
    if key in idx.albums:
        songs, name = idx.songs_of(idx.albums[key].song_ids), idx.albums[key].name
    elif key in idx.artists:
        ar = idx.artists[key]
        songs, name = [s for a in ar.album_ids for s in idx.songs_of(idx.albums[a].song_ids)], ar.name
    else:
        song = _song(call, idx)
        songs, name = [song], song.album

    def make():
        for s in songs[:8]:
            if s.path:
                pic = artwork.embedded_picture(s.path)
                if pic:
                    try:
                        return artwork.resized(pic, size)
                    except ValueError:
                        continue
        return artwork.placeholder(name, size), "image/png"

    body, mime = _ART.cover((idx.generation, key, size), make)
    resp = Response(body, mimetype=mime)
    resp.headers["Cache-Control"] = "max-age=86400"
    return resp


# ---------------------------------------------------------------- listening: plays, stars, ratings
def _song_ids(call: Call, idx: MusicIndex, values: list[str]) -> list[int]:
    ids = []
    for v in values:
        try:
            tid = int(v)
        except ValueError:
            tid = -1
        if tid not in idx.songs:
            raise SubsonicError(NOT_FOUND, f"song not found: {v}")
        ids.append(tid)
    return ids


@method
def scrobble(call: Call):
    """A play (``submission``, the default), recorded with its time; "now playing" (submission=false) is not kept."""
    idx = _index(call)
    ids = _song_ids(call, idx, call.all("id") or [call.need("id")])
    times = call.all("time")
    if times and len(times) != len(ids):
        raise SubsonicError(GENERIC, "give one time per id, or none")
    try:
        when = [int(t) / 1000 for t in times] if times else None
    except ValueError:
        raise SubsonicError(GENERIC, "time is milliseconds since 1970") from None
    if call.bool("submission", True):
        call.svc.catalog.add_plays(call.user.name, ids, when)
    return {}


def _star(call: Call, on: bool):
    idx = _index(call)
    items = [str(i) for i in _song_ids(call, idx, call.all("id"))]
    for key, known in (("albumId", idx.albums), ("artistId", idx.artists)):
        for v in call.all(key):
            if v not in known:
                raise SubsonicError(NOT_FOUND, f"{key[:-2]} not found: {v}")
            items.append(v)
    if not items:
        raise SubsonicError(10, "required parameter is missing: id, albumId or artistId")
    call.svc.catalog.star(call.user.name, items, on=on)
    return {}


@method
def star(call: Call):
    return _star(call, True)


@method
def unstar(call: Call):
    return _star(call, False)


@method
def getStarred2(call: Call):
    idx = _index(call)
    stars = call.svc.catalog.starred(call.user.name)
    songs = [idx.songs[int(i)] for i in stars if i.isdigit() and int(i) in idx.songs]
    data = _data(call, songs)
    return {"starred2": {"artist": [E.artist(idx.artists[i], data) for i in stars if i in idx.artists],
                         "album": [E.album(idx, idx.albums[i], data) for i in stars if i in idx.albums],
                         "song": [E.child(s, data) for s in songs]}}


@method
def setRating(call: Call):
    idx = _index(call)
    (tid,) = _song_ids(call, idx, [call.need("id")])
    rating = call.int("rating", None, lo=0, hi=5)
    if rating is None:
        raise SubsonicError(10, "required parameter is missing: rating")
    call.svc.catalog.rate(call.user.name, tid, rating)
    return {}


# ---------------------------------------------------------------- playlists
def _playlist(call: Call, key: str = "id", *, write: bool = False):
    from recommender.errors import UnknownPlaylist

    raw = call.need(key)
    try:
        p = call.svc.catalog.playlist(int(raw))
    except (ValueError, UnknownPlaylist):
        raise SubsonicError(NOT_FOUND, f"playlist not found: {raw}") from None
    mine = p.owner == call.user.name or call.user.is_admin
    if not (mine or (p.public and not write)):
        if not p.public:
            raise SubsonicError(NOT_FOUND, f"playlist not found: {raw}")
        raise SubsonicError(NOT_AUTHORISED, f"playlist {raw} is {p.owner}'s: only they (or an admin) may change it")
    return p


def _text(call: Call, name: str) -> str | None:
    from recommender.text import clean_text

    v = call.values.get(name)
    return None if v is None else (clean_text(v) or "")[:500]


@method
def getPlaylists(call: Call):
    idx = _index(call)
    cat, whose = call.svc.catalog, call.get("username")
    if whose and whose != call.user.name:
        if not call.user.is_admin:
            raise SubsonicError(NOT_AUTHORISED, "only an admin may list another user's playlists")
        found = [p for p in cat.playlists() if p.owner == whose]
    else:
        found = cat.playlists(visible_to=call.user.name)
    return {"playlists": {"playlist": [E.playlist(p, idx, songs=False) for p in found]}}


@method
def getPlaylist(call: Call):
    idx = _index(call)
    p = _playlist(call)
    return {"playlist": E.playlist(p, idx, songs=True, data=_data(call, idx.songs_of(p.track_ids)))}


@method
def createPlaylist(call: Call):
    """A new playlist (``name``), or, with ``playlistId``, that playlist's songs replaced."""
    idx = _index(call)
    ids = _song_ids(call, idx, call.all("songId"))
    cat = call.svc.catalog
    if call.get("playlistId"):
        p = _playlist(call, "playlistId", write=True)
        cat.update_playlist(p.id, name=_text(call, "name") or None, track_ids=ids)
        pid = p.id
    else:
        name = _text(call, "name")
        if not name:
            raise SubsonicError(10, "required parameter is missing: name or playlistId")
        pid = cat.create_playlist(call.user.name, name, ids)
    p = cat.playlist(pid)
    return {"playlist": E.playlist(p, idx, songs=True, data=_data(call, idx.songs_of(p.track_ids)))}


@method
def updatePlaylist(call: Call):
    idx = _index(call)
    p = _playlist(call, "playlistId", write=True)
    try:
        remove = [int(v) for v in call.all("songIndexToRemove")]
    except ValueError:
        raise SubsonicError(GENERIC, "songIndexToRemove must be whole numbers") from None
    call.svc.catalog.update_playlist(p.id, name=_text(call, "name") or None, comment=_text(call, "comment"),
                                     public=call.bool("public", p.public) if call.get("public") else None,
                                     add=_song_ids(call, idx, call.all("songIdToAdd")), remove_positions=remove)
    return {}


@method
def deletePlaylist(call: Call):
    p = _playlist(call, write=True)
    call.svc.catalog.delete_playlist(p.id)
    return {}


# ---------------------------------------------------------------- recommendations from the embedding
def _unit_similarity(x: float) -> float:
    """A cosine as the spec's similarity: in [0, 1], 1 for the same song (opposite or unrelated: 0)."""
    return round(min(1.0, max(0.0, float(x))), 6)


@method
def getSonicSimilarTracks(call: Call):
    idx = _index(call)
    song = _song(call, idx)
    count = call.int("count", 10, lo=0, hi=MAX_LIST)
    found = call.svc.similar_to_track(song.id, k=count) if count else []
    songs = idx.songs_of(s.track.id for s in found)
    data = _data(call, songs)
    by_id = {s.id: s for s in songs}
    # the genre-aware ranking of /v1 picks the tracks; they are listed most similar first, as the spec asks
    picked = sorted((s for s in found if s.track.id in by_id and s.track.id != song.id), key=lambda s: -s.similarity)
    return {"sonicMatch": [{"entry": E.child(by_id[s.track.id], data), "similarity": _unit_similarity(s.similarity)}
                           for s in picked]}


@method
def findSonicPath(call: Call):
    import numpy as np

    idx = _index(call)
    start, end = _song(call, idx, "startSongId"), _song(call, idx, "endSongId")
    count = call.int("count", 25, lo=2, hi=1000)
    steps = call.svc.path(start.id, end.id, count)
    vecs = call.svc.catalog.vectors([start.id] + [s.track.id for s in steps])
    songs = idx.songs_of(s.track.id for s in steps)
    data = _data(call, songs)
    origin = vecs[start.id]
    return {"sonicMatch": [{"entry": E.child(s, data),
                            "similarity": _unit_similarity(np.dot(origin, vecs[s.id]) if s.id in vecs else 0.0)}
                           for s in songs]}


def _similar_songs(call: Call, idx: MusicIndex, key: str, count: int) -> list[Song]:
    if key in idx.albums or key in idx.artists:
        ids = (idx.albums[key].song_ids if key in idx.albums
               else [i for a in idx.artists[key].album_ids for i in idx.albums[a].song_ids])
        seeds = ids[:20]
        items = call.svc.playlist(seeds, len(seeds) + count)
        return idx.songs_of(s.track.id for s in items if s.track.id not in set(ids))[:count]
    song = _song(call, idx)
    return idx.songs_of(s.track.id for s in call.svc.similar_to_track(song.id, k=count) if s.track.id != song.id)


@method
def getSimilarSongs(call: Call):
    """Songs like a song, album or artist (what "instant mix" buttons call), from the embedding."""
    idx = _index(call)
    count = call.int("count", 50, lo=0, hi=MAX_LIST)
    songs = _similar_songs(call, idx, call.need("id"), count) if count else []
    return {"similarSongs": {"song": _songs_answer(call, songs)}}


@method
def getSimilarSongs2(call: Call):
    """Songs like an artist's (its id, as ``getArtists`` gives it), from the embedding."""
    idx = _index(call)
    key = call.need("id")
    if key not in idx.artists:
        raise SubsonicError(NOT_FOUND, f"artist not found: {key}")
    count = call.int("count", 50, lo=0, hi=MAX_LIST)
    songs = _similar_songs(call, idx, key, count) if count else []
    return {"similarSongs2": {"song": _songs_answer(call, songs)}}


@method
def getTopSongs(call: Call):
    """An artist's (by name) most played songs, most first: plays recorded by ``scrobble``."""
    idx = _index(call)
    name = call.need("artist").casefold()
    count = call.int("count", 50, lo=0, hi=MAX_LIST)
    ids = [s.id for s in idx.songs.values() if s.artist.casefold() == name
           or idx.artists[s.artist_id].name.casefold() == name]
    ranked = [t for t, _ in call.svc.catalog.most_played(limit=count, track_ids=ids)] if ids else []
    return {"topSongs": {"song": _songs_answer(call, idx.songs_of(ranked))}}
