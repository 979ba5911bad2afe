"""Cover art: the picture embedded in an audio file's tags (mutagen), resized with Pillow, or a
generated placeholder (a colour of the name's hash and its initial) where there is none."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import threading
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)
MAX_SIZE = 1200  # pixels: a larger request gets this
PLACEHOLDER_SIZE = 600


def embedded_picture(path: str | Path) -> bytes | None:
    """The front cover (else the first picture) in the file's tags, as image bytes; None when none."""
    try:
        import mutagen

        f = mutagen.File(str(path))
    except Exception as exc:  # a tag parser's error: no picture
        log.debug("%s: unreadable tags (%s)", path, exc)
        return None
    if f is None:
        return None
    pictures = []
    if getattr(f, "pictures", None):  # FLAC
        pictures = [(p.type, p.data) for p in f.pictures]
    tags = getattr(f, "tags", None)
    if tags is not None and not pictures:
        try:
            if hasattr(tags, "getall"):  # ID3 (mp3, aiff, wav)
                pictures = [(fr.type, fr.data) for fr in tags.getall("APIC")]
            elif "covr" in tags:  # MP4
                pictures = [(3, bytes(c)) for c in tags["covr"]]
            elif "metadata_block_picture" in tags:  # Ogg Vorbis / Opus
                from mutagen.flac import Picture

                for raw in tags["metadata_block_picture"]:
                    p = Picture(base64.b64decode(raw))
                    pictures.append((p.type, p.data))
        except Exception as exc:
            log.debug("%s: unreadable picture (%s)", path, exc)
            return None
    if not pictures:
        return None
    front = [d for t, d in pictures if t == 3]
    return (front or [pictures[0][1]])[0] or None


def resized(data: bytes, size: int | None) -> tuple[bytes, str]:
    """``data`` (any image Pillow reads) fitted into ``size`` × ``size`` pixels (aspect kept,
    never enlarged): (bytes, MIME type). Without ``size`` the original bytes, when Pillow reads them."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        fmt = (img.format or "PNG").upper()
        if not size:
            img.verify()
            return data, Image.MIME.get(fmt, "application/octet-stream")
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"the embedded picture cannot be read ({exc})") from None
    img.thumbnail((min(size, MAX_SIZE), min(size, MAX_SIZE)))
    out = io.BytesIO()
    if fmt == "PNG" or img.mode in ("RGBA", "LA", "P"):
        img.save(out, "PNG")
        return out.getvalue(), "image/png"
    img.convert("RGB").save(out, "JPEG", quality=88)
    return out.getvalue(), "image/jpeg"


def placeholder(name: str, size: int | None) -> bytes:
    """A PNG square in a colour of ``name``'s hash, with its first letter."""
    from PIL import Image, ImageDraw, ImageFont

    side = min(size or PLACEHOLDER_SIZE, MAX_SIZE)
    h = hashlib.sha1(name.encode()).digest()
    img = Image.new("RGB", (side, side), (60 + h[0] % 140, 60 + h[1] % 140, 60 + h[2] % 140))
    letter = (name.strip()[:1] or "?").upper()
    try:
        font = ImageFont.load_default(size=max(8, side // 2))
    except TypeError:  # an older Pillow: its one bitmap font
        font = ImageFont.load_default()
    ImageDraw.Draw(img).text((side / 2, side / 2), letter, fill=(245, 245, 245), font=font, anchor="mm")
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


class ArtworkCache:
    """The last answers of ``cover`` (bytes, MIME type), by what determines them."""

    def __init__(self, max_items: int = 256) -> None:
        self._items: OrderedDict = OrderedDict()
        self._max = max_items
        self._lock = threading.Lock()

    def cover(self, key: tuple, make) -> tuple[bytes, str]:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return value
