"""All decoding of user media lives here: photos now; video and audio readers build on it.

Every reader raises :class:`MediaError` with a message a person can act on, never a raw
decoder traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jfif", ".pgm", ".ppm"}


class MediaError(Exception):
    """A media file that is missing, empty, unsupported or cannot be decoded."""


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read a photo as a BGR ``uint8 (H, W, 3)`` array (EXIF orientation applied).

    Grayscale and 16-bit images are converted; alpha is dropped.
    """
    import cv2

    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.is_dir():
        raise MediaError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (0 bytes)")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError(f"{path}: not a readable image (corrupt or unsupported format)")
    return image


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Accept gray ``(H,W)``, BGR ``(H,W,3)`` or BGRA ``(H,W,4)`` arrays; return BGR uint8."""
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and image.max() <= 1.0:
            image = image * 255
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    raise MediaError(f"unsupported image array shape {image.shape}")


def iter_image_paths(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand directories (recursively, sorted) into image files; plain paths are kept as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out
