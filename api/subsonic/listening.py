"""A user's plays, stars, ratings and playlists."""

from __future__ import annotations

from . import entries as E
from . import lookup as L
from .protocol import GENERIC, NOT_AUTHORISED, NOT_FOUND, Call, SubsonicError, method


# ---------------------------------------------------------------- listening: plays, stars, ratings

@method
def scrobble(call: Call):
    """A play (``submission``, the default), recorded with its time; "now playing" (submission=false) is not kept."""
    idx = L.index(call)
    ids = L.song_ids(call, idx, call.all("id") or [call.need("id")])
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
    idx = L.index(call)
    items = [str(i) for i in L.song_ids(call, idx, call.all("id"))]
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
    idx = L.index(call)
    stars = call.svc.catalog.starred(call.user.name)
    songs = [idx.songs[int(i)] for i in stars if i.isdigit() and int(i) in idx.songs]
    data = L.data(call)
    return {"starred2": {"artist": [E.artist(idx.artists[i], data) for i in stars if i in idx.artists],
                         "album": [E.album(idx, idx.albums[i], data) for i in stars if i in idx.albums],
                         "song": [E.child(s, data) for s in songs]}}


@method
def setRating(call: Call):
    idx = L.index(call)
    (tid,) = L.song_ids(call, idx, [call.need("id")])
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
    idx = L.index(call)
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
    idx = L.index(call)
    p = _playlist(call)
    return {"playlist": E.playlist(p, idx, songs=True, data=L.data(call))}


@method
def createPlaylist(call: Call):
    """A new playlist (``name``), or, with ``playlistId``, that playlist's songs replaced."""
    idx = L.index(call)
    ids = L.song_ids(call, idx, call.all("songId"))
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
    return {"playlist": E.playlist(p, idx, songs=True, data=L.data(call))}


@method
def updatePlaylist(call: Call):
    idx = L.index(call)
    p = _playlist(call, "playlistId", write=True)
    try:
        remove = [int(v) for v in call.all("songIndexToRemove")]
    except ValueError:
        raise SubsonicError(GENERIC, "songIndexToRemove must be whole numbers") from None
    call.svc.catalog.update_playlist(p.id, name=_text(call, "name") or None, comment=_text(call, "comment"),
                                     public=call.bool("public", p.public) if call.get("public") else None,
                                     add=L.song_ids(call, idx, call.all("songIdToAdd")), remove_positions=remove)
    return {}


@method
def deletePlaylist(call: Call):
    p = _playlist(call, write=True)
    call.svc.catalog.delete_playlist(p.id)
    return {}
