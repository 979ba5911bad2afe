"""OpenSubsonic: ``/rest/<method>`` (and ``/rest/<method>.view``) for the apps that speak the
Subsonic API, on the same port as ``/v1``.

A request is a GET query or a POST form (the ``formPost`` extension) carrying the login
(``u`` with ``p``, ``p=enc:HEX`` or ``t`` + ``s``; or ``apiKey`` alone), the protocol
version ``v``, the client name ``c`` and the format ``f`` (``xml``, the default, ``json``
or ``jsonp`` with ``callback``). Every answer is a ``subsonic-response`` with HTTP 200, an
error included (its code is the spec's), except the media a method sends (``stream``,
``download``, ``getCoverArt``). The methods are in ``methods``; what they say is built by
``entries`` and written by ``render``.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable

from flask import Blueprint, Response, current_app, request

from . import render

log = logging.getLogger(__name__)
bp = Blueprint("rest", __name__, url_prefix="/rest")

# the spec's error codes
GENERIC, MISSING, WRONG_LOGIN, TOKEN_UNSUPPORTED, MECHANISM_UNSUPPORTED, CONFLICTING_LOGIN, BAD_API_KEY, \
    NOT_AUTHORISED, NOT_FOUND = 0, 10, 40, 41, 42, 43, 44, 50, 70
# the methods anyone may call, logged in or not (getOpenSubsonicExtensions: the spec says so)
PUBLIC = {"getOpenSubsonicExtensions"}
METHODS: dict[str, Callable[["Call"], Any]] = {}


class SubsonicError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def method(fn: Callable[["Call"], Any]) -> Callable[["Call"], Any]:
    """Register ``fn`` as the method of its name."""
    METHODS[fn.__name__.rstrip("_")] = fn
    return fn


class Call:
    """One request: its parameters (query and form together), the logged-in user, the service."""

    def __init__(self, svc, values) -> None:
        self.svc = svc
        self.values = values
        self.user = None  # recommender.catalog.accounts.User once logged in

    def get(self, name: str, default: str | None = None) -> str | None:
        v = self.values.get(name)
        return v if v not in (None, "") else default

    def need(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise SubsonicError(MISSING, f"required parameter is missing: {name}")
        return v

    def all(self, name: str) -> list[str]:
        return [v for v in self.values.getlist(name) if v != ""]

    def int(self, name: str, default: int | None = None, *, lo: int = 0, hi: int = 10**9) -> int | None:
        v = self.get(name)
        if v is None:
            return default
        try:
            n = int(v)
        except ValueError:
            raise SubsonicError(GENERIC, f"{name} must be a whole number, not {v!r}") from None
        if not lo <= n <= hi:
            raise SubsonicError(GENERIC, f"{name} must be between {lo} and {hi}, not {n}")
        return n

    def bool(self, name: str, default: bool) -> bool:
        v = self.get(name)
        if v is None:
            return default
        if v.lower() in ("true", "1", "yes"):
            return True
        if v.lower() in ("false", "0", "no"):
            return False
        raise SubsonicError(GENERIC, f"{name} must be true or false, not {v!r}")


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
    if not users.catalog.has_users():
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

    from . import methods  # noqa: F401  (registers the methods)

    values = CombinedMultiDict([request.args, request.form]) if request.method == "POST" else request.args
    name = name[:-5] if name.endswith(".view") else name
    fn = METHODS.get(name)
    if fn is None:
        return failure(GENERIC, f"sonicsort does not implement {name!r} (see getOpenSubsonicExtensions and the docs)",
                       values)
    call = Call(current_app.extensions["sonicsort"], values)
    try:
        if name not in PUBLIC:
            _login(call)
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
    return answer(render.envelope(out or {}), values)
