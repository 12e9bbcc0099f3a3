"""Reports of the voice protocols: per-corpus metrics on a corpus's own classes, markdown
tables, confusions, and the JSON / logits files a protocol run leaves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emolens.datasets import SpeechDataset
from emolens.metrics import classification_report


def _uar(report: dict) -> float:
    recalls = [v["recall"] for v in report["per_class"].values() if v["support"] > 0]
    return float(np.mean(recalls)) if recalls else 0.0


def corpus_report(y: np.ndarray, logits: np.ndarray, classes: list[str], all_classes: tuple[str, ...]) -> dict:
    """Metrics on ``classes`` only (predictions: argmax over those classes)."""
    idx = [all_classes.index(c) for c in classes]
    local = {g: i for i, g in enumerate(idx)}
    yl = np.array([local[v] for v in y])
    rep = classification_report(yl, logits[:, idx].argmax(1), classes)
    rep["uar"] = _uar(rep)
    rep["chance_uar"] = 1.0 / len(classes)
    return rep


def strip_logits(result: dict) -> dict:
    """The protocol result without its bulky arrays (for JSON)."""
    return {k: v for k, v in result.items() if not k.startswith("logits")}


def save_json(obj: dict, path: str | Path) -> None:
    """Write ``obj`` as indented JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")


def table(result: dict) -> str:
    """Markdown table of a protocol result, one row per corpus (LOCO with ``norm="online"`` also
    gives the UAR when every test file is scored as its speaker's first utterance)."""
    proto = result["protocol"]
    first = all("first_utterance_uar" in r for r in result["corpora"].values())
    both = all("pipeline" in r for r in result["corpora"].values())
    head = "| corpus | classes | n | accuracy | UAR | macro-F1 | chance UAR |" + (
        " folds (accuracy) |" if proto == "speakers" else " trained on |")
    lines = [head + (" UAR, first utterance |" if first else "")
             + (" UAR with the cold-start partner | macro-F1 with it |" if both else ""),
             "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if first else "")
             + (" --- | --- |" if both else "")]
    for name, r in result["corpora"].items():
        extra = (f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}" if proto == "speakers"
                 else ", ".join(r["trained_on"]))
        lines.append(f"| {name} | {len(r['labels'])} | {r['n']} | {r['accuracy']:.3f} | {r['uar']:.3f} | "
                     f"{r['macro_f1']:.3f} | {r['chance_uar']:.3f} | {extra} |"
                     + (f" {r['first_utterance_uar']:.3f} |" if first else "")
                     + (f" {r['pipeline']['uar']:.3f} | {r['pipeline']['macro_f1']:.3f} |" if both else ""))
    return "\n".join(lines)


def confusions(result: dict) -> str:
    """Each corpus's pooled confusion matrix as text (and with the cold-start partner, where scored)."""
    from emolens.metrics import format_report

    def matrix(r: dict) -> str:
        return format_report(r).split("confusion (rows true, columns predicted):\n")[1]

    return "\n\n".join(f"{name}:\n" + matrix(r) + (f"\n\n{name}, with the cold-start partner:\n" + matrix(r["pipeline"])
                                                   if "pipeline" in r else "")
                       for name, r in result["corpora"].items())


def save_logits(path: str | Path, result: dict, data: SpeechDataset) -> None:
    """A protocol's held-out logits with what the fusion fit needs (labels, corpora, speakers,
    paths, classes); LOCO also ``logits_first`` (each file scored as its speaker's first) and,
    with the cold-start partner, ``logits_pipeline`` and the partner's own ``logits_cold``."""
    extra = {k: result[k] for k in ("logits_first", "logits_pipeline", "logits_cold") if k in result}
    np.savez(path, logits=result["logits"], labels=data.labels, corpora=data.corpora, speakers=data.speakers,
             paths=np.asarray(data.paths), classes=np.asarray(data.classes), **extra)
