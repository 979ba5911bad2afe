"""Audio added through the service, kept under ``SONICSORT_HOME/uploads``.

The service owns these files: each is named by its content hash (``ab/abcd….flac``),
written to a temporary file, synced and renamed into place, and deleted with its track.
Files of an ingested folder are never deleted, only forgotten.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# mutagen's file type → the extension an upload is stored under (so `ingest` finds it too)
_EXT_OF_TYPE = {"FLAC": ".flac", "MP3": ".mp3", "EasyMP3": ".mp3", "OggVorbis": ".ogg", "OggOpus": ".opus",
                "OggFLAC": ".oga", "WAVE": ".wav", "AIFF": ".aiff", "MP4": ".m4a", "EasyMP4": ".m4a"}


class UploadStore:
    """The folder of uploaded audio, one file per content hash."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def write(self, data: bytes, sha256: str, filename: str | None = None) -> Path:
        """Store ``data`` atomically as ``<sha[:2]>/<sha><ext>``; the extension is the uploaded
        name's when it is an audio one, else the sniffed type's. Returns the final path."""
        folder = self.folder / sha256[:2]
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            final = folder / (sha256 + _extension(tmp, filename))
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return final

    def owns(self, path: str | Path) -> bool:
        return self.folder.resolve() in Path(path).resolve().parents

    def delete_owned(self, paths) -> None:
        """Delete those of ``paths`` that live in this store (others are the user's files)."""
        for p in paths:
            if self.owns(p):
                Path(p).resolve().unlink(missing_ok=True)


def _extension(path: str, filename: str | None) -> str:
    """The stored upload's extension: the uploaded name's when it is an audio one, else its sniffed type."""
    from embedding.audio import AUDIO_EXTENSIONS

    if filename:
        ext = Path(filename).suffix.lower()
        if ext in AUDIO_EXTENSIONS:
            return ext
    try:
        import mutagen

        f = mutagen.File(path)
        if f is not None:
            return _EXT_OF_TYPE.get(type(f).__name__, ".audio")
    except Exception:  # unknown to mutagen: the decoder still read it
        pass
    return ".audio"
