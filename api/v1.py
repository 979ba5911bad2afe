"""The ``/v1`` JSON API: parse and validate, call the ``Service`` facade, serialise."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file, url_for

from recommender.library import sha256_bytes

from . import params as P
from .errors import ApiError
from .answers import answer_key
from .fastpath import UPLOAD_SHA256

bp = Blueprint("v1", __name__, url_prefix="/v1")


def service():
    return current_app.extensions["sonicsort"]


# ---------------------------------------------------------------- serialising
def audio_url(track_id: int) -> str:
    # what url_for("v1.track_audio") gives, without its cost on every item of every answer
    return f"{request.script_root}/v1/tracks/{track_id}/audio"


def track_json(t) -> dict[str, Any]:
    from recommender.browse import UNKNOWN_ARTIST, artist_id

    d = t.to_dict()
    d.pop("path", None)
    d.pop("paths", None)  # server file paths are the server's business; players use audio_url
    d["audio_url"] = audio_url(t.id)
    d["artist_id"] = artist_id(t.album_artist or t.artist or UNKNOWN_ARTIST)  # as /v1/artists and Subsonic give it
    return d


def scored_json(items) -> list[dict[str, Any]]:
    """Ranked tracks: the track's tags and why it is here (similarity, genre agreement, score)."""
    return [{"position": i + 1, "id": s.track.id, "title": s.track.title, "artist": s.track.artist,
             "album": s.track.album, "genre": s.track.genre, "duration_s": round(s.track.duration_s, 3),
             "similarity": round(s.similarity, 6), "genre_agreement": round(s.genre_agreement, 6),
             "score": round(s.score, 6), "top_tags": [t for t, _ in s.track.top_tags(3)],
             "audio_url": audio_url(s.track.id)}
            for i, s in enumerate(items)]


def m3u8_response(items, name: str) -> Response:
    from recommender.recommend import to_m3u8

    base = request.host_url.rstrip("/")
    text = to_m3u8(items, title=name, locate=lambda t: base + audio_url(t.id))
    resp = Response(text, mimetype="audio/x-mpegurl")
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}.m3u8"'
    return resp


def wants_m3u8() -> bool:
    fmt = P.arg("format", "choice", None, choices=("json", "m3u8"))
    if fmt:
        return fmt == "m3u8"
    best = request.accept_mimetypes.best_match(["application/json", "audio/x-mpegurl", "application/vnd.apple.mpegurl"])
    return best in ("audio/x-mpegurl", "application/vnd.apple.mpegurl")


def _given_key() -> str | None:
    """The API key the request sends: X-API-Key, else Authorization: Bearer."""
    given = request.headers.get("X-API-Key")
    auth = request.headers.get("Authorization", "")
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given


def has_key() -> bool:
    """The request carries the server's ``SONICSORT_API_KEY`` (False when none is set)."""
    key, given = service().settings.api_key, _given_key()
    return bool(key and given) and hmac.compare_digest(given.encode(), key.encode())


def require_key() -> None:
    """Writes need ``SONICSORT_API_KEY`` when one is set: 401 without a key, 403 with a wrong one."""
    key = service().settings.api_key
    if not key:
        return
    given = _given_key()
    if not given:
        raise ApiError(401, "this server needs an API key for changes: send X-API-Key or Authorization: Bearer",
                       {"WWW-Authenticate": 'Bearer realm="sonicsort"'})
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(403, "the API key is wrong")


# ---------------------------------------------------------------- predict
@bp.post("/predict")
def predict():
    opts = P.similar_options(k_min=0)
    data, _ = P.audio_upload()
    svc, metrics = service(), current_app.extensions["sonicsort_metrics"]
    # the whole answer of the same request, when neither the model nor the catalog changed since
    # (raw-body repeats are answered before Flask by api.fastpath; multipart ones here)
    sha = request.environ.get(UPLOAD_SHA256) or sha256_bytes(data)
    key = answer_key(sha, request.query_string.decode("latin-1"), request.script_root)
    answers = current_app.extensions["sonicsort_answers"]
    token, stored = answers.lookup(svc, key)
    if stored is not None:
        metrics.predictions.labels("hit").inc()
        return Response(stored, mimetype="application/json")
    out = svc.predict(data, sha256=sha, **opts)
    pred = out["prediction"]
    metrics.predictions.labels("hit" if out["cached"] else "miss").inc()
    body = pred.to_dict(with_embedding=False)
    body.update(sha256=out["sha256"], cached=out["cached"], track_id=out["track_id"], backend=out["backend"],
                similar=scored_json(out["similar"]))
    if token is not None:  # the token from before the answer: a change meanwhile only makes it miss
        answers.put(key, token, current_app.json.response({**body, "cached": True}).get_data())
    return jsonify(body)


