"""Two model bundles' single-clip prediction time on one core, in alternating rounds.

    python -m benchmarks.perf.model_ab OLD_MODEL_DIR [NEW_MODEL_DIR] [--data DIR] [--files 12] [--rounds 3]

Absolute times follow the host (this workplace's machines differ by 4× and more between
sessions); the ratio of two bundles timed in one run, clip by clip in turn, does not. Each
bundle predicts (decode → genre, tags and embedding) every clip once per round, after a
warm-up call; prints each one's median ms and their ratio. NEW_MODEL_DIR defaults to the
shipped model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new", nargs="?", default=None)
    ap.add_argument("--data", default=None, help="a folder of audio files (30 s excerpts; default: generated clips)")
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from embedding._quiet import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from embedding import ModelBundle
    from .embed_speed import clips  # the clips embed_speed times (of 25 s or more)

    files = clips(args.data, min_s=25.0)
    files = files[:: max(1, len(files) // args.files)][: args.files]  # spread over the folder's genres
    bundles = {"old": ModelBundle.load(args.old), "new": ModelBundle.load(args.new)}
    for b in bundles.values():
        b.predict(files[0])
    times: dict[str, list[float]] = {k: [] for k in bundles}
    for _ in range(args.rounds):
        for f in files:
            for k, b in bundles.items():
                t0 = time.perf_counter()
                b.predict(f)
                times[k].append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, b in bundles.items():
        print(f"{k}: {b.version} ({b.feature_config.max_patches} patches) median {med[k]:.1f} ms over {len(times[k])} predictions")
    print(f"new / old: {med['new'] / med['old']:.3f}")


if __name__ == "__main__":
    main()
