"""What the routes share (:class:`Services`): the face analyzer, the worker-thread limiter, the
audio analyzer and the video jobs; and photo decoding with HTTP errors."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import HTTPException

from emolens.server.config import ServerConfig
from emolens.server.jobs import GB, JobManager


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """BGR image from encoded bytes (EXIF orientation applied) by :func:`emolens.media.decode_image`:
    413 when its header declares more than ``max_pixels`` (nothing is decoded), 422 if unreadable."""
    from emolens.media import MediaError, MediaTooLarge
    from emolens.media import decode_image as decode

    try:
        return decode(data, max_pixels)
    except MediaTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except MediaError as exc:
        raise HTTPException(422, str(exc)) from None


class Services:
    """What the routes share: the face analyzer, the thread-pool limiter, the audio analyzer
    (loaded on first use) and the video jobs."""

    def __init__(self, config: ServerConfig, analyzer: Any = None) -> None:
        import cv2

        from emolens.api import FaceAnalyzer
        from emolens.expression import ExpressionModel

        # One thread per call everywhere (OpenCV, yuface's OpenMP, onnxruntime): parallelism comes from
        # the worker pool, and spinning helper threads make a busy machine much slower.
        self._cv2_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        self.config = config
        self.analyzer = analyzer or FaceAnalyzer(
            config.detector, ExpressionModel(config.model, threads=1, device=config.device), min_score=config.min_score)
        self.limiter = anyio.CapacityLimiter(config.workers)
        self._audio: Any = None
        self._audio_lock = threading.Lock()
        self.jobs = JobManager(config.jobs_dir, config.max_queued_jobs, model=config.model, device=config.device,
                               thread_init=self._one_omp_thread, keep_hours=config.keep_jobs_hours,
                               max_disk_bytes=int(config.max_jobs_disk_gb * GB))

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a CPU-bound call in the worker pool."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    @staticmethod
    def _one_omp_thread() -> None:
        """Limit yuface's OpenMP to one thread in the calling thread (a per-thread setting)."""
        from emolens.faces import limit_detector_threads

        limit_detector_threads(1)

    def analyze_bytes(self, data: bytes) -> tuple[list, tuple[int, int]]:
        """Faces in an encoded image: ``(face results, (width, height))``."""
        self._one_omp_thread()
        image = decode_image(data, self.config.max_pixels)
        return self.analyzer.analyze_frame(image), (image.shape[1], image.shape[0])

    def close(self) -> None:
        """Stop the job worker; give OpenCV its threads back (matters when the app runs in-process)."""
        import cv2

        self.jobs.stop()
        cv2.setNumThreads(self._cv2_threads)

    @staticmethod
    def video_status() -> tuple[int, str]:
        """``(200, "ok")``, or 501 and why video jobs are unavailable."""
        try:
            from emolens.video import VideoAnalyzer, VideoOptions  # noqa: F401
        except ImportError as exc:
            return 501, f"video analysis is not available in this build (emolens.video: {exc})"
        return 200, "ok"

    # -- speech (the voice module may be unfinished: 501 / 503 say so) -----------------------------
    @staticmethod
    def audio_status() -> tuple[int, str]:
        """``(200, "ok")``, or the HTTP status and message that explain why audio is unavailable."""
        try:
            from emolens import voice
        except ImportError as exc:
            return 501, f"speech analysis is not available in this build (emolens.voice: {exc})"
        if not hasattr(voice, "AudioAnalyzer"):
            return 501, "speech analysis is not implemented yet (emolens.voice.AudioAnalyzer is missing)"
        model = getattr(voice, "DEFAULT_SPEECH_MODEL", None)
        if model is not None and not Path(model).is_file():
            return 503, f"the speech-emotion model is not installed ({Path(model).name} missing)"
        return 200, "ok"

    def analyze_audio(self, path: Path, name: str) -> dict:
        """The ``emolens audio`` result of one file, with ``path`` set to the uploaded ``name``."""
        from emolens.voice import AudioAnalyzer

        with self._audio_lock:  # the VAD keeps state: one file at a time
            if self._audio is None:
                self._audio = AudioAnalyzer(device=self.config.device)
            result = self._audio.analyze_file(path)
        out = result.to_dict()
        out["path"] = name
        if out.get("error"):
            out["error"] = out["error"].replace(str(path), name)
        return out
