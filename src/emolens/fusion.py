"""Decision-level fusion of face and voice: one emotion per moment, per person, per video.

Common label space: the seven FER2013 classes. Voice outputs (RAVDESS's 8 classes) are folded
onto them with :data:`emolens.labels.FOLD_TO_FER7` (``calm`` -> ``neutral``).

Weights: for each class ``c`` and modality ``m``, the model's reliability ``r_m[c]`` is its
F1 score for ``c`` on held-out validation data (face: FER2013 PublicTest; voice: actor-wise
cross-validation on RAVDESS, folded to 7 classes). The fused distribution is

    p[c] ∝ w_face[c] * p_face[c] + w_voice[c] * p_voice[c],   w_m[c] = r_m[c] / (r_face[c] + r_voice[c])

so a modality counts more for the classes it recognises better. Fallbacks: face only when
there is no speech, voice only when no face is visible, nothing when neither.

Speaker attribution (several faces during speech): the face whose mouth region moves most
during the segment so far (mean absolute frame difference of the lower face), when it moves
clearly more than the others; otherwise the largest face. The rule used is reported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emolens.labels import FER7, FOLD_TO_FER7

FUSION_LABELS: tuple[str, ...] = FER7
DEFAULT_WEIGHTS = Path(__file__).parent / "models" / "fusion.json"


def fold_vector(probs: Mapping[str, float] | np.ndarray, labels: Sequence[str] | None = None) -> np.ndarray:
    """A probability dict (or vector with ``labels``) folded onto :data:`FUSION_LABELS`."""
    if not isinstance(probs, Mapping):
        if labels is None:
            raise ValueError("labels are needed to fold a probability vector")
        probs = dict(zip(labels, np.asarray(probs, dtype=np.float64).reshape(-1), strict=True))
    out = np.zeros(len(FUSION_LABELS))
    for name, p in probs.items():
        folded = FOLD_TO_FER7.get(name)
        if folded is None:
            raise ValueError(f"label {name!r} has no place in the fusion label space")
        out[FUSION_LABELS.index(folded)] += float(p)
    return out


def fold_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> np.ndarray:
    """Merge a confusion matrix's rows and columns onto :data:`FUSION_LABELS`."""
    cm = np.asarray(confusion, dtype=np.float64)
    idx = [FUSION_LABELS.index(FOLD_TO_FER7[name]) for name in labels]
    out = np.zeros((len(FUSION_LABELS), len(FUSION_LABELS)))
    for i, a in enumerate(idx):
        for j, b in enumerate(idx):
            out[a, b] += cm[i, j]
    return out


