"""The entries answers are made of: ``Child`` (a song, or an album as a folder), ``AlbumID3``,
``ArtistID3`` and ``Playlist``, from ``recommender.browse.MusicIndex`` and the user's
stars, ratings and plays (``UserData``)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from recommender.browse import Album, Artist, MusicIndex, Song


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(t * 1000) % 1000:03d}Z"


class UserData:
    """One user's stars, ratings and plays (``recommender.users.Users.listening``)."""

    def __init__(self, users, user: str) -> None:
        d = users.listening(user)
        self.stars, self.ratings, self.plays, self.played = d["stars"], d["ratings"], d["plays"], d["played"]


def child(song: Song, data: UserData | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": str(song.id), "parent": song.album_id, "isDir": False, "title": song.title, "album": song.album,
        "artist": song.artist, "albumId": song.album_id, "artistId": song.artist_id, "coverArt": str(song.id),
        "duration": int(round(song.duration_s)), "created": iso(song.added_at), "type": "music",
        "mediaType": "song", "isVideo": False, "genre": song.genre, "genres": [{"name": song.genre}],
        "displayArtist": song.artist,
    }
    for key, value in (("track", song.track_no), ("discNumber", song.disc_no), ("year", song.year),
                       ("size", song.size), ("suffix", song.suffix), ("bitRate", song.bit_rate)):
        if value is not None:
            d[key] = value
    if song.path:
        d["contentType"] = song.content_type
    if data is not None:
        starred = data.stars.get(str(song.id))
        if starred:
            d["starred"] = iso(starred)
        if song.id in data.ratings:
            d["userRating"] = data.ratings[song.id]
        d["playCount"] = data.plays.get(song.id, 0)
        if song.id in data.played:
            d["played"] = iso(data.played[song.id])
    return d


def album(idx: MusicIndex, al: Album, data: UserData | None = None, *, songs: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"id": al.id, "name": al.name, "artist": al.artist, "artistId": al.artist_id,
                         "coverArt": al.id, "songCount": len(al.song_ids), "duration": int(round(al.duration_s)),
                         "created": iso(al.created), "displayArtist": al.artist}
    if al.year:
        d["year"] = al.year
    if al.genre:
        d["genre"] = al.genre
        d["genres"] = [{"name": al.genre}]
    if data is not None and data.stars.get(al.id):
        d["starred"] = iso(data.stars[al.id])
    if songs:
        d["song"] = [child(s, data) for s in idx.songs_of(al.song_ids)]
    return d


def album_dir(al: Album) -> dict[str, Any]:
    """An album as a folder of its artist (``getMusicDirectory``)."""
    d = {"id": al.id, "parent": al.artist_id, "isDir": True, "title": al.name, "album": al.name, "artist": al.artist,
         "artistId": al.artist_id, "coverArt": al.id, "created": iso(al.created)}
    if al.year:
        d["year"] = al.year
    if al.genre:
        d["genre"] = al.genre
    return d


def artist(ar: Artist, data: UserData | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"id": ar.id, "name": ar.name, "coverArt": ar.id, "albumCount": len(ar.album_ids)}
    if data is not None and data.stars.get(ar.id):
        d["starred"] = iso(data.stars[ar.id])
    return d


def playlist(p, idx: MusicIndex, *, songs: bool, data: UserData | None = None) -> dict[str, Any]:
    present = idx.songs_of(p.track_ids)
    d: dict[str, Any] = {"id": str(p.id), "name": p.name, "owner": p.owner, "public": p.public,
                         "songCount": len(present), "duration": int(round(sum(s.duration_s for s in present))),
                         "created": iso(p.created_at), "changed": iso(p.changed_at)}
    if p.comment:
        d["comment"] = p.comment
    if present:
        d["coverArt"] = str(present[0].id)
    if songs:
        d["entry"] = [child(s, data) for s in present]
    return d


def now_ms() -> int:
    return int(time.time() * 1000)
