"""emolens: emotion recognition from faces and voices in photos, videos and live streams.

Public names are imported lazily, so ``emolens.train`` (torch) and ``emolens.labels`` can be
used without the inference stack (onnxruntime, OpenCV, the face detector) being importable.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "FaceAnalyzer": "emolens.api",
    "FaceResult": "emolens.api",
    "ImageResult": "emolens.api",
    "analyze_image": "emolens.api",
    "ExpressionModel": "emolens.expression",
    "available_models": "emolens.expression",
    "FER7": "emolens.labels",
    "RAVDESS8": "emolens.labels",
}

__all__ = ["FER7", "RAVDESS8", "ExpressionModel", "FaceAnalyzer", "FaceResult", "ImageResult", "__version__",
           "analyze_image", "available_models"]

if TYPE_CHECKING:  # pragma: no cover
    from emolens.api import FaceAnalyzer, FaceResult, ImageResult, analyze_image
    from emolens.expression import ExpressionModel, available_models
    from emolens.labels import FER7, RAVDESS8


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emolens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
