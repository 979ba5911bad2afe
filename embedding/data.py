"""Labelled datasets for training and evaluation, and their train/valid/test splits.

A dataset is either a folder ``<genre>/<audio files>`` or a CSV manifest with columns
``path,genre`` and optionally ``split`` (train/valid/test) and ``artist``. Splits come
from, in order of preference: split lists (one ``genre/file`` per line, as the GTZAN
fault-filtered lists are written), the manifest's ``split`` column, or a split made here:
stratified by genre, by track, grouped by artist when artists are known, so no artist
(and never a segment of one track) is on both sides.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from .audio import AUDIO_EXTENSIONS
from .errors import DatasetError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class LabelledTrack:
    path: Path
    genre: str
    split: str | None = None
    artist: str | None = None

    @property
    def key(self) -> str:
        """``genre/stem``: how split lists name a track, independent of its extension."""
        return f"{self.path.parent.name}/{self.path.stem}"


@dataclass
class Dataset:
    tracks: list[LabelledTrack]

    @property
    def genres(self) -> list[str]:
        return sorted({t.genre for t in self.tracks})

    def split(self, name: str) -> list[LabelledTrack]:
        return [t for t in self.tracks if t.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for t in self.tracks:
            out[t.genre][t.split or "-"] += 1
        return {g: dict(v) for g, v in sorted(out.items())}


def _read_manifest(path: Path) -> list[LabelledTrack]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "path" not in reader.fieldnames or "genre" not in reader.fieldnames:
                raise DatasetError(f"{path}: a manifest needs the columns path,genre (found {reader.fieldnames})")
            rows = list(reader)
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text CSV manifest") from None
    tracks = []
    for i, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("genre"):
            raise DatasetError(f"{path}:{i}: empty path or genre")
        p = Path(row["path"])
        if not p.is_absolute():
            p = path.parent / p
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLITS:
            raise DatasetError(f"{path}:{i}: split must be one of {SPLITS}, not {split!r}")
        tracks.append(LabelledTrack(p, row["genre"].strip(), split, (row.get("artist") or "").strip() or None))
    return tracks


def _read_folder(path: Path) -> list[LabelledTrack]:
    tracks = []
    for genre_dir in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(genre_dir.rglob("*")):
            if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS:
                tracks.append(LabelledTrack(f, genre_dir.name))
    return tracks


def _read_split_list(path: Path) -> set[str]:
    keys = set()
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            keys.add(f"{p.parent.name}/{p.stem}")
    return keys


def stratified_split(
    tracks: list[LabelledTrack], *, valid_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> list[LabelledTrack]:
    """Assign train/valid/test per genre, by track, keeping each artist on one side."""
    groups: dict[str, list[LabelledTrack]] = defaultdict(list)
    for t in tracks:
        # unknown artist: the track is its own group
        groups[t.artist or f"track:{t.path}"].append(t)
    by_genre: dict[str, list[str]] = defaultdict(list)
    for name, members in groups.items():
        majority = max({m.genre for m in members}, key=lambda g: sum(m.genre == g for m in members))
        by_genre[majority].append(name)
    rng = random.Random(seed)
    assigned: dict[str, str] = {}
    for genre in sorted(by_genre):
        names = sorted(by_genre[genre])
        rng.shuffle(names)
        total = sum(len(groups[n]) for n in names)
        n_test = round(total * test_fraction)
        n_valid = round(total * valid_fraction)
        # a genre with few groups keeps at least one for training
        filled = {"test": 0, "valid": 0}
        for i, n in enumerate(names):
            size = len(groups[n])
            remaining = len(names) - i
            if filled["test"] < n_test and remaining > 1:
                assigned[n] = "test"
                filled["test"] += size
            elif filled["valid"] < n_valid and remaining > 1:
                assigned[n] = "valid"
                filled["valid"] += size
            else:
                assigned[n] = "train"
    return [replace(t, split=assigned[t.artist or f"track:{t.path}"]) for t in tracks]


def load_dataset(
    source: str | Path,
    *,
    split_lists: dict[str, str | Path] | None = None,
    valid_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> Dataset:
    """Read a folder or CSV manifest and make sure every track has a split.

    Parameters
    ----------
    source : folder ``<genre>/<files>`` or ``*.csv`` manifest
    split_lists : optional {"train": file, "valid": file, "test": file}; tracks named in
        none of the given lists are left out
    """
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source}: no such file or folder")
    tracks = _read_manifest(source) if source.is_file() else _read_folder(source)
    if not tracks:
        raise DatasetError(f"{source}: no labelled audio found (expected <genre>/<audio files> or a CSV manifest)")
    missing = [t.path for t in tracks if not t.path.is_file()]
    if missing:
        raise DatasetError(f"{source}: {len(missing)} listed file(s) do not exist, e.g. {missing[0]}")

    if split_lists:
        lists = {name: _read_split_list(Path(p)) for name, p in split_lists.items()}
        for name in lists:
            if name not in SPLITS:
                raise DatasetError(f"unknown split list {name!r}; use {SPLITS}")
        kept = []
        for t in tracks:
            names = [n for n, keys in lists.items() if t.key in keys]
            if len(names) > 1:
                raise DatasetError(f"{t.key} is in more than one split list: {names}")
            if names:
                kept.append(replace(t, split=names[0]))
        if not kept:
            raise DatasetError("the split lists name none of the dataset's tracks")
        tracks = kept
    elif any(t.split is None for t in tracks):
        if any(t.split is not None for t in tracks):
            raise DatasetError(f"{source}: the split column is filled for some tracks only")
        tracks = stratified_split(tracks, valid_fraction=valid_fraction, test_fraction=test_fraction, seed=seed)
    return Dataset(tracks)


def sha256_bytes(data: bytes) -> str:
    """The content hash that names a piece of audio everywhere (catalog identity, caches, training
    exclusions): hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_of(path: Path) -> str:
    """``sha256_bytes`` of a file's contents, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
