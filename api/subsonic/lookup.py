"""What the methods share: the music index, songs by id, the user's listening data."""

from __future__ import annotations

from typing import Any

from recommender.browse import MusicIndex, Song

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


def data(call: Call, songs=()) -> E.UserData:
    return E.UserData(call.svc.users, call.user.name)


def songs_answer(call: Call, songs: list[Song]) -> list[dict[str, Any]]:
    data_ = data(call, songs)
    return [E.child(s, data_) for s in songs]



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
