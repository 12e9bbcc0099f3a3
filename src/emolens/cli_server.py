"""``emolens serve``: the web app and REST API (registered by :mod:`emolens.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer, train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""

    @app.command()
    def serve(
        host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only; "
                                               "the API has no authentication).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port.", min=0, max=65535)] = 8000,
        jobs_dir: Annotated[Optional[Path], typer.Option(help="Folder for video jobs and uploads "
                                                              "(default: the user cache, emolens/jobs).")] = None,
        max_upload_mb: Annotated[float, typer.Option(help="Largest video upload (MB).", min=1)] = 1000,
        max_image_mb: Annotated[float, typer.Option(help="Largest photo upload (MB).", min=0.1)] = 25,
        workers: Annotated[int, typer.Option(help="Threads analysing photos and live frames at once "
                                                  "(0: min(4, CPUs)).", min=0)] = 0,
        detector: Annotated[str, typer.Option(help="Face detector: yunet or haar.")] = "yunet",
        min_score: Annotated[float, typer.Option(help="Minimum face-detection confidence (0..1).")] = 0.6,
        model: Annotated[str, typer.Option(help="Face model: default (fast), accurate, or an .onnx file.")] = "default",
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    ) -> None:
        """Web page and REST API: photos, audio, video jobs, live webcam (open http://HOST:PORT/)."""
        try:
            from emolens.server import ServerConfig
            from emolens.server import serve as run
        except ImportError as exc:
            typer.echo(f"error: the server needs its extra: pip install 'emolens[server]' ({exc})", err=True)
            raise typer.Exit(2) from None
        from emolens.expression import resolve_model

        try:
            resolve_model(model)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        config = ServerConfig(detector=detector, min_score=min_score, model=model,
                              max_video_bytes=int(max_upload_mb * 1e6), max_image_bytes=int(max_image_mb * 1e6))
        if jobs_dir is not None:
            config.jobs_dir = jobs_dir
        if workers:
            config.workers = workers
        try:
            config.jobs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            typer.echo(f"error: cannot use --jobs-dir {config.jobs_dir}: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"emolens: http://{host}:{port}/ (API docs at /docs); jobs in {config.jobs_dir}", err=True)
        run(config, host=host, port=port, log_level=log_level)
