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
        return s

    def to_dict(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}
