"""``emolens`` commands for the video pipeline (registered by :mod:`emolens.cli`): ``video`` and ``live``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from emolens.cli_options import (
    Alpha,
    Bars,
    ClassifyEvery,
    DetectEvery,
    DetectorOption,
    DeviceOption,
    Every,
    Fps,
    MaxFrames,
    MaxVideoPixels,
    MinScore,
    ModelOption,
    Smooth,
    SmoothWindow,
    _check_every_fps,
    fail,
)
from emolens.media import DEFAULT_MAX_VIDEO_PIXELS


def _analyzer(model: str, **options: Any):  # noqa: ANN202
    from emolens.video import VideoAnalyzer, VideoOptions

    try:
        opts = VideoOptions(**options)
        return VideoAnalyzer(opts, model)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))


def _unique_stem(source: str, used: set[str]) -> str:
    from emolens.outputs import unique_stem
    from emolens.video import output_stem

    return unique_stem(output_stem(source), Path(source).suffix, used)


def register(app: typer.Typer, train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""

    @app.command()
    def video(
        paths: Annotated[list[str], typer.Argument(help="Video files, image folders, camera index (0) or stream URLs. "
                                                        "A folder without images is expanded into its videos.")],
        ctx: typer.Context,
        out: Annotated[Path, typer.Option(help="Output folder.")],
        every: Every = 1,
        fps: Fps = None,
        detect_every: DetectEvery = 2,
        classify_every: ClassifyEvery = 2,
        max_frames: MaxFrames = None,
        detector: DetectorOption = "yunet",
        min_score: MinScore = 0.6,
        smooth: Smooth = "ema",
        alpha: Alpha = 0.5,
        window: SmoothWindow = 5,
        window_alias: Annotated[Optional[int], typer.Option("--window", hidden=True, min=1)] = None,
        model: ModelOption = "default",
        annotate: Annotated[bool, typer.Option(help="Write OUT/<stem>.annotated.mp4.")] = True,
        bars: Bars = True,
        fmt: Annotated[str, typer.Option("--format", help="csv, or parquet (adds OUT/<stem>.frames.parquet, "
                                                          "written as the frames come).")] = "csv",
        plot: Annotated[bool, typer.Option(help="Write OUT/<stem>.timeline.png (emotions over time).")] = False,
        progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
        modality: Annotated[str, typer.Option(help="face, voice or both (voice fused in during speech).")] = "both",
        max_video_pixels: MaxVideoPixels = DEFAULT_MAX_VIDEO_PIXELS,
        device: DeviceOption = "cpu",
    ) -> None:
        """Faces in videos: tracks, per-frame expressions, one decision per track and per video.

        Writes, per input, OUT/<stem>.frames.csv, OUT/<stem>.summary.json and OUT/<stem>.annotated.mp4.
        An input that fails is reported and the others still run. Exit code: 0 when every input was
        analysed, 1 when any input failed, 2 for a usage error.
        """
        from emolens.media import MediaError, iter_video_inputs

        _check_every_fps(ctx, fps)
        window = window_alias or window
        if fmt not in ("csv", "parquet"):
            fail(f"unknown --format {fmt!r} (csv, parquet)")
        if fmt == "parquet":
            from emolens.sinks import require_pyarrow

            try:
                require_pyarrow()
            except RuntimeError as exc:
                fail(str(exc))
        inputs = iter_video_inputs(paths)
        if not inputs:
            fail("no video inputs found in the given paths")
        analyzer = _analyzer(model, every=every, fps=fps, detect_every=detect_every, classify_every=classify_every,
                             max_frames=max_frames,
                             detector=detector, min_score=min_score, smooth=smooth, alpha=alpha, window=window,
                             modality=modality, max_video_pixels=max_video_pixels, device=device)
        failed, used = 0, set()
        for source in inputs:
            try:
                summary = analyzer.run(source, out, stem=_unique_stem(source, used), annotate=annotate,
                                       parquet=fmt == "parquet", plot=plot, progress=progress, bars=bars)
            except (MediaError, OSError, ValueError, RuntimeError) as exc:
                failed += 1
                typer.echo(f"error: {exc}", err=True)
                continue
            except Exception as exc:  # noqa: BLE001  (never a traceback for one bad input; the others still run)
                failed += 1
                typer.echo(f"error: {source}: unexpected {type(exc).__name__}: {exc}", err=True)
                continue
            name = Path(source).name or source
            tracks = summary["tracks"]
            line = (f"{name}: {summary['frames_analysed']} frames, {len(tracks)} track(s), "
                    f"label_sum={summary['label_sum']} label_vote={summary['label_vote']}, "
                    f"face={summary['label_face']} voice={summary['label_voice']} fused={summary['label_fused']}, "
                    f"{summary['processing_fps']} FPS")
            typer.echo(line)
            for written in summary["outputs"].values():
                typer.echo(f"{name}: wrote {written}", err=True)
            if summary["fusion"]["note"] and modality != "face":
                typer.echo(f"{name}: {summary['fusion']['note']}", err=True)
            if summary["error"]:
                failed += 1
                typer.echo(f"error: {summary['error']} ({summary['faces_found']} rows written before it were kept)",
                           err=True)
            elif not tracks:
                n = summary["frames_analysed"]
                typer.echo(f"{name}: no face found ({n} frames analysed; empty table)", err=True)
        typer.echo(f"{len(inputs)} input(s), {failed} error(s); outputs in {out}", err=True)
        if failed:
            raise typer.Exit(1)

    @app.command()
    def live(
        ctx: typer.Context,
        source: Annotated[str, typer.Option(help="Camera index (0), stream URL (rtsp/http) or video file.")] = "0",
        csv: Annotated[Optional[Path], typer.Option(help="Also write the per-frame rows (the CSV of `video`).")] = None,
        window: Annotated[Optional[bool], typer.Option("--window/--no-window",
                                                       help="Show a window (default: when a display exists; "
                                                            "otherwise an MJPEG preview is served).")] = None,
        host: Annotated[str, typer.Option(help="MJPEG preview address (localhost only by default).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="MJPEG preview port (0: any free port).",
                                                 min=0, max=65535)] = 8765,
        realtime: Annotated[bool, typer.Option(help="Play files at their own speed (not as fast as they go).")] = True,
        every: Every = 1,
        fps: Fps = None,
        detect_every: DetectEvery = 2,
        classify_every: ClassifyEvery = 2,
        max_frames: MaxFrames = None,
        detector: DetectorOption = "yunet",
        min_score: MinScore = 0.6,
        smooth: Smooth = "ema",
        alpha: Alpha = 0.5,
        window_frames: SmoothWindow = 5,
        model: ModelOption = "default",
        bars: Bars = True,
        max_video_pixels: MaxVideoPixels = DEFAULT_MAX_VIDEO_PIXELS,
        device: DeviceOption = "cpu",
    ) -> None:
        """Real-time overlay of a camera, stream or file (q or Ctrl-C stops); shows FPS.

        Faces only: live does not analyse sound, so it has no --modality (use `video` for voice).
        """
        from emolens.live import run_live
        from emolens.media import MediaError

        _check_every_fps(ctx, fps)
        analyzer = _analyzer(model, every=every, fps=fps, detect_every=detect_every, classify_every=classify_every,
                             max_frames=max_frames, detector=detector, min_score=min_score, smooth=smooth,
                             alpha=alpha, window=window_frames, modality="face", max_video_pixels=max_video_pixels,
                             device=device)

        def ready(preview: str) -> None:
            where = "in a window (q to quit)" if preview == "window" else f"at {preview} (Ctrl-C to stop)"
            typer.echo(f"live preview {where}", err=True)

        try:
            result = run_live(source, csv_path=csv, window=window, host=host, port=port, realtime=realtime,
                              on_ready=ready, analyzer=analyzer, bars=bars)
        except (MediaError, OSError, ValueError, RuntimeError) as exc:
            fail(str(exc), 1)
        typer.echo(f"stopped ({result['stopped']}): {result['frames']} frames, {result['fps']} FPS", err=True)
        if csv:
            typer.echo(f"wrote {csv}", err=True)
