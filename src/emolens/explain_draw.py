"""Pictures of explanations: a face with its heat maps, the grid of layer activations, a photo with
every face's map blended in, and the per-region text table."""

from __future__ import annotations

import numpy as np

from emolens.explanations import Explanation
from emolens.media import as_bgr


def heat_colors(heat: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """BGR colours (JET) and blending weights 0..1 for a heat map's positive part (``scale``: its max)."""
    import cv2

    pos = np.clip(heat, 0, None)
    top = float(scale if scale is not None else pos.max())
    norm = pos / top if top > 1e-6 else np.zeros_like(pos)
    colors = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return colors, norm


def _tag(pic: np.ndarray, text: str, x: int = 0, y: int = 0, scale: float = 0.5) -> None:
    """White text on a black box at ``(x, y)`` (top-left), in place."""
    import cv2

    (tw, th), _ = cv2.getTextSize(text, 0, scale, 1)
    cv2.rectangle(pic, (x, y), (x + tw + 8, y + th + 10), (0, 0, 0), -1)
    cv2.putText(pic, text, (x + 4, y + th + 4), 0, scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw_face_heatmap(e: Explanation, size: int = 192) -> np.ndarray:
    """BGR picture: the aligned face, then the face with each method's heat map overlaid (``size`` px
    each), labelled with the class and the method."""
    import cv2

    crop = e.crop if e.crop.ndim == 3 else cv2.cvtColor(e.crop, cv2.COLOR_GRAY2BGR)
    face = cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)
    panels = [face]
    for method, heat in e.heatmaps.items():
        colors, _ = heat_colors(cv2.resize(heat, (size, size), interpolation=cv2.INTER_LINEAR))
        panel = cv2.addWeighted(face, 0.5, colors, 0.5, 0)
        _tag(panel, method, 0, size - 24, 0.45)
        panels.append(panel)
    pic = np.concatenate(panels, axis=1)
    _tag(pic, f"{e.label} {e.probs[e.label]:.2f}")
    return pic


def draw_activation_grid(e: Explanation, cell: int = 64) -> np.ndarray:
    """BGR grid of the conv-stage activations: one row per stage (and network), the channel mean
    then the most active channels, each scaled to its own maximum (VIRIDIS, dark = 0)."""
    import cv2

    if not e.activations:
        raise ValueError("this explanation has no activations (the model has no activation outputs)")
    label_w, head = 110, 22
    cols = 1 + max(len(a.channels) for a in e.activations)
    pic = np.full((head + len(e.activations) * (cell + 2), label_w + cols * (cell + 2), 3), 255, np.uint8)
    cv2.putText(pic, "mean", (label_w + 4, 16), 0, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(pic, "most active channels (#index)", (label_w + cell + 8, 16), 0, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for r, a in enumerate(e.activations):
        y = head + r * (cell + 2)
        cv2.putText(pic, a.name, (4, y + cell // 2), 0, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(pic, f"{a.mean.shape[0]}x{a.mean.shape[1]}", (4, y + cell // 2 + 18), 0, 0.4, (90, 90, 90), 1,
                    cv2.LINE_AA)
        for c, (m, title) in enumerate([(a.mean, ""), *((mp, f"#{ch}") for mp, ch in zip(a.maps, a.channels))]):
            top = float(m.max())
            norm = (m / top * 255).astype(np.uint8) if top > 1e-6 else np.zeros(m.shape, np.uint8)
            tile = cv2.applyColorMap(cv2.resize(norm, (cell, cell), interpolation=cv2.INTER_NEAREST),
                                     cv2.COLORMAP_VIRIDIS)
            if title:
                cv2.putText(tile, title, (2, cell - 4), 0, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
            x = label_w + c * (cell + 2)
            pic[y: y + cell, x: x + cell] = tile
    return pic


def draw_image_heatmaps(image: np.ndarray, explanations: list[Explanation], method: str | None = None) -> np.ndarray:
    """A copy of a BGR photo with each face's heat map (of ``method``, default each face's first) blended
    in where it lies, plus box and label."""
    from emolens.annotate import FaceMark, draw_faces

    out = as_bgr(image).astype(np.float32)
    for e in explanations:
        x, y, w, h = e.image_box
        if w == 0 or h == 0:
            continue
        m = method or e.method
        colors, weight = heat_colors(e.image_heatmaps[m], float(np.clip(e.heatmaps[m], 0, None).max()))
        alpha = (0.65 * np.sqrt(weight))[..., None]
        region = out[y: y + h, x: x + w]
        out[y: y + h, x: x + w] = region * (1 - alpha) + colors * alpha
    return draw_faces(out.clip(0, 255).astype(np.uint8), [FaceMark(e.face.box, e.label, e.probs) for e in
                                                          explanations], bars=False)


def regions_table(explanations: list[Explanation]) -> str:
    """Plain-text table: per face and region, the change of the face's own class and the class that
    gains most when the region is masked."""
    lines = [f"{'face':>4}  {'label':<9} {'region':<6} {'own class':>9}  most raised"]
    for i, e in enumerate(explanations):
        for region, deltas in e.regions.items():
            gain = max(deltas, key=deltas.get)
            lines.append(f"{i:>4}  {e.label:<9} {region:<6} {deltas[e.label]:>+9.3f}  {gain} {deltas[gain]:+.3f}")
    return "\n".join(lines)
