"""Audio added through the service, kept under ``SONICSORT_HOME/uploads``.

The service owns these files: each is named by its content hash and its content's type
(``ab/abcd….flac``; the client's file name plays no part, so a WAV sent as ``song.mp3`` is
stored and served as WAV, and every upload of the same audio lands on the same file). A file
is written to a temporary ``.upload.*`` file, synced and renamed into place, then the
catalog commits its row; a track's file is deleted after its row. A crash between the two
steps leaves a temporary or an unreferenced file, never a row without its file:
``UploadStore.sweep`` removes those (at start-up and by ``sonicsort stats --repair``).
Files of an ingested folder are never deleted, only forgotten.

Writing a file, committing its row and cleaning up after a failed commit happen while
holding the lock of the file's folder (``holding``: an exclusive ``flock`` of the folder,
which every process on the machine honours). So a failed upload knows without asking the catalog whether the
file it wrote is its own (it did not exist before): it deletes that one and no other, also
while the catalog's database does not answer.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger(__name__)

TEMP_PREFIX = ".upload."
# libsndfile's container (and, for Ogg, codec) → the extension an upload is stored under
_EXT_OF_FORMAT = {"WAV": ".wav", "WAVEX": ".wav", "RF64": ".wav", "FLAC": ".flac", "MP3": ".mp3", "AU": ".au",
                  "AIFF": ".aiff", "OGG": ".ogg", "W64": ".w64", "CAF": ".caf"}
# mutagen's file type, for what libsndfile does not read (m4a)
_EXT_OF_TYPE = {"MP4": ".m4a", "EasyMP4": ".m4a", "AAC": ".aac"}


class UploadStore:
    """The folder of uploaded audio, one file per content hash."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @contextmanager
    def holding(self, sha256: str) -> Iterator[None]:
        """Hold the lock of the folder ``sha256``'s file lives in (other threads and processes
        wait): around writing the file, committing its row and any clean-up."""
        folder = self.folder / sha256[:2]
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # the folder itself: no lock file to leave
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def write(self, data: bytes, sha256: str) -> tuple[Path, bool]:
        """Store ``data`` atomically as ``<sha[:2]>/<sha><ext>``, the extension from the content
        (``content_extension``). Returns the final path (the same audio always gets the same
        one) and whether this call created it (False: the same audio was there already).
        Call it ``holding`` the lock for the answer to stay true."""
        folder = self.folder / sha256[:2]
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            final = folder / (sha256 + content_extension(tmp))
            created = not final.exists()
            os.replace(tmp, final)  # the same bytes under the same name: concurrent writers agree
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return final, created

    def owns(self, path: str | Path) -> bool:
        return self.folder.resolve() in Path(path).resolve().parents

    def delete_owned(self, paths) -> None:
        """Delete those of ``paths`` that live in this store (others are the user's files)."""
        for p in paths:
            if self.owns(p):
                Path(p).resolve().unlink(missing_ok=True)

    def sweep(self, referenced: Iterable[str], *, grace_s: float = 60.0) -> list[Path]:
        """Remove what a crash left: temporary ``.upload.*`` files, and stored files no catalog
        row refers to, when older than ``grace_s`` (an upload in flight in another process
        is younger). Returns the files removed."""
        if not self.folder.is_dir():
            return []
        keep = {str(Path(p).resolve()) for p in referenced}
        cutoff = time.time() - grace_s
        removed = []
        for sub in sorted(self.folder.iterdir()):
            if not sub.is_dir():
                continue
            for f in sorted(sub.iterdir()):
                try:
                    if not f.is_file() or f.stat().st_mtime > cutoff:
                        continue
                except FileNotFoundError:
                    continue
                if f.name.startswith(TEMP_PREFIX) or str(f.resolve()) not in keep:
                    f.unlink(missing_ok=True)
                    removed.append(f)
        return removed

    def sweep_against(self, catalog, *, grace_s: float = 60.0) -> list[Path]:
        """``sweep``, keeping every file ``catalog`` (a ``Catalog``) records a path for."""
        referenced = set(catalog.path_states_under(str(self.folder)))
        if self.folder.is_dir():
            referenced |= set(catalog.path_states_under(str(self.folder.resolve())))
        removed = self.sweep(referenced, grace_s=grace_s)
        if removed:
            log.warning("removed %d file(s) an interrupted upload or delete left in %s", len(removed), self.folder)
        return removed


def content_extension(path: str | Path) -> str:
    """The stored upload's extension, from what the file holds: libsndfile's container (Ogg
    split into .ogg and .opus by codec), else mutagen's type, else ``.audio``."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if info.format == "OGG":
            return ".opus" if info.subtype == "OPUS" else ".ogg"
        if info.format in _EXT_OF_FORMAT:
            return _EXT_OF_FORMAT[info.format]
    except Exception:  # not for libsndfile: ask mutagen
        pass
    try:
        import mutagen

        f = mutagen.File(str(path))
        if f is not None:
            return _EXT_OF_TYPE.get(type(f).__name__, ".audio")
    except Exception:  # unknown to mutagen: the decoder still read it
        pass
    return ".audio"
