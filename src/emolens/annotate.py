"""Legible annotations: boxes, labels and probability panels that do not cover faces or each other.

:func:`draw_faces` lays out every face of an image together. Each face gets its box and a label
tag (text on a backing whose text colour contrasts with it); its probability panel (dark backing,
light text: readable on any photo) goes to the first side of the face (right, left, below, above)
where it stays inside the image and covers no face and no other tag or panel. When no side is
free, the face keeps its compact label only. Sizes scale with the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: BGR colour per emotion, used by every drawing so a label always has the same colour.
COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (0, 200, 255),
    "sad": (200, 120, 40), "surprise": (230, 200, 0), "neutral": (170, 170, 170),
    "contempt": (60, 100, 140), "calm": (200, 200, 120),
}
FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class FaceMark:
    """What to draw for one face: ``box`` ``[x, y, w, h]``, ``label``, ``probs`` and the tag text."""

    box: Sequence[float] | np.ndarray
    label: str
    probs: dict[str, float] | None = None
    title: str | None = None


Rect = tuple[int, int, int, int]  # x0, y0, x1, y1


def _overlap(a: Rect, b: Rect) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _fits(r: Rect, w: int, h: int) -> bool:
    return r[0] >= 0 and r[1] >= 0 and r[2] <= w and r[3] <= h


def text_color(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with a BGR backing colour."""
    b, g, r = bgr
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _text(image: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int],
          thick: int) -> None:
    import cv2

    cv2.putText(image, text, org, FONT, scale, color, thick, cv2.LINE_AA)


@dataclass
class Placement:
    """Where one face's parts go: ``box``, ``tag`` and ``panel`` (None: no room) as pixel rects."""

    box: Rect
    tag: Rect
    text: str
    scale: float
    panel: Rect | None = None
    row: int = 0


def layout(shape: tuple[int, ...], marks: Sequence[FaceMark], bars: bool = True) -> list[Placement]:
    """Place every face's tag and (with ``bars``) probability panel in an image of ``shape``.

    Tags go above, below or inside the top of their box, whichever covers the least of the other
    faces and tags; panels only where they cover nothing (else they are left out).
    """
    import cv2

    h_img, w_img = shape[:2]
    base = max(0.4, min(1.4, min(h_img, w_img) / 800))  # text scale for this image size
    thick = _thickness(shape)
    boxes: list[Rect] = []
    for m in marks:
        x, y, w, h = (int(round(float(v))) for v in m.box)
        boxes.append((x, y, x + w, y + h))
    taken: list[Rect] = []  # tags and panels already placed

    def cost(r: Rect, own: int) -> int:
        return sum(_overlap(r, b) for i, b in enumerate(boxes) if i != own) + sum(_overlap(r, t) for t in taken)

    out = []
    for i, m in enumerate(marks):
        x0, y0, x1, y1 = boxes[i]
        text = m.title or (f"{m.label} {m.probs[m.label]:.0%}" if m.probs and m.label in m.probs else m.label)
        scale = max(0.35, min(base, (x1 - x0) / 110))
        (tw, th), bl = cv2.getTextSize(text, FONT, scale, thick)
        tw, th = tw + 6, th + bl + 6
        tx = min(max(0, x0), max(0, w_img - tw))
        options = [(tx, y0 - th), (tx, y1), (tx, y0)]  # above, below, inside the top of the box
        tag = min(((ox, oy, ox + tw, oy + th) for ox, oy in options),
                  key=lambda r: (not _fits(r, w_img, h_img), cost(r, i)))
        top = min(max(0, tag[1]), max(0, h_img - th))
        tag = (tag[0], top, tag[2], top + th)
        taken.append(tag)
        out.append(Placement(boxes[i], tag, text, scale))
    for i, m in enumerate(marks):  # panels last: they are optional, the tags are not
        if bars and m.probs:
            placed = _place_panel(m.probs, boxes[i], out[i].tag, out[i].scale, (w_img, h_img),
                                  lambda r, i=i: cost(r, i))
            if placed is not None:
                out[i].panel, out[i].row = placed
                taken.append(placed[0])
    return out