def class_f1(confusion: np.ndarray) -> np.ndarray:
    """Per-class F1 from a confusion matrix (rows true, columns predicted); 0 where undefined."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def reliability(report: Mapping) -> np.ndarray:
    """Per-class F1 on :data:`FUSION_LABELS` from a metrics report (``labels`` + ``confusion``)."""
    return class_f1(fold_confusion(report["confusion"], report["labels"]))


@dataclass
class FusionWeights:
    """Per-class weights of each modality (each pair sums to 1) and where they came from."""

    face: np.ndarray
    voice: np.ndarray
    source: dict = field(default_factory=dict)

    @classmethod
    def from_reliability(cls, r_face: np.ndarray, r_voice: np.ndarray, source: dict | None = None,
                         floor: float = 0.05) -> FusionWeights:
        """Weights ``r_m / (r_face + r_voice)``; reliabilities are floored at ``floor`` so a class
        one model never gets right still lets the other one speak, and never divides by zero."""
        rf = np.maximum(np.asarray(r_face, dtype=np.float64), floor)
        rv = np.maximum(np.asarray(r_voice, dtype=np.float64), floor)
        return cls(rf / (rf + rv), rv / (rf + rv), source or {})

    @classmethod
    def from_reports(cls, face_report: Mapping, voice_report: Mapping, source: dict | None = None) -> FusionWeights:
        """Weights from two metrics reports (the ``evaluate`` JSON shape) on held-out data."""
        return cls.from_reliability(reliability(face_report), reliability(voice_report), source)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> FusionWeights:
        """Read weights written by :meth:`save` (default: the shipped ``models/fusion.json``)."""
        data = json.loads(Path(path or DEFAULT_WEIGHTS).read_text())
        if data["labels"] != list(FUSION_LABELS):
            raise ValueError(f"fusion weights are for labels {data['labels']}, expected {list(FUSION_LABELS)}")
        face = np.array([data["weights"]["face"][c] for c in FUSION_LABELS])
        voice = np.array([data["weights"]["voice"][c] for c in FUSION_LABELS])
        return cls(face, voice, data.get("source", {}))

    @classmethod
    def equal(cls) -> FusionWeights:
        """0.5 / 0.5 for every class (used when no weights file is available)."""
        half = np.full(len(FUSION_LABELS), 0.5)
        return cls(half, half.copy(), {"rule": "equal weights (no reliability data)"})

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights as JSON."""
        data = {
            "labels": list(FUSION_LABELS),
            "weights": {
                "face": {c: round(float(w), 4) for c, w in zip(FUSION_LABELS, self.face, strict=True)},
                "voice": {c: round(float(w), 4) for c, w in zip(FUSION_LABELS, self.voice, strict=True)},
            },
            "source": self.source,
        }
        Path(path).write_text(json.dumps(data, indent=2) + "\n")

    def fuse(self, p_face: np.ndarray | None, p_voice: np.ndarray | None) -> tuple[np.ndarray | None, str]:
        """Fused distribution and which rule made it: ``both``, ``face``, ``voice`` or ``none``."""
        if p_face is not None and p_voice is not None:
            fused = self.face * np.asarray(p_face, np.float64) + self.voice * np.asarray(p_voice, np.float64)
            total = fused.sum()
            return (fused / total if total > 0 else fused), "both"
        if p_face is not None:
            return np.asarray(p_face, dtype=np.float64), "face"
        if p_voice is not None:
            return np.asarray(p_voice, dtype=np.float64), "voice"
        return None, "none"


def default_weights() -> FusionWeights:
    """The shipped weights, or equal weights if the file is missing."""
    return FusionWeights.load() if DEFAULT_WEIGHTS.is_file() else FusionWeights.equal()


@dataclass
class VoiceSegment:
    """A stretch of speech with its folded probabilities on :data:`FUSION_LABELS`."""

    start_s: float
    end_s: float
    probs: np.ndarray


class VoiceTimeline:
    """Speech segments on the video's timeline; :meth:`at` finds the one active at a time."""

    def __init__(self, segments: Sequence[VoiceSegment]) -> None:
        self.segments = sorted(segments, key=lambda s: s.start_s)
        self._starts = np.array([s.start_s for s in self.segments])

    @classmethod
    def from_audio_result(cls, result: object) -> VoiceTimeline:
        """From an :class:`emolens.voice.AudioResult` (its segments' probability dicts are folded)."""
        return cls([VoiceSegment(s.start_s, s.end_s, fold_vector(s.probs)) for s in result.segments])  # type: ignore[attr-defined]

    def at(self, time_s: float) -> int | None:
        """Index of the segment covering ``time_s`` (None in silence)."""
        if not self.segments:
            return None
        i = int(np.searchsorted(self._starts, time_s, side="right")) - 1
        if i >= 0 and self.segments[i].start_s <= time_s < self.segments[i].end_s:
            return i
        return None

    def __len__(self) -> int:
        return len(self.segments)


