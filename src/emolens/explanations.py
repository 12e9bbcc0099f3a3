"""Why a face got its label: heat maps, layer activations and eyes / nose / mouth evidence (onnxruntime only).

Two heat-map methods: :func:`occlusion_map` slides a grey patch over an aligned face and records
how much the predicted class's probability drops under each position (all occluded copies go
through the model in one batched call); :func:`gradcam_maps` is Grad-CAM (HiResCAM form) on conv
stage 2 of 4, from the activations and class-score gradients the shipped models export
(:mod:`emolens.train.face_explain_export`). :func:`activation_maps` summarises each conv stage
(mean over channels and the most active channels). :func:`region_deltas` masks the eyes and brows,
the nose, or the mouth (rectangles derived from the model's 5-point alignment template) and reports
each class's probability change. :func:`explain` does all of it for every face of a photo and warps
the maps back onto the photo. :func:`deletion_test` measures whether a method's maps are faithful.

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
#: Heat-map methods of :func:`saliency_maps` / :func:`explain`.
METHODS: tuple[str, ...] = ("occlusion", "gradcam")
#: How :func:`deletion_test` removes pixels: a blurred copy of the face (standard in deletion
#: metrics) or mid grey.
OPERATORS: tuple[str, ...] = ("blur", "grey")
#: Gaussian sigma (aligned-face pixels, of 48) of the ``blur`` operator: removes eye- and mouth-sized
#: detail, keeps the face's overall brightness.
BLUR_SIGMA = 4.0
#: Channels shown per conv stage by :func:`activation_maps` (besides the channel mean).
TOP_CHANNELS = 7


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
    changes = region_changes(model, np.asarray(crop)[None])[1][0]
    return {name: {c: round(float(v), 4) for c, v in zip(model.labels, changes[i])} for i, name in enumerate(REGIONS)}


def region_changes(model: ExpressionModel, crops: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Batched region masking: ``(probs (N, classes), changes (N, regions, classes))``, the change of
    each class's probability when each region of :data:`REGIONS` is masked in grey."""
    crops = np.asarray(crops)
    boxes = face_regions(model.spec)
    probs, changes = [], []
    for start in range(0, len(crops), batch):
        chunk = crops[start: start + batch]
        copies = np.repeat(chunk[:, None], len(REGIONS) + 1, axis=1)
        for i, name in enumerate(REGIONS, start=1):
            x0, y0, x1, y1 = boxes[name]
            copies[:, i, y0:y1, x0:x1] = GREY
        p = model.predict(copies.reshape(-1, *chunk.shape[1:])).reshape(len(chunk), len(REGIONS) + 1, -1)
        probs.append(p[:, 0])
        changes.append(p[:, 1:] - p[:, :1])
    return np.concatenate(probs), np.concatenate(changes)


def region_evidence(model: ExpressionModel, faces: np.ndarray, labels: np.ndarray) -> dict:
    """Which region carries each class, over a labelled set of aligned faces: per true class, the
    mean drop of that class's probability when the eyes and brows, the nose or the mouth is masked
    in grey (positive: the region supports the class). Returns ``{"regions", "classes", "count",
    "drop": {class: {region: mean drop}}, "share": {class: {region: drop / sum of positive drops}}}``."""
    labels = np.asarray(labels)
    _, changes = region_changes(model, faces)
    drop, share, count = {}, {}, {}
    for c, name in enumerate(model.labels):
        rows = changes[labels == c, :, c]  # (n, regions): change of the true class
        count[name] = int(len(rows))
        mean = -rows.mean(0) if len(rows) else np.zeros(len(REGIONS))
        drop[name] = {r: round(float(v), 4) for r, v in zip(REGIONS, mean)}
        pos = np.clip(mean, 0, None)
        share[name] = {r: round(float(v / pos.sum()), 3) if pos.sum() > 0 else 0.0 for r, v in zip(REGIONS, pos)}
    return {"regions": list(REGIONS), "classes": list(model.labels), "count": count, "drop": drop, "share": share,
            "mask": "grey (128) rectangles from the 5-point alignment template (emolens.explanations.face_regions)"}


