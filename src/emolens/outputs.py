"""Writers and drawings: JSON files, tables, annotated images."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: BGR colour per emotion, used by every drawing so a label always has the same colour.
COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (0, 200, 255),
    "sad": (200, 120, 40), "surprise": (230, 200, 0), "neutral": (170, 170, 170),
    "contempt": (60, 100, 140), "calm": (200, 200, 120),
}


def write_json(obj: object, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented UTF-8 JSON, creating parent folders (atomic replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def draw_face(
    image: np.ndarray,
    box: Sequence[float],
    label: str,
    probs: dict[str, float] | None = None,
    title: str | None = None,
    bars: bool = True,
) -> None:
    """Draw one face in place: box, ``title`` (default: label and probability) and probability bars."""
    import cv2

    h_img, w_img = image.shape[:2]
    x, y, w, h = (int(round(v)) for v in box)
    color = COLORS.get(label, (255, 255, 255))
    thick = max(1, round(min(h_img, w_img) / 300))
    cv2.rectangle(image, (x, y), (x + w, y + h), color, thick + 1)
    text = title or (f"{label} {probs[label]:.0%}" if probs and label in probs else label)
    scale = max(0.4, min(1.2, w / 160))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    ty = y - 4 if y - th - 8 > 0 else y + h + th + 4
    cv2.rectangle(image, (x, ty - th - 4), (x + tw + 4, ty + base - 2), color, -1)
    cv2.putText(image, text, (x + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    if not (bars and probs):
        return
    bar_w = max(40, min(120, w))
    row = max(8, int(12 * scale))
    bx = x + w + 4 if x + w + 4 + bar_w + 60 < w_img else max(0, x - bar_w - 64)
    for i, (name, p) in enumerate(sorted(probs.items(), key=lambda kv: -kv[1])[:7]):
        by = y + i * (row + 2)
        if by + row > h_img:
            break
        cv2.rectangle(image, (bx, by), (bx + bar_w, by + row), (50, 50, 50), -1)
        cv2.rectangle(image, (bx, by), (bx + int(bar_w * p), by + row), COLORS.get(name, (255, 255, 255)), -1)
        cv2.putText(image, f"{name[:8]} {p:.2f}", (bx + bar_w + 3, by + row - 1), cv2.FONT_HERSHEY_SIMPLEX,
                    row / 26, (255, 255, 255), 1, cv2.LINE_AA)


def annotate_image(image: np.ndarray, faces: Sequence[object]) -> np.ndarray:
    """A copy of a BGR image with every :class:`~emolens.api.FaceResult` drawn on it."""
    out = image.copy()
    for f in faces:
        draw_face(out, f.face.box, f.label, f.probs)  # type: ignore[attr-defined]
    return out


def faces_table(results: Sequence[object]) -> str:
    """Plain-text table of :class:`~emolens.api.ImageResult` values (one row per face)."""
    lines = [f"{'file':<40} {'face':>4}  {'box (x,y,w,h)':<22} {'label':<9} {'prob':>5}  top-2"]
    for r in results:
        name = Path(r.path).name if r.path else "<array>"  # type: ignore[attr-defined]
        if r.error:  # type: ignore[attr-defined]
            lines.append(f"{name:<40}  ERROR: {r.error}")  # type: ignore[attr-defined]
            continue
        if not r.faces:  # type: ignore[attr-defined]
            lines.append(f"{name:<40}  no face found")
        for i, f in enumerate(r.faces):  # type: ignore[attr-defined]
            top = sorted(f.probs.items(), key=lambda kv: -kv[1])
            box = ",".join(str(v) for v in f.box)
            second = f"{top[1][0]} {top[1][1]:.2f}" if len(top) > 1 else ""
            lines.append(f"{name:<40} {i:>4}  {box:<22} {f.label:<9} {top[0][1]:>5.2f}  {second}")
    return "\n".join(lines)
