"""The ``emolens`` command line.

Commands: ``image``, ``evaluate face``, ``train face`` (more are added by later modules).
Every command exits non-zero with a one-line message on bad input, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from emolens.cli_options import (
    DetectorOption,
    DeviceOption,
    FramingOption,
    MaxPixelsOption,
    ModelOption,
    face_analyzer,
    fail,
)
from emolens.media import DEFAULT_MAX_PIXELS

# Plain click help (rich_markup_mode=None): wraps cleanly at 80 columns, no "<bool>" metavars or cut defaults.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Emotion recognition from faces and voices.")
train_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                        help="Train models (needs the 'train' extra: torch).")
evaluate_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Evaluate models on labelled data.")
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")


def _version(value: bool) -> None:
    if value:
        from emolens import __version__

        typer.echo(f"emolens {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Emotion recognition from faces and voices."""


@app.command()
def image(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (walked recursively).")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write results as JSON here.")] = None,
    save_annotated: Annotated[Optional[Path], typer.Option(help="Write annotated copies into this folder.")] = None,
    bars: Annotated[bool, typer.Option(
        help="Draw each face's probability bars in the annotated copies (--no-bars: box and label only).")] = True,
    detector: DetectorOption = "yunet",
    min_score: Annotated[float, typer.Option(help="Minimum face-detection confidence.", min=0.0, max=1.0)] = 0.6,
    model: ModelOption = "default",
    max_pixels: MaxPixelsOption = DEFAULT_MAX_PIXELS,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print the table.")] = False,
    device: DeviceOption = "cpu",
) -> None:
    """Detect every face in photos and classify its expression.

    A file that cannot be read (missing, no permission, too large, corrupt) gets an ``error``
    entry and the others are still analysed. Exit code: 0 when every input was analysed, 1 when
    any input failed, 2 for a usage error.
    """
    from emolens.api import ImageResult
    from emolens.media import MediaError, iter_image_paths, load_image
    from emolens.outputs import annotate_image, faces_table, unique_stem, write_json

    files = iter_image_paths(paths)
    if not files:
        fail("no image files found in the given paths")
    analyzer = face_analyzer(detector, model, min_score=min_score, max_pixels=max_pixels, device=device)
    results, used = [], set()
    for path in files:
        try:
            result = analyzer.analyze_image(path)
        except MediaError as exc:
            result = ImageResult(str(path), [], str(exc))
        except Exception as exc:  # noqa: BLE001  (one bad input never ends the batch)
            result = ImageResult(str(path), [], f"{path}: unexpected {type(exc).__name__}: {exc}")
        results.append(result)
        if save_annotated and result.error is None:
            import cv2

            save_annotated.mkdir(parents=True, exist_ok=True)
            out = save_annotated / f"{unique_stem(path.stem, path.suffix, used)}.annotated.jpg"
            if cv2.imwrite(str(out), annotate_image(load_image(path, max_pixels), result.faces, bars=bars)):
                typer.echo(f"{path}: wrote {out}", err=True)
            else:
                typer.echo(f"error: {path}: could not write {out}", err=True)
        if json_out:  # rewritten after every file: nothing computed is lost on a crash or Ctrl-C
            write_json([r.to_dict() for r in results], json_out)
    if not quiet:
        typer.echo(faces_table(results))
    n_err = sum(r.error is not None for r in results)
    n_faces = sum(len(r.faces) for r in results)
    typer.echo(f"{len(results)} image(s), {n_faces} face(s), {n_err} error(s)", err=True)
    if json_out:
        typer.echo(f"wrote {json_out}", err=True)
    if n_err:
        raise typer.Exit(1)


