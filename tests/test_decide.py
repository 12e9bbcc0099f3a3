"""Per-track and per-video decisions: probability sum and majority vote (ties -> sum)."""

from __future__ import annotations

import numpy as np

from emolens.decide import Decisions, decide, decide_sum, decide_vote, face_evidence, sharpness

LABELS = ("a", "b", "c")


def test_sum_rule_picks_highest_total() -> None:
    probs = np.array([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.0, 0.9, 0.1]])
    # votes: a, a, b -> vote says a; sums: a 1.2, b 1.7 -> sum says b
    assert decide(probs, LABELS) == {"label_sum": "b", "label_vote": "a"}


def test_vote_tie_broken_by_probability_sum() -> None:
    probs = np.array([[0.5, 0.4, 0.1], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]])
    # one vote each; sums a 0.6, b 1.2, c 1.2 -> tie between b and c on sum too -> label order (b)
    assert decide_vote(np.array([1, 1, 1]), probs.sum(0), LABELS) == "b"
    assert decide_vote(np.array([2, 2, 0]), np.array([0.9, 1.1, 0.0]), LABELS) == "b"
    assert decide_vote(np.array([2, 2, 0]), np.array([1.3, 1.1, 0.0]), LABELS) == "a"


def test_empty_gives_none() -> None:
    assert decide(np.zeros((0, 3)), LABELS) == {"label_sum": None, "label_vote": None}
    assert decide_sum(np.zeros(3), LABELS) is None
    d = Decisions(LABELS)
    assert d.track_summaries() == [] and d.video() == {"label_sum": None, "label_vote": None}


def test_tracks_and_video_pool_all_tracks() -> None:
    d = Decisions(LABELS)
    for t in range(3):  # track 1: a a a (weakly)
        d.add(1, t / 10, np.array([0.4, 0.35, 0.25]))
    for t in range(2):  # track 2: b b (strongly)
        d.add(2, 1 + t / 10, np.array([0.0, 1.0, 0.0]))
    tracks = d.track_summaries()
    assert [t["track_id"] for t in tracks] == [1, 2]
    one = tracks[0]
    assert one["n_frames"] == 3 and one["first_s"] == 0.0 and one["last_s"] == 0.2
    assert one["label_sum"] == one["label_vote"] == "a"
    assert one["mean_probs"] == {"a": 0.4, "b": 0.35, "c": 0.25}
    assert tracks[1]["label_sum"] == "b"
    # video: votes a=3, b=2 -> vote a; sums a 1.2, b 3.05 -> sum b
    assert d.video() == {"label_sum": "b", "label_vote": "a"}


def test_video_label_weighs_faces_by_evidence() -> None:
    labels = ("angry", "happy")
    d = Decisions(labels)
    blurred = face_evidence(height_px=30, score=0.45, sharp=0.2)
    clear = face_evidence(height_px=120, score=0.93, sharp=0.9)
    assert 0 <= blurred < 0.02 < 0.9 < clear <= 1
    for k in range(40):  # four small blurred background faces say "angry" in every frame
        for track in (1, 2, 3, 4):
            d.add(track, k / 10, np.array([0.9, 0.1]), blurred)
        d.add(5, k / 10, np.array([0.3, 0.7]), clear)  # the person the video is about laughs
    assert d.video() == {"label_sum": "happy", "label_vote": "happy"}
    assert d.main_tracks() == [5]
    assert d.track_summaries()[0]["label_sum"] == "angry"  # per-track decisions are unchanged


def test_evidence_grows_with_size_score_and_sharpness() -> None:
    assert face_evidence(20, 0.9, 0.9) < face_evidence(40, 0.9, 0.9) < face_evidence(64, 0.9, 0.9)
    assert face_evidence(80, 0.5, 0.9) < face_evidence(80, 0.9, 0.9)
    assert face_evidence(80, 0.9, 0.2) < face_evidence(80, 0.9, 0.5) < face_evidence(80, 0.9, 0.8)
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (48, 48)).astype(np.uint8)
    import cv2

    blurred = cv2.GaussianBlur(sharp, (9, 9), 3)
    assert sharpness(blurred) < sharpness(sharp) / 3