# ---------------------------------------------------------------- tracks
@bp.get("/tracks")
def list_tracks():
    text = P.arg("q", max_len=P.MAX_TEXT)
    genre = P.arg("genre", max_len=100, empty_ok=False)
    tag = P.arg("tag", max_len=100, empty_ok=False)
    limit = P.arg("limit", "int", 50, lo=1, hi=P.MAX_LIMIT)
    after = P.arg("cursor", "int", 0, lo=0, hi=10**18 - 1)
    tracks, next_after = service().search(text, genre=genre, tag=tag, after_id=after, limit=limit)
    nxt = str(next_after) if next_after is not None else None
    return jsonify({"items": [track_json(t) for t in tracks], "next_cursor": nxt,
                    "next": url_for("v1.list_tracks", **{**request.args, "cursor": nxt}) if nxt else None})


@bp.get("/tracks/<int:track_id>")
def get_track(track_id: int):
    include = P.arg("include", "choice", None, choices=("embedding",))
    svc = service()
    d = track_json(svc.track(track_id))
    if include == "embedding":
        vec = svc.catalog.vectors([track_id]).get(track_id)
        d["embedding"] = [round(float(x), 7) for x in vec] if vec is not None else None
        d["model_version"] = svc.bundle.version if svc.bundle is not None else None
    return jsonify(d)


@bp.get("/tracks/<int:track_id>/similar")
def similar(track_id: int):
    opts = P.similar_options()
    items = service().similar_to_track(track_id, **opts)
    return jsonify({"track_id": track_id, "items": scored_json(items)})


@bp.get("/tracks/<int:track_id>/audio")
def track_audio(track_id: int):
    import mimetypes

    path = service().audio_file(track_id)
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    # conditional: ETag/Last-Modified and HTTP range requests (206), which players use to seek
    return send_file(path, mimetype=mime, conditional=True, etag=True, max_age=3600)


@bp.post("/tracks")
def add_track():
    require_key()
    form = request.form if request.mimetype == "multipart/form-data" else {}
    tags = {k: P.text_value(k, form[k], max_len=500) for k in ("title", "artist", "album") if form.get(k)}
    data, filename = P.audio_upload()
    track, created = service().add_track(data, filename=filename, **tags)
    resp = jsonify(track_json(track))
    resp.status_code = 201 if created else 200
    resp.headers["Location"] = url_for("v1.get_track", track_id=track.id)
    return resp


@bp.delete("/tracks/<int:track_id>")
def delete_track(track_id: int):
    require_key()
    service().delete_track(track_id)
    return "", 204


# ---------------------------------------------------------------- playlists and paths
@bp.post("/playlists")
def playlist():
    m3u = wants_m3u8()
    body = P.json_body()
    seeds = P.int_list(body, "seeds")
    length = P.field(body, "length", "int", required=True, lo=1, hi=1000)
    genres = body.get("genres")
    if genres is not None and (not isinstance(genres, list) or not all(isinstance(g, str) for g in genres)):
        raise ApiError(400, "genres must be a list of genre names")
    artist_cap = P.field(body, "artist_cap", "int", 2, lo=1, hi=1000)
    centre_weight = P.field(body, "centre_weight", "float", 0.5, lo=0.0, hi=1.0)
    order = P.field(body, "order", "choice", "playlist", choices=("playlist", "flow"))
    items = service().playlist(seeds, length, genres=genres or None, artist_cap=artist_cap,
                               centre_weight=centre_weight, order=order,
                               dedupe=P.field(body, "dedupe", "bool", True))
    if m3u:
        return m3u8_response(items, "sonicsort-playlist")
    return jsonify({"seeds": seeds, "length": len(items), "requested_length": length,
                    "truncated": len(items) < length, "items": scored_json(items)})