class SpeakerPicker:
    """Chooses which visible face is speaking during a speech segment.

    Mouth motion is measured causally: for each track, the mean absolute difference between
    consecutive grayscale crops of the lower-middle face (mouth region, 32x16 px) within the
    current segment. A track wins by ``mouth_motion`` when it has been seen at least
    ``min_obs`` times in the segment and moves at least ``margin`` times more than the runner-up;
    otherwise the largest face wins (``largest_face``); a lone face is ``only_face``.
    """

    def __init__(self, margin: float = 1.3, min_obs: int = 3) -> None:
        self.margin, self.min_obs = margin, min_obs
        self._segment: int | None = None
        self._prev: dict[int, np.ndarray] = {}
        self._motion: dict[int, list[float]] = {}

    @staticmethod
    def mouth_crop(gray: np.ndarray, box: Sequence[float]) -> np.ndarray | None:
        """The mouth region of a face box, as a 32x16 float crop (None if off-image)."""
        import cv2

        x, y, w, h = (float(v) for v in box)
        x0, x1 = int(x + 0.2 * w), int(x + 0.8 * w)
        y0, y1 = int(y + 0.62 * h), int(y + 0.95 * h)
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, gray.shape[1]), min(y1, gray.shape[0])
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        crop = cv2.resize(gray[y0:y1, x0:x1], (32, 16), interpolation=cv2.INTER_AREA).astype(np.float32)
        return crop - crop.mean()

    def pick(
        self, segment: int, gray: np.ndarray, faces: Sequence[tuple[int, Sequence[float]]]
    ) -> tuple[int, str] | None:
        """``(track_id, rule)`` of the speaker among ``faces`` = ``[(track_id, box), ...]``."""
        if not faces:
            return None
        if segment != self._segment:
            self._segment, self._prev, self._motion = segment, {}, {}
        for track_id, box in faces:
            crop = self.mouth_crop(gray, box)
            if crop is None:
                continue
            prev = self._prev.get(track_id)
            if prev is not None:
                self._motion.setdefault(track_id, []).append(float(np.abs(crop - prev).mean()))
            self._prev[track_id] = crop
        if len(faces) == 1:
            return faces[0][0], "only_face"
        visible = {t for t, _ in faces}
        scores = sorted(
            ((float(np.mean(m)), t) for t, m in self._motion.items() if t in visible and len(m) >= self.min_obs),
            reverse=True,
        )
        if len(scores) >= 2 and scores[0][0] >= self.margin * max(scores[1][0], 1e-6):
            return scores[0][1], "mouth_motion"
        largest = max(faces, key=lambda f: float(f[1][2]) * float(f[1][3]))
        return largest[0], "largest_face"


def fit_fusion_weights(face_metrics: str | os.PathLike, voice_metrics: str | os.PathLike,
                       out: str | os.PathLike = DEFAULT_WEIGHTS) -> FusionWeights:
    """Learn the weights from held-out metrics files and write them to ``out``.

    ``face_metrics``: a face ``metrics.json`` from training (its ``PublicTest`` report is used)
    or an ``evaluate face --json`` report. ``voice_metrics``: the speech cross-validation report
    (a report with ``labels`` and ``confusion`` pooled over held-out actors, or a file holding
    one under the key ``cv``).
    """
    face = json.loads(Path(face_metrics).read_text())
    face = face.get("PublicTest", face)
    voice = json.loads(Path(voice_metrics).read_text())
    voice = voice.get("pooled", voice.get("cv", voice))
    source = {
        "rule": "w_m[c] = F1_m[c] / (F1_face[c] + F1_voice[c]) on held-out data (F1 floored at 0.05)",
        "face": f"{Path(face_metrics).name}: FER2013 PublicTest, accuracy {face['accuracy']:.4f}",
        "voice": f"{Path(voice_metrics).name}: RAVDESS actor-wise CV (pooled held-out folds), "
                 f"accuracy {voice['accuracy']:.4f}, folded to 7 classes (calm -> neutral)",
        "face_f1": {c: round(float(v), 4) for c, v in zip(FUSION_LABELS, reliability(face), strict=True)},
        "voice_f1": {c: round(float(v), 4) for c, v in zip(FUSION_LABELS, reliability(voice), strict=True)},
    }
    weights = FusionWeights.from_reports(face, voice, source)
    weights.save(out)
    return weights


