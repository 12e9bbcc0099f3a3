"""What the frame loop hands on: one typed value per face, from the tracker to every output.

:class:`TrackedFace` is a face of one analysed frame with its track id and (smoothed) expression;
after fusion it carries a :class:`FusedFace` (the voice and fused probabilities of that moment).
:class:`FrameResult` is one analysed frame and its faces. Sinks (:mod:`emolens.sinks`), the
annotated video and the Python API all read these values; nothing is passed as a dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from emolens.faces import Face
from emolens.labels import probs_dict
from emolens.media import Frame

#: Extra probability groups a fused face can carry (frame-table columns ``p_<group>_<class>``).
FUSION_GROUPS: tuple[str, ...] = ("voice", "fused")


@dataclass(frozen=True)
class FusedFace:
    """Face and voice together for one face in one frame (:meth:`emolens.fusion.AVFuser.frame`).

    ``voice``: the speech's probabilities (fusion labels) when this face is the speaker of the
    speech heard at that moment, else None; ``fused``: the fused distribution (None when fusion
    gives nothing, e.g. modality ``voice`` and this face is silent); ``label``: the fused label;
    ``rule``: how it was made (``both:only_face``, ``face``...); ``segment``: index of the speech
    segment heard then (None in silence).
    """

    voice: np.ndarray | None = field(default=None, repr=False)
    fused: np.ndarray | None = field(default=None, repr=False)
    label: str | None = None
    rule: str = "face"
    segment: int | None = None

    @property
    def speaking(self) -> bool:
        """True when the speech heard at this moment was attributed to this face."""
        return self.voice is not None

    def group(self, name: str) -> np.ndarray | None:
        """The probabilities of one group of :data:`FUSION_GROUPS` (``voice`` or ``fused``)."""
        if name == "voice":
            return self.voice
        if name == "fused":
            return self.fused
        raise KeyError(f"unknown probability group {name!r} ({', '.join(FUSION_GROUPS)})")


@dataclass(frozen=True)
class TrackedFace:
    """One face in one frame: its ``track_id``, detected (or carried) :class:`Face`, and the
    (smoothed) expression ``label``/``probs`` (``p``: the same as a vector in the model's label
    order); ``detected`` is False for tracker-carried boxes, ``classified`` False when the
    probabilities were reused from an earlier frame; ``evidence`` is the face's weight in the
    video's decision (:func:`emolens.decide.face_evidence`); ``fusion``: its voice/fused values
    (None before fusion, and for :func:`emolens.stream`, which is faces only)."""

    track_id: int
    face: Face
    label: str
    probs: dict[str, float]
    detected: bool = True
    p: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    evidence: float = 1.0
    classified: bool = True
    fusion: FusedFace | None = None

    def shown(self, labels: tuple[str, ...]) -> TrackedFace:
        """The face as the annotated video shows it: the fused label and probabilities where
        voice was fused in, else itself (``labels``: the fusion labels, in vector order)."""
        fusion = self.fusion
        if fusion is None or fusion.voice is None or fusion.fused is None or fusion.label is None:
            return self
        return replace(self, label=fusion.label, probs=probs_dict(fusion.fused, labels))


@dataclass(frozen=True)
class FrameResult:
    """The faces of one analysed frame."""

    frame: Frame
    faces: list[TrackedFace]

    def with_fusion(self, fused: list[FusedFace]) -> FrameResult:
        """The same frame with each face's :class:`FusedFace` attached (one per face, in order)."""
        faces = [replace(f, fusion=x) for f, x in zip(self.faces, fused, strict=True)]
        return replace(self, faces=faces)
