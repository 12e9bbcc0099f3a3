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
    "evaluate_faces": "emolens.face_eval",
    "Explanation": "emolens.explanations",
    "explain": "emolens.explanations",
    "FER7": "emolens.labels",
    "RAVDESS8": "emolens.labels",
    "MediaError": "emolens.media",
    "AudioResult": "emolens.voice",
    "FrameStream": "emolens.recordings",
    "VideoResult": "emolens.recordings",
    "analyze_audio": "emolens.recordings",
    "analyze_video": "emolens.recordings",
    "stream": "emolens.recordings",
}

__all__ = ["FER7", "RAVDESS8", "AudioResult", "Explanation", "ExpressionModel", "FaceAnalyzer", "FaceResult",
           "FrameStream", "ImageResult", "MediaError", "VideoResult", "__version__", "analyze_audio", "analyze_image",
           "analyze_video", "available_models", "evaluate_faces", "explain", "stream"]

if TYPE_CHECKING:  # pragma: no cover
    from emolens.api import FaceAnalyzer, FaceResult, ImageResult, analyze_image
    from emolens.explanations import Explanation, explain
    from emolens.expression import ExpressionModel, available_models
    from emolens.face_eval import evaluate_faces
    from emolens.labels import FER7, RAVDESS8
    from emolens.media import MediaError
    from emolens.recordings import FrameStream, VideoResult, analyze_audio, analyze_video, stream
    from emolens.voice import AudioResult


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emolens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
