"""``emolens explain`` (registered by :mod:`emolens.cli`): heat maps, activations and region evidence per face."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional

import typer

from emolens.cli_options import DetectorOption, DeviceOption, ModelOption, face_analyzer, fail
from emolens.media import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES

if TYPE_CHECKING:
    from emolens.api import FaceAnalyzer
    from emolens.explain_sink import ExplainSink

Method = Literal["occlusion", "gradcam", "both"]


def register(app: typer.Typer, train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add this module's command to the CLI."""

    @app.command()
    def explain(
        paths: Annotated[list[Path], typer.Argument(help="Photos, videos, or folders of them (walked recursively).")],
        out: Annotated[Path, typer.Option(help="Output folder for the PNGs and region tables.")],
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write results as JSON here.")] = None,
        method: Annotated[Method, typer.Option(
            help="Heat map: occlusion (grey patches), gradcam (conv stage 2) or both.")] = "both",
        every: Annotated[int, typer.Option(help="Videos: explain every N-th frame.", min=1)] = 10,
        model: ModelOption = "default",
        detector: DetectorOption = "yunet",
        min_score: Annotated[float, typer.Option(help="Minimum face-detection confidence.", min=0.0, max=1.0)] = 0.6,
        patch: Annotated[int, typer.Option(help="Side of the grey occluding patch (aligned-face pixels).", min=1)] = 8,
        stride: Annotated[int, typer.Option(help="Step between patches (<= --patch).", min=1)] = 4,
        max_pixels: Annotated[int, typer.Option(
            help="Refuse photos whose header declares more pixels (width x height) than this.", min=1)
        ] = DEFAULT_MAX_PIXELS,
        device: DeviceOption = "cpu",
    ) -> None:
        """Why each face got its label: heat maps, conv-stage activations and eyes / nose / mouth evidence.

        Writes into OUT, per photo (videos: per explained frame, <stem>.f<frame>): <stem>.<method>.png
        (heat maps over the photo), per face <stem>.face<i>.png (aligned face and its heat maps) and
        <stem>.face<i>.activations.png (mean and most active channels of each conv stage), and per
        input <stem>.regions.csv (each class's probability change when the eyes, nose or mouth is
        masked). A file that cannot be read gets an ``error`` entry and the others still run. Exit
        code: 0 when every input was analysed, 1 when any input failed, 2 for a usage error.
        """
        from emolens.explain_draw import regions_table
        from emolens.explain_sink import ExplainSink
        from emolens.explanations import explain_block, explain_faces
        from emolens.media import VIDEO_SUFFIXES, MediaError, iter_image_paths, load_image
        from emolens.outputs import unique_stem, write_json

        if stride > patch:
            fail(f"--stride {stride} must not exceed --patch {patch}")
        files = []
        for p in paths:  # folders: their photos and videos; files: as given
            files += iter_image_paths([p]) if not p.is_dir() else sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in (IMAGE_SUFFIXES | VIDEO_SUFFIXES))
        if not files:
            fail("no image or video files found in the given paths")
        analyzer = face_analyzer(detector, model, min_score=min_score, max_pixels=max_pixels, device=device)
        net = analyzer.model
        if patch > net.spec.frame:
            fail(f"--patch {patch} exceeds the model's face size {net.spec.frame}")
        if method != "occlusion" and explain_block(net) is None:
            fail(f"{net.path}: this model has no Grad-CAM outputs (use --method occlusion, or add them with "
                 "python -m emolens.train.face_explain_export)")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"{out}: cannot create the output folder ({exc.strerror})")
        results: list[dict] = []
        used: set[str] = set()
        n_faces = 0
        for path in files:
            entry: dict = {"path": str(path), "faces": [], "error": None}
            stem = unique_stem(path.stem, path.suffix, used)
            try:
                with ExplainSink(out, stem) as sink:
                    if path.suffix.lower() in VIDEO_SUFFIXES:
                        entry = {"path": str(path), "every": every, "frames": [], "error": None}
                        n_faces += _explain_video(path, every, analyzer, sink, entry, patch, stride, method)
                        typer.echo(f"{path}: {len(entry['frames'])} frame(s) explained, wrote {out}/{stem}.*",
                                   err=True)
                    else:
                        image = load_image(path, max_pixels)
                        found = explain_faces(net, image, analyzer.detector.detect(image), patch, stride, method)
                        written = sink.write(image, found)
                        entry.update(written, image=next(iter(written["images"].values())))
                        n_faces += len(found)
                        typer.echo(f"{path}: {len(found)} face(s), wrote {entry['image']}", err=True)
                        if found:
                            typer.echo(f"{path}\n{regions_table(found)}")
            except MediaError as exc:
                entry["error"] = str(exc)
            except Exception as exc:  # noqa: BLE001  (one bad input never ends the batch)
                entry["error"] = f"{path}: unexpected {type(exc).__name__}: {exc}"
            if entry["error"]:
                typer.echo(f"error: {entry['error']}", err=True)
            results.append(entry)
            if json_out:  # rewritten after every file: nothing computed is lost on a crash or Ctrl-C
                write_json(results, json_out)
        n_err = sum(r["error"] is not None for r in results)
        typer.echo(f"{len(results)} input(s), {n_faces} face(s), {n_err} error(s)", err=True)
        if json_out:
            typer.echo(f"wrote {json_out}", err=True)
        if n_err:
            raise typer.Exit(1)


def _explain_video(path: Path, every: int, analyzer: FaceAnalyzer, sink: ExplainSink, entry: dict, patch: int,
                   stride: int, method: str) -> int:
    """Explain every ``every``-th frame of a video into ``sink``; frames done are kept in ``entry``
    even when decoding fails midway (the error is raised after them). Returns the number of faces."""
    from tqdm import tqdm

    from emolens.explanations import explain_faces
    from emolens.media import expected_frames, open_video

    n = 0
    with open_video(path, every=every) as source:
        bar = tqdm(total=expected_frames(source.info, every), unit="frame", desc=path.name, leave=False)
        try:
            for frame in source:
                found = explain_faces(analyzer.model, frame.image, analyzer.detector.detect(frame.image), patch,
                                      stride, method)
                entry["frames"].append({"index": frame.index, "time_s": round(frame.time_s, 3),
                                        **sink.write(frame.image, found, frame.index)})
                n += len(found)
                bar.update()
        finally:
            bar.close()
    return n
