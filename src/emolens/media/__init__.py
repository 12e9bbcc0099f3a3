"""All decoding of user media lives here: photos, and video files, image folders, cameras and streams.

Every reader raises :class:`MediaError` with a message a person can act on, never a raw
decoder traceback.

``emolens.media`` is a package of four modules (``errors``, ``images``, ``audio``, ``video``);
their public names are all importable from here.
"""

from __future__ import annotations

from emolens.media.audio import (
    AUDIO_RATE,
    load_audio,
)
from emolens.media.errors import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_VIDEO_PIXELS,
    IMAGE_SUFFIXES,
    BadImageArray,
    MediaError,
    MediaTooLarge,
    check_pixels,
)
from emolens.media.images import (
    as_bgr,
    check_image_header,
    decode_image,
    iter_image_paths,
    load_image,
)
from emolens.media.video import (
    FOLDER_FPS,
    STREAM_SCHEMES,
    VIDEO_SUFFIXES,
    Frame,
    VideoInfo,
    VideoSource,
    expected_frames,
    iter_video_inputs,
    open_video,
    source_kind,
)

__all__ = [
    "AUDIO_RATE",
    "BadImageArray",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_VIDEO_PIXELS",
    "FOLDER_FPS",
    "Frame",
    "IMAGE_SUFFIXES",
    "MediaError",
    "MediaTooLarge",
    "STREAM_SCHEMES",
    "VIDEO_SUFFIXES",
    "VideoInfo",
    "VideoSource",
    "as_bgr",
    "check_image_header",
    "check_pixels",
    "decode_image",
    "expected_frames",
    "iter_image_paths",
    "iter_video_inputs",
    "load_audio",
    "load_image",
    "open_video",
    "source_kind",
]
