"""OpenSubsonic: ``/rest/<method>`` (and ``/rest/<method>.view``) for the apps that speak the
Subsonic API, on the same port as ``/v1``.

A request is a GET query or a POST form (the ``formPost`` extension) carrying the login
(``u`` with ``p``, ``p=enc:HEX`` or ``t`` + ``s``; or ``apiKey`` alone), the protocol
version ``v``, the client name ``c`` and the format ``f`` (``xml``, the default, ``json``
or ``jsonp`` with ``callback``). Every answer is a ``subsonic-response`` with HTTP 200, an
error included (its code is the spec's), except the media a method sends (``stream``,
``download``, ``getCoverArt``). The methods are in ``browsing``, ``media``, ``listening`` and
``sonic`` (each registered by name with ``protocol.method``); what they say is built by ``entries`` and written by ``render``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, Response, current_app, request

from . import browsing, listening, media, render, sonic
from .protocol import (BAD_API_KEY, CONFLICTING_LOGIN, GENERIC, METHODS, MISSING, NOT_AUTHORISED, NOT_FOUND, PUBLIC,
                       WRONG_LOGIN, Call, SubsonicError)

log = logging.getLogger(__name__)
bp = Blueprint("rest", __name__, url_prefix="/rest")
__all__ = ["bp", "browsing", "listening", "media", "sonic"]

def _format(values) -> tuple[str, str | None]:
    f = (values.get("f") or "xml").lower()
    callback = values.get("callback")
    if f == "jsonp" and callback and re.fullmatch(r"[A-Za-z_$][\w$.]{0,100}", callback):
        return "jsonp", callback
    return ("json" if f in ("json", "jsonp") else "xml"), None


def answer(doc: dict[str, Any], values) -> Response:
    fmt, callback = _format(values)
    if fmt == "xml":
        return Response(render.to_xml(doc), mimetype="application/xml")
    body = render.to_json(doc)
    if fmt == "jsonp":
        return Response(f"{callback}({body});", mimetype="application/javascript")
    return Response(body, mimetype="application/json")


def failure(code: int, message: str, values) -> Response:
    return answer(render.envelope(render.error_payload(code, message), failed=True), values)


def _login(call: Call) -> None:
    from recommender.errors import WrongCredentials

    v, users = call.values, call.svc.users
    given = [k for k in ("u", "p", "t", "s", "apiKey") if v.get(k)]
    address = request.remote_addr or "?"
    if not users.has_users():
        raise SubsonicError(WRONG_LOGIN, "this server has no users yet: add one with 'sonicsort users add NAME'")
    try:
        if "apiKey" in given:
            if set(given) != {"apiKey"}:
                raise SubsonicError(CONFLICTING_LOGIN, "multiple conflicting authentication mechanisms provided: "
                                                       "an apiKey goes without u, p, t and s")
            try:
                call.user = users.login_api_key(v["apiKey"], address=address)
            except WrongCredentials as exc:
                raise SubsonicError(BAD_API_KEY, str(exc)) from None
            return
        if "u" not in given:
            raise SubsonicError(MISSING, "required parameter is missing: u (or apiKey)")
        if "p" in given and ("t" in given or "s" in given):
            raise SubsonicError(CONFLICTING_LOGIN, "multiple conflicting authentication mechanisms provided: "
                                                   "p goes without t and s")
        if "p" in given:
            password = v["p"]
            if password.startswith("enc:"):
                try:
                    password = bytes.fromhex(password[4:]).decode("utf-8")
                except ValueError:
                    raise SubsonicError(WRONG_LOGIN, "p=enc: must be followed by the password's hex digits") from None
            call.user = users.login_password(v["u"], password, address=address)
        elif "t" in given and "s" in given:
            call.user = users.login_token(v["u"], v["t"], v["s"], address=address)
        else:
            raise SubsonicError(MISSING, "required parameter is missing: p, or t and s")
    except WrongCredentials as exc:
        raise SubsonicError(WRONG_LOGIN, str(exc)) from None


def _code_of(exc: BaseException) -> tuple[int, str] | None:
    from recommender.errors import ERROR_KINDS, error_kind

    if not isinstance(exc, ERROR_KINDS):
        return None
    kind = error_kind(exc)
    code = {"not_found": NOT_FOUND, "forbidden": NOT_AUTHORISED, "unauthenticated": WRONG_LOGIN}.get(kind, GENERIC)
    return code, str(exc)


@bp.route("/<string:name>", methods=["GET", "POST"])
def dispatch(name: str):
    from werkzeug.datastructures import CombinedMultiDict

    values = CombinedMultiDict([request.args, request.form]) if request.method == "POST" else request.args
    name = name[:-5] if name.endswith(".view") else name
    fn = METHODS.get(name)
    if fn is None:
        return failure(GENERIC, f"sonicsort does not implement {name!r} (see getOpenSubsonicExtensions and the docs)",
                       values)
    svc = current_app.extensions["sonicsort"]
    call = Call(svc, values)
    key = token = None
    try:
        if name not in PUBLIC:
            _login(call)
        if name in CACHED and not (name == "getAlbumList2" and values.get("type") == "random"):
            key, token = _answer_key(name, call), svc.catalog.write_token()
            hit = current_app.extensions["sonicsort_rest_answers"].get(key, token)
            if hit is not None:
                return Response(hit, mimetype=_MIMETYPES[_format(values)[0]])
        out = fn(call)
    except SubsonicError as exc:
        return failure(exc.code, exc.message, values)
    except Exception as exc:
        known = _code_of(exc)
        if known is None:
            log.exception("/rest/%s failed", name)
            return failure(GENERIC, "internal error (the server log has the details)", values)
        return failure(*known, values)
    if isinstance(out, Response):
        return out
    resp = answer(render.envelope(out or {}), values)
    if key is not None:  # the token from before the answer was made: a write meanwhile only makes it miss
        current_app.extensions["sonicsort_rest_answers"].put(key, token, resp.get_data())
    return resp


# answers that depend on nothing but their parameters, the user and the catalog: kept per
# worker until the catalog's next write (any process's: ``Catalog.write_token``)
CACHED = {"getLicense", "getMusicFolders", "getIndexes", "getArtists", "getArtist", "getAlbum", "getSong",
          "getMusicDirectory", "getGenres", "getSongsByGenre", "getAlbumList2", "search3", "getStarred2",
          "getPlaylists", "getPlaylist", "getSonicSimilarTracks", "findSonicPath", "getSimilarSongs",
          "getSimilarSongs2", "getTopSongs"}
_LOGIN = {"u", "p", "t", "s", "apiKey", "c", "v", "_"}  # what names the caller, not the question
_MIMETYPES = {"xml": "application/xml", "json": "application/json", "jsonp": "application/javascript"}


def _answer_key(name: str, call: Call) -> tuple:
    return (name, call.user.name, tuple(sorted((k, tuple(call.values.getlist(k))) for k in call.values if k not in _LOGIN)))


def init_app(app, max_bytes: int) -> None:
    """The per-worker caches of whole answers (``SONICSORT_ANSWER_CACHE_MB``, as much as /v1's) and of
    cover art."""
    from recommender.artwork import ArtworkCache

    from ..answers import AnswerCache

    app.extensions["sonicsort_rest_answers"] = AnswerCache(max_bytes)
    app.extensions["sonicsort_artwork"] = ArtworkCache()