@bp.post("/paths")
def path():
    m3u = wants_m3u8()
    body = P.json_body()
    start = P.field(body, "from", "int", required=True, lo=1, hi=2**62)
    end = P.field(body, "to", "int", required=True, lo=1, hi=2**62)
    length = P.field(body, "length", "int", required=True, lo=2, hi=1000)
    order = P.field(body, "order", "choice", "path", choices=("path", "flow"))
    items = service().path(start, end, length, order=order, dedupe=P.field(body, "dedupe", "bool", True))
    if m3u:
        return m3u8_response(items, "sonicsort-path")
    return jsonify({"from": start, "to": end, "length": len(items), "requested_length": length,
                    "truncated": len(items) < length, "items": scored_json(items)})


# ---------------------------------------------------------------- listening: queue, alchemy, plays, mix
def _genres(body) -> list[str] | None:
    genres = body.get("genres")
    if genres is not None and (not isinstance(genres, list) or not all(isinstance(g, str) for g in genres)):
        raise ApiError(400, "genres must be a list of genre names")
    return genres or None


@bp.post("/queue/next")
def queue_next():
    from recommender.listening import MAX_COUNT, MAX_INPUTS

    body = P.json_body()
    queue = P.int_list(body, "queue", max_items=MAX_INPUTS)
    count = P.field(body, "count", "int", 10, lo=1, hi=MAX_COUNT)
    opts = {"no_repeat_artist": P.field(body, "no_repeat_artist", "int", 15, lo=0, hi=1000),
            "no_repeat_album": P.field(body, "no_repeat_album", "int", 25, lo=0, hi=1000),
            "min_duration_s": P.field(body, "min_duration_s", "float", None, lo=0.0, hi=86_400.0),
            "max_duration_s": P.field(body, "max_duration_s", "float", None, lo=0.0, hi=86_400.0),
            "genres": _genres(body), "dedupe": P.field(body, "dedupe", "bool", True)}
    items, relaxed = service().queue_next(queue, count, **opts)
    return jsonify({"count": len(items), "requested_count": count, "truncated": len(items) < count,
                    "relaxed": relaxed or None, "items": scored_json(items)})


@bp.post("/alchemy")
def alchemy():
    from recommender.listening import MAX_COUNT, MAX_INPUTS

    body = P.json_body()
    add = P.int_list(body, "add", max_items=MAX_INPUTS)
    given = body.get("subtract")
    if given is not None and not isinstance(given, list):
        raise ApiError(400, "subtract must be a list of track ids")
    subtract = P.int_list(body, "subtract", max_items=MAX_INPUTS) if given else []
    count = P.field(body, "count", "int", 20, lo=1, hi=MAX_COUNT)
    weight = P.field(body, "subtract_weight", "float", 0.5, lo=0.0, hi=1.0)
    items = service().alchemy(add, subtract, count, subtract_weight=weight,
                              dedupe=P.field(body, "dedupe", "bool", True))
    return jsonify({"add": add, "subtract": subtract, "items": scored_json(items)})


@bp.post("/plays")
def record_plays():
    require_key()
    body = P.json_body()
    user = P.text_value("user", body.get("user"), max_len=200) if body.get("user") is not None else None
    if not user:
        raise ApiError(400, "user must name a user (sonicsort users add NAME)")
    ids = P.int_list(body, "track_ids", max_items=500)
    times = body.get("times")
    if times is not None:
        if not isinstance(times, list) or len(times) != len(ids):
            raise ApiError(400, "times must be a list with one time (seconds since 1970) per track id")
        times = [P.float_value(f"times[{i}]", t, lo=0.0, hi=1e11) for i, t in enumerate(times)]
    service().record_plays(user, ids, times)
    return "", 204


@bp.get("/mix")
def mix():
    from recommender.listening import MAX_COUNT

    user = P.arg("user", max_len=200, empty_ok=False)
    if not user:
        raise ApiError(400, "user is required: the mix is made from that user's plays")
    count = P.arg("count", "int", 30, lo=1, hi=MAX_COUNT)
    artist_cap = P.arg("artist_cap", "int", 2, lo=1, hi=MAX_COUNT)
    items = service().mix(user, count, artist_cap=artist_cap, dedupe=P.arg("dedupe", "bool", True))
    return jsonify({"user": user, "items": scored_json(items)})


