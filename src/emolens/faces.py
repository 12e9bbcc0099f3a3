"""Find faces and cut them out the way the expression model saw faces during training.

Detectors return :class:`Face` values (box, score, 5 landmarks). :func:`align_faces` turns
them into 48x48 grayscale crops matched to FER2013's framing: a similarity transform maps
the 5 landmarks onto the mean landmark positions measured on FER2013 itself.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

#: Mean landmark positions in FER2013's 48x48 frame (eyes, nose tip, mouth corners), measured
#: by running YuNet on 590 upscaled FER2013 training faces and taking the median (symmetrised).
FER_TEMPLATE = np.array(
    [[14.6, 18.0], [32.8, 18.0], [23.7, 28.0], [16.2, 36.4], [31.2, 36.4]], dtype=np.float32
)
FACE_SIZE = 48


@dataclass
class Face:
    """One detected face: ``box`` as ``[x, y, w, h]`` pixels, ``score`` in 0..1, and
    ``landmarks`` ``(5, 2)`` (right eye, left eye, nose, mouth right, mouth left, as seen) or None."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-ready ``{"box": [x, y, w, h], "score": s}``."""
        return {"box": [int(round(v)) for v in self.box], "score": round(float(self.score), 4)}


_OMP_LIMITED = threading.local()  # OpenMP's thread count is a per-thread setting


def limit_detector_threads(threads: int = 1) -> None:
    """Cap the OpenMP threads of ``yuface`` (YuNet). Its OpenMP workers spin while they wait: on a
    busy 2-core machine that made every detection call 10-15x slower (420 ms instead of 38 ms at
    640x360, measured). Frame decoding already runs in a thread of its own, so one is best."""
    if getattr(_OMP_LIMITED, "threads", None) == threads or threads < 1:
        return
    import ctypes
    import ctypes.util
    import glob
    import os

    try:
        import yuface
    except ImportError:
        return
    libs = glob.glob(os.path.join(os.path.dirname(yuface.__file__), "..", "yuface.libs", "libgomp*"))
    libs += [name for name in [ctypes.util.find_library("gomp")] if name]
    for lib in libs:
        try:
            ctypes.CDLL(lib).omp_set_num_threads(threads)
        except (OSError, AttributeError):
            continue
    _OMP_LIMITED.threads = threads



class FaceDetector(Protocol):
    """Anything with ``detect(bgr_image) -> list[Face]``."""

    def detect(self, image: np.ndarray) -> list[Face]: ...


class YuNetDetector:
    """libfacedetection's YuNet via the ``yuface`` package (model weights ship inside it).

    Images larger than ``max_side`` are downscaled for detection (boxes are mapped back);
    ``min_score`` is the confidence threshold in 0..1.
    """

    def __init__(self, min_score: float = 0.6, max_side: int = 640, threads: int = 1) -> None:
        import yuface  # noqa: F401  (fail early if missing)

        self.threads = threads
        limit_detector_threads(threads)

        self.min_score = min_score
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[Face]:
        """Detect faces in a BGR image."""
        import warnings

        import cv2
        import yuface

        limit_detector_threads(self.threads)  # per calling thread; a no-op after the first call
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = image
        if scale < 1.0:
            small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            confs, boxes, marks = yuface.detect(np.ascontiguousarray(small), conf=self.min_score)
        faces = []
        for c, b, m in zip(confs, boxes, marks):
            box = b.astype(np.float32) / scale
            box[2] = min(box[2], w - box[0])
            box[3] = min(box[3], h - box[1])
            if box[2] < 4 or box[3] < 4:
                continue
            faces.append(Face(box, float(c) / 100.0, m.astype(np.float32).reshape(5, 2) / scale))
        faces.sort(key=lambda f: (f.box[0], f.box[1]))
        return faces


class HaarDetector:
    """OpenCV's Haar cascade (ships with OpenCV): a fallback without landmarks."""

    def __init__(self, min_size: int = 24) -> None:
        import cv2

        if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
            raise RuntimeError(f"the Haar fallback needs OpenCV 4.x's cascades; OpenCV {cv2.__version__} has none")
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if self.cascade.empty():
            raise RuntimeError("OpenCV's Haar cascade could not be loaded")
        self.min_size = min_size

    def detect(self, image: np.ndarray) -> list[Face]:
        """Detect faces in a BGR image."""
        import cv2

        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        found = self.cascade.detectMultiScale(gray, 1.1, 5, minSize=(self.min_size, self.min_size))
        return [Face(np.asarray(b, dtype=np.float32), 1.0) for b in found]


def make_detector(name: str = "yunet", **kwargs: object) -> FaceDetector:
    """Build a detector by name: ``yunet`` (default) or ``haar``."""
    if name == "yunet":
        return YuNetDetector(**kwargs)  # type: ignore[arg-type]
    if name == "haar":
        return HaarDetector(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown face detector {name!r} (yunet, haar)")


def align_face(
    gray: np.ndarray, face: Face, size: int = FACE_SIZE, template: np.ndarray | None = None
) -> np.ndarray:
    """Cut one face out of a grayscale (or BGR) image as a ``size`` x ``size`` uint8 crop.

    With landmarks: similarity transform onto ``template`` (5 points in the crop's pixels;
    default :data:`FER_TEMPLATE` scaled to ``size``). Without: a square around the box (FER2013
    framing: the box spans the whole crop height).
    """
    import cv2

    template = FER_TEMPLATE * (size / FACE_SIZE) if template is None else np.asarray(template, np.float32)
    matrix = None
    if face.landmarks is not None:
        matrix, _ = cv2.estimateAffinePartial2D(face.landmarks.astype(np.float32), template, method=cv2.LMEDS)
    if matrix is None:
        x, y, w, h = face.box
        side = max(w, h) * 1.05
        cx, cy = x + w / 2, y + h / 2
        s = size / side
        matrix = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], dtype=np.float64)
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    if scale < 0.5:
        # Large face: shrink a region around it with area averaging first (no aliasing),
        # then warp the small copy with the matrix adjusted for the shrink.
        x, y, w, h = face.box
        pad = 0.6 * max(w, h)
        x0, y0 = int(max(0, x - pad)), int(max(0, y - pad))
        x1, y1 = int(min(gray.shape[1], x + w + pad)), int(min(gray.shape[0], y + h + pad))
        shrink = 2 * scale
        region = cv2.resize(gray[y0:y1, x0:x1], None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        offset = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], dtype=np.float64)
        inverse_shrink = np.diag([1 / shrink, 1 / shrink, 1.0])
        matrix = (np.vstack([matrix, [0, 0, 1]]) @ offset @ inverse_shrink)[:2]
        gray = region
    return cv2.warpAffine(gray, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_faces(
    image: np.ndarray, faces: list[Face], size: int = FACE_SIZE, template: np.ndarray | None = None,
    color: str = "gray",
) -> np.ndarray:
    """Aligned crops for every face in a BGR image: ``uint8 (N, size, size)`` for ``color="gray"``,
    ``(N, size, size, 3)`` BGR for ``"bgr"``."""
    import cv2

    if color == "gray":
        src = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    else:
        src = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if not faces:
        return np.zeros((0, size, size, *src.shape[2:]), dtype=np.uint8)
    return np.stack([align_face(src, f, size, template) for f in faces])
