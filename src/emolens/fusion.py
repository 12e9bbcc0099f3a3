"""Decision-level fusion of face and voice: one emotion per moment, per person, per video.

Common label space: the seven FER2013 classes. Voice outputs (RAVDESS's 8 classes) are folded
onto them with :data:`emolens.labels.FOLD_TO_FER7` (``calm`` -> ``neutral``).

Fusion (shipped: :class:`CalibratedFusion`, ``models/fusion.json``): each modality is
temperature-scaled, then combined log-linearly with a per-class reliability weight per modality,
a per-instance confidence term and class biases, all fitted on held-out data
(``benchmarks/eval_fusion.py --pairing``: FER2013 PublicTest faces paired with speech of speakers
the voice model never heard; see :mod:`emolens.train.fusion`). How strongly the fit is pulled
towards the plain product of the calibrated modalities is chosen by leave-one-voice-corpus-out
cross-validation; the shipped parameters are a strong pull, close to that product. The voice is
divided by its model's folded class prior first (``CalibratedFusion.voice_prior``). The older
per-class F1 weighting (:class:`FusionWeights`) is still readable. Fallbacks: face only when there is no speech, voice
only when no face is visible, nothing when neither.

Speaker attribution (several faces during speech): audio-visual synchrony
(:class:`emolens.attribution.SpeakerPicker`): the face whose mouth motion follows the speech
envelope; unattributed when no face is clearly in sync (no fallback to the largest face; a still
photo cannot be in sync). Voice segments attributed to a
tracked person are re-scored with that person's own speech statistics (:meth:`AVFuser.voice_for`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emolens.attribution import SpeakerPicker
from emolens.labels import FER7, FOLD_TO_FER7
from emolens.tracked import FUSION_GROUPS, FusedFace, TrackedFace

if TYPE_CHECKING:  # pragma: no cover
    from emolens.voice import AudioResult, SpeakerNormalizer, SpeechEmotionModel

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


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@dataclass
class CalibratedFusion:
    """Calibrated, confidence-aware log-linear fusion (fitted on held-out data).

    Each modality is first temperature-scaled (``log p / T`` renormalised). The fused
    distribution is

        log p[c] ∝ (a_face[c] + k_face * conf_face) * log q_face[c]
                 + (a_voice[c] + k_voice * conf_voice) * log q_voice[c] + b[c]

    with ``q`` the calibrated distributions and ``conf`` their maximum probability: a per-class
    reliability weight for each modality, a per-instance confidence term, and a class bias.
    ``voice_prior`` (optional) is the voice model's class prior folded onto the fusion labels
    (``calm`` and ``neutral`` both land on ``neutral``, so a model with a uniform prior over its 8
    classes gives ``neutral`` 2/8); the calibrated voice distribution is divided by it, so that the
    product of the two modalities counts each class's prior once (product of experts). The
    parameters come from :func:`emolens.train.fusion.fit_fusion` and
    :func:`emolens.train.fusion.select_l2` (``benchmarks/results/fusion_pairing.md``).
    """

    t_face: float
    t_voice: float
    a_face: np.ndarray
    a_voice: np.ndarray
    k_face: float = 0.0
    k_voice: float = 0.0
    bias: np.ndarray = field(default_factory=lambda: np.zeros(len(FUSION_LABELS)))
    source: dict = field(default_factory=dict)
    voice_prior: np.ndarray | None = None

    def calibrated(self, p: np.ndarray, which: str) -> np.ndarray:
        """Temperature-scaled log-probabilities of one modality (``face`` or ``voice``; the voice
        divided by :attr:`voice_prior` where there is one)."""
        t = self.t_face if which == "face" else self.t_voice
        z = np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1.0)) / t
        if which == "voice" and self.voice_prior is not None:
            z = z - np.log(self.voice_prior)
        return _log_softmax(z)

    def fuse_log(self, p_face: np.ndarray, p_voice: np.ndarray) -> np.ndarray:
        """Fused log-probabilities for arrays ``(..., 7)`` of both modalities."""
        lf, lv = self.calibrated(p_face, "face"), self.calibrated(p_voice, "voice")
        cf, cv = np.exp(lf).max(-1, keepdims=True), np.exp(lv).max(-1, keepdims=True)
        z = (self.a_face + self.k_face * cf) * lf + (self.a_voice + self.k_voice * cv) * lv + self.bias
        return _log_softmax(z)

    def fuse(self, p_face: np.ndarray | None, p_voice: np.ndarray | None) -> tuple[np.ndarray | None, str]:
        """Same contract as :meth:`FusionWeights.fuse` (single modality passes through)."""
        if p_face is not None and p_voice is not None:
            return np.exp(self.fuse_log(p_face, p_voice)), "both"
        if p_face is not None:
            return np.asarray(p_face, dtype=np.float64), "face"
        if p_voice is not None:
            return np.asarray(p_voice, dtype=np.float64), "voice"
        return None, "none"

    def to_dict(self) -> dict:
        """JSON shape (``"kind": "calibrated"``)."""
        def vec(v: np.ndarray) -> dict:
            return {c: round(float(x), 5) for c, x in zip(FUSION_LABELS, v, strict=True)}

        out = {"kind": "calibrated", "labels": list(FUSION_LABELS), "t_face": round(self.t_face, 5),
               "t_voice": round(self.t_voice, 5), "a_face": vec(self.a_face), "a_voice": vec(self.a_voice),
               "k_face": round(self.k_face, 5), "k_voice": round(self.k_voice, 5), "bias": vec(self.bias)}
        if self.voice_prior is not None:
            out["voice_prior"] = vec(self.voice_prior)
        return {**out, "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping) -> CalibratedFusion:
        """Inverse of :meth:`to_dict`."""
        if list(data["labels"]) != list(FUSION_LABELS):
            raise ValueError(f"fusion parameters are for labels {data['labels']}, expected {list(FUSION_LABELS)}")

        def arr(key: str) -> np.ndarray:
            return np.array([data[key][c] for c in FUSION_LABELS], dtype=np.float64)

        return cls(float(data["t_face"]), float(data["t_voice"]), arr("a_face"), arr("a_voice"),
                   float(data.get("k_face", 0.0)), float(data.get("k_voice", 0.0)), arr("bias"),
                   dict(data.get("source", {})), arr("voice_prior") if "voice_prior" in data else None)

    def save(self, path: str | os.PathLike) -> None:
        """Write the parameters as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def load_fusion(path: str | os.PathLike | None = None) -> FusionWeights | CalibratedFusion:
    """Fusion parameters from JSON: calibrated (``"kind": "calibrated"``) or per-class weights."""
    data = json.loads(Path(path or DEFAULT_WEIGHTS).read_text())
    if data.get("kind") == "calibrated":
        return CalibratedFusion.from_dict(data)
    return FusionWeights.load(path)


