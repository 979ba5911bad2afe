"""Speed of the audio → genre + embedding path, and of ingest and the prediction cache.

    python -m benchmarks.perf.embed_speed [--data ../shared/data] [--out benchmarks/results/embed-speed.json]

Prints JSON with:
- ``single``: one 30 s clip at a time on ONE core (CPU affinity 1 core, TensorFlow 1 thread):
  median ms for decode, features, model (front end + BiLSTM, genre, tags and embedding) and
  the whole ``predict``, and its real-time multiple; and ``long_4min``: the same for 4-minute
  tracks made of 8 of those clips back to back (written to temporary OGG files, as the
  clips are), with ``long_over_clip_x``, its cost over a 30 s clip's;
- ``ingest``: ``sonicsort ingest`` of the data folder into an empty catalog on all cores
  (default 2 here), uncached: seconds, audio seconds, real-time multiple;
- ``cache``: ``Library.predict_bytes`` of the same clips, miss (model) against hit (Redis),
  median ms and their ratio.

The data folder's audio is only read, never copied into the project. Without ``--data``,
generated 30 s clips are used (their figures are less representative of real files).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def clips(data: str | None, n: int | None = None, *, min_s: float = 0.0) -> list[Path]:
    if data:
        import soundfile as sf

        from embedding.audio import AUDIO_EXTENSIONS

        files = sorted(p for p in Path(data).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        if min_s:
            files = [p for p in files if sf.info(p).duration >= min_s]
    else:
        from recommender.demo import _clip, SR
        import soundfile as sf

        folder = Path(tempfile.mkdtemp(prefix="sonicsort-bench-clips-"))
        files = []
        for i in range(60):
            kind = ["kick-and-bass", "sine-chords", "noise-bursts", "arpeggio"][i % 4]
            p = folder / f"{kind}-{i}.flac"
            sf.write(p, _clip(kind, 30.0, i), SR)
            files.append(p)
    return files[:n] if n else files


def phase_single(args) -> dict:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from embedding._quiet import import_tensorflow

    import_tensorflow()  # as the service imports it (its settings: oneDNN on)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from embedding import ModelBundle

    bundle = ModelBundle.load(args.model)
    bundle.warm_up()
    files = clips(args.data, 40, min_s=25.0)

    def measure(paths: list[Path]) -> dict:
        dec, feat, model, total, dur, n_seg = [], [], [], [], [], []
        for f in paths:
            t0 = time.perf_counter()
            audio = bundle.decode(f)  # what predict decodes: the capped patches' stretches
            t1 = time.perf_counter()
            x = bundle.features(audio)
            t2 = time.perf_counter()
            bundle.predict_tracks([x])
            t3 = time.perf_counter()
            pred = bundle.predict(f)
            t4 = time.perf_counter()
            dec.append(t1 - t0); feat.append(t2 - t1); model.append(t3 - t2); total.append(t4 - t3)
            dur.append(audio.duration_s); n_seg.append(pred.n_segments)
        med = statistics.median
        return {"files": len(paths), "median_duration_s": round(med(dur), 1), "segments": int(med(n_seg)),
                "decode_ms": round(1e3 * med(dec), 1), "features_ms": round(1e3 * med(feat), 1),
                "model_ms": round(1e3 * med(model), 1), "predict_ms": round(1e3 * med(total), 1),
                "realtime_x": round(med(dur) / med(total), 1)}

    out = {"model_version": bundle.version, "features": bundle.feature_config.kind, **measure(files)}
    import numpy as np
    import soundfile as sf

    folder = Path(tempfile.mkdtemp(prefix="sonicsort-bench-long-"))
    longs = []
    for i in range(0, min(len(files), 40) - 7, 8):
        parts = [sf.read(f, dtype="float32")[0] for f in files[i:i + 8]]
        sr = sf.info(files[i]).samplerate
        p = folder / f"long-{i}.ogg"
        y = np.concatenate([q if q.ndim == 1 else q.mean(axis=1) for q in parts])
        with sf.SoundFile(p, "w", sr, 1, format="OGG", subtype="VORBIS") as out_f:
            for s in range(0, len(y), 1 << 15):  # libsndfile's Vorbis encoder crashes on one big write
                out_f.write(y[s:s + (1 << 15)])
        longs.append(p)
    if longs:
        out["long_4min"] = measure(longs)
        out["long_over_clip_x"] = round(out["long_4min"]["predict_ms"] / out["predict_ms"], 2)
    for p in longs:
        p.unlink()
    folder.rmdir()
    return out


def phase_ingest(args) -> dict:
    from recommender.config import Settings
    from recommender.ingest import ingest
    from recommender.library import Library

    home = Path(tempfile.mkdtemp(prefix="sonicsort-bench-home-"))
    s = Settings(home=home, redis_url="")
    if args.model:
        s.model_dir = Path(args.model)
    lib = Library(s)
    lib.bundle.warm_up()
    files = clips(args.data)
    folder = files[0].parent if not args.data else Path(args.data)
    rep = ingest(lib, [folder], workers=args.workers)
    again = ingest(lib, [folder], workers=args.workers)
    return {"files": len(files), "cores": len(os.sched_getaffinity(0)), "workers": args.workers or os.cpu_count(),
            **{k: v for k, v in rep.to_dict().items() if k != "failures"},
            "second_run_s": round(again.seconds, 2), "second_run_unchanged": again.unchanged}


def phase_cache(args) -> dict:
    from recommender.cache import PredictionCache
    from recommender.config import Settings
    from recommender.library import Library

    home = Path(tempfile.mkdtemp(prefix="sonicsort-bench-home-"))
    s = Settings(home=home)
    if args.model:
        s.model_dir = Path(args.model)
    prefix = f"sonicsort-bench-{uuid.uuid4().hex[:8]}:"
    cache = PredictionCache(s.redis_url, prefix=prefix, ttl_s=600)
    if not cache.ping():
        return {"error": f"no Redis at {s.redis_url}"}
    lib = Library(s, cache=cache)
    lib.bundle.warm_up()
    blobs = [f.read_bytes() for f in clips(args.data, 40)]
    miss, hit = [], []
    for b in blobs:
        t0 = time.perf_counter()
        _, _, cached = lib.predict_bytes(b)
        t1 = time.perf_counter()
        assert not cached
        _, _, cached = lib.predict_bytes(b)
        t2 = time.perf_counter()
        assert cached
        miss.append(t1 - t0); hit.append(t2 - t1)
    for k in cache._redis.scan_iter(prefix + "*"):
        cache._redis.delete(k)
    m, h = statistics.median(miss), statistics.median(hit)
    return {"clips": len(blobs), "miss_ms": round(1e3 * m, 2), "hit_ms": round(1e3 * h, 3),
            "hit_speedup_x": round(m / h, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="a folder of audio files (e.g. ../shared/data)")
    ap.add_argument("--model", default=None, help="model bundle (default: the shipped one)")
    ap.add_argument("--workers", type=int, default=None, help="ingest processes (default: one per core)")
    ap.add_argument("--phase", choices=["single", "ingest", "cache"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    if args.phase:
        print(json.dumps({"single": phase_single, "ingest": phase_ingest, "cache": phase_cache}[args.phase](args)))
        return
    out = {}
    for phase in ("single", "ingest", "cache"):
        cmd = [sys.executable, __file__, "--phase", phase] + sum(
            ([f"--{k}", str(v)] for k, v in (("data", args.data), ("model", args.model), ("workers", args.workers)) if v is not None), [])
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            out[phase] = {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
        else:
            out[phase] = json.loads(res.stdout.strip().splitlines()[-1])
        print(phase, json.dumps(out[phase]), file=sys.stderr)
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
