"""``emolens batch`` (registered by :mod:`emolens.cli`): many inputs on a process pool or a Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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
from emolens.media import DEFAULT_MAX_PIXELS, DEFAULT_MAX_VIDEO_PIXELS


def register(app: typer.Typer, train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add this module's command to the CLI."""

    @app.command()
    def batch(
        paths: Annotated[list[str], typer.Argument(
            help="Folders (walked for photos, videos and audio), globs ('data/**/*.mp4'), files, or list files "
                 "(.txt: one path per line; .csv: a 'path' or 'input' column).")],
        ctx: typer.Context,
        out: Annotated[Path, typer.Option(help="Output folder (rerun with the same one to resume).")],
        engine: Annotated[str, typer.Option(help="local (a process pool) or ray (Ray actors; "
                                                 "pip install 'emolens[ray]').")] = "local",
        workers: Annotated[Optional[int], typer.Option(
            help="Worker processes (default: one per core; ray: the cluster's CPUs).", min=1)] = None,
        address: Annotated[Optional[str], typer.Option(
            help="Ray cluster to use (HEAD:6379; with --engine ray). Default: a local Ray for this run.")] = None,
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
        model: ModelOption = "default",
        modality: Annotated[str, typer.Option(help="Videos: face, voice or both (voice fused in during "
                                                   "speech).")] = "both",
        annotate: Annotated[bool, typer.Option(help="Write annotated videos and photos.")] = True,
        bars: Bars = True,
        plot: Annotated[bool, typer.Option(help="Videos: write <stem>.timeline.png.")] = False,
        parquet: Annotated[bool, typer.Option(help="Write the Parquet datasets OUT/frames and OUT/segments "
                                                   "(needs pyarrow).")] = True,
        vad: Annotated[str, typer.Option(help="Audio: voice activity detection (auto, silero, energy, none).")]
        = "auto",
        max_video_pixels: MaxVideoPixels = DEFAULT_MAX_VIDEO_PIXELS,
        max_pixels: Annotated[int, typer.Option(help="Refuse photos whose header declares more pixels than this.",
                                                min=1)] = DEFAULT_MAX_PIXELS,
        redo: Annotated[bool, typer.Option(help="Analyse every input again (default: skip those finished "
                                                "before).")] = False,
        progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
        device: DeviceOption = "cpu",
    ) -> None:
        """Analyse many photos, videos and audio files in parallel, resumably.

        Writes OUT/<stem>/ per input (the files of `video`, `image --json` or `audio --json`),
        the Parquet datasets OUT/frames/input=<stem>/ (faces) and OUT/segments/input=<stem>/
        (speech), and OUT/manifest.csv (input, status, error, seconds, frames, outputs), updated
        after every input. A rerun skips the inputs finished before and retries failed ones.
        Exit code: 0 when every input was analysed, 1 when any failed, 2 for a usage error,
        130 when interrupted (finished inputs are kept).
        """
        from emolens.batch import BatchSettings, discover_inputs, ray_available, results_table, run_batch

        _check_every_fps(ctx, fps)
        if engine not in ("local", "ray"):
            fail(f"unknown --engine {engine!r} (local, ray)")
        if address and engine != "ray":
            fail("--address needs --engine ray")
        if engine == "ray" and not ray_available():
            fail("--engine ray needs Ray: pip install 'emolens[ray]'")
        if vad not in ("auto", "silero", "energy", "none"):
            fail(f"unknown --vad {vad!r} (auto, silero, energy, none)")
        if parquet:
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                fail("the Parquet datasets need pyarrow: pip install 'emolens[parquet]' (or use --no-parquet)")
        if out.exists() and not out.is_dir():
            fail(f"--out {out} exists and is not a folder")
        try:
            inputs = discover_inputs(paths, exclude=out, warn=lambda m: typer.echo(f"warning: {m}", err=True))
        except (ValueError, OSError) as exc:
            fail(str(exc))
        if not inputs:
            fail("no inputs found in the given paths")
        video = {"every": every, "fps": fps, "detect_every": detect_every, "classify_every": classify_every,
                 "max_frames": max_frames, "detector": detector, "min_score": min_score, "smooth": smooth,
                 "alpha": alpha, "window": window, "modality": modality, "max_video_pixels": max_video_pixels}
        settings = BatchSettings(video=video, model=model, annotate=annotate, bars=bars, plot=plot, parquet=parquet,
                                 max_pixels=max_pixels, vad=vad, device=device)
        try:
            report = run_batch(inputs, out, settings, engine=engine, workers=workers, address=address, redo=redo,
                               progress=progress)
        except (ValueError, FileNotFoundError) as exc:
            fail(str(exc))
        except (ConnectionError, RuntimeError) as exc:  # e.g. no Ray cluster at --address
            fail(f"{engine} engine: {exc}", 1)
        except OSError as exc:  # the output folder cannot be written
            fail(str(exc), 1)
        for note in report.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(results_table(report))
        typer.echo(f"manifest: {report.out_dir / 'manifest.csv'}", err=True)
        if report.interrupted:
            typer.echo("interrupted: finished inputs are in the manifest; rerun the same command to go on", err=True)
            raise typer.Exit(130)
        if report.count("failed"):
            raise typer.Exit(1)