def default_weights() -> FusionWeights | CalibratedFusion:
    """The shipped fusion (calibrated when ``models/fusion.json`` says so), or equal weights if
    the file is missing."""
    return load_fusion() if DEFAULT_WEIGHTS.is_file() else FusionWeights.equal()


@dataclass
class VoiceSegment:
    """A stretch of speech with its folded probabilities on :data:`FUSION_LABELS`."""

    start_s: float
    end_s: float
    probs: np.ndarray
    #: raw speech functionals (functionals models), re-scored per tracked person by :class:`AVFuser`
    features: np.ndarray | None = None
    #: the speech model's ensemble partner's probabilities (model label order), combined after re-scoring
    partner: np.ndarray | None = None


class VoiceTimeline:
    """Speech segments on the video's timeline; :meth:`at` finds the one active at a time."""

    def __init__(self, segments: Sequence[VoiceSegment], envelope: np.ndarray | None = None,
                 envelope_hop_s: float = 0.01) -> None:
        self.segments = sorted(segments, key=lambda s: s.start_s)
        self._starts = np.array([s.start_s for s in self.segments])
        self.envelope, self.envelope_hop_s = envelope, envelope_hop_s

    @classmethod
    def from_audio_result(cls, result: AudioResult) -> VoiceTimeline:
        """From an :class:`emolens.voice.AudioResult` (its segments' probability dicts are folded;
        its speech envelope, when it has one, is kept for speaker attribution)."""
        segs = [VoiceSegment(s.start_s, s.end_s, fold_vector(s.probs), getattr(s, "features", None),
                             getattr(s, "partner_probs", None))
                for s in result.segments]
        return cls(segs, getattr(result, "envelope", None), getattr(result, "envelope_hop_s", 0.01))

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
    or ``both``. ``timeline`` is None when the input has no usable sound. ``speech_model``: the
    model that re-scores speech per tracked person (default: the shipped one, on the CPU).
    """

    def __init__(self, timeline: VoiceTimeline | None, modality: str = "both",
                 weights: FusionWeights | CalibratedFusion | None = None,
                 speech_model: SpeechEmotionModel | None = None) -> None:
        from emolens.decide import Decisions, TrackStats

        if modality not in ("face", "voice", "both"):
            raise ValueError(f"unknown modality {modality!r} (face, voice, both)")
        self.modality = modality
        self.timeline = timeline if modality != "face" else None
        self.weights = weights or default_weights()
        #: per tracked person: the speech model and a fresh per-speaker normaliser
        self._rescore: tuple[SpeechEmotionModel, SpeakerNormalizer] | None = None
        self._track_probs: dict[tuple[int, int], np.ndarray] = {}
        if self.timeline is not None and any(s.features is not None for s in self.timeline.segments):
            from emolens.voice import SpeakerNormalizer, default_speech_model

            model = speech_model or default_speech_model()
            if model.normalizer is not None:
                norm = model.normalizer
                self._rescore = (model, SpeakerNormalizer(norm.mean, np.sqrt(norm.var), norm.prior))
        env = getattr(self.timeline, "envelope", None)
        self.picker = SpeakerPicker(env, getattr(self.timeline, "envelope_hop_s", 0.01))
        self.voice = Decisions(FUSION_LABELS)
        self.fused = Decisions(FUSION_LABELS)
        self.voice_only = TrackStats(-1, len(FUSION_LABELS))  # speech while no face is visible
        self.rules: dict[str, int] = {}

    @property
    def groups(self) -> tuple[str, ...]:
        """Extra probability groups of the frames table (see :data:`emolens.tracked.FUSION_GROUPS`)."""
        return () if self.timeline is None else FUSION_GROUPS

    def frame(self, time_s: float, image: np.ndarray, faces: Sequence[TrackedFace]) -> list[FusedFace]:
        """Fuse one frame: one :class:`~emolens.tracked.FusedFace` per face of ``faces``, in order."""
        timeline = self.timeline
        if timeline is None:  # face only: nothing to fuse (the face model may have its own labels)
            return [FusedFace() for _ in faces]
        seg = timeline.at(time_s)
        speaker, rule = None, None
        if seg is not None and faces:
            import cv2

            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
            picked = self.picker.pick(seg, gray, [(f.track_id, f.face.box) for f in faces], time_s)
            speaker, rule = picked if picked is not None else (None, "unattributed")
            self.rules[rule] = self.rules.get(rule, 0) + 1
            if speaker is None:  # heard, but nobody visible is clearly saying it
                self.voice_only.add(time_s, timeline.segments[seg].probs)
        elif seg is not None:
            self.voice_only.add(time_s, timeline.segments[seg].probs)
        out = []
        for f in faces:
            p_face = np.asarray(f.p, dtype=np.float64)
            p_voice = self.voice_for(seg, f.track_id) if (seg is not None and f.track_id == speaker) else None
            fused: np.ndarray | None
            if self.modality == "voice":
                fused, how = (p_voice, "voice") if p_voice is not None else (None, "none")
            else:
                fused, how = self.weights.fuse(p_face, p_voice)
            if p_voice is not None:
                self.voice.add(f.track_id, time_s, p_voice)
            if fused is not None:
                self.fused.add(f.track_id, time_s, fused)
            label = FUSION_LABELS[int(np.argmax(fused))] if fused is not None else None
            out.append(FusedFace(p_voice, fused, label, how if p_voice is None else f"{how}:{rule}", seg))
        return out

    def voice_for(self, seg: int, track_id: int) -> np.ndarray:
        """Folded voice probabilities of segment ``seg`` spoken by ``track_id``: with a functionals
        model, re-scored with that person's feature statistics accumulated online (each segment
        counted once per person); otherwise the recording-level probabilities."""
        if self.timeline is None:
            raise ValueError("no voice timeline: nothing was heard")
        segment = self.timeline.segments[seg]
        if self._rescore is None or segment.features is None:
            return segment.probs
        key = (seg, track_id)
        if key not in self._track_probs:
            model, norm = self._rescore
            model.observe(segment.features, norm, ("track", track_id))
            p = model.predict_normalized(segment.features, norm, ("track", track_id))[None]
            p = model.combine(p, None if segment.partner is None else segment.partner[None])
            self._track_probs[key] = fold_vector(p[0], model.labels)
        return self._track_probs[key]

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
