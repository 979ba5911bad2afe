"""Service settings: dataclass defaults, overridden by ``SONICSORT_*`` environment variables.

The same object feeds the CLI and the API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path


def backend_names() -> tuple[str, ...]:
    """The index backends a library can use, from ``index``'s registry: what ``--backend``,
    ``?backend=`` and ``SONICSORT_BACKEND`` accept, and the OpenAPI document lists."""
    from index import BACKENDS

    return tuple(BACKENDS)


def backend_unusable(name: str, settings: "Settings") -> str | None:
    """Why a server with ``settings`` cannot use the registered backend ``name`` (None: it can):
    Milvus needs a server to reach (``SONICSORT_MILVUS_URI``, or ``serve --backend milvus``,
    which starts milvus-lite beside the workers); any backend needs its library installed."""
    if name == "milvus" and settings.backend != "milvus" and not settings.milvus_uri:
        return ("the milvus backend is not enabled on this server: set SONICSORT_MILVUS_URI to a Milvus "
                "server, or serve with --backend milvus")
    from index.errors import BackendUnavailable
    from index.registry import backend_class

    try:
        backend_class(name)
    except BackendUnavailable as exc:
        return str(exc)
    return None


def usable_backends(settings: "Settings") -> tuple[str, ...]:
    """The registered backends a server with ``settings`` can use: what ``?backend=`` accepts and
    the served OpenAPI document lists."""
    return tuple(n for n in backend_names() if backend_unusable(n, settings) is None)


def _default_home() -> Path:
    return Path(os.environ.get("SONICSORT_HOME") or Path.home() / ".sonicsort")


@dataclass
class Settings:
    home: Path = field(default_factory=_default_home)
    model_dir: Path | None = None  # None: the model shipped inside the package
    backend: str = "hnsw"
    # where the catalog lives: "" for the embedded SQLite file under home, or a URL
    # (postgresql://user@host/db: a catalog several machines share; sqlite:///path)
    catalog_url: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    # the `milvus` backend's vectors: "" for milvus-lite's data folder under home (one process;
    # `serve` runs it as a server for its workers), or a Milvus server http://host:19530
    milvus_uri: str = ""
    uploads: Path | None = None  # SONICSORT_UPLOADS: the uploads folder, when not home/uploads
    max_duration_s: float = 20 * 60.0
    # what decoding one file may cost (embedding.audio.DecodeLimits): beyond any of these it is refused
    max_channels: int = 8
    max_sample_rate: int = 192_000
    max_decoded_samples: int = 2 * 96_000 * 1200  # channels × frames: 20 minutes of 96 kHz stereo
    cache_ttl_s: int = 30 * 86400
    cache_prefix: str = "sonicsort:"
    # what to do when the catalog's embeddings come from another model than the loaded one:
    # "refuse" (a clear error) or "reembed" (recompute them from the audio files)
    on_model_mismatch: str = "refuse"
    ingest_workers: int = 0  # 0: one per CPU core
    # fingerprint new audio and find the catalog's near-duplicates (``recommender.duplicates``);
    # off, ingest skips the fingerprint's decode and answers drop no duplicates
    find_duplicates: bool = True
    # the HTTP API
    # the key that encrypts users' passwords in the catalog (any string; "" : a key file made
    # on first use, ``secret_key_file``)
    secret_key: str = ""
    api_key: str = ""  # when set, POST/DELETE /v1/tracks need it (X-API-Key or Authorization: Bearer)
    max_upload_mb: float = 50.0  # larger uploads get 413
    host: str = "127.0.0.1"
    port: int = 8000
    web_workers: int = 2  # gunicorn worker processes (each loads the model once)
    web_threads: int = 4  # threads per worker (each runs one complete request at a time)
    # a request body not complete this long after its headers gets 408 (slow clients wait in
    # the worker's event loop meanwhile, holding no thread)
    body_timeout_s: float = 60.0
    # a connection must deliver a complete request head this long after connecting (or after its
    # previous answer); one that sends nothing is closed then too
    header_timeout_s: float = 10.0
    # connections each serve worker keeps open at most (fewer when the file limit leaves less
    # room); past it the longest-idle one is closed, or the new one answered 503
    max_connections: int = 1000
    # request bodies each worker keeps in memory at most, in all; past it, or past 1 MB for one
    # body, a body waits in a temporary file under home (at most 64 such files at once: 503 beyond)
    body_memory_mb: float = 64.0
    # the gunicorn worker class of `serve`: "uvicorn" (slow clients wait in an event loop and
    # hold no thread) or "gthread" (gunicorn's threads, each reading its connection)
    web_server: str = "uvicorn"
    # whole /v1/predict answers kept in each worker for repeated uploads, and as much again of /rest
    # answers until the catalog's next write (0: off)
    answer_cache_mb: float = 32.0
    # what one request may cost (recommender.limits): its work stops after this many seconds (503) ...
    request_budget_s: float = 10.0
    # ... and this many long playlists or paths run at once in a process (others wait a second, then 503)
    heavy_requests: int = 1

    @property
    def decode_limits(self):
        """The ``embedding.audio.DecodeLimits`` these settings give every decode."""
        from embedding.audio import DecodeLimits

        return DecodeLimits(max_duration_s=self.max_duration_s, max_channels=self.max_channels,
                            max_sample_rate=self.max_sample_rate, max_decoded_samples=self.max_decoded_samples)

    @property
    def catalog_path(self) -> Path:
        """The embedded SQLite catalog's file (used unless ``catalog_url`` is set)."""
        return self.home / "catalog.sqlite3"

    @property
    def catalog_location(self) -> str | Path:
        """What ``recommender.catalog.Catalog`` opens: ``catalog_url``, else the SQLite file."""
        return self.catalog_url or self.catalog_path

    @property
    def secret_key_file(self) -> Path:
        """Where the users' password key is kept when ``secret_key`` is not set (mode 0600)."""
        return self.home / "secret.key"

    @property
    def uploads_dir(self) -> Path:
        """Where tracks added through the API keep their audio (the service owns these files):
        ``uploads``, else ``home/uploads``. Nodes that share a catalog should share this folder
        too (one mount): then one upload is one file whichever node took it, and a delete on any
        node removes it."""
        return self.uploads or self.home / "uploads"

    @property
    def milvus_location(self) -> str:
        """What the ``milvus`` backend connects to: ``milvus_uri``, else milvus-lite under home."""
        return self.milvus_uri or str(self.home / "milvus.db")

    def index_dir(self, backend: str | None = None) -> Path:
        return self.home / "index" / (backend or self.backend)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        """Defaults, overridden by ``SONICSORT_<FIELD NAME>`` for every field set non-empty."""
        env = dict(os.environ if env is None else env)
        s = cls()
        for f in fields(cls):
            value = env.get(f"SONICSORT_{f.name.upper()}")
            if value:
                convert = _FROM_ENV.get(f.name, str)
                try:
                    setattr(s, f.name, convert(value))
                except ValueError:
                    raise ValueError(f"SONICSORT_{f.name.upper()}={value!r} is not a valid {convert.__name__}") from None
        return s

    def to_dict(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


def boolean(value: str) -> bool:
    """An environment variable's yes or no: 1/true/yes/on or 0/false/no/off, any case."""
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


# how each non-string field is read from its environment variable
_FROM_ENV = {"find_duplicates": boolean, "home": Path, "model_dir": Path, "uploads": Path, "max_duration_s": float, "max_channels": int, "max_sample_rate": int,
             "max_decoded_samples": int, "cache_ttl_s": int, "ingest_workers": int,
             "max_upload_mb": float, "port": int, "web_workers": int, "web_threads": int, "body_timeout_s": float,
             "header_timeout_s": float, "max_connections": int, "body_memory_mb": float,
             "answer_cache_mb": float, "request_budget_s": float, "heavy_requests": int}
