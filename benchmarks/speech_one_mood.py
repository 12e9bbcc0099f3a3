"""How much the one-mood thresholds matter: leave-one-corpus-out UAR of the shipped pair of voice
networks, mixed as the pipeline mixes them, for other thresholds of
:func:`emolens.voice.speakers.one_mood_share`.

Reads the held-out logits of both networks written by

    emolens evaluate speech --data ../shared/data --protocol corpora --states --seeds 5 --adversary 1 \\
        --json runs/loco_pipeline/corpora.json --logits runs/loco_pipeline/corpora_logits.npz

(about 25 min on one core) and re-mixes them, each speaker's weight
``max(cold_share, one_mood_share(diversity; low, high))``, with the temperatures of the shipped
JSONs (no training; seconds). The row at the shipped thresholds reproduces the protocol's
"with the cold-start partner" column.

    python benchmarks/speech_one_mood.py [--logits runs/loco_pipeline/corpora_logits.npz]

Writes ``benchmarks/results/speech_one_mood.{md,json}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "src" / "emolens" / "models"
RESULTS = REPO / "benchmarks" / "results"
#: (label, thresholds): None = cold_share alone; "main" = the main network alone
GRID: list[tuple[str, tuple[float, float] | str | None]] = [
    ("main network alone", "main"), ("cold_share only (no one-mood rule)", None),
    ("0.2-0.4 (shipped)", (0.2, 0.4)), ("0.1-0.5", (0.1, 0.5)), ("0.15-0.35", (0.15, 0.35)),
    ("0.25-0.45", (0.25, 0.45)), ("0.1-0.3", (0.1, 0.3)), ("0.3-0.5", (0.3, 0.5)),
]


def shared_classes(labels: np.ndarray, corpora: np.ndarray, corpus: str) -> list[int]:
    """Classes of ``corpus`` that another corpus also labels."""
    others = set(labels[corpora != corpus].tolist())
    return sorted(c for c in set(labels[corpora == corpus].tolist()) if c in others)


def diversity_table(cold_logits: np.ndarray, labels: np.ndarray, corpora: np.ndarray,
                    speakers: np.ndarray) -> dict[tuple[str, int], list[float]]:
    """Posterior diversity of each speaker, keyed by (corpus, number of emotions in its files)."""
    from emolens.voice.speakers import posterior_diversity

    z = cold_logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    out: dict[tuple[str, int], list[float]] = {}
    for s in dict.fromkeys(speakers.tolist()):
        rows = speakers == s
        key = (str(corpora[rows][0]), len(set(labels[rows].tolist())))
        out.setdefault(key, []).append(posterior_diversity(p[rows]))
    return dict(sorted(out.items()))


def main() -> None:
    """Re-mix the saved logits for every threshold pair, write the table."""
    from emolens.train.speech_multi import pipeline_logits
    from emolens.train.speech_report import corpus_report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logits", type=Path, default=REPO / "runs" / "loco_pipeline" / "corpora_logits.npz")
    args = ap.parse_args()
    if not args.logits.is_file():
        sys.exit(f"{args.logits}: not found (write it with `emolens evaluate speech --protocol corpora ... --logits`)")
    z = np.load(args.logits)
    if "logits_cold" not in z:
        sys.exit(f"{args.logits} has no cold-start logits (run the protocol without --no-cold-start)")
    meta = {k: json.loads((MODELS / f"{k}.json").read_text()) for k in ("speech_emotion", "speech_emotion_cold")}
    temps = (float(meta["speech_emotion"]["temperature"]), float(meta["speech_emotion_cold"]["temperature"]))
    prior = float(meta["speech_emotion"]["normalization"]["prior"])
    labels, corpora, speakers = z["labels"], np.asarray(z["corpora"]).astype(str), np.asarray(z["speakers"]).astype(str)
    classes = tuple(str(c) for c in z["classes"])
    names = list(dict.fromkeys(corpora.tolist()))
    uar: dict[str, dict[str, float]] = {}
    for label, rule in GRID:
        uar[label] = {}
        for corpus in names:
            held = np.flatnonzero(corpora == corpus)
            shared = shared_classes(labels, corpora, corpus)
            test = np.isin(labels[held], shared)
            if isinstance(rule, str):  # the main network alone
                scores = z["logits"][held]
            else:
                scores = pipeline_logits(z["logits"][held], z["logits_cold"][held], speakers[held], prior, temps,
                                         rule)
            rep = corpus_report(labels[held][test], scores[test], [classes[c] for c in shared], classes)
            uar[label][corpus] = float(rep["uar"])
        print(label, {c: round(v, 4) for c, v in uar[label].items()}, flush=True)
    shown = args.logits.resolve().relative_to(REPO) if args.logits.resolve().is_relative_to(REPO) else args.logits
    lines = ["# One-mood thresholds: leave-one-corpus-out UAR of the shipped pair, mixed as the pipeline mixes them",
             "", f"- date: {datetime.date.today().isoformat()}",
             f"- command: `python benchmarks/speech_one_mood.py --logits {shown}`",
             f"- temperatures: main {temps[0]:.3f}, cold start {temps[1]:.3f}; prior {prior:g}",
             "- floor: 2x chance UAR (RAVDESS 0.286, EmoDB 0.333, URDU 0.500, TurEV 0.500)", "",
             "| cold-start weight | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {label} | " + " | ".join(f"{uar[label][c]:.4f}" for c in names) + " |" for label, _ in GRID]
    lines += ["", "Thresholds `low-high`: the cold-start weight is `max(cold_share, one_mood_share)`, "
              "`one_mood_share` 1 up to a posterior diversity of `low`, 0 from `high`.", "",
              "Posterior diversity per speaker (the cold-start partner's untempered posteriors over all of the "
              "speaker's files), by how many emotions the speaker's files carry:", "",
              "| corpus | emotions per speaker | speakers | diversity min | median | max |",
              "|---|---:|---:|---:|---:|---:|"]
    spread = diversity_table(z["logits_cold"], labels, corpora, speakers)
    lines += [f"| {c} | {k} | {len(v)} | {min(v):.2f} | {np.median(v):.2f} | {max(v):.2f} |"
              for (c, k), v in spread.items()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speech_one_mood.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "speech_one_mood.json").write_text(json.dumps({"date": datetime.date.today().isoformat(),
                                                               "temperatures": temps, "prior": prior,
                                                               "diversity": {f"{c}/{k}": [round(d, 3) for d in v]
                                                                             for (c, k), v in spread.items()},
                                                               "uar": {k: {c: round(v, 4) for c, v in r.items()}
                                                                       for k, r in uar.items()}}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
