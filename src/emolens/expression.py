"""Classify facial expressions of aligned 48x48 face crops with the shipped ONNX model."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from emolens.labels import FER7

MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_FACE_MODEL = MODELS_DIR / "face_expression.onnx"


def _session(path: Path, threads: int | None = None):  # noqa: ANN202
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class ExpressionModel:
    """The facial-expression classifier (onnxruntime only; torch is not needed).

    ``predict`` takes aligned grayscale crops ``uint8 (N, 48, 48)`` and returns class
    probabilities ``(N, 7)`` in :data:`~emolens.labels.FER7` order (flip-averaged inside
    the model).
    """

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = None) -> None:
        self.path = Path(path) if path else DEFAULT_FACE_MODEL
        if not self.path.is_file():
            raise FileNotFoundError(f"expression model not found: {self.path}")
        card = self.path.with_suffix(".json")
        meta = json.loads(card.read_text()) if card.is_file() else {}
        self.labels: tuple[str, ...] = tuple(meta.get("labels", FER7))
        self.session = _session(self.path, threads)
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        side = spec.shape[-1]  # 44 (flip-averaged model) or 48 (ten-crop model): taken from the graph
        self.crop: int = int(side) if isinstance(side, int) else int(meta.get("input_size", 44))

    def predict(self, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities ``(N, classes)`` for ``uint8 (N, 48, 48)`` aligned faces."""
        faces = np.asarray(faces)
        if faces.ndim == 2:
            faces = faces[None]
        if len(faces) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        off = (faces.shape[-1] - self.crop) // 2
        crops = faces[:, off: off + self.crop, off: off + self.crop].astype(np.float32)[:, None]
        out = [
            self.session.run(None, {self.input_name: crops[i: i + batch_size]})[0]
            for i in range(0, len(crops), batch_size)
        ]
        return np.concatenate(out).astype(np.float32)


@lru_cache(maxsize=4)
def default_model(path: str | None = None) -> ExpressionModel:
    """A shared :class:`ExpressionModel` (loaded once per process)."""
    return ExpressionModel(path)
