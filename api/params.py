"""Parsing and validating request parameters: one clear 400 message per bad value.

The limits here are the ones the OpenAPI document states (``api/openapi.yaml``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

from flask import current_app, request

from .errors import ApiError, too_large

AUDIO_TYPES = ("application/octet-stream", "application/ogg")  # besides audio/*
MAX_K = 100
MAX_LIMIT = 200
MAX_TEXT = 200
_INT = re.compile(r"-?[0-9]{1,19}")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _bad(detail: str) -> ApiError:
    return ApiError(400, detail)


def int_value(name: str, value: Any, *, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise _bad(f"{name} must be an integer, not {value!r}")
    if isinstance(value, str):
        if not _INT.fullmatch(value):  # strict: no spaces, signs, underscores or exponents
            raise _bad(f"{name} must be an integer, not {value!r}")
        value = int(value, 10)
    if not isinstance(value, int):
        raise _bad(f"{name} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise _bad(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def float_value(name: str, value: Any, *, lo: float, hi: float) -> float:
    if isinstance(value, bool):
        raise _bad(f"{name} must be a number, not {value!r}")
    if isinstance(value, str) and not _FLOAT.fullmatch(value):
        raise _bad(f"{name} must be a number, not {value!r}")
    if not isinstance(value, (str, int, float)):
        raise _bad(f"{name} must be a number, not {value!r}")
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise _bad(f"{name} must be between {lo:g} and {hi:g}, not {value!r}")
    return v


def bool_value(name: str, value: Any) -> bool:
    """true or false: a JSON boolean, or in a query string the word ``true`` or ``false``."""
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise _bad(f"{name} must be true or false, not {value!r}")


def choice_value(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise _bad(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def text_value(name: str, value: Any, *, max_len: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise _bad(f"{name} must be a string, not {value!r}")
    if len(value) > max_len:
        raise _bad(f"{name} is longer than {max_len} characters")
    if "\x00" in value:
        raise _bad(f"{name} must not contain NUL characters")
    return value


def arg(name: str, kind: str = "str", default: Any = None, *, empty_ok: bool = True, **limits: Any) -> Any:
    """A query parameter, validated; ``default`` when absent (and, for text, when empty if ``empty_ok``)."""
    values = request.args.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise _bad(f"{name} is given {len(values)} times; give it once")
    if values[0] == "" and kind == "str":
        if empty_ok:
            return default
        raise _bad(f"{name} is empty")
    return _convert(name, values[0], kind, **limits)


def field(body: Mapping[str, Any], name: str, kind: str = "str", default: Any = None, required: bool = False,
          **limits: Any) -> Any:
    """A JSON body field, validated."""
    if name not in body or body[name] is None:
        if required:
            raise _bad(f"the body needs {name!r}")
        return default
    return _convert(name, body[name], kind, **limits)


def _convert(name: str, value: Any, kind: str, **limits: Any) -> Any:
    if kind == "int":
        return int_value(name, value, **limits)
    if kind == "float":
        return float_value(name, value, **limits)
    if kind == "choice":
        return choice_value(name, value, limits["choices"])
    if kind == "bool":
        return bool_value(name, value)
    return text_value(name, value, **limits)


def similar_options(k_min: int = 1) -> dict[str, Any]:
    """The ranking controls shared by /v1/predict and /v1/tracks/{id}/similar."""
    from recommender.recommend import GENRE_MODES

    return {
        "k": arg("k", "int", 10, lo=k_min, hi=MAX_K),
        "genre": arg("genre", max_len=100, empty_ok=False),
        "genre_mode": arg("genre_mode", "choice", "any", choices=GENRE_MODES),
        "backend": backend_arg(),
        "boost_weight": arg("boost_weight", "float", 0.3, lo=0.0, hi=1.0),
        "artist_cap": arg("artist_cap", "int", None, lo=1, hi=MAX_K),
        "mmr_lambda": arg("mmr_lambda", "float", None, lo=0.0, hi=1.0),
        "dedupe": arg("dedupe", "bool", True),
    }


def backend_arg() -> str | None:
    """``?backend=``: one of the backends this server can use; a registered one it cannot use
    is refused with the setting that would enable it."""
    from recommender.config import backend_names, backend_unusable

    name = arg("backend", "choice", None, choices=backend_names())
    if name is not None:
        why = backend_unusable(name, current_app.extensions["sonicsort"].settings)
        if why:
            raise _bad(why)
    return name


def json_body() -> dict[str, Any]:
    if not request.is_json:
        raise ApiError(415, "send a JSON object with Content-Type: application/json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # json's parser recurses once per level of nesting
        raise _bad("the JSON body is nested too deeply") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    return body


def int_list(body: Mapping[str, Any], name: str, *, max_items: int = 50) -> list[int]:
    value = body.get(name)
    if not isinstance(value, list) or not value:
        raise _bad(f"{name} must be a non-empty list of track ids")
    if len(value) > max_items:
        raise _bad(f"{name} holds more than {max_items} items")
    return [int_value(f"{name}[{i}]", v, lo=1, hi=2**62) for i, v in enumerate(value)]


def is_audio_type(mimetype: str | None) -> bool:
    return bool(mimetype) and (mimetype.startswith("audio/") or mimetype in AUDIO_TYPES)


def _refuse_cut_stream(n_read: int) -> None:
    """A body without Content-Length (chunked) is read up to MAX_CONTENT_LENGTH and then stops
    without a word: one more byte tells a body of the limit's size from a longer one, which is
    refused (413) rather than stored shortened."""
    from werkzeug.exceptions import RequestEntityTooLarge

    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit and n_read >= limit:
        try:
            more = request.stream.read(1)
        except RequestEntityTooLarge:
            more = b"1"
        if more:
            raise ApiError(413, too_large(limit))


def audio_upload() -> tuple[bytes, str | None]:
    """The uploaded audio and its file name: a multipart field ``file``, or the raw body with
    an audio content type. Other content types get 415; a missing or empty upload 400."""
    ctype = request.mimetype
    if ctype == "multipart/form-data":
        f = request.files.get("file")
        if f is None:
            raise _bad("the multipart upload needs a field named 'file' holding the audio")
        part = (f.mimetype or "").lower()
        if part and not is_audio_type(part):
            raise ApiError(415, f"{f.filename or 'the file'} is {part}, not audio; "
                                f"send wav, flac, ogg, mp3 or au")
        data, name = f.read(), f.filename or None
    elif is_audio_type(ctype):
        data, name = request.get_data(cache=False), None
        if request.content_length is None:
            _refuse_cut_stream(len(data))
    else:
        what = ctype or "no Content-Type"
        raise ApiError(415, f"{what} is not audio: send the file as multipart field 'file', or the raw "
                            f"bytes with an audio Content-Type (audio/mpeg, audio/wav, audio/flac, ...)")
    if not data:
        raise _bad("the upload is empty")
    return data, name
