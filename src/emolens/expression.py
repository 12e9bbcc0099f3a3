"""Facial-expression models: a small registry of shipped ONNX classifiers that describe themselves.

Every model file ``models/face_<name>.onnx`` is a registry entry, chosen by ``name``
(``default``: fast; ``accurate``: the strongest) or by path. A model carries its own
preprocessing and labels (:class:`ModelSpec`), stored as JSON in the ONNX metadata under
``emolens`` (and in the model card ``face_<name>.json`` next to it): the aligned face size,
the network's input crop, colour, the 5-point alignment template and the class names. Adding a
model, e.g. one with 8 classes or 64 px colour input, is adding a file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from emolens.faces import FACE_SIZE, FER_TEMPLATE, Face, align_faces
from emolens.labels import FER7

MODELS_DIR = Path(__file__).parent / "models"
#: Registry names of the shipped face models, in order of preference.
MODEL_NAMES: tuple[str, ...] = ("default", "accurate")
DEFAULT_FACE_MODEL = MODELS_DIR / "face_default.onnx"
META_KEY = "emolens"


@dataclass(frozen=True)
class ModelSpec:
    """How a face must be prepared for a model, and what its outputs mean.

    ``frame``: side of the aligned face crop; ``input_size``: side of the network input (the
    centre of the frame; equal to ``frame`` when the model crops itself); ``color``: ``gray`` or
    ``bgr``; ``template``: where the 5 landmarks land in the ``frame`` x ``frame`` crop;
    ``labels``: the output classes in order. Pixel values are 0..255 float32, NCHW.
    """

    labels: tuple[str, ...] = FER7
    frame: int = FACE_SIZE
    input_size: int = 44
    color: str = "gray"
    template: tuple[tuple[float, float], ...] = field(
        default_factory=lambda: tuple((float(x), float(y)) for x, y in FER_TEMPLATE)
    )

    def __post_init__(self) -> None:
        if self.color not in ("gray", "bgr"):
            raise ValueError(f"model colour must be 'gray' or 'bgr', not {self.color!r}")
        if not 0 < self.input_size <= self.frame:
            raise ValueError(f"model input size {self.input_size} must be in 1..frame ({self.frame})")
        if len(self.template) != 5 or len(self.labels) < 2:
            raise ValueError("a model needs a 5-point template and at least 2 labels")

    @classmethod
    def from_dict(cls, meta: dict) -> ModelSpec:
        """Build from the JSON metadata (unknown keys are ignored; missing ones take FER defaults)."""
        known = {k: meta[k] for k in ("labels", "frame", "input_size", "color", "template") if k in meta}
        if "labels" in known:
            known["labels"] = tuple(known["labels"])
        if "template" in known:
            known["template"] = tuple((float(x), float(y)) for x, y in known["template"])
        return cls(**known)

    def to_dict(self) -> dict:
        """JSON-ready metadata."""
        d = asdict(self)
        d["labels"], d["template"] = list(self.labels), [list(p) for p in self.template]
        return d


def available_models() -> dict[str, Path]:
    """Registry: ``{name: path}`` of every ``face_<name>.onnx`` in the package's models folder."""
    found = {p.stem.removeprefix("face_"): p for p in sorted(MODELS_DIR.glob("face_*.onnx"))}
    return {n: found[n] for n in MODEL_NAMES if n in found} | found


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The ONNX file for a registry name (``default``, ``accurate``, ...) or a path.

    Raises ``ValueError`` naming the choices when it is neither.
    """
    if model is None:
        model = "default"
    registry = available_models()
    if isinstance(model, str) and model in registry:
        return registry[model]
    path = Path(model)
    if path.is_file():
        return path
    choices = ", ".join(registry) or "none installed"
    raise ValueError(f"unknown face model {str(model)!r}: give a name ({choices}) or an .onnx file")


def read_spec(path: Path, session: Any = None) -> ModelSpec:
    """A model's :class:`ModelSpec`: from its ONNX metadata, else its JSON card, else FER defaults."""
    meta: dict = {}
    if session is not None:
        raw = session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if raw:
            meta = json.loads(raw)
    card = path.with_suffix(".json")
    if not meta and card.is_file():
        meta = json.loads(card.read_text())
    return ModelSpec.from_dict(meta)


def _session(path: Path, threads: int | None = None, device: str = "cpu"):  # noqa: ANN202
    from emolens.device import inference_session

    return inference_session(path, threads, device)


class ExpressionModel:
    """A facial-expression classifier (onnxruntime only; torch is not needed).

    ``model``: a registry name (``default``, ``accurate``) or an ONNX path; ``device``: ``cpu``,
    ``cuda`` or ``auto`` (:mod:`emolens.device`). :meth:`align` cuts faces out of an image the way
    this model expects; :meth:`predict` takes those crops and returns class probabilities in
    :attr:`labels` order.
    """

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None,
                 device: str = "cpu") -> None:
        from emolens.device import DeviceError, check_device

        check_device(device)
        self.path = resolve_model(model)
        try:
            self.session = _session(self.path, threads, device)
        except DeviceError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ValueError(f"{self.path}: not a usable ONNX model ({str(exc).splitlines()[0][:200]})") from exc
        self.spec = read_spec(self.path, self.session)
        self.labels: tuple[str, ...] = self.spec.labels
        self.name = next((n for n, p in available_models().items() if p == self.path), self.path.stem)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        side = inp.shape[-1]  # the graph's own input size wins over the metadata
        self.crop: int = int(side) if isinstance(side, int) else self.spec.input_size
        out = self.session.get_outputs()[0].shape[-1]
        if isinstance(out, int) and out != len(self.labels):
            raise ValueError(f"{self.path}: {out} outputs but {len(self.labels)} labels in its metadata")

    def align(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """Aligned crops ``uint8 (N, frame, frame[, 3])`` for ``faces`` of a BGR image."""
        return align_faces(image, faces, self.spec.frame, np.asarray(self.spec.template, np.float32),
                           color=self.spec.color)

    def predict(self, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probabilities ``(N, classes)`` for aligned faces ``uint8 (N, frame, frame[, 3])``."""
        faces = np.asarray(faces)
        gray = self.spec.color == "gray"
        if faces.ndim == (2 if gray else 3):
            faces = faces[None]
        if len(faces) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        off = (faces.shape[1] - self.crop) // 2
        crops = faces[:, off: off + self.crop, off: off + self.crop].astype(np.float32)
        crops = crops[:, None] if gray else crops.transpose(0, 3, 1, 2)
        out = [
            self.session.run(None, {self.input_name: np.ascontiguousarray(crops[i: i + batch_size])})[0]
            for i in range(0, len(crops), batch_size)
        ]
        return np.concatenate(out).astype(np.float32)

    def classify(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """Probabilities for ``faces`` found in a BGR image (align + predict)."""
        return self.predict(self.align(image, faces))


@lru_cache(maxsize=4)
def default_model(model: str | None = None, device: str = "cpu") -> ExpressionModel:
    """A shared :class:`ExpressionModel` per name or path and device (loaded once per process)."""
    return ExpressionModel(model, device=device)
