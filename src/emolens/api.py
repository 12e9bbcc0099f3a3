"""The Python API: analyse photos (and frames) for faces and their expressions.

>>> import emolens
>>> result = emolens.analyze_image("photo.jpg")
>>> [(f.label, f.probs["happy"]) for f in result.faces]
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emolens.device import check_device
from emolens.expression import ExpressionModel, default_model
from emolens.faces import Face, FaceDetector, make_detector
from emolens.labels import probs_dict
from emolens.media import DEFAULT_MAX_PIXELS, MediaError, as_bgr, load_image


@dataclass
class FaceResult:
    """One face with its expression: ``label`` is the most probable class, ``probs`` all of them."""

    face: Face
    label: str
    probs: dict[str, float]

    @property
    def box(self) -> list[int]:
        """``[x, y, w, h]`` in pixels."""
        return self.face.to_dict()["box"]

    def to_dict(self) -> dict:
        """``{"box": [x, y, w, h], "score": .., "label": .., "probs": {..}}``."""
        return {**self.face.to_dict(), "label": self.label, "probs": self.probs}


@dataclass
class ImageResult:
    """Faces found in one image; ``error`` says why an input could not be analysed."""

    path: str | None
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None
    size: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        """``{"path": .., "faces": [..], "error": ..}`` (the ``emolens image --json`` shape)."""
        return {"path": self.path, "faces": [f.to_dict() for f in self.faces], "error": self.error}


class FaceAnalyzer:
    """Detector + aligner + expression model, loaded once and reused for many images/frames.

    Photo files whose header declares more than ``max_pixels`` (width x height; None: no limit)
    are refused before decoding (:class:`~emolens.media.MediaTooLarge`). ``device``: where the
    expression model runs, ``cpu``, ``cuda`` or ``auto`` (:mod:`emolens.device`).
    """

    def __init__(
        self,
        detector: str | FaceDetector = "yunet",
        model: str | os.PathLike | ExpressionModel | None = None,
        min_score: float = 0.6,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        device: str = "cpu",
    ) -> None:
        if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0 <= min_score <= 1:
            raise ValueError(f"min_score must be a number in 0..1, got {min_score!r}")
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                       or max_pixels < 1):
            raise ValueError(f"max_pixels must be an int >= 1 or None, got {max_pixels!r}")
        if not isinstance(detector, str) and not callable(getattr(detector, "detect", None)):
            raise TypeError(f"detector must be a detector name ('yunet') or an object with .detect(image), "
                            f"got {type(detector).__name__}")
        self.max_pixels = max_pixels
        self.detector = make_detector(detector, min_score=min_score) if detector == "yunet" else (
            make_detector(detector) if isinstance(detector, str) else detector
        )
        if isinstance(model, ExpressionModel):
            self.model = model
        else:
            self.model = default_model(str(model) if model else "default", check_device(device))

    def classify(self, image: np.ndarray, faces: list[Face]) -> list[FaceResult]:
        """Expressions for already-detected ``faces`` in a BGR image (one batched model call)."""
        if not faces:
            return []
        probs = self.model.classify(image, faces)
        labels = self.model.labels
        return [FaceResult(f, labels[int(p.argmax())], probs_dict(p, labels)) for f, p in zip(faces, probs)]

    def analyze_frame(self, image: np.ndarray) -> list[FaceResult]:
        """Detect and classify every face in a BGR (or gray) image array."""
        image = as_bgr(image)
        return self.classify(image, self.detector.detect(image))

    def analyze_image(self, image: str | os.PathLike | np.ndarray) -> ImageResult:
        """Analyse a path or an image array. Raises :class:`~emolens.media.MediaError` if unreadable,
        :class:`TypeError` for anything else than a path or a numpy array, :class:`ValueError` for a
        wrongly shaped array."""
        if not isinstance(image, (str, os.PathLike, np.ndarray)):
            raise TypeError("expected an image path (str or os.PathLike) or a numpy array (H, W), (H, W, 3) "
                            f"or (H, W, 4), got {type(image).__name__}")
        if isinstance(image, (str, os.PathLike)):
            path: str | None = str(image)
            array = load_image(image, self.max_pixels)
        else:
            path, array = None, as_bgr(image)
        return ImageResult(path, self.analyze_frame(array), None, (array.shape[1], array.shape[0]))

    def analyze_images(self, paths: Iterable[str | os.PathLike]) -> Iterator[ImageResult]:
        """Analyse many files; one that cannot be read yields a result with ``error`` set."""
        for p in paths:
            try:
                yield self.analyze_image(p)
            except MediaError as exc:
                yield ImageResult(str(p), [], str(exc))


_DEFAULT: dict[tuple[str, str, int | None, str], FaceAnalyzer] = {}


def analyze_image(
    image: str | os.PathLike | np.ndarray, detector: str = "yunet", model: str | os.PathLike = "default",
    max_pixels: int | None = DEFAULT_MAX_PIXELS, device: str = "cpu",
) -> ImageResult:
    """Find every face in a photo (path or BGR/gray array) and classify its expression.

    ``model``: ``"default"`` (fast), ``"accurate"`` or an ONNX path (see :func:`emolens.available_models`).
    A file whose header declares more than ``max_pixels`` raises :class:`~emolens.media.MediaTooLarge`
    (a :class:`~emolens.media.MediaError`) before it is decoded. ``device``: ``cpu``, ``cuda`` or
    ``auto`` (``cuda`` without onnxruntime-gpu and a GPU raises :class:`~emolens.device.DeviceError`).
    """
    key = (detector, str(model), max_pixels, device)
    if key not in _DEFAULT:
        _DEFAULT[key] = FaceAnalyzer(detector, model, max_pixels=max_pixels, device=device)
    return _DEFAULT[key].analyze_image(image)


def image_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand directories into the image files below them (see :func:`emolens.media.iter_image_paths`)."""
    from emolens.media import iter_image_paths

    return iter_image_paths(list(paths))
