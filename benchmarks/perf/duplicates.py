"""Near-duplicate detection: precision and recall on re-encoded real music, and what it adds to ingest.

Every sampled excerpt of ``--data`` (a folder with a ``manifest.csv`` of ``path`` rows, as
``../shared/data/gtzan``) is written as WAV and again in each variant: FLAC at 44.1 kHz,
MP3 at 44.1 kHz, Vorbis, MP3 at 32 kHz, a second trimmed from the start, from the end, from
both ends (0.6 s and 1.3 s), and 6 dB quieter. The folder is ingested twice into fresh homes
by ``sonicsort ingest``, with ``SONICSORT_FIND_DUPLICATES=1`` and ``=0``, alternating over
``--rounds``; the ratio of the medians is what detection adds. The groups the first ingest
found are scored as pairs: a true pair is two files of one excerpt; every other pair is a
negative, and the hard negatives are the pairs of different excerpts that were compared
(each among the other's 20 nearest by embedding at a cosine of 0.5 or more).

    python -m benchmarks.perf.duplicates --out benchmarks/results/duplicates.json

Targets: recall at least 0.95 at precision at least 0.99; ingest with detection within 5%
of ingest without.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "gtzan"


def variants(y: np.ndarray, sr: int) -> dict[str, bytes]:
    import librosa
    import soundfile as sf

    def enc(z, rate, fmt, subtype=None, **kw):
        b = io.BytesIO()
        sf.write(b, z, rate, format=fmt, subtype=subtype, **kw)
        return b.getvalue()

    y44 = librosa.resample(y, orig_sr=sr, target_sr=44_100)
    y32 = librosa.resample(y, orig_sr=sr, target_sr=32_000)
    return {"flac44.flac": enc(y44, 44_100, "FLAC"),
            "mp3.mp3": enc(y44, 44_100, "MP3", "MPEG_LAYER_III", compression_level=0.6),
            "vorbis.ogg": enc(y, sr, "OGG", "VORBIS", compression_level=0.7),
            "mp3-32k.mp3": enc(y32, 32_000, "MP3", "MPEG_LAYER_III", compression_level=0.8),
            "trim-start.wav": enc(y[int(1.0037 * sr):], sr, "WAV"),
            "trim-end.wav": enc(y[:-int(0.9931 * sr)], sr, "WAV"),
            "trim-both.wav": enc(y[int(0.61 * sr):-int(1.3 * sr)], sr, "WAV"),
            "quieter.wav": enc(0.5 * y, sr, "WAV")}


def build(folder: Path, data: Path, n: int, seed: int) -> dict[str, str]:
    """Write the excerpts and their variants; file stem → excerpt."""
    import soundfile as sf

    rows = list(csv.DictReader(open(data / "manifest.csv")))
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    truth: dict[str, str] = {}
    for k, r in enumerate(rows):
        y, sr = sf.read(data / r["path"], dtype="float32")
        if y.ndim > 1:
            y = y.mean(axis=1)
        name = f"x{k:03d}"
        sf.write(folder / f"{name}.wav", y, sr)
        truth[name] = name
        for suffix, blob in variants(y, sr).items():
            (folder / f"{name}-{suffix}").write_bytes(blob)
            truth[f"{name}-{suffix.split('.')[0]}"] = name
    return truth


def ingest(folder: Path, home: Path, find: bool) -> float:
    env = dict(os.environ, SONICSORT_HOME=str(home), SONICSORT_REDIS_URL="none",
               SONICSORT_FIND_DUPLICATES="1" if find else "0")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "api.cli", "ingest", str(folder), "--json"], env=env,
                       capture_output=True, text=True)
    took = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"ingest failed: {p.stderr.strip().splitlines()[-1:]}")
    return took


def score(home: Path, truth: dict[str, str]) -> dict:
    from embedding import fingerprint as fp
    from recommender.catalog import Catalog
    from recommender.duplicates import MIN_SIMILARITY, NEIGHBOURS

    cat = Catalog(home / "catalog.sqlite3")
    title = {t.id: t.title for t in cat.get_many(cat.ids().tolist()).values()}
    pairs = cat.duplicate_pairs()
    group: dict[int, int] = {}
    for a, b, _, _ in pairs:  # connected pairs, as the service groups them
        ga, gb = group.get(a, a), group.get(b, b)
        low = min(ga, gb)
        for t, g in list(group.items()):
            if g in (ga, gb):
                group[t] = low
        group[a] = group[b] = low
    ids = sorted(title)
    tp = fp_ = fn = 0
    per_variant: dict[str, list[bool]] = {}
    for a, b in itertools.combinations(ids, 2):
        same = truth[title[a]] == truth[title[b]]
        found = a in group and group.get(a) == group.get(b)
        tp += same and found
        fp_ += found and not same
        fn += same and not found
        if same and truth[title[a]] in (title[a], title[b]):  # the excerpt and one of its variants
            variant = title[b] if title[a] == truth[title[a]] else title[a]
            per_variant.setdefault(variant.split("-", 1)[1], []).append(found)
    # the hard negatives: different excerpts among each other's nearest, as detection compares them
    vecs = dict(zip(*(np.concatenate(x) for x in zip(*cat.embeddings()))))
    mat = np.stack([vecs[i] / np.linalg.norm(vecs[i]) for i in ids])
    sims = mat @ mat.T
    prints = cat.fingerprints(ids)
    hard, hard_min, true_max = set(), 1.0, 0.0
    for r, a in enumerate(ids):
        for c in np.argsort(-sims[r])[1:NEIGHBOURS + 1]:
            b = ids[c]
            if sims[r, c] < MIN_SIMILARITY or (min(a, b), max(a, b)) in hard:
                continue
            d = fp.distance(prints[a][0], prints[b][0])
            if truth[title[a]] != truth[title[b]]:
                hard.add((min(a, b), max(a, b)))
                hard_min = min(hard_min, d)
            else:
                true_max = max(true_max, d)
    cat.close()
    return {"files": len(ids), "excerpts": len(set(truth.values())), "true_pairs": tp + fn, "found_pairs": tp + fp_,
            "precision": round(tp / (tp + fp_), 4) if tp + fp_ else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "false_pairs": fp_, "missed_pairs": fn,
            "recall_by_variant": {k: round(sum(v) / len(v), 4) for k, v in sorted(per_variant.items())},
            "hard_negatives": len(hard), "hard_negative_min_distance": round(hard_min, 4),
            "compared_true_pair_max_distance": round(true_max, 4), "threshold": fp.SAME_RECORDING}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="a folder with manifest.csv (default ../shared/data/gtzan)")
    ap.add_argument("--tracks", type=int, default=24, help="excerpts sampled (default 24, each in 9 files)")
    ap.add_argument("--rounds", type=int, default=2, help="ingests with and without detection each (default 2)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    if not (args.data / "manifest.csv").is_file():
        ap.error(f"{args.data}: no manifest.csv")
    with tempfile.TemporaryDirectory(prefix="sonicsort-dups-") as tmp:
        folder = Path(tmp) / "music"
        folder.mkdir()
        truth = build(folder, args.data, args.tracks, args.seed)
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.rounds):
            for find in ((True, False) if r % 2 == 0 else (False, True)):
                home = Path(tmp) / f"home-{int(find)}-{r}"
                times[find].append(ingest(folder, home, find))
                print(f"round {r + 1}: ingest {'with' if find else 'without'} detection {times[find][-1]:.1f} s",
                      flush=True)
        figures = score(Path(tmp) / "home-1-0", truth)
    with_s, without_s = statistics.median(times[True]), statistics.median(times[False])
    out = {"benchmark": "duplicates", "command": "python -m benchmarks.perf.duplicates", "data": str(args.data.name),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
           "date": time.strftime("%Y-%m-%d"), **figures,
           "ingest_s_with": round(with_s, 2), "ingest_s_without": round(without_s, 2),
           "ingest_ratio": round(with_s / without_s, 4), "rounds": args.rounds,
           "targets": {"recall": 0.95, "precision": 0.99, "ingest_ratio": 1.05}}
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
