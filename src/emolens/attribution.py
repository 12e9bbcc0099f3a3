"""Who is speaking: a speech segment goes to the face whose mouth moves with the sound
(audio-visual synchrony), or to nobody when no face is clearly in sync."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class SpeakerPicker:
    """Chooses which visible face is speaking: audio-visual synchrony.

    For each track, the mouth region's motion (mean absolute difference between consecutive
    grayscale crops of the lower-middle face, 32x16 px) is recorded at every frame during speech,
    together with the speech envelope (RMS in dB) over the same interval. The speaker is the track
    whose mouth motion correlates best (Pearson, over the last ``window_s`` seconds of speech)
    with the envelope, when that correlation is at least ``min_corr`` and significant
    (``>= z / sqrt(n)`` over its ``n`` frames, one-sided 5 % by default), beats the runner-up by
    ``margin``, and rests on at least ``min_obs`` frames (rule ``av_sync``). Otherwise the
    segment stays unattributed (``None``): there is no largest-face fallback, and a face whose
    mouth does not move (a still photo) cannot correlate with the sound. A lone face is the
    speaker (``only_face``). Without an envelope, motion alone decides (``mouth_motion``, the
    clearly most moving mouth) or nobody.
    """

    def __init__(self, envelope: np.ndarray | None = None, hop_s: float = 0.01, window_s: float = 4.0,
                 min_corr: float = 0.2, margin: float = 0.1, min_obs: int = 6, motion_margin: float = 1.5,
                 z: float = 1.64) -> None:
        self.envelope = None if envelope is None else np.asarray(envelope, dtype=np.float64)
        self.hop_s, self.window_s = hop_s, window_s
        self.min_corr, self.margin, self.min_obs, self.motion_margin = min_corr, margin, min_obs, motion_margin
        self.z = z
        self._prev: dict[int, tuple[float, np.ndarray]] = {}
        self._obs: dict[int, list[tuple[float, float, float]]] = {}  # track -> [(time, motion, envelope)]
        self.scores: dict[int, float] = {}

    @staticmethod
    def mouth_crop(gray: np.ndarray, box: Sequence[float] | np.ndarray) -> np.ndarray | None:
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

    def level(self, t0: float, t1: float) -> float:
        """Mean speech envelope (dB) between two times."""
        assert self.envelope is not None
        a = int(np.clip(np.floor(t0 / self.hop_s), 0, len(self.envelope) - 1))
        b = int(np.clip(np.ceil(t1 / self.hop_s), a + 1, len(self.envelope)))
        return float(self.envelope[a:b].mean())

    def pick(self, segment: int, gray: np.ndarray, faces: Sequence[tuple[int, Sequence[float] | np.ndarray]],
             time_s: float | None = None) -> tuple[int, str] | None:
        """``(track_id, rule)`` of the speaker among ``faces`` = ``[(track_id, box), ...]``, or
        ``None`` when no face is clearly in sync with the speech."""
        if not faces:
            return None
        t = float(time_s) if time_s is not None else float(segment)
        for track_id, box in faces:
            crop = self.mouth_crop(gray, box)
            if crop is None:
                continue
            prev = self._prev.get(track_id)
            if prev is not None and 0 < t - prev[0] <= 0.5:
                env = self.level(prev[0], t) if self.envelope is not None and len(self.envelope) else 0.0
                self._obs.setdefault(track_id, []).append((t, float(np.abs(crop - prev[1]).mean()), env))
            self._prev[track_id] = (t, crop)
        for track_id in list(self._obs):
            self._obs[track_id] = [o for o in self._obs[track_id] if o[0] > t - self.window_s]
        if len(faces) == 1:
            return faces[0][0], "only_face"
        visible = [tid for tid, _ in faces if len(self._obs.get(tid, [])) >= self.min_obs]
        if not visible:
            return None
        if self.envelope is None or not len(self.envelope):
            motion = sorted(((float(np.mean([o[1] for o in self._obs[tid]])), tid) for tid in visible), reverse=True)
            if len(motion) >= 2 and motion[0][0] >= self.motion_margin * max(motion[1][0], 1e-6):
                return motion[0][1], "mouth_motion"
            return None
        scores = []
        for tid in visible:
            obs = np.asarray(self._obs[tid])
            m, e = obs[:, 1], obs[:, 2]
            corr = 0.0
            if m.std() > 1e-3 and e.std() > 1e-3:
                corr = float(np.corrcoef(m, e)[0, 1])
            scores.append((corr, tid, len(m)))
            self.scores[tid] = corr
        scores.sort(reverse=True)
        best, tid, n = scores[0]
        runner = scores[1][0] if len(scores) > 1 else -1.0
        if best >= max(self.min_corr, self.z / np.sqrt(n)) and best - runner >= self.margin:
            return tid, "av_sync"
        return None

    def observe_silence(self) -> None:
        """Forget the previous crops (motion across a silence is not compared)."""
        self._prev = {}
