"""Media errors and size limits shared by the photo, audio and video readers."""

from __future__ import annotations

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jfif", ".pgm", ".ppm"}


#: Largest photo decoded by default (width x height): 80 megapixels.
DEFAULT_MAX_PIXELS = 80_000_000
#: Largest video frame decoded by default: 8K UHD (7680 x 4320, 33.2 megapixels).
DEFAULT_MAX_VIDEO_PIXELS = 7680 * 4320


class MediaError(Exception):
    """A media file that is missing, empty, unsupported or cannot be decoded."""


class BadImageArray(MediaError, ValueError):
    """An image array of the wrong shape, size or values (also a :class:`ValueError`)."""


class MediaTooLarge(MediaError):
    """An image or video whose declared frame size exceeds the pixel limit (refused before decoding)."""


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """Raise :class:`MediaTooLarge` (``"<what> too large: ..."``) when ``width x height`` exceeds
    ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise MediaTooLarge(f"{what} too large: {width}x{height} pixels = {width * height / 1e6:.1f} megapixels "
                            f"(limit {max_pixels / 1e6:.1f} megapixels)")


def _prefix(name: str | None) -> str:
    return f"{name}: " if name else ""
