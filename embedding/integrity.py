"""Is a file whole, and audio at all? Checks that need no decoding, or only a decode's count:
text refused up front, a file cut short (fewer frames than its header promises, a WAV whose
data chunk runs past the end, an Ogg stream without its end-of-stream page) refused as
truncated. ``embedding.audio`` calls them."""

from __future__ import annotations

import io
import os

import soundfile as sf

from .errors import AudioError


_TEXT_BYTES = set(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def looks_like_text(head: bytes) -> bool:
    """No audio container starts with only printable ASCII; decoders (mpg123) would scan
    such a file for frames and print notes to stderr, so text is refused up front."""
    return len(head) > 0 and all(b in _TEXT_BYTES for b in head)


def _head(handle, size: int) -> bytes:
    if isinstance(handle, io.BytesIO):
        return handle.getvalue()[:size]
    with open(handle, "rb") as fh:
        return fh.read(size)


def _mp3_states_length(handle) -> bool:
    """Whether the MP3's first frame is a Xing, Info or VBRI frame (which gives the exact length),
    after any ID3v2 tag."""
    head = _head(handle, 10)
    skip = 0
    if head[:3] == b"ID3" and len(head) == 10:  # ID3v2: a syncsafe size after the 10-byte header
        skip = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F))
    frame = _head(handle, skip + 2048)[skip:]
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


def _tail(handle, size: int = 1 << 16) -> bytes:
    if isinstance(handle, io.BytesIO):
        return handle.getvalue()[-size:]
    with open(handle, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - size))
        return fh.read()


def _ogg_has_end(tail: bytes) -> bool:
    """Whether the last Ogg page ends the file and carries the end-of-stream flag."""
    pos = tail.rfind(b"OggS")
    while pos >= 0:
        if pos + 27 <= len(tail):
            nseg = tail[pos + 26]
            if pos + 27 + nseg <= len(tail):
                end = pos + 27 + nseg + sum(tail[pos + 27 : pos + 27 + nseg])
                if end == len(tail):
                    return bool(tail[pos + 5] & 0x04)
        pos = tail.rfind(b"OggS", 0, pos)
    return False


def check_complete(f: sf.SoundFile, handle, name: str, n_native: int) -> None:
    """Refuse a file cut short: fewer frames than its header promises (beyond 1%; for MP3 only
    where a Xing/Info/VBRI frame states the length),
    a WAV whose data chunk runs past the end of the file, an Ogg stream without its end page."""
    frames, native_sr = int(f.frames), int(f.samplerate)
    # an MP3's length is an estimate unless a Xing/Info/VBRI frame gives it (VBR files without
    # one miss it by more than 1%): without one a short MP3 read is not taken for a cut file
    exact = f.format != "MP3" or _mp3_states_length(handle)
    if exact and n_native < frames - max(frames // 100, native_sr // 20):
        raise AudioError(f"{name}: truncated file: its header promises {frames / native_sr:.1f} s, "
                         f"only {n_native / native_sr:.1f} s decode")
    check_container(f, handle, name)


def check_container(f: sf.SoundFile, handle, name: str) -> None:
    """The truncation checks that need no decoding (the container's own bookkeeping)."""
    fmt = f.format
    if fmt in ("WAV", "WAVEX", "RF64"):
        import re

        for line in f.extra_info.splitlines():
            m = re.match(r"\s*data\s*:\s*(\d+)\s*\(should be (\d+)\)", line)
            # 0 and 0xFFFFFFFF are a streaming writer's "length unknown", not a promise
            if m and int(m.group(1)) > int(m.group(2)) and int(m.group(1)) not in (0, 0xFFFFFFFF):
                raise AudioError(f"{name}: truncated file: its data chunk promises {int(m.group(1))} bytes, "
                                 f"the file holds {int(m.group(2))}")
    elif fmt == "OGG" and not _ogg_has_end(_tail(handle)):
        raise AudioError(f"{name}: truncated file: the Ogg stream ends without its end-of-stream page")


__all__ = ["check_complete", "check_container", "looks_like_text"]
