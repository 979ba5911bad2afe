"""The API's parameter parsing and its answer cache, called directly (no server, no Redis)."""

from __future__ import annotations

import pytest
from flask import Flask

from api.answers import AnswerCache, answer_key
from api.errors import ApiError
from api import params as P


def _bad(fn, *a, **kw) -> str:
    with pytest.raises(ApiError) as e:
        fn(*a, **kw)
    assert e.value.status == 400
    return e.value.detail


def test_numbers_are_strict_and_bounded():
    assert P.int_value("k", "10", lo=1, hi=100) == 10 and P.int_value("k", 7, lo=1, hi=100) == 7
    for v in ("1e2", " 5", "5 ", "+5", "0x10", "1_0", "", "ten", True, 2.0, None):
        assert "k must be an integer" in _bad(P.int_value, "k", v, lo=1, hi=100)
    assert _bad(P.int_value, "k", "101", lo=1, hi=100) == "k must be between 1 and 100, not 101"
    assert _bad(P.int_value, "k", "9" * 30, lo=1, hi=100).startswith("k must be an integer")
    assert P.float_value("w", "0.25", lo=0, hi=1) == 0.25 and P.float_value("w", "1e-1", lo=0, hi=1) == 0.1
    for v in ("nan", "inf", "-0.5", "2", "0,5", False, [1]):
        assert _bad(P.float_value, "w", v, lo=0, hi=1).startswith("w must be")


def test_text_choices_and_id_lists():
    assert P.choice_value("genre_mode", "same", ("any", "same")) == "same"
    assert "one of any, same" in _bad(P.choice_value, "genre_mode", "SAME", ("any", "same"))
    assert P.text_value("q", "jazz") == "jazz"
    assert "longer than 3" in _bad(P.text_value, "q", "jazz", max_len=3)
    assert "NUL" in _bad(P.text_value, "q", "a\x00b") and "string" in _bad(P.text_value, "q", 5)
    assert P.int_list({"seeds": [1, "2"]}, "seeds") == [1, 2]
    for body in ({}, {"seeds": []}, {"seeds": 3}, {"seeds": list(range(1, 60))}):
        assert "seeds" in _bad(P.int_list, body, "seeds")
    assert "seeds[1]" in _bad(P.int_list, {"seeds": [1, 0]}, "seeds")
    assert P.is_audio_type("audio/flac") and P.is_audio_type("application/ogg") and not P.is_audio_type("text/plain")


def test_query_arguments_in_a_request():
    app = Flask(__name__)
    with app.test_request_context("/?k=5&genre=&q=a&q=b&mode=boost"):
        assert P.arg("k", "int", 10, lo=1, hi=100) == 5 and P.arg("absent", "int", 10, lo=1, hi=100) == 10
        assert P.arg("genre") is None  # empty text is absent
        assert _bad(P.arg, "genre", empty_ok=False) == "genre is empty"
        assert _bad(P.arg, "q") == "q is given 2 times; give it once"
        assert P.arg("mode", "choice", "any", choices=("any", "boost")) == "boost"
    with app.test_request_context("/", method="POST", data="[1]", content_type="application/json"):
        assert _bad(P.json_body) == "the body must be a JSON object"
    with app.test_request_context("/", method="POST", data="{}", content_type="text/plain"):
        with pytest.raises(ApiError) as e:
            P.json_body()
        assert e.value.status == 415


class _State:
    """What the answer cache asks of the service: its state token."""

    def __init__(self, token):
        self.token = token

    def state_token(self):
        return self.token


def test_answer_cache_serves_an_answer_only_for_the_state_it_came_from():
    cache = AnswerCache(max_bytes=1600)
    svc = _State(("model-a", 1))
    key = answer_key("ab" * 32, "k=5", "")
    token, hit = cache.lookup(svc, key)
    assert token == ("model-a", 1) and hit is None and cache.misses == 1
    cache.put(key, token, b"x" * 50)
    assert cache.lookup(svc, key) == (("model-a", 1), b"x" * 50) and cache.hits == 1
    assert cache.lookup(svc, answer_key("ab" * 32, "k=6", ""))[1] is None  # another request
    svc.token = ("model-a", 2)  # the catalog changed: the stored answer is stale
    assert cache.lookup(svc, key)[1] is None
    svc.token = None  # not ready: nothing to look up or store under
    assert cache.lookup(svc, key) == (None, None)
    cache.put(answer_key("cd" * 32, "", ""), ("m", 1), b"y" * 101)  # over max_bytes / 16: not kept
    assert len(cache) == 1
    for i in range(40):  # bounded by bytes, least recently used out
        cache.put(answer_key(f"{i:064d}", "", ""), ("m", 1), b"z" * 100)
    assert cache.bytes <= 1600 and len(cache) == 16
    assert cache.lookup(_State(("m", 1)), answer_key(f"{39:064d}", "", ""))[1] == b"z" * 100
    off = AnswerCache(0)
    assert not off.enabled and off.lookup(svc, key) == (None, None)
