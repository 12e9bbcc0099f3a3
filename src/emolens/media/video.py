"""Video files, image sequences, cameras and network streams: one reader, frames with timestamps."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emolens.media.errors import DEFAULT_MAX_VIDEO_PIXELS, MediaError, MediaTooLarge, check_pixels
from emolens.media.images import iter_image_paths, load_image

VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".flv", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".wmv", ".3gp", ".ogv", ".vob", ".gif",
}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
#: Timestamps given to image-sequence frames (an image folder has no clock of its own).
FOLDER_FPS = 30.0


@dataclass
class Frame:
    """One decoded frame: BGR ``uint8 (H, W, 3)`` ``image``, its ``index`` in the source
    (0-based, counting every decoded frame, not only the sampled ones) and ``time_s``
    (seconds from the first frame)."""

    image: np.ndarray = field(repr=False)
    index: int
    time_s: float


@dataclass
class VideoInfo:
    """What is known about a source before decoding: ``kind`` is file, folder, camera or stream;
    ``fps``, ``duration_s`` and ``frame_count`` are None where the source does not say."""

    source: str
    kind: str
    width: int
    height: int
    fps: float | None = None
    duration_s: float | None = None
    frame_count: int | None = None

    @property
    def is_live(self) -> bool:
        """True for cameras and network streams (no end, no duration)."""
        return self.kind in ("camera", "stream")


def expected_frames(info: VideoInfo, every: int = 1, fps: float | None = None,
                    max_frames: int | None = None) -> int | None:
    """How many frames a :class:`VideoSource` with these sampling settings will hand over
    (``every``-th frame, or at most ``fps`` per second, stopping at ``max_frames``), from what
    the source says about itself; None when it does not say (cameras, streams, unknown length)."""
    total = None
    if fps is not None:
        if info.duration_s:
            total = math.ceil(info.duration_s * min(fps, info.fps or fps))
    elif info.frame_count:
        total = math.ceil(info.frame_count / every)
    if max_frames:
        total = min(total or max_frames, max_frames)
    return total


def source_kind(source: str | int | os.PathLike) -> str:
    """Classify an input: ``camera`` (an int or digit string), ``stream`` (a URL), ``folder``, ``file``."""
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        return "camera"
    text = str(source)
    if text.lower().startswith(STREAM_SCHEMES):
        return "stream"
    return "folder" if Path(text).is_dir() else "file"


def iter_video_inputs(paths: list[str | os.PathLike]) -> list[str]:
    """Expand CLI inputs: a folder holding images stays one input (an image sequence); a folder
    without images is replaced by the video files below it (sorted); anything else is kept."""
    out: list[str] = []
    for p in paths:
        if source_kind(p) == "folder":
            folder = Path(p)
            if iter_image_paths([folder]):
                out.append(str(folder))
            else:
                videos = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
                out.extend(str(f) for f in videos)
        else:
            out.append(str(p))
    return out


class _Sampler:
    """Keep every ``every``-th frame, or frames ``1/fps`` seconds apart (by timestamp)."""

    def __init__(self, every: int = 1, fps: float | None = None) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        if fps is not None and fps <= 0:
            raise ValueError("fps must be > 0")
        self.every, self.fps = every, fps
        self.next_t = 0.0

    def take(self, index: int, time_s: float) -> bool:
        if self.fps is None:
            return index % self.every == 0
        if time_s + 1e-6 >= self.next_t:
            step = 1.0 / self.fps
            self.next_t += step * max(1, int((time_s - self.next_t) / step) + 1)
            return True
        return False


def _media_error(source: str, exc: BaseException) -> MediaError:
    text = str(exc).split(": '", 1)[0]
    text = text.split("] ", 1)[-1] if text.startswith("[Errno") else text
    return MediaError(f"{source}: cannot open as video: {text} (not a video, or corrupt/truncated)")


class VideoSource:
    """Frames of a video file, an image folder, a camera index or a network stream.

    >>> with VideoSource("clip.mp4", every=2) as src:
    ...     for frame in src:  # Frame(image, index, time_s)
    ...         ...

    Files and URLs are decoded with PyAV (FFmpeg: every common container and codec, only the
    first video stream is demuxed), cameras with OpenCV. ``every`` keeps every N-th frame,
    ``fps`` keeps frames at most F per second (by timestamp); ``max_frames`` stops after that
    many kept frames. Frames larger than ``max_pixels`` (width x height; None: no limit) are
    refused from the stream's metadata before anything is decoded (:class:`MediaTooLarge`); the
    decoder refuses larger frames later in the stream too. With ``threaded`` (default) decoding
    runs in a background thread, a few frames ahead (bounded queue: memory does not grow with
    video length). Decoding problems
    raise :class:`MediaError`, also midway (frames before the problem have been yielded); a
    file that ends well before the duration its header declares is reported as truncated.
    """

    def __init__(
        self,
        source: str | int | os.PathLike,
        every: int = 1,
        fps: float | None = None,
        max_frames: int | None = None,
        threaded: bool = True,
        timeout_s: float = 10.0,
        folder_fps: float = FOLDER_FPS,
        max_pixels: int | None = DEFAULT_MAX_VIDEO_PIXELS,
    ) -> None:
        self.source = str(source)
        self.kind = source_kind(source)
        self.sampler = _Sampler(every, fps)
        self.max_frames = max_frames
        self.threaded = threaded
        self.folder_fps = folder_fps
        self.max_pixels = max_pixels
        self._container = None
        self._capture = None
        self._images: list[Path] = []
        self._stop = None
        self._thread = None
        self.frames_decoded = 0
        self.info = self._open(timeout_s)

    # -- opening ----------------------------------------------------------------------------
    def _open(self, timeout_s: float) -> VideoInfo:
        if self.kind == "camera":
            return self._open_camera(int(self.source))
        if self.kind == "folder":
            return self._open_folder()
        path = Path(self.source)
        if self.kind == "file":
            if not path.exists():
                raise MediaError(f"{path}: file not found")
            if path.stat().st_size == 0:
                raise MediaError(f"{path}: file is empty (0 bytes)")
        return self._open_av(timeout_s)

    def _open_av(self, timeout_s: float) -> VideoInfo:
        import av

        try:
            if self.kind == "stream":
                options = {"rtsp_transport": "tcp"} if self.source.lower().startswith("rtsp") else {}
                container = av.open(self.source, options={**options, **self._decoder_options()}, timeout=timeout_s)
            else:  # the decoder limit also bounds the frame FFmpeg decodes while probing the file
                container = av.open(self.source, options=self._decoder_options())
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise _media_error(self.source, exc) from None
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            container.close()
            has = f" (only {'/'.join(kinds)}: for sound alone use `emolens audio`)" if kinds else ""
            raise MediaError(f"{self.source}: no video stream{has}")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        try:
            check_pixels(ctx.width, ctx.height, self.max_pixels, f"{self.source}: video frames")
        except MediaTooLarge:
            container.close()
            raise
        ctx.options = {**ctx.options, **self._decoder_options()}
        stream.thread_type = "AUTO"
        self._container, self._stream = container, stream
        self._declared_frames = stream.frames or None
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        duration = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        frames = stream.frames or (round(duration * fps) if duration and fps else None)
        return VideoInfo(self.source, self.kind, ctx.width, ctx.height, fps, duration, frames or None)

    def _decoder_options(self) -> dict[str, str]:
        """FFmpeg's own frame-size limit for the decoder (``max_pixels``), when there is one."""
        return {"max_pixels": str(self.max_pixels)} if self.max_pixels is not None else {}

    def _open_camera(self, index: int) -> VideoInfo:
        import cv2

        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            raise MediaError(f"camera {index}: cannot open (no such device, or it is in use)")
        self._capture = cap
        fps = cap.get(cv2.CAP_PROP_FPS) or None
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        check_pixels(width, height, self.max_pixels, f"camera {index}: frames")
        return VideoInfo(self.source, "camera", width, height, fps)

    def _open_folder(self) -> VideoInfo:
        self._images = iter_image_paths([self.source])
        if not self._images:
            raise MediaError(f"{self.source}: folder holds no image files")
        first = None
        for p in self._images:
            try:
                first = load_image(p, self.max_pixels)
                break
            except MediaError:
                continue
        if first is None:
            raise MediaError(f"{self.source}: none of the images in the folder can be read")
        n = len(self._images)
        return VideoInfo(self.source, "folder", first.shape[1], first.shape[0], self.folder_fps, n / self.folder_fps, n)

    # -- decoding ---------------------------------------------------------------------------
    def _raw(self) -> Iterator[Frame]:
        """All kept frames, decoded in the calling thread."""
        if self.kind == "camera":
            yield from self._raw_camera()
        elif self.kind == "folder":
            yield from self._raw_folder()
        else:
            yield from self._raw_av()

    def _keep(self, index: int, time_s: float, kept: int) -> bool:
        return (self.max_frames is None or kept < self.max_frames) and self.sampler.take(index, time_s)

    def _raw_av(self) -> Iterator[Frame]:
        import av

        stream, info = self._stream, self.info
        origin: float | None = None
        index = kept = 0
        last_t = 0.0
        packets = self._container.demux(stream)  # only the video stream: data/subtitle streams are skipped
        try:
            for packet in packets:
                for vframe in packet.decode():
                    t = vframe.time
                    if t is None:
                        t = index / info.fps if info.fps else float(index)
                    origin = t if origin is None else origin
                    last_t = t - origin
                    if self._keep(index, last_t, kept):
                        check_pixels(vframe.width, vframe.height, self.max_pixels, f"{self.source}: video frames")
                        image = vframe.to_ndarray(format="bgr24")
                        if vframe.rotation:
                            image = np.ascontiguousarray(np.rot90(image, k=round(vframe.rotation / 90) % 4))
                        kept += 1
                        yield Frame(image, index, round(last_t, 6))
                    index += 1
                    self.frames_decoded = index
                    if self.max_frames is not None and kept >= self.max_frames:
                        return
        except av.FFmpegError as exc:
            at = f"frame {index} ({last_t:.2f} s)" if index else "the first frame"
            raise MediaError(f"{self.source}: decoding failed at {at}: {exc.strerror or exc}") from None
        if index == 0:
            raise MediaError(f"{self.source}: no decodable video frames")
        if self.kind == "file" and self.max_frames is None:
            declared = self._declared_frames
            if declared and index < 0.9 * declared - 3:
                raise MediaError(
                    f"{self.source}: video stream ends after {index} frames but the file declares "
                    f"{declared}: file truncated or corrupt"
                )
            decoded_s = last_t + 1.0 / info.fps if info.fps else last_t
            if info.duration_s and decoded_s < info.duration_s - max(0.5, 0.1 * info.duration_s):
                raise MediaError(
                    f"{self.source}: video stream ends at {decoded_s:.2f} s but the file declares "
                    f"{info.duration_s:.2f} s: file truncated or corrupt"
                )

    def _raw_camera(self) -> Iterator[Frame]:
        import time

        t0 = time.monotonic()
        index = kept = 0
        while self.max_frames is None or kept < self.max_frames:
            ok, image = self._capture.read()
            if not ok:
                if index == 0:
                    raise MediaError(f"camera {self.source}: opened but delivers no frames")
                return
            t = time.monotonic() - t0
            if self._keep(index, t, kept):
                kept += 1
                yield Frame(image, index, round(t, 6))
            index += 1
            self.frames_decoded = index

    def _raw_folder(self) -> Iterator[Frame]:
        kept = 0
        for index, path in enumerate(self._images):
            t = index / self.folder_fps
            self.frames_decoded = index + 1
            if self.max_frames is not None and kept >= self.max_frames:
                return
            if not self.sampler.take(index, t):
                continue
            try:
                image = load_image(path, self.max_pixels)
            except MediaError:
                continue  # one unreadable picture does not end an image sequence
            kept += 1
            yield Frame(image, index, round(t, 6))

    def __iter__(self) -> Iterator[Frame]:
        if not self.threaded:
            yield from self._raw()
            return
        yield from self._threaded()

    def _threaded(self) -> Iterator[Frame]:
        import queue
        import threading

        q: queue.Queue = queue.Queue(maxsize=4)
        stop = threading.Event()
        done = object()

        def put(item: object) -> bool:
            """Queue ``item``, waiting while the queue is full; False when stopped first."""
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for frame in self._raw():
                    if not put(frame):
                        return
                item: object = done
            except BaseException as exc:  # handed to the consumer thread
                item = exc
            put(item)

        self._stop = stop
        self._thread = threading.Thread(target=work, name="emolens-decode", daemon=True)
        self._thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            self._thread.join(timeout=5)

    def close(self) -> None:
        """Stop decoding and release the file, camera or connection."""
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video(source: str | int | os.PathLike, **kwargs: Any) -> VideoSource:
    """Open any frame source (see :class:`VideoSource`); raises :class:`MediaError` if it cannot."""
    return VideoSource(source, **kwargs)
