"""Model commands: ``predict`` (genre and tags of audio files), ``train`` and ``evaluate``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .common import EXIT_ERROR, EXIT_OK, MODEL_HELP, CliError, emit, load_bundle, progress

log = logging.getLogger("sonicsort")


def add_commands(sub, common) -> None:
    from embedding.features import DEFAULT_MAX_PATCHES

    p = sub.add_parser("predict", parents=[common], help="predict the genre and tags of audio files",
                       description="Predict genre and top-3 probabilities, and the top 5 of the front end's tags "
                                   "(musicnn's Last.fm tags of the Million Song Dataset: moods, styles, eras, "
                                   "instruments; not GTZAN labels); with --json all 50 tags and the track embedding.")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, au)")
    p.add_argument("--model", help=MODEL_HELP)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("train", parents=[common], help="train a genre model bundle",
                       description="Train the BiLSTM on train, early-stop on valid, score test (or valid) at track level. "
                                   "The frozen pretrained musicnn front end reads 3 s patches, and the BiLSTM reads the "
                                   "track's sequence of patch features. Options left out take the shipped recipe's values.")
    _add_dataset_args(p)
    p.add_argument("--out", required=True, help="folder to write the model bundle to (replaced atomically)")
    p.add_argument("--max-patches", type=int, default=DEFAULT_MAX_PATCHES,
                   help=f"at most N 3 s patches per track, spread over it (default {DEFAULT_MAX_PATCHES}; "
                        "bounds a long track's cost)")
    p.add_argument("--tag-inputs", action=argparse.BooleanOptionalAction, default=True,
                   help="the BiLSTM also reads the front end's 50 tag logits of a patch beside its 200 "
                        "penultimate features (default; --no-tag-inputs: the features only)")
    p.add_argument("--lstm-units", default=None, help="units per BiLSTM layer, comma-separated (default 32)")
    p.add_argument("--mixup", type=float, default=None,
                   help="mixup Beta(a, a) parameter of training patch-feature sequences, 0 to disable (default 0.4)")
    p.add_argument("--embedding-dim", type=int, default=None, help="embedding size of each head (default 32)")
    p.add_argument("--dropout", type=float, default=None, help="dropout rate (default 0.3)")
    p.add_argument("--learning-rate", type=float, default=None, help="Adam learning rate (default 0.001)")
    p.add_argument("--segments-per-track", type=int, default=None,
                   help="random patch sequences per training track per epoch (default 8)")
    p.add_argument("--max-epochs", type=int, default=None, help="upper bound with early stopping (default 30)")
    p.add_argument("--patience", type=int, default=None, help="epochs without validation improvement before stopping (default 10)")
    p.add_argument("--epochs", type=int, default=None, help="train exactly N epochs (required with --train-on-all)")
    p.add_argument("--average-last", type=int, default=None,
                   help="the final weights are the mean of the last N epochs' (weight averaging; default 5; "
                        "0 keeps the last epoch's)")
    p.add_argument("--ensemble", type=int, default=None,
                   help="train N heads apart (seeds SEED, SEED+1, ...) and ship them as one model: the mean "
                        "of their genre probabilities, their embeddings side by side (default 5; 1: one head)")
    p.add_argument("--last-epoch", action="store_true",
                   help="keep the last epoch's weights instead of the best on valid (with --epochs: a fixed-length "
                        "run, so the valid figures are not selected on valid)")
    p.add_argument("--train-on-all", action="store_true",
                   help="train on every track of DATA (all splits), for the final model once the recipe is chosen")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", parents=[common], help="score a model at track level beside a classical baseline",
                       description="Track-level accuracy, balanced accuracy, macro-F1, per-genre P/R/F1 and confusion "
                                   "matrix (JSON + PNG), beside MFCC mean/std logistic-regression and k-NN baselines "
                                   "trained on DATA's train split. Tracks the model was trained on are left out.")
    _add_dataset_args(p)
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--split", default="auto", choices=["auto", "test", "valid", "train", "all"],
                   help="which tracks to score (default auto: test, else valid, else all)")
    p.add_argument("--out", help="report folder (default SONICSORT_HOME/evaluations/<model>-<split>)")
    p.set_defaults(func=cmd_evaluate)


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="folder <genre>/<audio files>, or a CSV manifest with path,genre[,split,artist]")
    p.add_argument("--train-list", help="split list: one genre/file per line")
    p.add_argument("--valid-list", help="split list: one genre/file per line")
    p.add_argument("--test-list", help="split list: one genre/file per line")
    p.add_argument("--seed", type=int, default=1234, help="seed for the split made when none is given, and training (default 1234)")
    p.add_argument("--workers", type=int, default=None, help="feature extraction processes (default: up to 4)")


def cmd_predict(args: argparse.Namespace, settings) -> int:
    from embedding.errors import AudioError

    bundle = load_bundle(args.model, settings)
    results, failed = [], 0
    for f in args.files:
        try:
            p = bundle.predict(f, limits=settings.decode_limits)
            results.append({"file": f, **p.to_dict(with_embedding=args.json)})
        except AudioError as exc:
            failed += 1
            results.append({"file": f, "error": str(exc)})
    if args.json:
        print(json.dumps(results if len(results) != 1 else results[0]))
    else:
        for r in results:
            if "error" in r:
                print(f"{r['file']}: error: {r['error']}", file=sys.stderr)
                continue
            top = ", ".join(f"{t['genre']} {t['probability']:.2f}" for t in r["top"])
            flag = "  [silent audio: prediction is meaningless]" if r["is_silent"] else ""
            tags = ", ".join(f"{t['tag']} {t['probability']:.2f}" for t in r["top_tags"])
            print(f"{r['file']}: {r['genre']}  ({top}){flag}" + (f"\n  tags: {tags}" if tags else ""))
    return EXIT_ERROR if failed else EXIT_OK



# ---------------------------------------------------------------- train / evaluate
def _dataset(args: argparse.Namespace):
    from embedding.data import load_dataset

    lists = {k: v for k, v in (("train", args.train_list), ("valid", args.valid_list), ("test", args.test_list)) if v}
    return load_dataset(args.data, split_lists=lists or None, seed=args.seed)


def cmd_train(args: argparse.Namespace, settings) -> int:
    from embedding.features import FeatureConfig
    from embedding.model import ModelConfig
    from embedding.evaluate import plot_confusion
    from embedding.train import train_bundle

    try:
        fc = FeatureConfig(max_patches=args.max_patches, tag_inputs=args.tag_inputs)
        given = {k: getattr(args, k) for k in ("embedding_dim", "max_epochs", "patience", "learning_rate",
                                                "segments_per_track", "dropout", "mixup", "average_last", "ensemble")
                 if getattr(args, k) is not None}
        if args.lstm_units is not None:
            given["lstm_units"] = tuple(int(u) for u in args.lstm_units.split(","))
        mc = ModelConfig(seed=args.seed, **given)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.train_on_all and not args.epochs:
        raise CliError("--train-on-all trains a fixed number of epochs: give --epochs N (chosen on a validation split)")
    ds = _dataset(args)
    counts = ds.counts()
    log.info("dataset: %d tracks, %d genres: %s", len(ds.tracks), len(counts),
             "; ".join(f"{g} {c}" for g, c in counts.items()))

    def on_epoch(row: dict[str, Any]) -> None:
        msg = (f"head {row['head']}  " if "head" in row else "") + f"epoch {row['epoch']:3d}  loss {row['loss']:.3f}"
        if "valid_balanced_accuracy" in row:
            msg += (f"  valid loss {row['valid_loss']:.3f}  acc {row['valid_accuracy']:.3f}"
                    f"  bal.acc {row['valid_balanced_accuracy']:.3f}{'  *' if row.get('best') else ''}")
        print(f"{msg}  ({row['seconds']} s)", file=sys.stderr, flush=True)

    bundle = train_bundle(ds, feature_config=fc, model_config=mc, train_on_all=args.train_on_all, epochs=args.epochs,
                          workers=args.workers, on_epoch=on_epoch, progress=progress("features", not args.json),
                          restore_best=not args.last_epoch)
    out = bundle.save(args.out)
    if bundle.evaluation:
        plot_confusion(bundle.evaluation, out / "confusion.png", f"sonicsort {bundle.version} on {bundle.evaluation['split']}")
    ev = bundle.evaluation
    summary = {"model_dir": str(out), "model_version": bundle.version, "genres": bundle.genres,
               "epochs_run": bundle.training["epochs_run"], "n_train_tracks": bundle.training["n_tracks"],
               "evaluation": {k: ev[k] for k in ("split", "n_tracks", "accuracy", "balanced_accuracy", "macro_f1", "baseline") if k in ev}}
    heads = f"{mc.ensemble} heads, " if mc.ensemble > 1 else ""
    text = (f"saved model {bundle.version} to {out} ({heads}{bundle.training['epochs_run']} epochs, "
            f"{bundle.training['n_tracks']} training tracks)")
    if ev:
        text += (f"\n{ev['split']}: {ev['n_tracks']} tracks  accuracy {ev['accuracy']:.3f}  balanced accuracy "
                 f"{ev['balanced_accuracy']:.3f}  macro-F1 {ev['macro_f1']:.3f}")
    emit(args, summary, text)
    return EXIT_OK


def _format_report(m: dict[str, Any]) -> str:
    lines = [f"model {m.get('model_version', '?')} on split {m['split']}: {m['n_tracks']} tracks"
             + (f" ({m['excluded_training_tracks']} left out: in the model's training data)" if m.get("excluded_training_tracks") else ""),
             f"  BiLSTM               accuracy {m['accuracy']:.3f}  balanced accuracy {m['balanced_accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}"]
    for name, b in (m.get("baseline") or {}).items():
        lines.append(f"  baseline {name:<12} accuracy {b['accuracy']:.3f}  balanced accuracy {b['balanced_accuracy']:.3f}  macro-F1 {b['macro_f1']:.3f}")
    lines.append(f"  {'genre':<12} {'prec':>5} {'recall':>6} {'F1':>5} {'n':>4}")
    for g, s in m["per_genre"].items():
        if s["support"] or s["precision"]:
            lines.append(f"  {g:<12} {s['precision']:5.2f} {s['recall']:6.2f} {s['f1']:5.2f} {s['support']:4d}")
    labels, mat = m["confusion"]["labels"], m["confusion"]["matrix"]
    lines.append("  confusion (rows true, columns predicted): " + " ".join(l[:4] for l in labels))
    for l, row in zip(labels, mat):
        lines.append(f"  {l[:10]:<10} " + " ".join(f"{v:4d}" for v in row))
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace, settings) -> int:
    from embedding.evaluate import evaluate_bundle, plot_confusion

    bundle = load_bundle(args.model, settings)
    ds = _dataset(args)
    m = evaluate_bundle(bundle, ds, split=args.split, workers=args.workers, progress=progress("features", not args.json))
    out = Path(args.out) if args.out else settings.home / "evaluations" / f"{bundle.version}-{m['split']}"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "evaluation.json.tmp"
    tmp.write_text(json.dumps(m, indent=1))
    os.replace(tmp, out / "evaluation.json")
    plot_confusion(m, out / "confusion.png", f"sonicsort {bundle.version} on {m['split']} ({m['n_tracks']} tracks)")
    m_out = {k: v for k, v in m.items() if k != "predictions"}
    m_out["report_dir"] = str(out)
    emit(args, m_out, _format_report(m) + f"\nsaved {out / 'evaluation.json'} and {out / 'confusion.png'}")
    return EXIT_OK
