"""emolens: emotion recognition from faces and voices in photos, videos and live streams."""

from __future__ import annotations

__version__ = "0.1.0"

from emolens.api import FaceAnalyzer, FaceResult, ImageResult, analyze_image  # noqa: E402
from emolens.labels import FER7, RAVDESS8  # noqa: E402

__all__ = ["FER7", "RAVDESS8", "FaceAnalyzer", "FaceResult", "ImageResult", "__version__", "analyze_image"]
