"""Give every face a stable per-person track id across frames, and smooth its expression over time.

:class:`FaceTracker` is a small ByteTrack-style tracker made for faces (Zhang et al., 2022):
boxes are predicted with a constant-velocity model, matched to detections by IoU in two
rounds (confident detections first, then weak ones, which may only continue existing tracks),
new tracks are confirmed after ``min_hits`` detections (a one-frame false positive never gets
an id), and tracks that lose their face are kept ``max_lost_s`` seconds, so a face that is
briefly occluded (a hand, a microphone, a missed detection) keeps its id.

Why not ``supervision.ByteTrack``: supervision 0.27+ removed its trackers (they moved to the
``trackers`` package, which requires the GUI ``opencv-python`` wheel that clashes with
emolens' ``opencv-python-headless``), and the tracker has to carry boxes between detection
frames (``detect_every``), which ByteTrack's API does not expose. Faces are few and rarely
overlap, so greedy IoU matching is as good as Hungarian matching here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emolens.faces import Face


@dataclass
class Track:
    """One person's track: the last matched :class:`Face`, box velocity (pixels/s of
    ``[cx, cy, w, h]``), when it was first/last seen, and how many detections it matched."""

    face: Face
    first_s: float
    last_s: float
    track_id: int = 0
    hits: int = 1
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.float32))

    @property
    def confirmed(self) -> bool:
        """Tracks get a public id (``track_id > 0``) once confirmed."""
        return self.track_id > 0

    def predict(self, time_s: float) -> Face:
        """The face moved to where the constant-velocity model puts it at ``time_s``."""
        dt = max(0.0, time_s - self.last_s)
        if dt == 0.0 or not self.velocity.any():
            return self.face
        return shift_face(self.face, _cxcywh(self.face.box) + self.velocity * min(dt, 0.5))


def _cxcywh(box: np.ndarray) -> np.ndarray:
    x, y, w, h = (float(v) for v in box)
    return np.array([x + w / 2, y + h / 2, w, h], dtype=np.float32)


def shift_face(face: Face, cxcywh: np.ndarray) -> Face:
    """``face`` with its box (and landmarks) moved and scaled onto the box ``[cx, cy, w, h]``."""
    old = _cxcywh(face.box)
    cx, cy, w, h = (float(v) for v in cxcywh)
    w, h = max(w, 2.0), max(h, 2.0)
    box = np.array([cx - w / 2, cy - h / 2, w, h], dtype=np.float32)
    marks = None
    if face.landmarks is not None:
        scale = np.array([w / max(old[2], 1e-3), h / max(old[3], 1e-3)], dtype=np.float32)
        marks = (face.landmarks - old[:2]) * scale + np.array([cx, cy], dtype=np.float32)
    return Face(box, face.score, marks)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every ``[x, y, w, h]`` box in ``a`` (N, 4) with every box in ``b`` (M, 4)."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return inter / np.maximum(union, 1e-6)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs ``(row, col)`` taken in order of decreasing IoU, each row/col once, IoU >= threshold."""
    pairs: list[tuple[int, int]] = []
    if iou.size == 0:
        return pairs
    used_r: set[int] = set()
    used_c: set[int] = set()
    for flat in np.argsort(-iou, axis=None):
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < threshold:
            break
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


