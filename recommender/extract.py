"""What the model needs from one audio file, computed anywhere: decode, features, file tags.

Ingest (in its worker processes), the RQ queue's workers and uploads all call these, so
none of them imports another for it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


# the catalog's file tags (``recommender.catalog.FILE_TAGS``) under mutagen's "easy" names
_EASY = {"title": "title", "artist": "artist", "album": "album", "album_artist": "albumartist",
         "track_no": "tracknumber", "disc_no": "discnumber", "year": "date", "tag_genre": "genre"}


def _number(text: str, *, lo: int, hi: int) -> int | None:
    """The leading number of a tag ("3/12" → 3, "1998-05-01" → 1998) when it lies in [lo, hi]."""
    m = re.match(r"\s*(\d+)", text)
    n = int(m.group(1)) if m and len(m.group(1)) <= 6 else None
    return n if n is not None and lo <= n <= hi else None


def read_tags(path: str | Path) -> dict[str, Any]:
    """The file's tags (mutagen): title, artist, album, album artist, track and disc number,
    year and genre; None where the file has none or they do not parse. The file name is the
    fallback title."""
    tags: dict[str, Any] = dict.fromkeys(_EASY)
    try:
        import mutagen

        f = mutagen.File(str(path), easy=True)
        if f is not None and f.tags is not None:
            for k, easy in _EASY.items():
                v = f.tags.get(easy)
                if v:
                    tags[k] = str(v[0]).strip() or None
    except Exception as exc:  # any tag parser error: tags are optional
        log.debug("%s: unreadable tags (%s)", path, exc)
    for k, lo, hi in (("track_no", 1, 9999), ("disc_no", 1, 999), ("year", 1000, 9999)):
        tags[k] = _number(tags[k], lo=lo, hi=hi) if tags[k] else None
    if not tags["title"]:
        tags["title"] = Path(path).stem
    return tags


def extract(path: str, config, normalizer, limits, *, fingerprint: bool = True) -> dict[str, Any]:
    """Decode + features + tags of one file: what the model needs, computed anywhere, and with
    ``fingerprint`` the audio's ``embedding.fingerprint`` (near-duplicates are found by it).

    ``limits``: ``embedding.audio.DecodeLimits`` or its ``to_dict()`` (as it crosses processes)."""
    from embedding import AudioError, segment_features
    from embedding.audio import DecodeLimits
    from embedding.features import decode_for_features
    from embedding.fingerprint import fingerprint as fingerprint_of

    if isinstance(limits, dict):
        limits = DecodeLimits.from_dict(limits)
    try:
        audio = decode_for_features(path, config, limits=limits, fingerprint=fingerprint)
    except AudioError as exc:
        return {"path": path, "error": str(exc).replace(f"{path}: ", "")}
    except OSError as exc:
        return {"path": path, "error": f"cannot read ({exc.strerror or exc})"}
    feats = normalizer(segment_features(audio, config))
    return {"path": path, "features": feats, "duration_s": audio.duration_s, "is_silent": audio.is_silent,
            "tags": read_tags(path), "fingerprint": fingerprint_of(audio) if fingerprint else None}


def predict_extracted(bundle, items: list[dict[str, Any]]) -> list[Any]:
    """The model on a batch of ``extract`` results (their features are dropped once used), each
    prediction with its file's fingerprint."""
    preds = bundle.predict_features([i.pop("features") for i in items], [i["duration_s"] for i in items],
                                    [i["is_silent"] for i in items])
    for item, pred in zip(items, preds):
        pred.fingerprint = item.get("fingerprint")
    return preds
