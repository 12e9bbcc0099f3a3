"""Photos: header checks before decoding, decoding with EXIF orientation, BGR conversion, folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emolens.media.errors import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    BadImageArray,
    MediaError,
    MediaTooLarge,
    _prefix,
    check_pixels,
)


def check_image_header(data: bytes | bytearray | memoryview, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                       name: str | None = None) -> tuple[int, int] | None:
    """Read the size an encoded image declares (Pillow's lazy open: no pixel is decoded) and refuse
    it before any allocation: :class:`MediaTooLarge` above ``max_pixels``, :class:`MediaError` for
    an unreadable header (``name`` starts the messages). Returns ``(width, height)``, or None when
    only Pillow's own bomb limit (2 x ``PIL.Image.MAX_IMAGE_PIXELS``) saw the size and
    ``max_pixels`` allows it."""
    import io
    import re
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:  # its message names the pixel count
        match = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(match.group(1)) if match else None
        if max_pixels is None or (pixels is not None and pixels <= max_pixels):
            return None
        declared = f"{pixels / 1e6:.0f} megapixels" if pixels else "more pixels than Pillow allows"
        raise MediaTooLarge(f"{_prefix(name)}image too large: its header declares {declared} "
                            f"(limit {max_pixels / 1e6:.1f} megapixels)") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, EOFError) as exc:
        reason = "corrupt or unsupported format" if isinstance(exc, Image.UnidentifiedImageError) else "corrupt header"
        raise MediaError(f"{_prefix(name)}not a readable image ({reason})") from None
    check_pixels(width, height, max_pixels, f"{_prefix(name)}image")
    return width, height


def decode_image(data: bytes | bytearray | memoryview, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 name: str | None = None) -> np.ndarray:
    """Decode an encoded photo as BGR ``uint8 (H, W, 3)`` (EXIF orientation applied) after
    :func:`check_image_header`: an image declaring more than ``max_pixels`` is never decoded.
    Raises :class:`MediaTooLarge` or :class:`MediaError` (``name`` starts the message)."""
    import cv2

    if not len(data):
        raise MediaError(f"{_prefix(name)}file is empty (0 bytes)")
    check_image_header(data, max_pixels, name)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # e.g. beyond OpenCV's own size limit, with a raised max_pixels
        image = None
    if image is None:
        raise MediaError(f"{_prefix(name)}not a readable image (corrupt or unsupported format)")
    check_pixels(image.shape[1], image.shape[0], max_pixels, f"{_prefix(name)}image")
    return image


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a photo as a BGR ``uint8 (H, W, 3)`` array (EXIF orientation applied).

    Grayscale and 16-bit images are converted; alpha is dropped. A photo whose header declares
    more than ``max_pixels`` raises :class:`MediaTooLarge` before it is decoded.
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.is_dir():
        raise MediaError(f"{path}: is a directory, not an image")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MediaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, max_pixels, str(path))


_ARRAY_SHAPES = "a numpy array of shape (H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA"


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Accept gray ``(H,W)``, BGR ``(H,W,3)`` or BGRA ``(H,W,4)`` arrays; return BGR uint8.

    Raises :class:`TypeError` for something that is not a numeric numpy array and
    :class:`BadImageArray` (a ``ValueError``) for a wrong shape, an empty or a non-finite array.
    """
    import cv2

    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected {_ARRAY_SHAPES}, got {type(image).__name__}")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise TypeError(f"expected {_ARRAY_SHAPES} of integers or floats, got dtype {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        raise BadImageArray(f"unsupported image array shape {image.shape}: expected {_ARRAY_SHAPES}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise BadImageArray(f"empty image array of shape {image.shape}")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise BadImageArray("image array contains NaN or infinite values")
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
    return np.ascontiguousarray(image)


def iter_image_paths(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand directories (recursively, sorted) into image files; plain paths are kept as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out
