"""Protocol tables for the shipped speech ensemble (multi-corpus functionals MLP + log-mel CNN).

The CNN (``models/speech_emotion_cnn.onnx``) was trained on RAVDESS actors 01-22 only, so it
never heard EmoDB, URDU or TurEV: on those corpora its predictions are held out under both
protocols, and are combined here with the functionals model's held-out logits (written by
``emolens train speech --model functionals`` as ``corpora_logits.npz`` / ``speakers_logits.npz``)
exactly as the shipped model combines them (weighted geometric mean, functionals logits divided by
the shipped temperature). On RAVDESS the CNN is not held out (except actors 23-24, see the card),
so RAVDESS rows are the functionals model alone. Writes ``benchmarks/results/speech_ensemble.md``.

    python benchmarks/eval_speech_ensemble.py runs/speech_multi
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"


def cnn_probs(paths: list[str], cache: Path = REPO / "runs" / "speech_cnn_probs.npz") -> dict[str, np.ndarray]:
    """The CNN's probabilities for every file (cached under runs/)."""
    from emolens.media import load_audio
    from emolens.voice import SpeechEmotionModel

    have: dict[str, np.ndarray] = {}
    if cache.is_file():
        z = np.load(cache)
        have = dict(zip(z["paths"].tolist(), z["probs"]))
    todo = [p for p in paths if p not in have]
    if todo:
        model = SpeechEmotionModel(REPO / "src" / "emolens" / "models" / "speech_emotion_cnn.onnx", threads=1)
        for p in todo:
            have[p] = model.predict_audio(load_audio(p))
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, paths=np.array(list(have)), probs=np.stack(list(have.values())))
    return have


def main(run: Path) -> None:
    """Print and write the LOCO and speaker-CV tables of the functionals model and the ensemble."""
    import json

    from emolens.datasets import load_speech_corpora
    from emolens.train.speech_multi import shared_classes
    from emolens.train.speech_report import corpus_report

    meta = json.loads((REPO / "src" / "emolens" / "models" / "speech_emotion.json").read_text())
    t, w = float(meta.get("temperature", 1.0)), float(meta.get("ensemble", {}).get("weight", 0.5))
    data = load_speech_corpora(DATA.resolve())
    others = [c for c in data.corpora.tolist() if c != "ravdess"]
    cnn = cnn_probs([data.paths[i] for i in range(len(data)) if data.corpora[i] != "ravdess"])
    names = list(dict.fromkeys(data.corpora.tolist()))
    lines = ["| protocol | corpus | classes | n | functionals UAR | CNN UAR (RAVDESS-trained) | ensemble UAR | "
             "ensemble macro-F1 | ensemble acc | chance |", "|" + " --- |" * 10]
    for proto in ("corpora", "speakers"):
        f = run / f"{proto}_logits.npz"
        if not f.is_file():
            continue
        z = np.load(f)
        assert [str(Path(q).resolve()) for q in z["paths"].tolist()] == [str(Path(q).resolve()) for q in data.paths]
        for corpus in names:
            sel = np.flatnonzero(data.corpora == corpus)
            if proto == "corpora":
                classes = shared_classes(data, corpus, [c for c in names if c != corpus])
                sel = sel[np.isin(data.labels[sel], [data.classes.index(c) for c in classes])]
            else:
                classes = list(data.corpus_classes[corpus])
            lf = z["logits"][sel] / t
            lf = lf - lf.max(1, keepdims=True)
            lf = lf - np.log(np.exp(lf).sum(1, keepdims=True))
            rf = corpus_report(data.labels[sel], lf, classes, data.classes)
            if corpus in others:
                lc = np.log(np.clip(np.stack([cnn[data.paths[i]] for i in sel]), 1e-7, 1))
                rc = corpus_report(data.labels[sel], lc, classes, data.classes)
                re = corpus_report(data.labels[sel], (1 - w) * lf + w * lc, classes, data.classes)
                cells = f"{rc['uar']:.3f} | {re['uar']:.3f} | {re['macro_f1']:.3f} | {re['accuracy']:.3f}"
            else:
                cells = "(not held out) | - | - | -"
            lines.append(f"| {proto} | {corpus} | {len(classes)} | {len(sel)} | {rf['uar']:.3f} | {cells} | "
                         f"{1 / len(classes):.3f} |")
    text = "\n".join(lines)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speech_ensemble.md").write_text(
        f"# Speech ensemble under both protocols\n\ncommand: `python benchmarks/eval_speech_ensemble.py {run}`\n\n"
        f"{text}\n")
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "runs" / "speech_multi")
