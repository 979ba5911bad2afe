"""Files: ``stream`` and ``download`` (the file itself, with ranges) and ``getCoverArt``."""

from __future__ import annotations

from flask import Response, current_app, send_file

from recommender.browse import Song

from . import lookup as L
from .protocol import NOT_FOUND, Call, SubsonicError, method


# ---------------------------------------------------------------- media
def _file_of(call: Call, song: Song):
    from recommender.errors import UnknownTrack

    try:
        return call.svc.audio_file(song.id)
    except UnknownTrack as exc:
        raise SubsonicError(NOT_FOUND, str(exc)) from None


def _send(call: Call, *, attachment: bool) -> Response:
    idx = L.index(call)
    song = L.song(call, idx)
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


@method
def getCoverArt(call: Call):
    """The picture in a song's tags (for an album or artist: of its first song that has one),
    else a generated placeholder; ``size`` fits it into size × size pixels."""
    from recommender import artwork

    idx = L.index(call)
    key = call.need("id")
    size = call.int("size", None, lo=1, hi=10_000)
    if key in idx.albums:
        songs, name = idx.songs_of(idx.albums[key].song_ids), idx.albums[key].name
    elif key in idx.artists:
        ar = idx.artists[key]
        songs, name = [s for a in ar.album_ids for s in idx.songs_of(idx.albums[a].song_ids)], ar.name
    else:
        song = L.song(call, idx)
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

    body, mime = current_app.extensions["sonicsort_artwork"].cover((idx.generation, key, size), make)
    resp = Response(body, mimetype=mime)
    resp.headers["Cache-Control"] = "max-age=86400"
    return resp