@evaluate_app.command("face")
def evaluate_face(
    data: Annotated[Path, typer.Option(help="FER2013 csv (.csv, .gz, .xz) or an image folder root/<class>/*.png.")],
    split: Annotated[str, typer.Option(help="Training, PublicTest or PrivateTest.")] = "PrivateTest",
    model: ModelOption = "default",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write metrics JSON here.")] = None,
    confusion_png: Annotated[
        Optional[Path], typer.Option("--confusion", help="Write the confusion matrix PNG here.")
    ] = None,
    device: DeviceOption = "cpu",
    regions: Annotated[bool, typer.Option(
        "--regions", help="Also: per class, the mean probability drop when the eyes, nose or mouth is masked."),
    ] = False,
    regions_png: Annotated[Optional[Path], typer.Option(
        help="With --regions: write the bar chart here (default: next to --json, or next to the card).")] = None,
    card: Annotated[bool, typer.Option(
        "--card", help="With --regions or --ferplus: write the tables (and chart) into the model's card "
                       "(face_<name>.md).")] = False,
    framing: FramingOption = "auto",
    ferplus: Annotated[Optional[Path], typer.Option(
        help="FER+ votes csv (fer2013new.csv): score against the FER+ majority labels of the FER2013 csv instead "
             "of its own (faces whose majority is contempt, or with no usable vote, are left out).")] = None,
) -> None:
    """Accuracy, macro-F1, per-class scores and confusion matrix of the face model; with --regions,
    which facial region carries each class."""
    from emolens.expression import ExpressionModel
    from emolens.face_eval import evaluate_faces
    from emolens.metrics import format_report, plot_confusion
    from emolens.outputs import write_json

    if card and not (regions or ferplus):
        fail("--card needs --regions or --ferplus")
    try:
        net = ExpressionModel(model, device=device)
        report = evaluate_faces(data, net, split, framing, regions=regions, progress=True, ferplus=ferplus)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    for reason, n in report["skipped"].items():
        typer.echo(f"left out {n} faces whose FER+ majority is {reason}" if ferplus and reason == "contempt" else
                   f"left out {n} faces with no usable FER+ vote" if ferplus else
                   f"skipped class folder {reason!r} ({n} images): not one of the model's classes", err=True)
    if report.get("unreadable"):
        bad = report["unreadable"]
        typer.echo(f"left out {len(bad)} unreadable image(s): {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}",
                   err=True)
    typer.echo(format_report(report))
    if "framing" in report:
        groups = report["framing"]["groups"]
        typer.echo(f"\nfaces ({framing}): " + ", ".join(
            f"{name} {g['n']} (accuracy {g['accuracy']:.3f})" for name, g in groups.items()))
        if "no face" in groups:
            typer.echo("no face: no face was detected; the whole image was scored as a face crop", err=True)
    if regions:
        from emolens.explanations import plot_region_evidence, region_evidence_table

        table = region_evidence_table(report["regions"])
        typer.echo(f"\nRegion evidence ({split}): mean drop of the true class's probability, region masked in grey\n"
                   + table)
        chart = regions_png or (net.path.with_suffix(".regions.png") if card else
                                json_out.with_suffix(".regions.png") if json_out else None)
        if chart:
            plot_region_evidence(report["regions"], chart, f"{net.name}: which region carries each class ({split})")
            typer.echo(f"wrote {chart}", err=True)
        if card:
            command = (f"emolens evaluate face --data {data} --split {split} --model {model} --regions --card")
            text = (f"## Region evidence: eyes, nose, mouth\n\nPer class, over the {split} faces of that class "
                    f"({report['n']} faces): the mean drop of the class's probability when the eyes and brows, the "
                    "nose or the mouth is masked in grey (rectangles from the 5-point alignment template; "
                    "`emolens explain` shows the same per face). Positive: the region supports the class; *main "
                    f"region*: the largest drop and its share of the positive drops.\nReproduce: `{command}`\n\n"
                    f"![region evidence]({chart.name})\n\n{table}")
            _write_card(net.path, "regions", text)
    if card and ferplus:
        left = ", ".join(f"{n} {reason}" for reason, n in report["skipped"].items())
        text = (f"## FER+ labels\n\nThe {split} faces scored against the FER+ majority vote of 10 annotators instead "
                f"of FER2013's single label (left out: {left}; `contempt` is not one of the model's classes).\n"
                f"Reproduce: `emolens evaluate face --data {data} --ferplus {ferplus} --split {split} --model {model} "
                f"--card`\n\n```\n{format_report(report)}\n```")
        _write_card(net.path, "ferplus", text)
    if json_out:
        write_json(report, json_out)
        typer.echo(f"wrote {json_out}", err=True)
    png = confusion_png or (json_out.with_suffix(".confusion.png") if json_out else None)
    if png:
        plot_confusion(report, png, title=split)
        typer.echo(f"wrote {png}", err=True)


