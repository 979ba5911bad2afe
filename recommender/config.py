"""Service settings: dataclass defaults, overridden by ``SONICSORT_*`` environment variables.

The same object feeds the CLI and (later) the API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path


def _default_home() -> Path:
    return Path(os.environ.get("SONICSORT_HOME") or Path.home() / ".sonicsort")


@dataclass
class Settings:
    home: Path = field(default_factory=_default_home)
    model_dir: Path | None = None  # None: the model shipped inside the package
    backend: str = "hnsw"
    redis_url: str = "redis://127.0.0.1:6379/0"
    max_duration_s: float = 20 * 60.0
    cache_ttl_s: int = 30 * 86400
    cache_prefix: str = "sonicsort:"
    # what to do when the catalog's embeddings come from another model than the loaded one:
    # "refuse" (a clear error) or "reembed" (recompute them from the audio files)
    on_model_mismatch: str = "refuse"
    ingest_workers: int = 0  # 0: one per CPU core

    @property
    def catalog_path(self) -> Path:
        return self.home / "catalog.sqlite3"

    def index_dir(self, backend: str | None = None) -> Path:
        return self.home / "index" / (backend or self.backend)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        s = cls()
        if env.get("SONICSORT_HOME"):
            s.home = Path(env["SONICSORT_HOME"])
        if env.get("SONICSORT_MODEL_DIR"):
            s.model_dir = Path(env["SONICSORT_MODEL_DIR"])
        if env.get("SONICSORT_BACKEND"):
            s.backend = env["SONICSORT_BACKEND"]
        if env.get("SONICSORT_REDIS_URL"):
            s.redis_url = env["SONICSORT_REDIS_URL"]
        if env.get("SONICSORT_MAX_DURATION_S"):
            s.max_duration_s = float(env["SONICSORT_MAX_DURATION_S"])
        if env.get("SONICSORT_CACHE_TTL_S"):
            s.cache_ttl_s = int(env["SONICSORT_CACHE_TTL_S"])
        if env.get("SONICSORT_CACHE_PREFIX"):
            s.cache_prefix = env["SONICSORT_CACHE_PREFIX"]
        if env.get("SONICSORT_ON_MODEL_MISMATCH"):
            s.on_model_mismatch = env["SONICSORT_ON_MODEL_MISMATCH"]
        if env.get("SONICSORT_INGEST_WORKERS"):
            s.ingest_workers = int(env["SONICSORT_INGEST_WORKERS"])
        return s

    def to_dict(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}
