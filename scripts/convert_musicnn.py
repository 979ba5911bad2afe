"""Convert musicnn's MSD_musicnn TensorFlow 1 checkpoint into the Keras weights sonicsort ships.

    python scripts/convert_musicnn.py [--wheel musicnn-0.1.0-py3-none-any.whl]

Without ``--wheel`` it runs ``pip download --no-deps musicnn==0.1.0`` into a temporary
folder (the only download; nothing downloads at run or test time). Then it:

1. reads the checkpoint's variables (``tf.compat.v1.train.NewCheckpointReader``) into
   ``embedding.musicnn.build_musicnn()`` and saves ``embedding/pretrained/msd_musicnn.weights.h5``;
2. runs the *original* graph (the checkpoint's MetaGraphDef, imported after deleting the
   ``_output_shapes`` attributes that TF 2.21 refuses) on log-mel patches of generated audio
   and stores inputs and outputs (taggram, penultimate) as ``tests/fixtures/musicnn_reference.npz``;
3. checks the Keras port against them and writes ``embedding/pretrained/PROVENANCE.json``
   (wheel and checkpoint sha256, the largest differences) beside the ISC licence.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedding.musicnn import (CHECKPOINT_SCOPES, MSD_TAGS, PRETRAINED_DIR, SR, WEIGHTS_FILE,  # noqa: E402
                               build_musicnn, log_mel_patches)

WHEEL = "musicnn==0.1.0"
CKPT = "musicnn/MSD_musicnn/"
FIXTURE = ROOT / "tests" / "fixtures" / "musicnn_reference.npz"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", str(folder)],
                   check=True)
    return next(folder.glob("musicnn-*.whl"))


def reference_audio() -> list[np.ndarray]:
    """Generated signals (never real music): a chord with a beat, a noise sweep, a loud square wave."""
    rng = np.random.default_rng(20190705)
    t = np.arange(int(6.5 * SR)) / SR
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    beat = (np.sin(2 * np.pi * 2 * t) > 0.95) * rng.normal(size=len(t))
    sweep = rng.normal(size=len(t)) * np.sin(2 * np.pi * (200 + 3000 * t / t[-1]) * t)
    square = np.sign(np.sin(2 * np.pi * 110 * t))  # full scale: where float16 mel overflows
    return [(0.4 * chord + 0.3 * beat).astype(np.float32), (0.3 * sweep).astype(np.float32),
            (0.99 * square).astype(np.float32)]


def original_outputs(ckpt_prefix: str, patches: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        from tensorflow.core.protobuf import meta_graph_pb2

        mg = meta_graph_pb2.MetaGraphDef()
        mg.ParseFromString(Path(ckpt_prefix + ".meta").read_bytes())
        for node in mg.graph_def.node:
            if "_output_shapes" in node.attr:
                del node.attr["_output_shapes"]
        saver = tf.compat.v1.train.import_meta_graph(mg, clear_devices=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, ckpt_prefix)
            feeds = {"model/Placeholder:0": patches, "model/Placeholder_2:0": False}
            names = {"taggram": "model/Sigmoid:0",
                     "penultimate": "model/batch_normalization_10/batchnorm/add_1:0"}
            outs = sess.run(list(names.values()), feed_dict=feeds)
    return dict(zip(names, outs))


def convert(ckpt_prefix: str):
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(ckpt_prefix)
    model = build_musicnn()
    for layer in model.layers:
        scope = CHECKPOINT_SCOPES.get(layer.name)
        if scope is None:
            if layer.weights:
                raise SystemExit(f"no checkpoint scope for layer {layer.name}")
            continue
        if layer.__class__.__name__ == "BatchNormalization":
            names = ("gamma", "beta", "moving_mean", "moving_variance")
        else:
            names = ("kernel", "bias")
        values = []
        for n, w in zip(names, layer.get_weights()):
            v = reader.get_tensor(f"{scope}/{n}")
            values.append(v.reshape(w.shape))  # the mid end's 7×C×1×64 kernels are Conv1D's 7×C×64
        layer.set_weights(values)
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", help="musicnn-0.1.0-py3-none-any.whl (default: pip download it)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="musicnn-") as tmp:
        wheel = Path(args.wheel) if args.wheel else fetch_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp + "/w")
            licence = z.read("musicnn-0.1.0.dist-info/LICENSE.md").decode()
        prefix = f"{tmp}/w/{CKPT}"
        ckpt_hashes = {p.name: sha256(p.read_bytes()) for p in sorted(Path(prefix).iterdir()) if p.is_file()}
        model = convert(prefix)
        patches = np.concatenate([log_mel_patches(y) for y in reference_audio()]).astype(np.float32)
        ref = original_outputs(prefix, patches)
        wheel_hash = sha256(wheel.read_bytes())

    penultimate, taggram = (o.numpy() if hasattr(o, "numpy") else o for o in model(patches, training=False))
    diff = {"taggram": float(np.abs(taggram - ref["taggram"]).max()),
            "penultimate": float(np.abs(penultimate - ref["penultimate"]).max())}
    print(f"{len(patches)} reference patches; largest |Keras - original|: {diff}")
    if max(diff.values()) > 1e-4:
        raise SystemExit("the Keras port does not match the original graph")

    PRETRAINED_DIR.mkdir(exist_ok=True)
    model.save_weights(WEIGHTS_FILE)
    (PRETRAINED_DIR / "LICENSE-musicnn.md").write_text(
        "The weights in msd_musicnn.weights.h5 are converted from the MSD_musicnn checkpoint of the\n"
        "musicnn package 0.1.0 (https://pypi.org/project/musicnn/, https://github.com/jordipons/musicnn)\n"
        "by scripts/convert_musicnn.py. musicnn: J. Pons and X. Serra, \"musicnn: pre-trained\n"
        "convolutional neural networks for music audio tagging\", ISMIR 2019 late-breaking demo.\n"
        "Its licence (ISC) follows.\n\n" + licence)
    (PRETRAINED_DIR / "PROVENANCE.json").write_text(json.dumps({
        "source": WHEEL, "wheel_sha256": wheel_hash, "checkpoint": CKPT, "checkpoint_sha256": ckpt_hashes,
        "weights_sha256": sha256(WEIGHTS_FILE.read_bytes()), "tags": list(MSD_TAGS),
        "reference_patches": len(patches), "max_abs_difference": diff,
    }, indent=1) + "\n")
    FIXTURE.parent.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURE, patches=patches, taggram=ref["taggram"].astype(np.float32),
                        penultimate=ref["penultimate"].astype(np.float32))
    print(f"wrote {WEIGHTS_FILE.relative_to(ROOT)} ({WEIGHTS_FILE.stat().st_size} bytes) and "
          f"{FIXTURE.relative_to(ROOT)} ({FIXTURE.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
