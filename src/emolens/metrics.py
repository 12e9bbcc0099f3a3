"""Classification metrics and their plots, shared by face and speech evaluation.

The metrics JSON shape is the same everywhere:
``{"accuracy", "macro_f1", "per_class": {label: {precision, recall, f1, support}},
"confusion": [[...]], "labels": [...]}`` (rows: true class, columns: predicted class).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """``n`` x ``n`` counts, rows true class, columns predicted class."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion": cm.tolist(),
        "labels": list(labels),
        "n": int(len(y_true)),
    }


def group_accuracy(groups: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, dict[str, float]]:
    """Per group name (e.g. how each face was framed): ``{"n", "accuracy"}``, groups in sorted order."""
    groups, hit = np.asarray(groups), np.asarray(y_true) == np.asarray(y_pred)
    return {str(g): {"n": int((groups == g).sum()), "accuracy": float(hit[groups == g].mean())}
            for g in sorted(set(groups.tolist()))}


def format_report(report: dict) -> str:
    """Readable text: headline numbers, per-class table and confusion matrix."""
    labels = report["labels"]
    width = max(len(x) for x in labels) + 2
    lines = [
        f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   n={report.get('n', '?')}",
        "",
        f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for name in labels:
        row = report["per_class"][name]
        lines.append(
            f"{name:<{width}}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>10d}"
        )
    lines += ["", "confusion (rows true, columns predicted):", " " * width + "".join(f"{x[:7]:>8}" for x in labels)]
    for name, row in zip(labels, report["confusion"]):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>8d}" for v in row))
    return "\n".join(lines)


def plot_confusion(report: dict, path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix as a PNG (counts in each cell)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(report["confusion"], dtype=np.float64)
    labels = report["labels"]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(labels), 0.8 + 0.7 * len(labels)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}  acc {report['accuracy']:.3f}  macro-F1 {report['macro_f1']:.3f}".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(history: list[dict], path: str | Path) -> None:
    """Loss and accuracy per epoch (train vs validation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], label="train")
    a.plot(epochs, [h["val_loss"] for h in history], label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(epochs, [h["train_acc"] for h in history], label="train")
    b.plot(epochs, [h["val_acc"] for h in history], label="validation")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