# ---------------------------------------------------------------- near-duplicates
@bp.get("/duplicates")
def duplicates():
    limit = P.arg("limit", "int", 100, lo=1, hi=P.MAX_LIMIT)
    after = P.arg("cursor", "int", 0, lo=0, hi=10**18 - 1)
    groups, next_after = service().duplicate_groups(after_id=after, limit=limit)
    nxt = str(next_after) if next_after is not None else None
    return jsonify({"groups": [{"ids": list(g.ids), "distance": round(g.distance, 6),
                                "similarity": round(g.similarity, 6), "tracks": [track_json(t) for t in tracks]}
                               for g, tracks in groups],
                    "next_cursor": nxt,
                    "next": url_for("v1.duplicates", **{**request.args, "cursor": nxt}) if nxt else None})


# ---------------------------------------------------------------- artists
def artist_json(a, idx) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "album_count": len(a.album_ids),
            "track_count": sum(len(idx.albums[al].song_ids) for al in a.album_ids)}


@bp.get("/artists")
def list_artists():
    from recommender.browse import _key

    q = P.arg("q", max_len=500)
    limit = P.arg("limit", "int", 200, lo=1, hi=5000)
    offset = P.arg("offset", "int", 0, lo=0, hi=2**31)
    idx = service().music_index()
    found = [idx.artists[a] for a in idx.artist_order]
    if q:
        found = [a for a in found if _key(q) in _key(a.name)]
    page = found[offset:offset + limit]
    return jsonify({"total": len(found), "offset": offset, "items": [artist_json(a, idx) for a in page]})


@bp.get("/artists/<artist_id>/similar")
def similar_artists(artist_id: str):
    from recommender.listening import MAX_COUNT

    count = P.arg("count", "int", 10, lo=1, hi=MAX_COUNT)
    svc = service()
    found = svc.similar_artists(artist_id, count)
    idx = svc.music_index()
    return jsonify({"artist_id": artist_id, "items": [{**artist_json(a, idx), "similarity": round(sim, 6)}
                                                      for a, sim in found]})


# ---------------------------------------------------------------- saved playlists (the users' own)
def saved_json(p, tracks=None) -> dict[str, Any]:
    d = {"id": p.id, "name": p.name, "owner": p.owner, "public": p.public, "comment": p.comment,
         "created_at": p.created_at, "changed_at": p.changed_at, "n_tracks": len(p.track_ids),
         "url": f"{request.script_root}/v1/saved-playlists/{p.id}"}
    if tracks is not None:
        d["items"] = [track_json(t) for t in tracks]
    return d


def _visible(p) -> bool:
    # a private playlist is its user's: /v1 shows it only to requests with the server's API key
    return p.public or has_key()


@bp.get("/saved-playlists")
def saved_playlists():
    found = [p for p in service().catalog.playlists() if _visible(p)]
    return jsonify({"items": [saved_json(p) for p in found]})


@bp.get("/saved-playlists/<int:playlist_id>")
def saved_playlist(playlist_id: int):
    from recommender.errors import UnknownPlaylist

    m3u = wants_m3u8()
    svc = service()
    p = svc.catalog.playlist(playlist_id)
    if not _visible(p):
        raise UnknownPlaylist(f"no playlist {playlist_id}")
    found = svc.catalog.get_many(p.track_ids)
    tracks = [found[t] for t in p.track_ids if t in found]
    if m3u:
        from recommender.recommend import Scored

        return m3u8_response([Scored(t, 1.0, 1.0, 1.0) for t in tracks], p.name)
    return jsonify(saved_json(p, tracks))


@bp.get("/map")
def catalog_map():
    limit = P.arg("limit", "int", 5000, lo=1, hi=50_000)
    return jsonify(service().map(limit))


@bp.get("/genres")
def genres():
    svc = service()
    return jsonify({"model_version": svc.bundle.version, "genres": svc.genres()})
