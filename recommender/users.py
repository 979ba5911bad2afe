"""The people who log in from Subsonic apps: their passwords, API keys and failed logins.

Subsonic's token login sends ``md5(password + salt)``, so the server must know each password
itself, not only a hash of it. Passwords are therefore stored encrypted (Fernet: AES-128 in
CBC mode with an HMAC-SHA256 tag, from the ``cryptography`` package) with a key the operator
keeps apart from the catalog: ``SONICSORT_SECRET_KEY``, or else the key file
``SONICSORT_HOME/secret.key``, created with mode 0600 on first use. A copy of the catalog
alone (a backup, a database dump, a read-only replica) gives no password away; whoever can
read the key as well can decrypt them all, as can anyone who runs code as the server.
API keys are stored as their SHA-256 only: the server never needs them back.

Failed logins are counted per user and client address (and per address over all users) in
Redis when it answers, else in the process: past ``MAX_FAILURES`` in ``FAILURE_WINDOW_S``,
further tries are refused without a check until the window has passed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from pathlib import Path

from .catalog.accounts import User
from .errors import BadRequest, NotAllowed, WrongCredentials
from .text import clean_text

log = logging.getLogger(__name__)
MAX_FAILURES = 10  # per user and address within the window (and 5× that per address)
FAILURE_WINDOW_S = 15 * 60
MAX_NAME = 64
MAX_PASSWORD = 256


class PasswordBox:
    """Encrypts and decrypts stored passwords with the operator's key (see the module docs)."""

    def __init__(self, secret: str, key_file: Path) -> None:
        from cryptography.fernet import Fernet

        if secret:
            key = base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest())
        else:
            key = _key_file(key_file)
        self._fernet = Fernet(key)

    def seal(self, password: str) -> str:
        return self._fernet.encrypt(password.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except InvalidToken:
            raise WrongCredentials("this server's password key does not open the stored passwords "
                                   "(SONICSORT_SECRET_KEY or secret.key changed): set the user's password again "
                                   "with 'sonicsort users passwd'") from None


def _key_file(path: Path) -> bytes:
    """The key in ``path``, made (mode 0600, never replaced) when there is none."""
    from cryptography.fernet import Fernet

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise NotAllowed(f"{path} can be read by other users: chmod 600 it (it opens the stored passwords)")
        return path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _key_file(path)
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    log.info("made the password key %s (mode 0600): back it up apart from the catalog (it opens the stored passwords)", path)
    return key


class FailedLogins:
    """Failed logins per (user, address) and per address, in Redis (shared by every worker and
    node) when ``redis_url`` answers, else in this process."""

    def __init__(self, redis_url: str | None, prefix: str) -> None:
        self._redis = None
        if redis_url and redis_url.startswith(("redis://", "rediss://", "unix://")):
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._prefix = prefix + "login-failures:"
        self._local: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def _keys(self, user: str, address: str) -> list[tuple[str, int]]:
        return [(f"{self._prefix}{address}:{user}", MAX_FAILURES), (f"{self._prefix}{address}", 5 * MAX_FAILURES)]

    def blocked(self, user: str, address: str) -> bool:
        keys = self._keys(user, address)
        if self._redis is not None:
            try:
                counts = self._redis.mget([k for k, _ in keys])
                return any(c is not None and int(c) >= limit for c, (_, limit) in zip(counts, keys))
            except Exception:  # Redis away: count here meanwhile
                pass
        now = time.time()
        with self._lock:
            return any(self._local.get(k, (0, 0.0))[0] >= limit and self._local[k][1] > now for k, limit in keys)

    def failed(self, user: str, address: str) -> None:
        keys = self._keys(user, address)
        if self._redis is not None:
            try:
                pipe = self._redis.pipeline(transaction=False)
                for k, _ in keys:
                    pipe.incr(k)
                    pipe.expire(k, FAILURE_WINDOW_S, nx=True)
                pipe.execute()
                return
            except Exception:
                pass
        now = time.time()
        with self._lock:
            if len(self._local) > 100_000:
                self._local = {k: v for k, v in self._local.items() if v[1] > now}
            for k, _ in keys:
                n, until = self._local.get(k, (0, 0.0))
                self._local[k] = (n + 1, until) if until > now else (1, now + FAILURE_WINDOW_S)


def check_name(name: str) -> str:
    if not isinstance(name, str) or clean_text(name) != name or not 0 < len(name) <= MAX_NAME or name != name.strip():
        raise BadRequest(f"a user name is 1 to {MAX_NAME} printable characters without spaces around them")
    return name


def check_password(password: str) -> str:
    if not 0 < len(password) <= MAX_PASSWORD or "\n" in password or "\r" in password:
        raise BadRequest(f"a password is 1 to {MAX_PASSWORD} characters on one line")
    return password


class Users:
    """The users of one catalog: adding and changing them, and checking their logins."""

    def __init__(self, catalog, settings) -> None:
        self.catalog = catalog
        self._settings = settings
        self._box: PasswordBox | None = None
        self.failures = FailedLogins(settings.redis_url, settings.cache_prefix)
        # users and their opened passwords as of the catalog's last write (``Catalog.write_token``)
        self._memo: dict = {}
        self._memo_token = None
        self._memo_lock = threading.Lock()

    def _remember(self, key, make):
        token = self.catalog.write_token()
        with self._memo_lock:
            if token != self._memo_token:
                self._memo, self._memo_token = {}, token
            if key in self._memo:
                return self._memo[key]
        value = make()
        with self._memo_lock:
            if token == self._memo_token:
                self._memo[key] = value
        return value

    def listening(self, name: str) -> dict[str, dict]:
        """What a user's answers show beside the songs, as of the catalog's last write: their
        ``stars`` (item id → time), ``ratings`` and last ``played`` times (track id → ...), and
        everyone's ``plays`` (track id → count)."""
        def read() -> dict[str, dict]:
            cat = self.catalog
            return {"stars": cat.starred(name), "ratings": cat.ratings(name), "played": cat.last_played(user=name),
                    "plays": self._remember(("plays",), cat.play_counts)}

        return self._remember(("listening", name), read)

    def has_users(self) -> bool:
        return self._remember(("any",), self.catalog.has_users)

    @property
    def box(self) -> PasswordBox:
        if self._box is None:  # the key file is made on first use, not when a server starts
            self._box = PasswordBox(self._settings.secret_key, self._settings.secret_key_file)
        return self._box

    def add(self, name: str, password: str, *, admin: bool = False) -> None:
        self.catalog.add_user(check_name(name), self.box.seal(check_password(password)), is_admin=admin)

    def set_password(self, name: str, password: str) -> None:
        self.catalog.set_user(name, password=self.box.seal(check_password(password)))

    def new_api_key(self, name: str) -> str:
        """A new API key for ``name`` (the old one stops working); only its hash is kept."""
        key = secrets.token_urlsafe(32)
        self.catalog.set_user(name, api_key_sha256=hashlib.sha256(key.encode()).hexdigest())
        return key

    # ---------------------------------------------------------------- logins
    def _guard(self, name: str, address: str) -> None:
        if self.failures.blocked(name, address):
            raise WrongCredentials(f"too many failed logins from {address}: wait {FAILURE_WINDOW_S // 60} minutes")

    def _fail(self, name: str, address: str, what: str) -> WrongCredentials:
        self.failures.failed(name, address)
        return WrongCredentials(what)

    def _known(self, name: str, address: str) -> User:
        from .errors import UnknownUser

        def read():
            try:
                return self.catalog.user(name)
            except UnknownUser:
                return None

        user = self._remember(("user", name), read)
        if user is None:
            raise self._fail(name, address, "wrong username or password")
        return user

    def _password_of(self, user: User) -> str:
        return self._remember(("password", user.name, user.password), lambda: self.box.open(user.password))

    def login_password(self, name: str, password: str, *, address: str) -> User:
        self._guard(name, address)
        user = self._known(name, address)
        if not hmac.compare_digest(self._password_of(user).encode(), password.encode()):
            raise self._fail(name, address, "wrong username or password")
        return user

    def login_token(self, name: str, token: str, salt: str, *, address: str) -> User:
        """Subsonic's token login: ``token`` = md5(password + salt), in hex."""
        self._guard(name, address)
        user = self._known(name, address)
        want = hashlib.md5((self._password_of(user) + salt).encode()).hexdigest()
        if not hmac.compare_digest(want, token.strip().lower()):
            raise self._fail(name, address, "wrong username or password")
        return user

    def login_api_key(self, key: str, *, address: str) -> User:
        self._guard("(api key)", address)
        name = self.catalog.user_by_api_key(hashlib.sha256(key.encode()).hexdigest())
        if name is None:
            raise self._fail("(api key)", address, "invalid API key")
        return self.catalog.user(name)
