"""Labelled photos to face crops: find the face in each photo and frame it the way the model expects.

Face datasets come in two shapes: face crops already framed like FER2013 (the face fills the
picture) and full photos (a person in front of a camera, the face a part of the frame). Resizing a
full photo to 48x48 shows the model a tiny face, so :class:`FaceCropper` finds the face first:

* ``crop``: every image is taken as a face crop and resized (FER2013 exports, tight crops);
* ``detect``: the largest detected face is aligned onto the model's template, as ``emolens image``
  does; an image without a detected face is resized whole and counted as ``no face``;
* ``auto`` (default): like ``detect``, but an image whose largest face box is at least
  :data:`CROP_HEIGHT` of its height is already a crop and is resized whole. Re-aligning FER2013's own
  crops costs 1-2 points of accuracy (their framing is the template's, and five landmarks found
  in 48 px are noisy), so crops are left as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

from emolens.faces import FACE_SIZE, Face, FaceDetector, align_face, make_detector

Framing = Literal["auto", "detect", "crop"]
FRAMINGS: tuple[str, ...] = get_args(Framing)
#: How one image became a face crop (``FaceDataset.framing`` values).
HOW = ("crop", "aligned", "no face")
#: A largest face box at least this share of the image height means the image is already a face
#: crop: the box spans 0.76 or more of the height in 95% of FER2013's PrivateTest faces where
#: YuNet finds one, and 0.29-0.77 in the portrait photos of ``../shared/media/photos``.
CROP_HEIGHT = 0.75


class FaceCropper:
    """Turn one photo (BGR or gray ``uint8``) into a gray ``size`` x ``size`` face crop.

    ``framing``: ``auto``, ``detect`` or ``crop`` (module docstring); ``template``: the 5-point
    alignment template of the model the crops are for (default: FER2013's); ``detector``: a
    detector object or name.
    """

    def __init__(self, framing: str = "auto", size: int = FACE_SIZE, template: Sequence | np.ndarray | None = None,
                 detector: FaceDetector | str = "yunet", min_score: float = 0.6) -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"unknown framing {framing!r} (choose from: {', '.join(FRAMINGS)})")
        self.framing = framing
        self.size = size
        self.template = None if template is None else np.asarray(template, np.float32)
        self.detector: FaceDetector | None = None
        if framing != "crop":
            self.detector = make_detector(detector, min_score=min_score) if isinstance(detector, str) else detector

    def resize(self, gray: np.ndarray) -> np.ndarray:
        """The whole image as the crop."""
        import cv2

        return cv2.resize(gray, (self.size, self.size), interpolation=cv2.INTER_AREA)

    def find(self, image: np.ndarray) -> Face | None:
        """The largest face the detector finds in ``image`` (BGR or gray), or None."""
        import cv2

        assert self.detector is not None
        faces = self.detector.detect(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image)
        return max(faces, key=lambda f: float(f.box[2] * f.box[3])) if faces else None

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, str]:
        """``(crop, how)``: how is ``crop`` (resized whole), ``aligned`` or ``no face`` (resized whole)."""
        import cv2

        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if self.framing == "crop":
            return self.resize(gray), "crop"
        face = self.find(image)
        if face is None:
            return self.resize(gray), "no face"
        if self.framing == "auto" and face.box[3] >= CROP_HEIGHT * gray.shape[0]:
            return self.resize(gray), "crop"
        return align_face(gray, face, self.size, self.template), "aligned"