def _write_card(model_path: Path, section: str, text: str) -> None:
    """Set one measured section of a shipped model's card (fails cleanly when it has none)."""
    from emolens.cards import write_card_section

    if not model_path.with_suffix(".md").is_file():
        fail(f"{model_path.with_suffix('.md')}: no model card to update")
    typer.echo(f"wrote {write_card_section(str(model_path), section, text)}", err=True)


@train_app.command("face")
def train_face_cmd(
    data: Annotated[Path, typer.Option(help="FER2013 csv (.csv, .gz, .xz) or an image folder.")],
    out: Annotated[Path, typer.Option(help="Output folder: checkpoints, curves, metrics, ONNX.")],
    ferplus: Annotated[Optional[Path], typer.Option(help="FER+ votes csv: mix its soft labels in.")] = None,
    soft_weight: Annotated[float, typer.Option(help="Weight of the FER+ soft labels (with --ferplus).")] = 0.3,
    epochs: Annotated[int, typer.Option(help="Epochs.")] = 45,
    width: Annotated[int, typer.Option(help="Network width (channels of the first stage).")] = 40,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle cosine).")] = 0.05,
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing.")] = 0.1,
    balance: Annotated[str, typer.Option(help="Class weights: none, sqrt or inverse.")] = "sqrt",
    amp: Annotated[str, typer.Option(help="bf16 autocast: auto (GPU only), bf16 or off.")] = "auto",
    channels_last: Annotated[bool, typer.Option(help="channels_last memory format.")] = True,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    teacher_logits: Annotated[Optional[Path], typer.Option(
        help="Distil from teacher logits (.npz with a 'train' array, e.g. from the GPU recipe).")] = None,
    kd_alpha: Annotated[float, typer.Option(help="Weight of the distillation term (with --teacher-logits).")] = 0.7,
    kd_temp: Annotated[float, typer.Option(help="Distillation temperature.")] = 2.0,
    tta: Annotated[str, typer.Option(help="Test-time averaging baked into the model: none, flip or tencrop.")] = "flip",
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: its default).")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt.")] = False,
    framing: FramingOption = "auto",
) -> None:
    """Train the facial-expression model (selects on PublicTest, reports PrivateTest)."""
    try:
        from emolens.train.face import FaceTrainConfig, train_face
    except ImportError as exc:
        fail(f"training needs PyTorch: pip install 'emolens[train]' ({exc})")
    if not data.exists():
        fail(f"{data}: not found")
    cfg = FaceTrainConfig(
        data=str(data), out=str(out), ferplus=str(ferplus) if ferplus else None, soft_weight=soft_weight,
        width=width, epochs=epochs, batch_size=batch_size, lr=lr, label_smoothing=label_smoothing,
        balance=balance, amp=amp, channels_last=channels_last, seed=seed, device=device, threads=threads,
        teacher_logits=str(teacher_logits) if teacher_logits else None, kd_alpha=kd_alpha, kd_temp=kd_temp, tta=tta,
        framing=framing,
    )
    try:
        train_face(cfg, resume=resume)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))


def _register_modules() -> None:
    from emolens import cli_batch, cli_explain, cli_server, cli_speech, cli_video

    for module in (cli_video, cli_speech, cli_server, cli_explain, cli_batch):
        module.register(app, train_app, evaluate_app)


_register_modules()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
