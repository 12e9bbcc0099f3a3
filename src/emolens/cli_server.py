"""``emolens serve``: the web app and REST API (registered by :mod:`emolens.cli`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from emolens.cli_options import DetectorOption, DeviceOption, ModelOption, fail
from emolens.media import DEFAULT_MAX_PIXELS, DEFAULT_MAX_VIDEO_PIXELS


def _names(values: list[str] | None) -> list[str]:
    """Values of a repeatable option, each also split at commas and spaces."""
    return [v for value in values or [] for v in re.split(r"[,\s]+", value) if v]


def register(app: typer.Typer, train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""

    @app.command()
    def serve(
        host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only; "
                                               "anything else: consider --token).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port.", min=0, max=65535)] = 8000,
        jobs_dir: Annotated[Optional[Path], typer.Option(help="Folder for video jobs and uploads "
                                                              "(default: the user cache, emolens/jobs).")] = None,
        max_upload_mb: Annotated[float, typer.Option(help="Largest video upload (MB).", min=1)] = 1000,
        max_image_mb: Annotated[float, typer.Option(help="Largest photo upload (MB).", min=0.1)] = 25,
        max_pixels: Annotated[int, typer.Option(
            help="Largest photo or live frame (width x height, from its header; larger: 413).",
            min=1)] = DEFAULT_MAX_PIXELS,
        max_video_pixels: Annotated[int, typer.Option(
            help="Largest video frame (width x height, from the stream's metadata; larger: 413; default 8K).",
            min=1)] = DEFAULT_MAX_VIDEO_PIXELS,
        workers: Annotated[int, typer.Option(help="Threads analysing photos and live frames at once "
                                                  "(0: min(4, CPUs)).", min=0)] = 0,
        detector: DetectorOption = "yunet",
        min_score: Annotated[float, typer.Option(help="Minimum face-detection confidence.", min=0.0, max=1.0)] = 0.6,
        model: ModelOption = "default",
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
        allowed_hosts: Annotated[Optional[list[str]], typer.Option(
            help="Host names the server answers to (repeat or comma-separate; '*': any). Other Host headers "
                 "get 400 (DNS rebinding). Default: the --host address, localhost, 127.0.0.1, ::1.")] = None,
        allowed_origins: Annotated[Optional[list[str]], typer.Option(
            help="Web origins (http://name:port) whose pages may POST/DELETE and open the live WebSocket, "
                 "besides the server's own ('*': any). Default: the allowed hosts on the served port.")] = None,
        token: Annotated[Optional[list[str]], typer.Option(
            help="Access token(s) every /api request must carry ('Authorization: Bearer T' or "
                 "'X-Emolens-Token: T'); each token sees only its own jobs. Default: $EMOLENS_TOKEN "
                 "(comma-separated), else none.", show_default=False)] = None,
        keep_jobs_hours: Annotated[float, typer.Option(
            help="Finished video jobs older than this are removed (0: no age limit).", min=0)] = 24,
        max_jobs_disk_gb: Annotated[float, typer.Option(
            help="Disk quota of the jobs folder: the oldest finished jobs go first, and an upload that does not "
                 "fit gets 507 (0: no quota).", min=0)] = 5,
        request_timeout: Annotated[float, typer.Option(
            help="Seconds a request's headers may take, and a request body may pause, before the "
                 "connection is closed (408).", min=1)] = 10,
        device: DeviceOption = "cpu",
    ) -> None:
        """Web page and REST API: photos, audio, video jobs, live webcam (open http://HOST:PORT/)."""
        try:
            from emolens.server import ServerConfig
            from emolens.server import serve as run
        except ImportError as exc:
            fail(f"the server needs its extra: pip install 'emolens[server]' ({exc})")
        from emolens.expression import resolve_model

        try:
            resolve_model(model)
        except ValueError as exc:
            fail(str(exc))
        tokens = _names(token) or _names([os.environ.get("EMOLENS_TOKEN", "")])
        config = ServerConfig(detector=detector, min_score=min_score, model=model, device=device,
                              max_video_bytes=int(max_upload_mb * 1e6), max_image_bytes=int(max_image_mb * 1e6),
                              max_pixels=max_pixels, max_video_pixels=max_video_pixels,
                              host=host, allowed_hosts=_names(allowed_hosts),
                              allowed_origins=_names(allowed_origins) or None, tokens=tokens,
                              keep_jobs_hours=keep_jobs_hours, max_jobs_disk_gb=max_jobs_disk_gb,
                              header_timeout_s=request_timeout, body_timeout_s=request_timeout)
        if jobs_dir is not None:
            config.jobs_dir = jobs_dir
        if workers:
            config.workers = workers
        try:
            config.jobs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"cannot use --jobs-dir {config.jobs_dir}: {exc}")
        typer.echo(f"emolens: http://{host}:{port}/ (API docs at /docs); jobs in {config.jobs_dir}; "
                   f"allowed hosts: {', '.join(config.hosts())}; access token: {'on' if tokens else 'off'}",
                   err=True)
        if host not in ("127.0.0.1", "localhost", "::1") and not tokens:
            typer.echo("warning: other machines can reach this server and it needs no token (--token)", err=True)
        run(config, host=host, port=port, log_level=log_level)
