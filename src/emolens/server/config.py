"""The server's settings (:class:`ServerConfig`, the ``emolens serve`` options)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from emolens.media import DEFAULT_MAX_PIXELS, DEFAULT_MAX_VIDEO_PIXELS
from emolens.server.security import default_allowed_hosts

MB = 1_000_000


def default_jobs_dir() -> Path:
    """``$EMOLENS_JOBS_DIR``, else ``<user cache>/emolens/jobs`` (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    if os.environ.get("EMOLENS_JOBS_DIR"):
        return Path(os.environ["EMOLENS_JOBS_DIR"])
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "emolens" / "jobs"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emolens" / "jobs"


@dataclass
class ServerConfig:
    """Settings of the server (the ``emolens serve`` options)."""

    jobs_dir: Path = field(default_factory=default_jobs_dir)
    max_image_bytes: int = 25 * MB
    max_audio_bytes: int = 100 * MB
    max_video_bytes: int = 1000 * MB
    max_frame_bytes: int = 2 * MB  #: one live WebSocket frame (JPEG)
    max_pixels: int = DEFAULT_MAX_PIXELS  #: largest photo/live frame (width x height), read from its header
    max_video_pixels: int = DEFAULT_MAX_VIDEO_PIXELS  #: largest video frame, read from the stream's metadata
    workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    max_queued_jobs: int = 16
    detector: str = "yunet"
    min_score: float = 0.6
    model: str = "default"  #: face model: registry name or .onnx path
    device: str = "cpu"  #: where the models run: cpu, cuda or auto (see emolens.device)
    # -- access control
    host: str = "127.0.0.1"  #: the address served (by default an allowed Host name)
    allowed_hosts: list[str] = field(default_factory=list)  #: Host names; empty: host + localhost; "*": any
    allowed_origins: list[str] | None = None  #: besides the app's own; None: allowed hosts on its port; "*": any
    tokens: list[str] = field(default_factory=list)  #: access tokens (empty: none needed)
    # -- retention of video jobs
    keep_jobs_hours: float = 24.0  #: finished jobs older than this are removed (0: no age limit)
    max_jobs_disk_gb: float = 5.0  #: quota of the jobs folder, oldest finished jobs removed first (0: none)
    # -- timeouts (uvicorn)
    header_timeout_s: float = 10.0  #: a request's headers must arrive within this
    body_timeout_s: float = 10.0  #: a request body may pause this long at most
    keep_alive_s: int = 5  #: an idle keep-alive connection is closed after this

    def hosts(self) -> list[str]:
        """The allowed ``Host`` names (the configured ones, or the default)."""
        return list(self.allowed_hosts) or default_allowed_hosts(self.host)
