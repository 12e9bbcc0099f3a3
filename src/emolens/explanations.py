"""Why a face got its label: occlusion heat maps and eyes / nose / mouth evidence (onnxruntime only).

:func:`occlusion_map` slides a grey patch over an aligned face and records how much the predicted
class's probability drops under each position (all occluded copies go through the model in one
batched call). :func:`region_deltas` masks the eyes and brows, the nose, or the mouth (rectangles
derived from the model's 5-point alignment template) and reports each class's probability change.
:func:`explain` does both for every face of a photo and warps the map back onto the photo.

>>> import emolens
>>> for e in emolens.explain("photo.jpg"):
...     print(e.box, e.label, e.regions["mouth"][e.label])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from emolens.expression import ExpressionModel, ModelSpec, default_model
from emolens.faces import Face
from emolens.labels import probs_dict
from emolens.media import DEFAULT_MAX_PIXELS, as_bgr, load_image

#: Value of the occluding patches and masks (mid grey, on 0..255 pixels).
GREY = 128
#: The facial regions of :func:`region_deltas`, in order.
REGIONS: tuple[str, ...] = ("eyes", "nose", "mouth")


def face_regions(spec: ModelSpec) -> dict[str, tuple[int, int, int, int]]:
    """Rectangles ``(x0, y0, x1, y1)`` (end exclusive) of the eyes and brows, the nose and the mouth in
    the aligned ``frame`` x ``frame`` crop, derived from the template (scaled by the eye distance)."""
    t = np.asarray(spec.template, np.float64)
    eye_r, eye_l, nose, mouth_r, mouth_l = t
    d = float(np.hypot(*(eye_l - eye_r)))
    eye_y = (eye_r[1] + eye_l[1]) / 2
    mouth_y = (mouth_r[1] + mouth_l[1]) / 2
    xs_eye, xs_mouth = sorted((eye_r[0], eye_l[0])), sorted((mouth_r[0], mouth_l[0]))
    boxes = {
        "eyes": (xs_eye[0] - 0.45 * d, eye_y - 0.55 * d, xs_eye[1] + 0.45 * d, eye_y + 0.3 * d),
        "nose": (nose[0] - 0.3 * d, eye_y + 0.3 * d, nose[0] + 0.3 * d, nose[1] + 0.15 * d),
        "mouth": (xs_mouth[0] - 0.3 * d, max(mouth_y - 0.25 * d, nose[1] + 0.15 * d),
                  xs_mouth[1] + 0.3 * d, mouth_y + 0.35 * d),
    }
    f = spec.frame
    return {k: (int(np.clip(round(x0), 0, f)), int(np.clip(round(y0), 0, f)),
                int(np.clip(round(x1), 0, f)), int(np.clip(round(y1), 0, f)))
            for k, (x0, y0, x1, y1) in boxes.items()}


def _positions(frame: int, patch: int, stride: int) -> list[int]:
    pos = list(range(0, frame - patch + 1, stride))
    if pos[-1] != frame - patch:
        pos.append(frame - patch)  # the last row/column of patches reaches the edge
    return pos


def occlusion_maps(model: ExpressionModel, crops: np.ndarray, patch: int = 8, stride: int = 4,
                   targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Occlusion heat maps ``float32 (N, frame, frame)`` of aligned ``crops`` and their probabilities.

    Each pixel's value is the mean drop of the target class's probability (default: the predicted
    class) over the grey patches covering it; negative where covering it raised the class.
    Returns ``(maps, probs)`` with ``probs`` ``(N, classes)`` of the unoccluded crops.
    """
    crops = np.asarray(crops)
    if crops.ndim == (2 if model.spec.color == "gray" else 3):
        crops = crops[None]
    frame = crops.shape[1]
    if not 1 <= stride <= patch <= frame:
        raise ValueError(f"need 1 <= stride ({stride}) <= patch ({patch}) <= frame ({frame})")
    probs = model.predict(crops)
    targets = probs.argmax(1) if targets is None else np.asarray(targets)
    pos = [(y, x) for y in _positions(frame, patch, stride) for x in _positions(frame, patch, stride)]
    count = np.zeros((frame, frame), np.float32)
    for y, x in pos:
        count[y: y + patch, x: x + patch] += 1
    maps = np.zeros((len(crops), frame, frame), np.float32)
    per_chunk = max(1, 4096 // len(pos))
    for start in range(0, len(crops), per_chunk):
        chunk = crops[start: start + per_chunk]
        copies = np.repeat(chunk, len(pos), axis=0)
        for i in range(len(chunk)):
            for j, (y, x) in enumerate(pos):
                copies[i * len(pos) + j, y: y + patch, x: x + patch] = GREY
        occluded = model.predict(copies).reshape(len(chunk), len(pos), -1)
        for i in range(len(chunk)):
            n = start + i
            drops = probs[n, targets[n]] - occluded[i, :, targets[n]]
            for j, (y, x) in enumerate(pos):
                maps[n, y: y + patch, x: x + patch] += drops[j]
    return maps / count, probs


def occlusion_map(model: ExpressionModel, crop: np.ndarray, patch: int = 8, stride: int = 4) -> np.ndarray:
    """Occlusion heat map ``float32 (frame, frame)`` of one aligned crop for its predicted class
    (see :func:`occlusion_maps`)."""
    return occlusion_maps(model, crop, patch, stride)[0][0]


def region_deltas(model: ExpressionModel, crop: np.ndarray) -> dict[str, dict[str, float]]:
    """``{region: {class: change}}``: each class's probability with the region masked in grey minus
    its probability on the intact crop (one batched call)."""
    crop = np.asarray(crop)
    boxes = face_regions(model.spec)
    copies = np.repeat(crop[None], len(REGIONS) + 1, axis=0)
    for i, name in enumerate(REGIONS, start=1):
        x0, y0, x1, y1 = boxes[name]
        copies[i, y0:y1, x0:x1] = GREY
    probs = model.predict(copies)
    return {name: {c: round(float(v), 4) for c, v in zip(model.labels, probs[i] - probs[0])}
            for i, name in enumerate(REGIONS, start=1)}


def alignment_matrix(face: Face, spec: ModelSpec) -> np.ndarray:
    """The 2x3 similarity that maps photo pixels into the aligned crop (as :func:`emolens.faces.align_face`)."""
    import cv2

    size = spec.frame
    if face.landmarks is not None:
        matrix, _ = cv2.estimateAffinePartial2D(face.landmarks.astype(np.float32),
                                                np.asarray(spec.template, np.float32), method=cv2.LMEDS)
        if matrix is not None:
            return matrix
    x, y, w, h = face.box
    s = size / (max(w, h) * 1.05)
    cx, cy = x + w / 2, y + h / 2
    return np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], dtype=np.float64)


