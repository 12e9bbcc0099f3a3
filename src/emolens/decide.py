"""One emotion per track and per video from per-frame probabilities, with the two established rules.

* **sum**: add the per-frame probability vectors; the class with the highest sum wins
  (equivalently: the highest mean probability).
* **vote**: each frame votes for its most probable class; the class with most votes wins,
  ties broken by the highest probability sum (then by label order).

A video's label weighs every face-frame by the evidence it carries (:func:`face_evidence`: detector
score, face size, sharpness), so a few small blurred background faces cannot outvote the people
the video is about; a long track adds more frames, hence more evidence.

Accumulators are streaming (a running sum and vote counts per track), so memory does not grow
with video length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: Face height (pixels) from which a face counts fully: the expression model sees 48x48 crops.
FULL_EVIDENCE_PX = 64.0
#: Sharpness (Laplacian std / intensity std of the aligned crop) from which a face counts fully:
#: the 25th percentile of FER2013 faces (measured on 2,000 PublicTest faces: 0.72).
FULL_EVIDENCE_SHARPNESS = 0.72


def sharpness(crop: np.ndarray) -> float:
    """Contrast-independent sharpness of an aligned face crop: std of its Laplacian / its std."""
    import cv2

    c = np.asarray(crop, dtype=np.float32)
    return float(cv2.Laplacian(c, cv2.CV_32F).std() / (c.std() + 1.0))


def face_evidence(height_px: float, score: float, sharp: float) -> float:
    """Weight of one face-frame in a video's decision, in 0..1: detector score x size factor x
    sharpness factor (each factor squared below its full-evidence point)."""
    size = min(1.0, max(0.0, height_px) / FULL_EVIDENCE_PX) ** 2
    clear = min(1.0, max(0.0, sharp) / FULL_EVIDENCE_SHARPNESS) ** 2
    return float(min(1.0, max(0.0, score)) * size * clear)


def decide_sum(prob_sum: np.ndarray, labels: Sequence[str]) -> str | None:
    """Rule (a): the label with the highest summed probability (None if nothing was summed)."""
    prob_sum = np.asarray(prob_sum, dtype=np.float64)
    if prob_sum.size == 0 or not np.any(prob_sum):
        return None
    return labels[int(np.argmax(prob_sum))]


def decide_vote(votes: np.ndarray, prob_sum: np.ndarray, labels: Sequence[str]) -> str | None:
    """Rule (b): the label with the most (possibly weighted) frame votes; ties go to the highest
    probability sum."""
    votes = np.asarray(votes, dtype=np.float64)
    if votes.size == 0 or votes.sum() == 0:
        return None
    tied = np.flatnonzero(votes == votes.max())
    sums = np.asarray(prob_sum, dtype=np.float64)[tied]
    return labels[int(tied[int(np.argmax(sums))])]


def decide(probs: np.ndarray, labels: Sequence[str]) -> dict[str, str | None]:
    """Both rules on per-frame probabilities ``(N, classes)``: ``{"label_sum": .., "label_vote": ..}``."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(labels))
    prob_sum = probs.sum(axis=0)
    votes = np.bincount(probs.argmax(axis=1), minlength=len(labels)) if len(probs) else np.zeros(len(labels))
    return {"label_sum": decide_sum(prob_sum, labels), "label_vote": decide_vote(votes, prob_sum, labels)}


@dataclass
class TrackStats:
    """Running totals for one track: time span, frame count, probability sum and vote counts."""

    track_id: int
    n_classes: int
    first_s: float = float("inf")
    last_s: float = float("-inf")
    n_frames: int = 0
    evidence: float = 0.0
    prob_sum: np.ndarray = field(init=False, repr=False)
    weighted_sum: np.ndarray = field(init=False, repr=False)
    votes: np.ndarray = field(init=False, repr=False)
    weighted_votes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.prob_sum = np.zeros(self.n_classes, dtype=np.float64)
        self.weighted_sum = np.zeros(self.n_classes, dtype=np.float64)
        self.votes = np.zeros(self.n_classes, dtype=np.int64)
        self.weighted_votes = np.zeros(self.n_classes, dtype=np.float64)

    def add(self, time_s: float, probs: np.ndarray, weight: float = 1.0) -> None:
        """Count one frame of this track (``weight``: its evidence, see :func:`face_evidence`)."""
        probs = np.asarray(probs, dtype=np.float64)
        self.first_s = min(self.first_s, time_s)
        self.last_s = max(self.last_s, time_s)
        self.n_frames += 1
        self.evidence += weight
        self.prob_sum += probs
        self.weighted_sum += weight * probs
        top = int(np.argmax(probs))
        self.votes[top] += 1
        self.weighted_votes[top] += weight

    def to_dict(self, labels: Sequence[str]) -> dict:
        """``{track_id, first_s, last_s, n_frames, label_sum, label_vote, mean_probs, votes}``."""
        mean = self.prob_sum / max(self.n_frames, 1)
        return {
            "track_id": self.track_id,
            "first_s": round(self.first_s, 3),
            "last_s": round(self.last_s, 3),
            "n_frames": self.n_frames,
            "evidence": round(self.evidence, 3),
            "label_sum": decide_sum(self.prob_sum, labels),
            "label_vote": decide_vote(self.votes, self.prob_sum, labels),
            "mean_probs": {name: round(float(p), 4) for name, p in zip(labels, mean, strict=True)},
            "votes": {name: int(v) for name, v in zip(labels, self.votes, strict=True)},
        }


class Decisions:
    """Collects per-frame probabilities per track; decides per track and for the whole video.

    The video-level decision pools every frame of every track (rule (a) on the summed
    probabilities, rule (b) on all frame votes).
    """

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = tuple(labels)
        self.tracks: dict[int, TrackStats] = {}

    def add(self, track_id: int, time_s: float, probs: np.ndarray, weight: float = 1.0) -> None:
        """Record one face of one frame with its evidence ``weight``."""
        stats = self.tracks.get(track_id)
        if stats is None:
            stats = self.tracks[track_id] = TrackStats(track_id, len(self.labels))
        stats.add(time_s, probs, weight)

    def track_summaries(self) -> list[dict]:
        """One dict per track (see :meth:`TrackStats.to_dict`), by track id."""
        return [self.tracks[k].to_dict(self.labels) for k in sorted(self.tracks)]

    def video(self) -> dict[str, str | None]:
        """``{"label_sum": .., "label_vote": ..}`` over all tracks, every face-frame weighted by its
        evidence (None when no face was seen)."""
        prob_sum = sum((t.weighted_sum for t in self.tracks.values()), np.zeros(len(self.labels)))
        votes = sum((t.weighted_votes for t in self.tracks.values()), np.zeros(len(self.labels)))
        return {"label_sum": decide_sum(prob_sum, self.labels), "label_vote": decide_vote(votes, prob_sum, self.labels)}

    def main_tracks(self, share: float = 0.1, limit: int = 5) -> list[int]:
        """The people the video is about: tracks holding at least ``share`` of all evidence, most first."""
        total = sum(t.evidence for t in self.tracks.values())
        ranked = sorted(self.tracks.values(), key=lambda t: -t.evidence)
        return [t.track_id for t in ranked if total > 0 and t.evidence >= share * total][:limit]
