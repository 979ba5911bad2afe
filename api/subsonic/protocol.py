"""What every method shares: the spec's error codes, ``SubsonicError``, one request's
parameters and user (``Call``), and the registry of methods by name (``method``)."""

from __future__ import annotations

from typing import Any, Callable

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