def _thickness(shape: tuple[int, ...]) -> int:
    return max(1, round(max(0.4, min(1.4, min(shape[:2]) / 800)) * 1.5))


def draw_faces(image: np.ndarray, marks: Sequence[FaceMark], bars: bool = True) -> np.ndarray:
    """Draw every face of one image in place (boxes, tags, panels placed by :func:`layout`)."""
    import cv2

    thick = _thickness(image.shape)
    places = layout(image.shape, marks, bars)
    for m, p in zip(marks, places, strict=True):
        cv2.rectangle(image, p.box[:2], p.box[2:], COLORS.get(m.label, (255, 255, 255)), thick + 1)
    for m, p in zip(marks, places, strict=True):
        color = COLORS.get(m.label, (255, 255, 255))
        cv2.rectangle(image, p.tag[:2], p.tag[2:], color, -1)
        (_, th), bl = cv2.getTextSize(p.text, FONT, p.scale, thick)
        _text(image, p.text, (p.tag[0] + 3, p.tag[3] - bl - 3), p.scale, text_color(color), thick)
        if p.panel is not None and m.probs:
            _draw_panel(image, m.probs, (p.panel, p.row), p.scale)
    return image


def _panel_size(probs: dict[str, float], scale: float) -> tuple[int, int, int]:
    import cv2

    ps = max(0.32, scale * 0.75)
    (cw, ch), bl = cv2.getTextSize("surprise 0.00", FONT, ps, 1)
    row = ch + bl + 4
    bar = max(30, int(cw * 0.8))
    return bar + cw + 12, row * min(7, len(probs)) + 6, row


def _place_panel(probs: dict[str, float], box: Rect, tag: Rect, scale: float, size: tuple[int, int],
                 cost) -> tuple[Rect, int] | None:  # noqa: ANN001
    pw, ph, row = _panel_size(probs, scale)
    w_img, h_img = size
    x0, y0, x1, y1 = box
    gap = 4
    cands = [(x1 + gap, y0), (max(x1, tag[2]) + gap, y0), (x0 - gap - pw, y0), (x0, max(y1, tag[3]) + gap),
             (x0, min(y0, tag[1]) - gap - ph)]
    for cx, cy in cands:
        r = (cx, cy, cx + pw, cy + ph)
        if _fits(r, w_img, h_img) and cost(r) == 0:
            return r, row
    return None


def _draw_panel(image: np.ndarray, probs: dict[str, float], placed: tuple[Rect, int], scale: float) -> None:
    import cv2

    (x0, y0, x1, y1), row = placed
    ps = max(0.32, scale * 0.75)
    (cw, _), _ = cv2.getTextSize("surprise 0.00", FONT, ps, 1)
    bar = (x1 - x0) - cw - 12
    sub = image[y0:y1, x0:x1]
    sub[:] = (sub * 0.25).astype(image.dtype)  # dark translucent backing
    for k, (name, p) in enumerate(sorted(probs.items(), key=lambda kv: -kv[1])[:7]):
        by = y0 + 3 + k * row
        cv2.rectangle(image, (x0 + 4, by + 2), (x0 + 4 + bar, by + row - 2), (70, 70, 70), -1)
        cv2.rectangle(image, (x0 + 4, by + 2), (x0 + 4 + int(bar * p), by + row - 2), COLORS.get(name, (255,) * 3), -1)
        _text(image, f"{name[:8]} {p:.2f}", (x0 + bar + 8, by + row - 4), ps, (255, 255, 255), 1)


def draw_hud(image: np.ndarray, text: str) -> np.ndarray:
    """Draw a small status line (e.g. ``"12.3 FPS  2 faces"``) in the top-left corner, in place."""
    import cv2

    scale = max(0.45, image.shape[0] / 900)
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    cv2.rectangle(image, (0, 0), (tw + 10, th + base + 10), (0, 0, 0), -1)
    _text(image, text, (5, th + 5), scale, (255, 255, 255), 1)
    return image
