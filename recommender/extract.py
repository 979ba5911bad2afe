"""What the model needs from one audio file, computed anywhere: decode, features, file tags.

Ingest (in its worker processes), the RQ queue's workers and uploads all call these, so
none of them imports another for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_tags(path: str | Path) -> dict[str, str | None]:
    """Title, artist and album from the file's tags (mutagen); the file name is the fallback title."""
    tags: dict[str, str | None] = {"title": None, "artist": None, "album": None}
    try:
        import mutagen

        f = mutagen.File(str(path), easy=True)
        if f is not None and f.tags is not None:
            for k in tags:
                v = f.tags.get(k)
                if v:
                    tags[k] = str(v[0]).strip() or None
    except Exception as exc:  # any tag parser error: tags are optional
        log.debug("%s: unreadable tags (%s)", path, exc)
    if not tags["title"]:
        tags["title"] = Path(path).stem
    return tags


def extract(path: str, config, normalizer, limits) -> dict[str, Any]:
    """Decode + features + tags of one file: what the model needs, computed anywhere.

    ``limits``: ``embedding.audio.DecodeLimits`` or its ``to_dict()`` (as it crosses processes)."""
    from embedding import AudioError, segment_features
    from embedding.audio import DecodeLimits
    from embedding.features import decode_for_features

    if isinstance(limits, dict):
        limits = DecodeLimits.from_dict(limits)
    try:
        audio = decode_for_features(path, config, limits=limits)
    except AudioError as exc:
        return {"path": path, "error": str(exc).replace(f"{path}: ", "")}
    except OSError as exc:
        return {"path": path, "error": f"cannot read ({exc.strerror or exc})"}
    feats = normalizer(segment_features(audio, config))
    return {"path": path, "features": feats, "duration_s": audio.duration_s, "is_silent": audio.is_silent,
            "tags": read_tags(path)}


def predict_extracted(bundle, items: list[dict[str, Any]]) -> list[Any]:
    """The model on a batch of ``extract`` results (their features are dropped once used)."""
    return bundle.predict_features([i.pop("features") for i in items], [i["duration_s"] for i in items],
                                   [i["is_silent"] for i in items])
