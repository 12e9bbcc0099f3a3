"""``emolens explain`` (registered by :mod:`emolens.cli`): occlusion heat maps and region evidence per face."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from emolens.faces import DetectorName
from emolens.media import DEFAULT_MAX_PIXELS


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def register(app: typer.Typer, train_app: typer.Typer, evaluate_app: typer.Typer) -> None:
    """Add this module's command to the CLI."""

    @app.command()
    def explain(
        paths: Annotated[list[Path], typer.Argument(help="Image files or folders (walked recursively).")],
        out: Annotated[Path, typer.Option(help="Output folder for the PNGs.")],
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write results as JSON here.")] = None,
        model: Annotated[str, typer.Option(help="Face model: default (fast), accurate, or an .onnx file.")] = "default",
        detector: Annotated[DetectorName, typer.Option(help="Face detector.")] = "yunet",
        min_score: Annotated[float, typer.Option(help="Minimum face-detection confidence.", min=0.0, max=1.0)] = 0.6,
        patch: Annotated[int, typer.Option(help="Side of the grey occluding patch (aligned-face pixels).", min=1)] = 8,
        stride: Annotated[int, typer.Option(help="Step between patches (<= --patch).", min=1)] = 4,
        max_pixels: Annotated[int, typer.Option(
            help="Refuse photos whose header declares more pixels (width x height) than this.", min=1)
        ] = DEFAULT_MAX_PIXELS,
    ) -> None:
        """Why each face got its label: occlusion heat maps and eyes / nose / mouth evidence.

        Writes, per photo, OUT/<stem>.explain.png (heat maps on the photo) and per face
        OUT/<stem>.face<i>.png (aligned face and its heat map). A file that cannot be read gets an
        ``error`` entry and the others still run. Exit code: 0 when every input was analysed, 1 when
        any input failed, 2 for a usage error.
        """
        import cv2

        from emolens.api import FaceAnalyzer
        from emolens.explanations import draw_face_heatmap, draw_image_heatmaps, explain_faces
        from emolens.media import MediaError, iter_image_paths, load_image
        from emolens.outputs import unique_stem, write_json

        if stride > patch:
            _fail(f"--stride {stride} must not exceed --patch {patch}")
        files = iter_image_paths(paths)
        if not files:
            _fail("no image files found in the given paths")
        try:
            analyzer = FaceAnalyzer(detector, model, min_score=min_score, max_pixels=max_pixels)
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            _fail(str(exc))
        if patch > analyzer.model.spec.frame:
            _fail(f"--patch {patch} exceeds the model's face size {analyzer.model.spec.frame}")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"{out}: cannot create the output folder ({exc.strerror})")
        results: list[dict] = []
        used: set[str] = set()
        n_faces = 0
        for path in files:
            entry: dict = {"path": str(path), "faces": [], "error": None}
            try:
                image = load_image(path, max_pixels)
                found = explain_faces(analyzer.model, image, analyzer.detector.detect(image), patch, stride)
                stem = unique_stem(path.stem, path.suffix, used)
                for i, e in enumerate(found):
                    png = out / f"{stem}.face{i}.png"
                    if not cv2.imwrite(str(png), draw_face_heatmap(e)):
                        raise OSError(f"could not write {png}")
                    entry["faces"].append({**e.to_dict(), "png": str(png)})
                photo = out / f"{stem}.explain.png"
                if not cv2.imwrite(str(photo), draw_image_heatmaps(image, found)):
                    raise OSError(f"could not write {photo}")
                entry["image"] = str(photo)
                n_faces += len(found)
                typer.echo(f"{path}: {len(found)} face(s), wrote {photo}", err=True)
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
        typer.echo(f"{len(results)} image(s), {n_faces} face(s), {n_err} error(s)", err=True)
        if json_out:
            typer.echo(f"wrote {json_out}", err=True)
        if n_err:
            raise typer.Exit(1)