def region_evidence_table(evidence: dict) -> str:
    """Markdown table of :func:`region_evidence`: mean drop of the true class per region, the region
    carrying most of it."""
    regions = evidence["regions"]
    lines = ["| class | faces | " + " | ".join(f"drop, {r} masked" for r in regions) + " | main region |",
             "|---|---:|" + "---:|" * len(regions) + "---|"]
    for c in evidence["classes"]:
        d = evidence["drop"][c]
        top = max(regions, key=lambda r: d[r])
        lines.append(f"| {c} | {evidence['count'][c]} | " + " | ".join(f"{d[r]:+.3f}" for r in regions)
                     + f" | {top} ({evidence['share'][c][top]:.0%}) |")
    return "\n".join(lines)


def plot_region_evidence(evidence: dict, path: str | os.PathLike, title: str = "") -> None:
    """Grouped bar chart of :func:`region_evidence` (one group per class, one bar per region) as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes, regions = evidence["classes"], evidence["regions"]
    x = np.arange(len(classes))
    width = 0.8 / len(regions)
    fig, ax = plt.subplots(figsize=(7, 3))
    for i, (r, color) in enumerate(zip(regions, ("#4c72b0", "#999999", "#dd8452"))):
        ax.bar(x + (i - (len(regions) - 1) / 2) * width, [evidence["drop"][c][r] for c in classes], width,
               label=f"{r} masked", color=color)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, classes)
    ax.set_ylabel("drop of the true class's prob.")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def explain_block(model: ExpressionModel) -> dict | None:
    """The model's ``explain`` metadata (graph outputs for stage activations and class-score gradients),
    or None for a model exported without them."""
    import json

    from emolens.expression import META_KEY

    raw = model.session.get_modelmeta().custom_metadata_map.get(META_KEY)
    block = json.loads(raw).get("explain") if raw else None
    return block if block and block.get("branches") else None


def _require_block(model: ExpressionModel) -> dict:
    block = explain_block(model)
    if block is None:
        raise ValueError(f"{model.path}: this model has no Grad-CAM/activation outputs; add them with "
                         "`python -m emolens.train.face_explain_export MODEL.onnx`")
    return block


def _run_explain(model: ExpressionModel, crops: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """The explain outputs ``names`` for aligned crops (the model's own input window)."""
    block = _require_block(model)
    off = (crops.shape[1] - model.crop) // 2
    x = crops[:, off: off + model.crop, off: off + model.crop].astype(np.float32)
    x = x[:, None] if model.spec.color == "gray" else x.transpose(0, 3, 1, 2)
    return model.session.run(names, {model.input_name: np.ascontiguousarray(x), block["switch"]: np.array(True)})


def _to_frame(cam: np.ndarray, crop: int, frame: int, flip: bool) -> np.ndarray:
    """A stage-resolution map ``(h, w)`` resized (bilinear) over the network's ``crop`` x ``crop`` input
    window of the ``frame`` x ``frame`` aligned face (as Grad-CAM does); 0 on the margin the network
    does not see."""
    import cv2

    up = cv2.resize(cam.astype(np.float32), (crop, crop), interpolation=cv2.INTER_LINEAR)
    if flip:
        up = up[:, ::-1]
    off = (frame - crop) // 2
    return cv2.copyMakeBorder(np.ascontiguousarray(up), off, frame - crop - off, off, frame - crop - off,
                              cv2.BORDER_CONSTANT, value=0)


def gradcam_maps(model: ExpressionModel, crops: np.ndarray, targets: np.ndarray | None = None,
                 batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heat maps ``float32 (N, frame, frame)`` of aligned ``crops`` and their probabilities.

    For every network and view of the model (an ensemble's members, a mirrored view), the activations
    of the conv stage named by the model's explain metadata (``cam_stage``: stage 2 of 4, 22x22, in the
    shipped models, chosen by the deletion test on FER2013 PublicTest) are multiplied element-wise by
    the gradient of the target class's logit (default: the predicted class) and summed over channels
    (the HiResCAM form of Grad-CAM, which keeps the gradient's spatial detail instead of averaging it
    per channel); the map is brought back to the aligned face (mirrored views flipped back) and the
    maps of all networks and views are averaged. No final ReLU (negative where the evidence speaks
    against the class), logit units. Returns ``(maps, probs)``.
    """
    crops = np.asarray(crops)
    if crops.ndim == (2 if model.spec.color == "gray" else 3):
        crops = crops[None]
    branches = _require_block(model)["branches"]
    if any("cam_grad" not in b for b in branches):
        raise ValueError("the model's explain outputs predate stage gradients; re-run "
                         "`python -m emolens.train.face_explain_export MODEL.onnx`")
    probs = model.predict(crops)
    targets = probs.argmax(1) if targets is None else np.asarray(targets)
    frame = crops.shape[1]
    maps = np.zeros((len(crops), frame, frame), np.float32)
    names = [n for b in branches for n in (b["stages"][b["cam_stage"] - 1], b["cam_grad"])]
    for start in range(0, len(crops), batch):
        outs = _run_explain(model, crops[start: start + batch], names)
        for j, b in enumerate(branches):
            acts, grads = outs[2 * j], outs[2 * j + 1]  # (n, F, h, w), (n, C, F, h, w)
            t = targets[start: start + len(acts)]
            cams = np.einsum("nfhw,nfhw->nhw", grads[np.arange(len(acts)), t], acts)
            for i, cam in enumerate(cams):
                maps[start + i] += _to_frame(cam, model.crop, frame, b["flip"])
    return maps / len(branches), probs


@dataclass
class StageActivation:
    """One conv stage of one network for one face: ``mean`` ``(h, w)`` over all channels, and the
    ``top`` channels with the highest mean activation (``channels`` their indices, ``maps``
    ``(k, h, w)``); ``name`` e.g. ``stage2`` or ``net1/stage2`` for an ensemble."""

    name: str
    mean: np.ndarray = field(repr=False)
    channels: list[int]
    maps: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        """JSON-ready summary (no arrays): name, size, channel indices and their mean activations."""
        return {"name": self.name, "size": list(self.mean.shape), "channels": self.channels,
                "channel_means": [round(float(m.mean()), 4) for m in self.maps]}


def activation_maps(model: ExpressionModel, crops: np.ndarray, top: int = TOP_CHANNELS,
                    batch: int = 16) -> list[list[StageActivation]]:
    """Per face, every conv stage's activations (last conv of the stage, after its ReLU) of each
    network (un-mirrored view): the channel mean and the ``top`` most active channels."""
    crops = np.asarray(crops)
    if crops.ndim == (2 if model.spec.color == "gray" else 3):
        crops = crops[None]
    branches = [b for b in _require_block(model)["branches"] if not b["flip"]]
    names = [n for b in branches for n in b["stages"]]
    out: list[list[StageActivation]] = []
    for start in range(0, len(crops), batch):
        arrays = _run_explain(model, crops[start: start + batch], names)
        for i in range(len(arrays[0])):
            stages, k = [], 0
            for b in branches:
                for s in range(len(b["stages"])):
                    a = arrays[k][i]
                    k += 1
                    order = np.argsort(-a.mean((1, 2)), kind="stable")[:top]
                    name = f"stage{s + 1}" if len(branches) == 1 else f"net{b['member'] + 1}/stage{s + 1}"
                    stages.append(StageActivation(name, a.mean(0), [int(c) for c in order], a[order].copy()))
            out.append(stages)
    return out


def saliency_maps(model: ExpressionModel, crops: np.ndarray, method: str = "occlusion", patch: int = 8,
                  stride: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Heat maps ``(N, frame, frame)`` of ``method`` (``occlusion`` or ``gradcam``) and the probabilities."""
    if method == "occlusion":
        return occlusion_maps(model, crops, patch, stride)
    if method == "gradcam":
        return gradcam_maps(model, crops)
    raise ValueError(f"unknown heat-map method {method!r}; choose from {', '.join(METHODS)}")


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

    ``heatmap``: the heat map ``(frame, frame)`` over ``crop`` (the aligned face the model saw) of
    ``method`` (the first method asked for); ``image_heatmap``: the same map warped back onto the
    photo, covering ``image_box`` ``[x, y, w, h]``; ``heatmaps`` / ``image_heatmaps``: ``{method: map}``
    for every method asked for; ``regions``: ``{eyes|nose|mouth: {class: probability change when
    masked}}``; ``activations``: per conv stage, the channel mean and most active channels (empty for
    a model without activation outputs).
    """

    face: Face
    label: str
    probs: dict[str, float]
    crop: np.ndarray = field(repr=False)
    heatmap: np.ndarray = field(repr=False)
    image_box: list[int]
    image_heatmap: np.ndarray = field(repr=False)
    regions: dict[str, dict[str, float]]
    method: str = "occlusion"
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    image_heatmaps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    activations: list[StageActivation] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.heatmaps = self.heatmaps or {self.method: self.heatmap}
        self.image_heatmaps = self.image_heatmaps or {self.method: self.image_heatmap}

    @property
    def box(self) -> list[int]:
        """The face's ``[x, y, w, h]`` in pixels."""
        return self.face.to_dict()["box"]

    def to_dict(self) -> dict:
        """JSON-ready: box, score, label, probs, ``image_box``, the region deltas, the methods and an
        activation summary (no arrays)."""
        return {**self.face.to_dict(), "label": self.label, "probs": self.probs, "image_box": self.image_box,
                "regions": self.regions, "methods": list(self.heatmaps),
                "activations": [a.to_dict() for a in self.activations]}


def _methods(method: str) -> list[str]:
    if method == "both":
        return list(METHODS)
    if method not in METHODS:
        raise ValueError(f"unknown heat-map method {method!r}; choose from {', '.join(METHODS)} or both")
    return [method]


def explain_faces(model: ExpressionModel, image: np.ndarray, faces: list[Face], patch: int = 8,
                  stride: int = 4, method: str = "occlusion", activations: bool = True) -> list[Explanation]:
    """Explanations for already-detected ``faces`` of a BGR image; ``method``: ``occlusion``,
    ``gradcam`` or ``both``; ``activations``: also summarise the conv stages (when the model has them)."""
    methods = _methods(method)
    if not faces:
        return []
    crops = model.align(image, faces)
    maps = {m: saliency_maps(model, crops, m, patch, stride) for m in methods}
    probs = maps[methods[0]][1]
    acts = activation_maps(model, crops) if activations and explain_block(model) else [[] for _ in faces]
    out = []
    for i, (face, crop, p) in enumerate(zip(faces, crops, probs)):
        matrix = alignment_matrix(face, model.spec)
        heat = {m: maps[m][0][i] for m in methods}
        warped = {m: warp_to_image(h, matrix, image.shape) for m, h in heat.items()}
        image_box = warped[methods[0]][0]
        out.append(Explanation(face, model.labels[int(p.argmax())], probs_dict(p, model.labels), crop,
                               heat[methods[0]], image_box, warped[methods[0]][1], region_deltas(model, crop),
                               methods[0], heat, {m: w[1] for m, w in warped.items()}, acts[i]))
    return out


def explain(image: str | os.PathLike | np.ndarray, model: str | os.PathLike | ExpressionModel = "default",
            detector: str = "yunet", patch: int = 8, stride: int = 4,
            max_pixels: int | None = DEFAULT_MAX_PIXELS, device: str = "cpu", method: str = "occlusion",
            activations: bool = True) -> list[Explanation]:
    """Find every face in a photo (path or BGR/gray array) and explain its expression label
    (``method``: ``occlusion``, ``gradcam`` or ``both``; ``device``: where the model runs, ``cpu``,
    ``cuda`` or ``auto``).

    Raises :class:`~emolens.media.MediaError` for an unreadable file, ``ValueError`` for a bad model
    name or method.
    """
    from emolens.faces import make_detector

    _methods(method)
    net = model if isinstance(model, ExpressionModel) else default_model(str(model), device)
    array = load_image(image, max_pixels) if isinstance(image, (str, os.PathLike)) else as_bgr(image)
    return explain_faces(net, array, make_detector(detector).detect(array), patch, stride, method, activations)


def removal_fill(crops: np.ndarray, operator: str = "blur") -> np.ndarray:
    """What removed pixels are replaced with: a Gaussian-blurred copy of each face (sigma
    :data:`BLUR_SIGMA`) for ``blur``, mid grey for ``grey``."""
    import cv2

    crops = np.asarray(crops)
    if operator == "grey":
        return np.full_like(crops, GREY)
    if operator == "blur":
        return np.stack([cv2.GaussianBlur(c, (0, 0), BLUR_SIGMA, borderType=cv2.BORDER_REFLECT) for c in crops])
    raise ValueError(f"unknown removal operator {operator!r}; choose from {', '.join(OPERATORS)}")


def deletion_drops(model: ExpressionModel, crops: np.ndarray, maps: np.ndarray, probs: np.ndarray,
                   fraction: float = 0.2, operator: str = "blur", seed: int = 0,
                   patch: int = 8, stride: int = 4) -> dict[str, np.ndarray]:
    """Per face, the predicted class's probability drop when the ``fraction`` highest pixels of its map
    (inside the network's input window) are removed with ``operator`` (``salient``), and when as many
    random pixels are: ``random`` takes the top of a random map with the occlusion maps' blob
    structure (random scores of ``patch`` x ``patch`` patches), ``pixels`` scattered single pixels."""
    crops = np.asarray(crops)
    targets = probs.argmax(1)
    frame, crop = crops.shape[1], model.crop
    off = (frame - crop) // 2
    k = int(round(fraction * crop * crop))
    rng = np.random.default_rng(seed)
    fill = removal_fill(crops, operator)
    masked = {name: crops.copy() for name in ("salient", "random", "pixels")}
    for i in range(len(crops)):
        blobs = _random_map(frame, patch, stride, rng)[off: off + crop, off: off + crop].ravel()
        window = maps[i, off: off + crop, off: off + crop].ravel()
        for name, idx in (("salient", np.argsort(-window, kind="stable")[:k]),
                          ("random", np.argsort(-blobs, kind="stable")[:k]),
                          ("pixels", rng.choice(crop * crop, k, replace=False))):
            ys, xs = np.unravel_index(idx, (crop, crop))
            masked[name][i, ys + off, xs + off] = fill[i, ys + off, xs + off]
    rows = np.arange(len(crops))
    base = probs[rows, targets]
    return {name: base - model.predict(m)[rows, targets] for name, m in masked.items()}


def deletion_test(model: ExpressionModel, crops: np.ndarray, fraction: float = 0.2, patch: int = 8,
                  stride: int = 4, seed: int = 0, method: str = "occlusion",
                  operator: str = "blur") -> dict[str, np.ndarray]:
    """Faithfulness of a heat-map ``method``: per face, the predicted class's probability drop when the
    ``fraction`` most salient pixels are removed (``salient``) and when as many random ones are
    (``random``: blobs, ``pixels``: scattered); see :func:`deletion_drops` and :func:`removal_fill`.
    Returns ``{"salient": (N,), "random": (N,), "pixels": (N,)}``."""
    crops = np.asarray(crops)
    maps, probs = saliency_maps(model, crops, method, patch, stride)
    return deletion_drops(model, crops, maps, probs, fraction, operator, seed, patch, stride)


def _random_map(frame: int, patch: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """A heat map built like an occlusion map but from random patch scores (same blob structure)."""
    heat = np.zeros((frame, frame), np.float32)
    for y in _positions(frame, patch, stride):
        for x in _positions(frame, patch, stride):
            heat[y: y + patch, x: x + patch] += rng.random()
    return heat + rng.random((frame, frame)).astype(np.float32) * 1e-3  # random order among ties
