"""Where ``emolens explain`` puts its results: PNGs and a region table per input (a sink: open / write / close).

Per photo (or per sampled video frame, named ``<stem>.f<frame>``): ``<name>.<method>.png`` (the heat
maps over the photo, with each face's box and label) for every method, and per face
``<name>.face<i>.png`` (the aligned face and its heat maps) and ``<name>.face<i>.activations.png``
(the conv-stage activation grid). ``<stem>.regions.csv`` gets one row per face, region and class
(the probability change when the region is masked), written as results come in.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from emolens.explain_draw import draw_activation_grid, draw_face_heatmap, draw_image_heatmaps
from emolens.explanations import Explanation


def _imwrite(path: Path, image: np.ndarray) -> str:
    import cv2

    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")
    return str(path)


class ExplainSink:
    """Writes the explanations of one input (a photo, or the sampled frames of a video) into ``out``."""

    def __init__(self, out: str | Path, stem: str) -> None:
        self.out, self.stem = Path(out), stem
        self._csv = None
        self._writer = None

    def open(self) -> ExplainSink:
        """Create the folder and the region table."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._csv = open(self.out / f"{self.stem}.regions.csv", "w", newline="")  # noqa: SIM115 (closed in close)
        self._writer = csv.writer(self._csv)
        self._writer.writerow(["frame", "face", "label", "region", "class", "change"])
        return self

    def write(self, image: np.ndarray, explanations: list[Explanation], frame: int | None = None) -> dict:
        """Write the PNGs and region rows of one photo or frame; returns its JSON-ready entry
        (``images``: ``{method: png}``, ``faces``: each face's :meth:`Explanation.to_dict` plus its PNGs)."""
        if self._writer is None:
            self.open()
        name = self.stem if frame is None else f"{self.stem}.f{frame:06d}"
        methods = list(explanations[0].heatmaps) if explanations else []
        faces = []
        for i, e in enumerate(explanations):
            entry = {**e.to_dict(), "png": _imwrite(self.out / f"{name}.face{i}.png", draw_face_heatmap(e))}
            if e.activations:
                entry["activations_png"] = _imwrite(self.out / f"{name}.face{i}.activations.png",
                                                    draw_activation_grid(e))
            faces.append(entry)
            for region, deltas in e.regions.items():
                for cls, change in deltas.items():
                    self._writer.writerow(["" if frame is None else frame, i, e.label, region, cls, change])
        images = {m: _imwrite(self.out / f"{name}.{m}.png", draw_image_heatmaps(image, explanations, m))
                  for m in methods}
        if not explanations:  # no face: the photo itself, so every input has a picture
            images = {"none": _imwrite(self.out / f"{name}.explain.png", draw_image_heatmaps(image, []))}
        self._csv.flush()
        return {"images": images, "faces": faces}

    def close(self) -> None:
        """Close the region table."""
        if self._csv is not None:
            self._csv.close()
            self._csv = self._writer = None

    def __enter__(self) -> ExplainSink:
        return self  # the folder and table are made by the first write: a bad input leaves no files

    def __exit__(self, *exc: object) -> None:
        self.close()
