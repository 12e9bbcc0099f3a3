"""Leave-one-corpus-out UAR of the log-mel CNN trained on several corpora (not shipped; a comparison).

The CNN of ``speech_emotion_cnn.onnx`` (its recipe: per-segment normalised log-mel, 3 s windows,
speed/noise/SpecAugment augmentation, AdamW one-cycle, label smoothing, last epoch kept), trained
like the shipped MLP on every corpus but the held-out one, with masked labels (each file's softmax
and label smoothing over its corpus's classes only) and loss weights that give every corpus, and
every class within it, the same weight. Scored on the held-out corpus's shared classes with the same
report as ``emolens evaluate speech --protocol corpora``.

    OMP_NUM_THREADS=1 python benchmarks/speech_cnn_loco.py --corpora ravdess,emodb   # one core each:
    OMP_NUM_THREADS=1 python benchmarks/speech_cnn_loco.py --corpora urdu,turev      # run two at once
    python benchmarks/speech_cnn_loco.py --report                                      # the table

Each held-out corpus writes ``benchmarks/results/NAME/<corpus>.json`` (``--name``, default
``speech_cnn_loco``); ``--report`` writes ``benchmarks/results/NAME.md``. The log-mel of every file
is cached on first use (``~/.cache/emolens``); build it once (``--corpora none``) before starting
parallel runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"


def run(corpus: str, epochs: int, channels: str, data_root: Path) -> dict:
    """Train on the other corpora, score ``corpus``."""
    import torch

    from emolens.datasets import load_speech_corpora
    from emolens.train.speech import SpeechTrainConfig, build_cache, predict_items, train_one
    from emolens.train.speech_mlp import balanced_weights
    from emolens.train.speech_multi import loco_split
    from emolens.train.speech_report import corpus_report
    from emolens.voice.features import FeatureParams

    torch.set_num_threads(1)
    data = load_speech_corpora(data_root)
    params = FeatureParams()
    cache = build_cache(data, params)
    train, test, classes = loco_split(data, corpus)
    weights = np.zeros(len(data))
    weights[train] = balanced_weights(data.labels[train], data.corpora[train])
    cfg = SpeechTrainConfig(data=str(data_root), out="", epochs=epochs, channels=channels, threads=1)
    t0 = time.time()
    net, history = train_one(cfg, data, cache, train, None, params, f"cnn-loco {corpus}",
                             mask=data.class_mask(), weights=weights)
    probs = predict_items(net, cache, test, "cnn", params)
    rep = corpus_report(data.labels[test], np.log(np.clip(probs, 1e-7, 1)), classes, data.classes)
    rep.update(trained_on=sorted(set(data.corpora[train].tolist())), epochs=epochs, channels=channels,
               train_seconds=round(time.time() - t0), n_train=len(train),
               final_train_loss=history[-1]["train_loss"])
    return rep


def report(name: str) -> None:
    """Assemble the per-corpus JSONs of ``results/<name>/`` into ``results/<name>.md``."""
    out = RESULTS / name
    rows = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    if not rows:
        sys.exit(f"no results in {out}")
    any_row = next(iter(rows.values()))
    lines = ["# Log-mel CNN, multi-corpus: leave-one-corpus-out", "",
             f"- date: {any_row['date']}", f"- machine: {any_row['machine']}",
             "- command: `" + any_row["command"].replace(f"--corpora {next(iter(rows))}", "--corpora CORPUS")
             + "`, one run per held-out corpus",
             f"- CNN channels {any_row['channels']}, {any_row['epochs']} epochs, seed 0", "",
             "| held-out corpus | classes | n | accuracy | UAR | macro-F1 | chance UAR | trained on | train time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for corpus, r in rows.items():
        lines.append(f"| {corpus} | {len(r['labels'])} | {r['n']} | {r['accuracy']:.3f} | {r['uar']:.3f} | "
                     f"{r['macro_f1']:.3f} | {r['chance_uar']:.3f} | {', '.join(r['trained_on'])} | "
                     f"{r['train_seconds'] / 60:.0f} min |")
    lines += ["", "Same protocol as the shipped MLP's leave-one-corpus-out table (`models/speech_emotion.md`: "
              "0.377 / 0.657 / 0.378 / 0.475 for RAVDESS / EmoDB / URDU / TurEV)."]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    """Parse arguments; run the held-out corpora given, or assemble the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", default="ravdess,emodb,urdu,turev", help="held-out corpora to run (none: cache only)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--channels", default="16,32,64,128")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--name", default="speech_cnn_loco", help="results: benchmarks/results/NAME/ and NAME.md")
    ap.add_argument("--report", action="store_true", help="only assemble the table from the stored results")
    args = ap.parse_args()
    if args.report:
        report(args.name)
        return
    if args.corpora == "none":
        from emolens.datasets import load_speech_corpora
        from emolens.train.speech import build_cache
        from emolens.voice.features import FeatureParams

        build_cache(load_speech_corpora(args.data), FeatureParams())
        return
    out = RESULTS / args.name
    out.mkdir(parents=True, exist_ok=True)
    for corpus in [c.strip() for c in args.corpora.split(",") if c.strip()]:
        rep = run(corpus, args.epochs, args.channels, args.data)
        rep.update(date=datetime.date.today().isoformat(),
                   machine=f"{cpu_name()}, {platform.machine()}, Python {platform.python_version()}",
                   command=f"OMP_NUM_THREADS=1 python benchmarks/speech_cnn_loco.py --corpora {corpus} "
                           f"--epochs {args.epochs} --channels {args.channels}"
                           + (f" --name {args.name}" if args.name != "speech_cnn_loco" else ""))
        (out / f"{corpus}.json").write_text(json.dumps({k: v for k, v in rep.items() if k != "logits"}, indent=2))
        print(f"{corpus}: UAR {rep['uar']:.3f} (chance {rep['chance_uar']:.3f})", flush=True)


if __name__ == "__main__":
    main()
