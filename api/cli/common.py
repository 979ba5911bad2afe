"""What every command group shares: exit codes, the one-line error, output, progress bars,
and the facade (``recommender.service.Service``) opened from the command's options."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
MODEL_HELP = "model bundle folder (default: SONICSORT_MODEL_DIR or the shipped model)"


class CliError(Exception):
    """One clear line for the user."""


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """``data`` as JSON with ``--json``, else ``text``."""
    if args.json:
        print(json.dumps(data, indent=None if isinstance(data, dict) and "embedding" in data else 1))
    else:
        print(text)


def progress(label: str, enabled: bool) -> Callable[[int, int], None] | None:
    """A tqdm bar on stderr fed by ``update(done, total)``, or None when not wanted."""
    if not enabled:
        return None
    from tqdm import tqdm

    bar = {"bar": None}

    def update(done: int, total: int) -> None:
        if bar["bar"] is None:
            bar["bar"] = tqdm(total=total, desc=label, unit="track", file=sys.stderr, leave=False)
        bar["bar"].update(done - bar["bar"].n)
        if done >= total:
            bar["bar"].close()

    return update


def load_bundle(path: str | None, settings):
    from embedding import ModelBundle

    return ModelBundle.load(path or settings.model_dir)


def add_library_args(p: argparse.ArgumentParser) -> None:
    from recommender.config import backend_names

    p.add_argument("--backend", choices=backend_names(), default=None,
                   help="index backend (default SONICSORT_BACKEND or hnsw)")
    p.add_argument("--model", help=MODEL_HELP)


def service(args: argparse.Namespace, settings, *, ready: bool = True):
    """The facade for this command's options (``--model``, ``--backend``, ``--on-model-mismatch``).

    ``ready``: open it now (model loaded and checked against the catalog, index open); the
    reason it cannot be is the command's error. Without, only what needs no model works."""
    from recommender.service import Service

    if getattr(args, "model", None):
        settings.model_dir = Path(args.model)
    if getattr(args, "on_model_mismatch", None):
        settings.on_model_mismatch = args.on_model_mismatch
    if getattr(args, "backend", None):
        settings.backend = args.backend
    svc = Service(settings)
    return svc.open() if ready else svc
