"""What the methods share: the music index, songs by id, the user's listening data."""

from __future__ import annotations

from typing import Any

from recommender.browse import Album, Artist, MusicIndex, Song

from . import entries as E
from .protocol import NOT_FOUND, Call, SubsonicError

MAX_LIST = 500  # the most albums or songs one list answer holds


def index(call: Call) -> MusicIndex:
    return call.svc.music_index()


def song(call: Call, idx: MusicIndex, key: str = "id") -> Song:
    raw = call.need(key)
    try:
        song = idx.songs.get(int(raw))
    except ValueError:
        song = None
    if song is None:
        raise SubsonicError(NOT_FOUND, f"song not found: {raw}")
    return song


def artist(call: Call, idx: MusicIndex, key: str = "id") -> Artist:
    found = idx.artists.get(call.need(key))
    if found is None:
        raise SubsonicError(NOT_FOUND, f"artist not found: {call.need(key)}")
    return found


def album(call: Call, idx: MusicIndex, key: str = "id") -> Album:
    found = idx.albums.get(call.need(key))
    if found is None:
        raise SubsonicError(NOT_FOUND, f"album not found: {call.need(key)}")
    return found


def data(call: Call) -> E.UserData:
    return E.UserData(call.svc.users, call.user.name)


def songs_answer(call: Call, songs: list[Song]) -> list[dict[str, Any]]:
    user_data = data(call)
    return [E.child(s, user_data) for s in songs]


def song_ids(call: Call, idx: MusicIndex, values: list[str]) -> list[int]:
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