class AVFuser:
    """Streaming face+voice fusion over one video, frame by frame (see the module docstring).

    ``modality``: ``face`` (voice ignored), ``voice`` (fused = voice where there is speech)
    or ``both``. ``timeline`` is None when the input has no usable sound.
    """

    def __init__(self, timeline: VoiceTimeline | None, modality: str = "both",
                 weights: FusionWeights | None = None) -> None:
        from emolens.decide import Decisions, TrackStats

        if modality not in ("face", "voice", "both"):
            raise ValueError(f"unknown modality {modality!r} (face, voice, both)")
        self.modality = modality
        self.timeline = timeline if modality != "face" else None
        self.weights = weights or default_weights()
        self.picker = SpeakerPicker()
        self.voice = Decisions(FUSION_LABELS)
        self.fused = Decisions(FUSION_LABELS)
        self.voice_only = TrackStats(-1, len(FUSION_LABELS))  # speech while no face is visible
        self.rules: dict[str, int] = {}

    @property
    def groups(self) -> tuple[str, ...]:
        """Extra probability groups for the frames CSV."""
        return () if self.timeline is None else ("voice", "fused")

    def frame(self, time_s: float, image: np.ndarray, faces: Sequence[object]) -> list[dict]:
        """Fuse one frame. ``faces``: objects with ``track_id``, ``face.box`` and ``p`` (face probs).

        Returns one ``{"voice": vec|None, "fused": vec|None, "label": str, "rule": str}`` per face.
        """
        if self.timeline is None:  # face only: nothing to fuse (the face model may have its own labels)
            return [{"voice": None, "fused": None, "label": None, "rule": "face"} for _ in faces]
        seg = self.timeline.at(time_s)
        speaker, rule = None, None
        if seg is not None and faces:
            import cv2

            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
            speaker, rule = self.picker.pick(seg, gray, [(f.track_id, f.face.box) for f in faces])  # type: ignore
            self.rules[rule] = self.rules.get(rule, 0) + 1
        elif seg is not None:
            self.voice_only.add(time_s, self.timeline.segments[seg].probs)  # type: ignore[union-attr]
        out = []
        for f in faces:
            p_face = np.asarray(f.p, dtype=np.float64)  # type: ignore[attr-defined]
            p_voice = self.timeline.segments[seg].probs if (seg is not None and f.track_id == speaker) else None  # type: ignore
            if self.modality == "voice":
                fused, how = (p_voice, "voice") if p_voice is not None else (None, "none")
            else:
                fused, how = self.weights.fuse(p_face, p_voice)
            if p_voice is not None:
                self.voice.add(f.track_id, time_s, p_voice)  # type: ignore[attr-defined]
            if fused is not None:
                self.fused.add(f.track_id, time_s, fused)  # type: ignore[attr-defined]
            label = FUSION_LABELS[int(np.argmax(fused))] if fused is not None else None
            out.append({"voice": p_voice, "fused": fused if self.timeline is not None else None,
                        "label": label, "rule": how if p_voice is None else f"{how}:{rule}"})
        return out

    def track_labels(self, track_id: int, label_face: str | None) -> dict:
        """``label_face``, ``label_voice``, ``label_fused`` and voice frame count for one track."""
        v, f = self.voice.tracks.get(track_id), self.fused.tracks.get(track_id)
        label_voice = v.to_dict(FUSION_LABELS)["label_sum"] if v else None
        label_fused = f.to_dict(FUSION_LABELS)["label_sum"] if f else None
        if self.timeline is None:
            label_fused = label_face
        return {"label_face": label_face, "label_voice": label_voice, "label_fused": label_fused,
                "voice_frames": v.n_frames if v else 0}

    def video_labels(self, label_face: str | None, voice_overall: Mapping[str, float] | None) -> dict:
        """Video-level ``label_face``, ``label_voice`` (whole sound track) and ``label_fused``
        (sum rule over every fused face-frame plus the speech heard while no face was visible)."""
        from emolens.decide import decide_sum

        label_voice = None
        if voice_overall:
            label_voice = FUSION_LABELS[int(np.argmax(fold_vector(voice_overall)))]
        if self.timeline is None:
            return {"label_face": label_face, "label_voice": label_voice, "label_fused": label_face}
        total = sum((t.prob_sum for t in self.fused.tracks.values()), np.zeros(len(FUSION_LABELS)))
        total = total + self.voice_only.prob_sum
        label_fused = decide_sum(total, FUSION_LABELS) or (label_face if self.modality == "both" else None)
        return {"label_face": label_face, "label_voice": label_voice, "label_fused": label_fused}