def warp_to_image(heat: np.ndarray, matrix: np.ndarray, shape: tuple[int, ...]) -> tuple[list[int], np.ndarray]:
    """Warp a crop's heat map back onto the photo: ``([x, y, w, h], map)`` over the bounding box of the
    aligned frame inside an image of ``shape`` (0 outside the frame)."""
    import cv2

    f = heat.shape[0]
    inv = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [f, 0, 1], [0, f, 1], [f, f, 1]], np.float64) @ inv.T
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    x0, y0 = max(0, int(x0)), max(0, int(y0))
    x1, y1 = min(shape[1], int(x1)), min(shape[0], int(y1))
    if x1 <= x0 or y1 <= y0:
        return [x0, y0, 0, 0], np.zeros((0, 0), np.float32)
    shifted = matrix.copy()
    shifted[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)  # region pixel (u, v) = photo (u+x0, v+y0)
    warped = cv2.warpAffine(heat.astype(np.float32), shifted, (x1 - x0, y1 - y0),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
    return [x0, y0, x1 - x0, y1 - y0], warped


@dataclass
class Explanation:
    """Why one face got its label.

    ``heatmap``: occlusion map ``(frame, frame)`` over ``crop`` (the aligned face the model saw);
    ``image_heatmap``: the same map warped back onto the photo, covering ``image_box`` ``[x, y, w, h]``;
    ``regions``: ``{eyes|nose|mouth: {class: probability change when masked}}``.
    """

    face: Face
    label: str
    probs: dict[str, float]
    crop: np.ndarray = field(repr=False)
    heatmap: np.ndarray = field(repr=False)
    image_box: list[int]
    image_heatmap: np.ndarray = field(repr=False)
    regions: dict[str, dict[str, float]]

    @property
    def box(self) -> list[int]:
        """The face's ``[x, y, w, h]`` in pixels."""
        return self.face.to_dict()["box"]

    def to_dict(self) -> dict:
        """JSON-ready: box, score, label, probs, ``image_box`` and the region deltas (no arrays)."""
        return {**self.face.to_dict(), "label": self.label, "probs": self.probs, "image_box": self.image_box,
                "regions": self.regions}


def explain_faces(model: ExpressionModel, image: np.ndarray, faces: list[Face], patch: int = 8,
                  stride: int = 4) -> list[Explanation]:
    """Explanations for already-detected ``faces`` of a BGR image."""
    if not faces:
        return []
    crops = model.align(image, faces)
    maps, probs = occlusion_maps(model, crops, patch, stride)
    out = []
    for face, crop, heat, p in zip(faces, crops, maps, probs):
        image_box, image_heat = warp_to_image(heat, alignment_matrix(face, model.spec), image.shape)
        out.append(Explanation(face, model.labels[int(p.argmax())], probs_dict(p, model.labels), crop, heat,
                               image_box, image_heat, region_deltas(model, crop)))
    return out


def explain(image: str | os.PathLike | np.ndarray, model: str | os.PathLike | ExpressionModel = "default",
            detector: str = "yunet", patch: int = 8, stride: int = 4,
            max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[Explanation]:
    """Find every face in a photo (path or BGR/gray array) and explain its expression label.

    Raises :class:`~emolens.media.MediaError` for an unreadable file, ``ValueError`` for a bad model name.
    """
    from emolens.faces import make_detector

    net = model if isinstance(model, ExpressionModel) else default_model(str(model))
    array = load_image(image, max_pixels) if isinstance(image, (str, os.PathLike)) else as_bgr(image)
    return explain_faces(net, array, make_detector(detector).detect(array), patch, stride)


def deletion_test(model: ExpressionModel, crops: np.ndarray, fraction: float = 0.2, patch: int = 8,
                  stride: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Faithfulness of the occlusion maps: per face, the predicted class's probability drop when the
    ``fraction`` most salient pixels of the network's input window are set to grey (``salient``), and
    when as many random pixels are: ``random`` takes the top of a random map with the same blob
    structure (random patch scores), ``pixels`` scattered single pixels (a harsher, noise-like mask).
    Returns ``{"salient": (N,), "random": (N,), "pixels": (N,)}``."""
    crops = np.asarray(crops)
    maps, probs = occlusion_maps(model, crops, patch, stride)
    targets = probs.argmax(1)
    frame, crop = crops.shape[1], model.crop
    off = (frame - crop) // 2
    k = int(round(fraction * crop * crop))
    rng = np.random.default_rng(seed)
    masked = {name: crops.copy() for name in ("salient", "random", "pixels")}
    for i in range(len(crops)):
        blobs = _random_map(frame, patch, stride, rng)[off: off + crop, off: off + crop].ravel()
        window = maps[i, off: off + crop, off: off + crop].ravel()
        for name, idx in (("salient", np.argsort(-window, kind="stable")[:k]),
                          ("random", np.argsort(-blobs, kind="stable")[:k]),
                          ("pixels", rng.choice(crop * crop, k, replace=False))):
            ys, xs = np.unravel_index(idx, (crop, crop))
            masked[name][i, ys + off, xs + off] = GREY
    rows = np.arange(len(crops))
    base = probs[rows, targets]
    return {name: base - model.predict(m)[rows, targets] for name, m in masked.items()}


def _random_map(frame: int, patch: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """A heat map built like an occlusion map but from random patch scores (same blob structure)."""
    heat = np.zeros((frame, frame), np.float32)
    for y in _positions(frame, patch, stride):
        for x in _positions(frame, patch, stride):
            heat[y: y + patch, x: x + patch] += rng.random()
    return heat + rng.random((frame, frame)).astype(np.float32) * 1e-3  # random order among ties


def heat_colors(heat: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """BGR colours (JET) and blending weights 0..1 for a heat map's positive part (``scale``: its max)."""
    import cv2

    pos = np.clip(heat, 0, None)
    top = float(scale if scale is not None else pos.max())
    norm = pos / top if top > 1e-6 else np.zeros_like(pos)
    colors = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return colors, norm


def draw_face_heatmap(e: Explanation, size: int = 192) -> np.ndarray:
    """BGR picture: the aligned face beside it with its heat map overlaid, ``size`` px each, labelled."""
    import cv2

    crop = e.crop if e.crop.ndim == 3 else cv2.cvtColor(e.crop, cv2.COLOR_GRAY2BGR)
    face = cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC)
    colors, _ = heat_colors(cv2.resize(e.heatmap, (size, size), interpolation=cv2.INTER_CUBIC))
    overlay = cv2.addWeighted(face, 0.5, colors, 0.5, 0)
    pic = np.concatenate([face, overlay], axis=1)
    text = f"{e.label} {e.probs[e.label]:.2f}"
    (tw, th), _ = cv2.getTextSize(text, 0, 0.5, 1)
    cv2.rectangle(pic, (0, 0), (tw + 8, th + 10), (0, 0, 0), -1)
    cv2.putText(pic, text, (4, th + 4), 0, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return pic


def draw_image_heatmaps(image: np.ndarray, explanations: list[Explanation]) -> np.ndarray:
    """A copy of a BGR photo with each face's heat map blended in where it lies, plus box and label."""
    from emolens.annotate import FaceMark, draw_faces

    out = as_bgr(image).astype(np.float32)
    for e in explanations:
        x, y, w, h = e.image_box
        if w == 0 or h == 0:
            continue
        colors, weight = heat_colors(e.image_heatmap, float(np.clip(e.heatmap, 0, None).max()))
        alpha = (0.65 * np.sqrt(weight))[..., None]
        region = out[y: y + h, x: x + w]
        out[y: y + h, x: x + w] = region * (1 - alpha) + colors * alpha
    return draw_faces(out.clip(0, 255).astype(np.uint8), [FaceMark(e.face.box, e.label, e.probs) for e in
                                                          explanations], bars=False)
