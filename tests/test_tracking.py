"""FaceTracker ids (stable, occlusion, enter/leave, false positives) and probability smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from emolens.faces import Face
from emolens.tracking import FaceTracker, ProbSmoother, iou_matrix, shift_face


def face(x: float, y: float, size: float = 80, score: float = 0.9) -> Face:
    marks = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], dtype=np.float32) * size
    return Face(np.array([x, y, size, size], dtype=np.float32), score, marks + np.array([x, y], dtype=np.float32))


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]])
    assert iou_matrix(a, b)[0] == pytest.approx([1.0, 50 / 150, 0.0])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_two_moving_faces_keep_their_ids() -> None:
    tracker = FaceTracker()
    seen: dict[int, list[float]] = {}
    for i in range(60):
        t = i / 30
        faces = [face(50 + 3 * i, 100), face(400 - 3 * i, 120)]  # walking towards each other
        for tid, f in tracker.update(faces, t):
            seen.setdefault(tid, []).append(float(f.box[0]))
    assert sorted(seen) == [1, 2]
    assert all(len(xs) == 60 for xs in seen.values())
    assert seen[1][-1] > seen[1][0] and seen[2][-1] < seen[2][0]


def test_short_occlusion_keeps_id_long_absence_gets_new_id() -> None:
    tracker = FaceTracker(max_lost_s=1.0)
    ids = []
    for i in range(90):
        t = i / 30
        visible = not (30 <= i < 45)  # 0.5 s occlusion
        ids += [tid for tid, _ in tracker.update([face(100 + i, 100)] if visible else [], t)]
    assert set(ids) == {1}
    for i in range(90, 200):  # gone for 2 s, then back
        tracker.update([], i / 30)
    back = [tid for i in range(200, 205) for tid, _ in tracker.update([face(300, 100)], i / 30)]
    assert set(back) == {2}


def test_one_frame_false_positive_gets_no_id_and_weak_detections_only_continue() -> None:
    tracker = FaceTracker(min_hits=2)
    tracker.update([face(100, 100)], 0.0)  # first frame: confirmed at once
    out = tracker.update([face(100, 100), face(400, 300)], 1 / 30)  # new blob, one frame only
    assert [tid for tid, _ in out] == [1]
    out = tracker.update([face(101, 100, score=0.45)], 2 / 30)  # weak, but continues track 1
    assert [tid for tid, _ in out] == [1]
    out = tracker.update([face(600, 300, score=0.45)], 3 / 30)  # weak, unmatched: never starts a track
    assert out == [] and all(t.track_id in (0, 1) for t in tracker.tracks)
    assert tracker.next_id == 2


def test_carry_moves_boxes_between_detections() -> None:
    tracker = FaceTracker()
    for i in range(4):
        tracker.update([face(100 + 6 * i, 100)], i / 30)
    carried = tracker.carry(4 / 30)
    assert len(carried) == 1 and carried[0][0] == 1
    assert carried[0][1].box[0] == pytest.approx(124, abs=1.0)
    assert carried[0][1].landmarks is not None
    tracker.update([], 5 / 30)  # the face was not found at the next detection: nothing carried
    assert tracker.carry(6 / 30) == []


def test_shift_face_moves_landmarks() -> None:
    f = face(0, 0, 100)
    g = shift_face(f, np.array([100, 100, 50, 50], dtype=np.float32))
    assert g.box.tolist() == [75, 75, 50, 50]
    assert g.landmarks[0].tolist() == pytest.approx([75 + 15, 75 + 20])


def test_smoothers() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    ema = ProbSmoother("ema", alpha=0.25)
    ema.update(1, a)
    assert ema.update(1, b) == pytest.approx([0.75, 0.25])
    assert ema.update(2, b) == pytest.approx([0.0, 1.0])  # tracks are independent
    win = ProbSmoother("window", window=2)
    for p in (a, a, b):
        out = win.update(7, p)
    assert out == pytest.approx([0.5, 0.5])
    assert ProbSmoother("none").update(1, b) is not None
    win.forget([7])
    assert win.update(7, b) == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError):
        ProbSmoother("median")
