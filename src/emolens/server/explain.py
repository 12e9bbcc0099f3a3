"""``POST /api/explain``: why each face of an uploaded photo got its label (:mod:`emolens.explanations`).

The answer is the JSON of ``emolens explain --json`` for one file, with the pictures inline as
base64 PNGs instead of file paths: per face ``png`` (the aligned face beside its heat map of each
method), ``overlays`` (per method, the heat map alone, transparent, to lay over the photo at
``image_box``) and ``activations_png`` (the conv-stage activation grid), and ``images`` (per
method, the photo with every heat map, box and label drawn in; the CLI's ``image``, a copy of the
first of them, is left out). The upload goes through the same checks as ``POST /api/image``
(size, type, content, pixel limit).

Added to the app by :func:`add_explain_route` (called from :func:`emolens.server.app.create_app`).
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request

from emolens.server.uploads import check_kind, receive_upload

if TYPE_CHECKING:
    from emolens.explanations import Explanation

#: Longest side of a face's ``overlays`` PNGs (larger heat maps are scaled down; the page scales them back).
OVERLAY_MAX_SIDE = 512
#: Longest side of the whole-photo ``images`` PNGs (larger photos are scaled down).
IMAGE_MAX_SIDE = 1600
#: Side of each panel of a face's ``png`` (the aligned face, then the face under each method's heat map).
FACE_PNG_SIDE = 192
#: The values of the yes/no form fields.
BOOLEAN = ("true", "false")


def methods() -> tuple[str, ...]:
    """The heat-map methods of :func:`emolens.explanations.explain_faces`: each of ``METHODS``, and ``both``."""
    from emolens.explanations import METHODS

    return (*METHODS, "both")


def model_methods(model: Any) -> list[str]:
    """The methods of :func:`methods` that ``model`` can do: ``occlusion`` always, the others only
    with the activations and gradients the shipped models export."""
    from emolens.explanations import explain_block

    try:
        grad = explain_block(model) is not None
    except AttributeError:  # not an onnxruntime-backed ExpressionModel
        grad = False
    return list(methods()) if grad else ["occlusion"]


def explain_options(fields: dict[str, str]) -> dict:
    """Options from the upload form, each optional and matched exactly (as the OpenAPI schema
    says): ``method`` (one of :func:`methods`, default the first), ``image`` (include the
    whole-photo PNGs) and ``activations`` (include the activation grids), ``true`` (default) or
    ``false``; 422 naming the field on any other value."""
    method = fields.get("method", methods()[0])
    if method not in methods():
        raise HTTPException(422, f"method must be one of {', '.join(methods())}, got {method[:20]!r}")
    opts: dict[str, Any] = {"method": method}
    for name in ("image", "activations"):
        value = fields.get(name, "true")
        if value not in BOOLEAN:
            raise HTTPException(422, f"{name} must be true or false, got {value[:20]!r}")
        opts[name] = value == "true"
    return opts


def png_base64(image: np.ndarray) -> str:
    """A BGR / BGRA / gray array as a base64-encoded PNG."""
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for an array of shape {image.shape}")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def fit(width: int, height: int, limit: int) -> tuple[int, int]:
    """``(width, height)`` scaled down (never up) so that the longer side is at most ``limit``."""
    scale = min(1.0, limit / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def heat_overlay(e: Explanation, method: str | None = None, limit: int = OVERLAY_MAX_SIDE) -> np.ndarray | None:
    """BGRA picture of a face's heat map (of ``method``, default its first) over its ``image_box``: the JET colours of
    :func:`~emolens.explain_draw.heat_colors`, opacity growing with the value (0 where the map is 0
    or negative, 75 % at its maximum); None for an empty box."""
    import cv2

    from emolens.explain_draw import heat_colors

    method = method or e.method
    heat = e.image_heatmaps[method]
    h, w = heat.shape[:2]
    if not w or not h:
        return None
    size = fit(w, h, limit)
    if size != (w, h):
        heat = cv2.resize(heat, size, interpolation=cv2.INTER_AREA)
    colors, weight = heat_colors(heat, float(np.clip(e.heatmaps[method], 0, None).max()))
    alpha = (255 * 0.75 * weight).round().astype(np.uint8)
    return np.dstack([colors, alpha])


def explain_image(services: Any, data: bytes, filename: str, opts: dict) -> dict:
    """The ``/api/explain`` answer for an encoded photo (runs in a worker thread)."""
    import cv2

    from emolens import explain_draw, explanations
    from emolens.faces import limit_detector_threads
    from emolens.media import MediaError, MediaTooLarge, as_bgr, decode_image

    limit_detector_threads(1)
    t0 = time.perf_counter()
    try:
        image = as_bgr(decode_image(data, services.config.max_pixels))
    except MediaTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except MediaError as exc:
        raise HTTPException(422, str(exc)) from None
    analyzer = services.analyzer
    method = opts["method"]
    if method not in model_methods(analyzer.model):
        raise HTTPException(422, f"method {method} is not available: this server's face model has no "
                                 f"Grad-CAM outputs (available: {', '.join(model_methods(analyzer.model))})")
    found = explanations.explain_faces(analyzer.model, image, analyzer.detector.detect(image), method=method,
                                       activations=opts["activations"])
    faces = []
    for e in found:
        overlays = {m: heat_overlay(e, m) for m in e.heatmaps}
        faces.append({**e.to_dict(), "png": png_base64(explain_draw.draw_face_heatmap(e, FACE_PNG_SIDE)),
                      "overlays": {m: None if o is None else png_base64(o) for m, o in overlays.items()},
                      "activations_png": png_base64(explain_draw.draw_activation_grid(e)) if e.activations else None})
    images = {}
    if opts["image"] and found:
        for m in found[0].heatmaps:
            drawn = explain_draw.draw_image_heatmaps(image, found, m)
            size = fit(drawn.shape[1], drawn.shape[0], IMAGE_MAX_SIDE)
            if size != (drawn.shape[1], drawn.shape[0]):
                drawn = cv2.resize(drawn, size, interpolation=cv2.INTER_AREA)
            images[m] = png_base64(drawn)
    return {"path": filename, "faces": faces, "error": None, "images": images, "method": method,
            "size": [image.shape[1], image.shape[0]], "time_ms": round(1000 * (time.perf_counter() - t0), 1)}


# ------------------------------------------------------------------------------------- OpenAPI

_NUMBERS = {"type": "object", "additionalProperties": {"type": "number"}}
_BOX = {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4}
_B64 = {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"}
_B64_OR_NULL = {**_B64, "type": ["string", "null"]}
STAGE_SCHEMA = {"type": "object", "required": ["name", "size", "channels", "channel_means"], "properties": {
    "name": {"type": "string", "description": "conv stage, e.g. stage2 (net1/stage2 for an ensemble)"},
    "size": {"type": "array", "items": {"type": "integer"}, "description": "[height, width] of its feature maps"},
    "channels": {"type": "array", "items": {"type": "integer"}, "description": "the most active channels"},
    "channel_means": {"type": "array", "items": {"type": "number"}, "description": "their mean activations"}}}
FACE_SCHEMA = {
    "type": "object",
    "required": ["box", "score", "label", "probs", "image_box", "regions", "methods", "activations", "png",
                 "overlays", "activations_png"],
    "properties": {
        "box": {**_BOX, "description": "the face's [x, y, w, h] in photo pixels"},
        "score": {"type": "number", "description": "face-detector confidence"},
        "label": {"type": "string", "description": "the predicted emotion"},
        "probs": {**_NUMBERS, "description": "probability of each emotion"},
        "image_box": {**_BOX, "description": "[x, y, w, h] of the photo region that the heat maps cover"},
        "regions": {"type": "object", "additionalProperties": _NUMBERS,
                    "description": "{eyes|nose|mouth: {emotion: change of its probability when the region is "
                                   "masked}}; negative: the region supported that emotion"},
        "methods": {"type": "array", "items": {"type": "string"}, "description": "the heat-map methods shown"},
        "activations": {"type": "array", "items": STAGE_SCHEMA,
                        "description": "per conv stage, the most active channels (empty when not asked for)"},
        "png": {**_B64, "description": f"PNG, {FACE_PNG_SIDE} px high: the aligned face, then the face under the "
                                       "heat map of each method"},
        "overlays": {"type": "object", "additionalProperties": _B64_OR_NULL,
                     "description": f"per method, a PNG with transparency: the heat map alone, to draw over "
                                    f"image_box (scaled down to at most {OVERLAY_MAX_SIDE} px on its longer "
                                    "side); null when image_box is empty"},
        "activations_png": {**_B64_OR_NULL, "description": "PNG: per conv stage, the mean activation and the most "
                                                           "active channels; null without activations"},
    },
}
EXPLAIN_SCHEMA = {
    "type": "object", "required": ["path", "faces", "error", "images", "method", "size", "time_ms"],
    "properties": {
        "path": {"type": "string", "description": "the uploaded file's name"},
        "faces": {"type": "array", "items": FACE_SCHEMA},
        "error": {"type": "null"},
        "images": {"type": "object", "additionalProperties": _B64,
                   "description": f"per method, a PNG: the photo with every face's heat map, box and label drawn "
                                  f"in (scaled down to at most {IMAGE_MAX_SIDE} px on its longer side); empty when "
                                  "the image field is false or no face was found"},
        "method": {"type": "string", "description": "the heat-map method asked for"},
        "size": {**_BOX, "minItems": 2, "maxItems": 2, "description": "[width, height] of the photo"},
        "time_ms": {"type": "number"},
    },
}
EXAMPLE = {"path": "portrait.jpg", "error": None, "images": {"occlusion": "iVBORw0KGgo..."}, "method": "occlusion",
           "size": [427, 524], "time_ms": 85.2,
           "faces": [{"box": [120, 140, 190, 230], "score": 0.93, "label": "happy",
                      "probs": {"angry": 0.01, "disgust": 0.0, "fear": 0.01, "happy": 0.95, "sad": 0.01,
                                "surprise": 0.01, "neutral": 0.01},
                      "image_box": [96, 120, 238, 262],
                      "regions": {"eyes": {"happy": -0.04}, "nose": {"happy": -0.01}, "mouth": {"happy": -0.62}},
                      "methods": ["occlusion"],
                      "activations": [{"name": "stage1", "size": [44, 44], "channels": [12, 24],
                                       "channel_means": [0.117, 0.116]}],
                      "png": "iVBORw0KGgo...", "overlays": {"occlusion": "iVBORw0KGgo..."},
                      "activations_png": "iVBORw0KGgo..."}]}


def form_fields() -> dict:
    """OpenAPI description of the form fields besides ``file``."""
    return {"method": {"type": "string", "enum": list(methods()), "default": methods()[0],
                       "description": "heat-map method (gradcam and both: when the face model exports them, "
                                      "see explain_methods in /api/health)"},
            "image": {"type": "string", "enum": list(BOOLEAN), "default": "true",
                      "description": "include the whole-photo PNGs (images)"},
            "activations": {"type": "string", "enum": list(BOOLEAN), "default": "true",
                            "description": "include the conv-stage activations (when the face model exports them)"}}


def add_explain_route(app: FastAPI, request_doc: dict, error_responses: dict) -> None:
    """Add ``POST /api/explain`` to ``app``; ``request_doc`` (``openapi_extra``) and ``error_responses``
    document the upload and its error answers as on the other photo routes."""

    @app.post("/api/explain", tags=["photo"], openapi_extra=request_doc, responses={
        200: {"description": "one entry per face, pictures as base64 PNGs",
              "content": {"application/json": {"schema": EXPLAIN_SCHEMA, "example": EXAMPLE}}},
        **error_responses})
    async def explain_photo(request: Request) -> dict:
        """Why each face got its label: the JSON of ``emolens explain --json`` for one photo with the
        pictures as base64 PNGs (per face ``png``, ``overlays`` per method, ``activations_png``; ``images``
        per method), plus ``method``, ``size`` [w, h] and ``time_ms``. ``regions``: each emotion's probability change
        when the eyes, the nose or the mouth is masked."""
        services = request.app.state.services
        upload = await receive_upload(request, services.config.max_image_bytes)
        check_kind(upload, "image")
        opts = explain_options(upload.fields)
        return await services.run(explain_image, services, upload.data or b"", upload.filename, opts)
