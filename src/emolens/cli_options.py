"""Options and helpers shared by every ``emolens`` command (:mod:`emolens.cli` and its ``cli_*`` modules).

Kept apart from :mod:`emolens.cli`, which imports the command modules to register them. Importing this
module stays cheap: models, onnxruntime and OpenCV are imported inside the helpers, when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer

from emolens.device import Device
from emolens.face_crops import Framing
from emolens.faces import DetectorName

if TYPE_CHECKING:
    from emolens.api import FaceAnalyzer


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code`` (2: usage error)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def face_analyzer(detector: str, model: str, *, min_score: float, max_pixels: int, device: str) -> FaceAnalyzer:
    """A :class:`emolens.api.FaceAnalyzer`; a model or detector that cannot be loaded is a usage error."""
    from emolens.api import FaceAnalyzer

    try:
        return FaceAnalyzer(detector, model, min_score=min_score, max_pixels=max_pixels, device=device)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))


def _positive(value: Optional[float]) -> Optional[float]:
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{value} is not > 0")
    return value


def _check_every_fps(ctx: typer.Context, fps: Optional[float]) -> None:
    """Usage error when ``--every`` is given together with ``--fps`` (they are two ways to sample)."""
    source = ctx.get_parameter_source("every")  # typer may vendor click: compare the enum by name
    if fps is not None and source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
        raise typer.BadParameter("use either --every or --fps, not both", ctx=ctx, param_hint="'--every'")


def _usable_device(device: str) -> str:
    """Usage error (exit 2) when the device cannot be used here, before any work starts."""
    from emolens.device import DeviceError, providers_for

    try:
        providers_for(device)
    except DeviceError as exc:
        raise typer.BadParameter(str(exc)) from None
    return device


#: ``--device`` of every command that runs models.
DeviceOption = Annotated[Device, typer.Option(
    "--device", callback=_usable_device,
    help="Where the models run: cpu, cuda (needs onnxruntime-gpu and a CUDA GPU) or auto (CUDA when "
         "available, else CPU).")]
#: ``--model`` of every command that classifies faces.
ModelOption = Annotated[str, typer.Option(
    "--model", help="Face model: default (fast), accurate, or an .onnx file.", show_default=True)]
#: ``--framing`` of the commands that read labelled image folders (:mod:`emolens.face_crops`).
FramingOption = Annotated[Framing, typer.Option(
    help="Image folders: how each image becomes a face crop. auto: find the face in full photos and align "
         "it, leave images that are already face crops as they are; detect: always align the largest "
         "detected face; crop: every image is a face crop, resized.")]
#: ``--detector`` of every command that finds faces.
DetectorOption = Annotated[DetectorName, typer.Option(help="Face detector.")]
#: ``--max-pixels`` of the commands that read photos.
MaxPixelsOption = Annotated[int, typer.Option(
    help="Refuse photos whose header declares more pixels (width x height) than this, before decoding.", min=1)]

# The video options (``video``, ``live``, ``batch``).
Every = Annotated[int, typer.Option(help="Analyse every N-th frame.", min=1)]
Fps = Annotated[Optional[float], typer.Option("--fps", help="Analyse at most F frames per second (not with --every).",
                                              callback=_positive)]
DetectEvery = Annotated[int, typer.Option(help="Detect faces every N analysed frames; the tracker carries boxes "
                                               "between (their crops are re-classified).", min=1)]
ClassifyEvery = Annotated[int, typer.Option(help="Classify each tracked face every N analysed frames (new faces "
                                                   "at once); between, a track keeps its last probabilities.", min=1)]
MaxFrames = Annotated[Optional[int], typer.Option(help="Stop after this many analysed frames.", min=1)]
MaxVideoPixels = Annotated[int, typer.Option(help="Refuse videos whose frames are larger than this (width x height; "
                                                  "default 8K = 7680x4320), from the stream's metadata.", min=1)]
MinScore = Annotated[float, typer.Option(help="Minimum detection confidence for a new track.", min=0.0, max=1.0)]
Smooth = Annotated[str, typer.Option(help="Per-track smoothing of probabilities: ema, window or none.")]
Alpha = Annotated[float, typer.Option(help="EMA weight of the newest frame (--smooth ema).", min=0.0, max=1.0)]
SmoothWindow = Annotated[int, typer.Option("--smooth-window", help="Frames averaged (--smooth window).", min=1)]
Bars = Annotated[bool, typer.Option(help="Draw each face's probability bars (--no-bars: box and label only).")]
