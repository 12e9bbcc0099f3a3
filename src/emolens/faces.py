"""Find faces and cut them out the way the expression model saw faces during training.

Detectors return :class:`Face` values (box, score, 5 landmarks). :func:`align_faces` turns
them into 48x48 grayscale crops matched to FER2013's framing: a similarity transform maps
the 5 landmarks onto the mean landmark positions measured on FER2013 itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

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


#: libfacedetection's result buffer: an int count, then 16 shorts per face (score, box, 5 landmarks, pad).
_RESULT_BYTES = 0x9000
_MAX_RESULTS = (_RESULT_BYTES - 4) // 32
#: ``facedetect_cnn`` as the yuface wheels export it (Linux/macOS C++, Windows MSVC, plain C).
_SYMBOLS = ("_Z14facedetect_cnnPhS_iii", "?facedetect_cnn@@YAPEAHPEAE0HHH@Z", "facedetect_cnn")
_NATIVE: dict[str, Callable[..., Any] | None] = {}  #: "fn": the entry point once looked up (None: not found)
_NATIVE_LOCK = threading.Lock()


def _find_facedetect_cnn() -> Callable[..., Any] | None:
    """Look ``facedetect_cnn`` up in the libraries shipped inside the ``yuface`` package."""
    import ctypes
    import glob
    import os

    import yuface

    folder = os.path.dirname(yuface.__file__)
    for pattern in ("libfacedetection.so*", "libfacedetection*.dylib", "facedetection.dll"):
        for path in sorted(glob.glob(os.path.join(folder, pattern))):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for symbol in _SYMBOLS:
                fn = getattr(lib, symbol, None)
                if fn is not None:
                    fn.restype = ctypes.POINTER(ctypes.c_int)
                    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
                    return fn
    return None


def _facedetect_cnn() -> Callable[..., Any] | None:
    """libfacedetection's ``facedetect_cnn`` from the library inside the ``yuface`` wheel (ctypes),
    or None where it cannot be found (then ``yuface.detect`` is used).

    ``yuface.detect`` mallocs a 36,864-byte result buffer on every call and never frees it (its
    binding copies the results into a new array and drops the buffer): 36 KB leaked per call,
    about 1 GB per hour of 15 FPS video. Called directly with a buffer owned by the caller, the
    same network gives the same faces and memory stays flat.
    """
    if "fn" in _NATIVE:
        return _NATIVE["fn"]
    with _NATIVE_LOCK:
        if "fn" not in _NATIVE:
            fn = _find_facedetect_cnn()
            if fn is not None:  # the first call fills the network's weights (globals): once, before threads share it
                buffer, image = np.zeros(_RESULT_BYTES, np.uint8), np.zeros((32, 32, 3), np.uint8)
                fn(buffer.ctypes.data, image.ctypes.data, 32, 32, 96)
            _NATIVE["fn"] = fn
        return _NATIVE["fn"]


def _yunet_raw(image: np.ndarray) -> np.ndarray:
    """All YuNet detections of a contiguous BGR uint8 image: ``int16 (N, 15)`` rows of score
    (0..100), box ``x, y, w, h`` and 5 landmarks ``x, y``."""
    fn = _facedetect_cnn()
    h, w = image.shape[:2]
    if fn is None:  # no direct entry point on this platform: the (leaking) binding
        import warnings

        import yuface

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            confs, boxes, marks = yuface.detect(image, conf=0.0)
        return np.concatenate([confs[:, None], boxes, marks], axis=1).astype(np.int16)
    buffer = np.empty(_RESULT_BYTES, np.uint8)  # ours: freed with the array
    fn(buffer.ctypes.data, image.ctypes.data, w, h, image.strides[0])
    n = min(int(buffer[:4].view(np.int32)[0]), _MAX_RESULTS)
    return np.frombuffer(buffer, np.int16, 16 * n, offset=4).reshape(n, 16)[:, :15].copy()


class YuNetDetector:
    """libfacedetection's YuNet from the ``yuface`` package (model weights ship inside it), called
    through its C entry point with a caller-owned result buffer (no per-call leak).

    Images larger than ``max_side`` are downscaled for detection, images whose short side is under
    ``min_side`` upscaled (YuNet misses a quarter of FER2013's 48 px faces at their own size, 2%
    at 192 px); boxes and landmarks are mapped back. ``min_score`` is the confidence threshold in 0..1.
    """

    def __init__(self, min_score: float = 0.6, max_side: int = 640, threads: int = 1, min_side: int = 192) -> None:
        import yuface  # noqa: F401  (fail early if missing)

        self.threads = threads
        limit_detector_threads(threads)
        _facedetect_cnn()
        self.min_score = min_score
        self.max_side = max_side
        self.min_side = min_side

    def detect(self, image: np.ndarray) -> list[Face]:
        """Detect faces in a BGR image."""
        import cv2

        limit_detector_threads(self.threads)  # per calling thread; a no-op after the first call
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale == 1.0 and min(h, w) < self.min_side:
            scale = min(self.min_side / min(h, w), self.max_side / max(h, w))
        small = image
        if scale != 1.0:
            small = cv2.resize(image, (round(w * scale), round(h * scale)),
                               interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC)
        rows = _yunet_raw(np.ascontiguousarray(small, dtype=np.uint8))
        faces = []
        for row in rows[rows[:, 0] > self.min_score * 100]:
            box = row[1:5].astype(np.float32) / scale
            box[2] = min(box[2], w - box[0])
            box[3] = min(box[3], h - box[1])
            if box[2] < 4 or box[3] < 4:
                continue
            faces.append(Face(box, float(row[0]) / 100.0, row[5:15].astype(np.float32).reshape(5, 2) / scale))
        faces.sort(key=lambda f: (f.box[0], f.box[1]))
        return faces


#: Face detectors :func:`make_detector` builds (the ``--detector`` choices).
DetectorName = Literal["yunet"]
DETECTORS: tuple[str, ...] = get_args(DetectorName)


def make_detector(name: str = "yunet", **kwargs: Any) -> FaceDetector:
    """Build a detector by name (see :data:`DETECTORS`): ``yunet``."""
    if name == "yunet":
        return YuNetDetector(**kwargs)
    raise ValueError(f"unknown face detector {name!r} (choose from: {', '.join(DETECTORS)})")


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