class FaceTracker:
    """Stable ids for faces across frames (see the module docstring).

    ``high_score``: detections at or above it may start tracks; weaker ones only continue
    tracks. ``match_iou``: minimum IoU between a predicted track box and a detection.
    ``max_lost_s``: how long a track survives without a detection. ``min_hits``: detections
    needed before a track gets its id (tracks found in the very first frame get one at once).
    """

    def __init__(
        self,
        high_score: float = 0.6,
        match_iou: float = 0.25,
        max_lost_s: float = 1.0,
        min_hits: int = 2,
    ) -> None:
        self.high_score = high_score
        self.match_iou = match_iou
        self.max_lost_s = max_lost_s
        self.min_hits = max(1, min_hits)
        self.tracks: list[Track] = []
        self.next_id = 1
        self.updates = 0
        self.last_update_s: float | None = None
        self.removed: list[int] = []

    def update(self, faces: list[Face], time_s: float) -> list[tuple[int, Face]]:
        """Match this frame's detections to tracks; ``(track_id, face)`` for confirmed tracks seen now."""
        self.removed = []
        first_frame = self.updates == 0
        self.updates += 1
        self.last_update_s = time_s
        predicted = np.array([t.predict(time_s).box for t in self.tracks], dtype=np.float32).reshape(-1, 4)
        strong = [i for i, f in enumerate(faces) if f.score >= self.high_score]
        weak = [i for i, f in enumerate(faces) if f.score < self.high_score]
        matched: dict[int, int] = {}  # track index -> face index
        # Round 1: confirmed and tentative tracks vs. confident detections.
        boxes = np.array([faces[i].box for i in strong], dtype=np.float32).reshape(-1, 4)
        for r, c in greedy_match(iou_matrix(predicted, boxes), self.match_iou):
            matched[r] = strong[c]
        # Round 2: confirmed tracks left over vs. weak detections (ByteTrack's second association).
        rest = [i for i, t in enumerate(self.tracks) if i not in matched and t.confirmed]
        boxes = np.array([faces[i].box for i in weak], dtype=np.float32).reshape(-1, 4)
        for r, c in greedy_match(iou_matrix(predicted[rest], boxes), self.match_iou):
            matched[rest[r]] = weak[c]
        for ti, fi in matched.items():
            self._absorb(self.tracks[ti], faces[fi], time_s)
        # Unmatched confident detections start tentative tracks.
        taken = set(matched.values())
        for i in strong:
            if i not in taken:
                self.tracks.append(Track(faces[i], time_s, time_s))
        kept: list[Track] = []
        for i, t in enumerate(self.tracks):
            if not t.confirmed and (first_frame or t.hits >= self.min_hits):
                t.track_id, self.next_id = self.next_id, self.next_id + 1
            fresh = i >= len(predicted)
            if i in matched or fresh:
                kept.append(t)
            elif t.confirmed and time_s - t.last_s <= self.max_lost_s:
                kept.append(t)
            elif t.confirmed:
                self.removed.append(t.track_id)
        self.tracks = kept
        return [(t.track_id, t.face) for t in self.tracks if t.confirmed and t.last_s == time_s]

    def carry(self, time_s: float, max_gap_s: float = 0.5) -> list[tuple[int, Face]]:
        """Boxes for a frame without detection: confirmed tracks matched at the last detection
        frame (if it is at most ``max_gap_s`` old), moved by their velocity to ``time_s``."""
        last = self.last_update_s
        if last is None or time_s - last > max_gap_s:
            return []
        return [(t.track_id, t.predict(time_s)) for t in self.tracks if t.confirmed and t.last_s == last]

    @staticmethod
    def _absorb(track: Track, face: Face, time_s: float) -> None:
        dt = time_s - track.last_s
        if dt > 0:
            step = (_cxcywh(face.box) - _cxcywh(track.face.box)) / dt
            track.velocity = step if track.hits == 1 else 0.5 * track.velocity + 0.5 * step
        track.face, track.last_s = face, time_s
        track.hits += 1


class ProbSmoother:
    """Per-track temporal smoothing of class probabilities.

    ``mode``: ``ema`` (exponential moving average, ``alpha`` = weight of the newest frame),
    ``window`` (mean of the last ``window`` frames) or ``none``.
    """

    def __init__(self, mode: str = "ema", alpha: float = 0.5, window: int = 5) -> None:
        if mode not in ("ema", "window", "none"):
            raise ValueError(f"unknown smoothing {mode!r} (ema, window, none)")
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        if window < 1:
            raise ValueError("window must be >= 1")
        self.mode, self.alpha, self.window = mode, alpha, window
        self.state: dict[int, np.ndarray] = {}
        self.history: dict[int, list[np.ndarray]] = {}

    def update(self, track_id: int, probs: np.ndarray) -> np.ndarray:
        """Smoothed probabilities of ``track_id`` after adding this frame's ``probs``."""
        probs = np.asarray(probs, dtype=np.float64)
        if self.mode == "none":
            return probs
        if self.mode == "ema":
            prev = self.state.get(track_id)
            out = probs if prev is None else self.alpha * probs + (1 - self.alpha) * prev
            self.state[track_id] = out
            return out
        hist = self.history.setdefault(track_id, [])
        hist.append(probs)
        del hist[: -self.window]
        return np.mean(hist, axis=0)

    def forget(self, track_ids: list[int]) -> None:
        """Drop the state of tracks that ended (keeps memory flat on long videos)."""
        for t in track_ids:
            self.state.pop(t, None)
            self.history.pop(t, None)
