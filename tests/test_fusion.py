"""Fusion math (mapping, weights, fallbacks, attribution) and the fused video outputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from emolens.fusion import (
    FUSION_LABELS,
    AVFuser,
    FusionWeights,
    SpeakerPicker,
    VoiceSegment,
    VoiceTimeline,
    fold_confusion,
    fold_vector,
    reliability,
)
from emolens.labels import RAVDESS8


def onehot(name: str, p: float = 1.0) -> np.ndarray:
    v = np.full(len(FUSION_LABELS), (1 - p) / (len(FUSION_LABELS) - 1))
    v[FUSION_LABELS.index(name)] = p
    return v


def test_calm_folds_into_neutral() -> None:
    probs = dict.fromkeys(RAVDESS8, 0.0) | {"calm": 0.4, "neutral": 0.1, "happy": 0.5}
    v = fold_vector(probs)
    assert v[FUSION_LABELS.index("neutral")] == pytest.approx(0.5)
    assert v[FUSION_LABELS.index("happy")] == pytest.approx(0.5)
    assert v.sum() == pytest.approx(1)
    with pytest.raises(ValueError):
        fold_vector({"bored": 1.0})


def test_fold_confusion_merges_calm_rows_and_columns() -> None:
    labels = ["neutral", "calm", "happy"]
    cm = [[5, 3, 0], [2, 6, 1], [0, 1, 9]]
    folded = fold_confusion(cm, labels)
    n, h = FUSION_LABELS.index("neutral"), FUSION_LABELS.index("happy")
    assert folded[n, n] == 16 and folded[n, h] == 1 and folded[h, n] == 1 and folded[h, h] == 9
    assert folded.sum() == np.sum(cm)


def test_weights_follow_per_class_reliability() -> None:
    r_face = np.array([0.6, 0.3, 0.5, 0.9, 0.6, 0.8, 0.7])
    r_voice = np.array([0.8, 0.6, 0.6, 0.6, 0.5, 0.7, 0.0])
    w = FusionWeights.from_reliability(r_face, r_voice)
    assert np.allclose(w.face + w.voice, 1)
    a, h, n = (FUSION_LABELS.index(x) for x in ("angry", "happy", "neutral"))
    assert w.voice[a] > w.face[a]  # voice recognises anger better
    assert w.face[h] > w.voice[h]  # the face recognises happiness better
    assert w.voice[n] > 0  # the reliability floor keeps a modality from being silenced entirely
    # equally sure, disagreeing modalities: each wins on the class it recognises better
    fused, how = w.fuse(onehot("happy", 0.6), onehot("angry", 0.6))
    assert how == "both" and FUSION_LABELS[int(fused.argmax())] == "happy"
    assert fused.sum() == pytest.approx(1)
    fused, _ = w.fuse(onehot("disgust", 0.6), onehot("angry", 0.6))
    assert FUSION_LABELS[int(fused.argmax())] == "angry"


def test_fallbacks() -> None:
    w = FusionWeights.equal()
    face, voice = onehot("sad", 0.7), onehot("fear", 0.7)
    assert w.fuse(face, None)[1] == "face" and np.allclose(w.fuse(face, None)[0], face)
    assert w.fuse(None, voice)[1] == "voice" and np.allclose(w.fuse(None, voice)[0], voice)
    assert w.fuse(None, None) == (None, "none")


def test_reliability_from_report() -> None:
    report = {"labels": ["angry", "happy"], "confusion": [[8, 2], [2, 8]]}
    r = reliability(report)
    assert r[FUSION_LABELS.index("angry")] == pytest.approx(0.8)
    assert r[FUSION_LABELS.index("fear")] == 0


def test_shipped_weights_load_and_are_learned() -> None:
    w = FusionWeights.load()
    assert np.allclose(w.face + w.voice, 1, atol=1e-3)
    assert not np.allclose(w.face, 0.5)  # learned per class, not a constant
    assert "face_f1" in w.source and "voice_f1" in w.source


def test_timeline_lookup() -> None:
    tl = VoiceTimeline([VoiceSegment(1.0, 2.0, onehot("angry")), VoiceSegment(3.0, 4.5, onehot("sad"))])
    assert tl.at(0.5) is None and tl.at(1.0) == 0 and tl.at(1.99) == 0 and tl.at(2.5) is None and tl.at(4.0) == 1
    assert VoiceTimeline([]).at(1.0) is None


def face(track_id: int, box: list[float], p: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(track_id=track_id, face=SimpleNamespace(box=np.array(box, float)), p=p)


def test_speaker_picker_prefers_the_moving_mouth() -> None:
    rng = np.random.default_rng(0)
    picker = SpeakerPicker()
    big, small = [0, 0, 100, 100], [150, 0, 60, 60]  # the still face is larger
    rules = []
    for _ in range(6):
        gray = np.full((120, 240), 128, np.uint8)
        gray[30:60, 150:210] = rng.integers(0, 255, (30, 60))  # the small face's mouth area changes
        rules.append(picker.pick(0, gray, [(1, big), (2, small)]))
    assert rules[0] == (1, "largest_face")  # no motion evidence yet
    assert rules[-1] == (2, "mouth_motion")
    assert picker.pick(1, gray, [(1, big)]) == (1, "only_face")


def test_av_fuser_streams_and_decides() -> None:
    tl = VoiceTimeline([VoiceSegment(0.0, 1.0, onehot("angry", 0.9))])
    fuser = AVFuser(tl, "both", FusionWeights.equal())
    image = np.zeros((100, 100, 3), np.uint8)
    for i in range(20):  # 2 s at 10 fps: speech in the first second only
        out = fuser.frame(i / 10, image, [face(1, [10, 10, 50, 50], onehot("neutral", 0.6))])
        if i < 10:
            assert out[0]["voice"] is not None and out[0]["rule"] == "both:only_face"
        else:
            assert out[0]["voice"] is None and out[0]["rule"] == "face"
    labels = fuser.track_labels(1, "neutral")
    assert labels == {"label_face": "neutral", "label_voice": "angry", "label_fused": labels["label_fused"],
                      "voice_frames": 10}
    assert fuser.video_labels("neutral", {"angry": 0.9, "calm": 0.1})["label_voice"] == "angry"
    # voice while no face is visible still counts for the video
    only_voice = AVFuser(tl, "both", FusionWeights.equal())
    for i in range(10):
        only_voice.frame(i / 10, image, [])
    assert only_voice.video_labels(None, None)["label_fused"] == "angry"
    # face modality: voice ignored entirely
    face_only = AVFuser(tl, "face")
    assert face_only.groups == ()
    assert face_only.frame(0.5, image, [face(1, [0, 0, 9, 9], onehot("sad"))])[0]["voice"] is None


def run_video(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emolens.cli", "video", *args, "--no-progress"],
                          capture_output=True, text=True, timeout=600)


def test_labelled_av_clips_give_three_labels(media: Path, tmp_path: Path) -> None:
    clips = sorted((media / "labeled_av").glob("1001_*.flv"))
    assert len(clips) == 6
    proc = run_video(*map(str, clips), "--out", str(tmp_path), "--no-annotate")
    assert proc.returncode == 0, proc.stderr
    for clip in clips:
        summary = json.loads((tmp_path / f"{clip.stem}.summary.json").read_text())
        assert summary["fusion"]["voice_used"] is True
        for key in ("label_face", "label_voice", "label_fused"):
            assert summary[key] in FUSION_LABELS, (clip.name, key)
        track = max(summary["tracks"], key=lambda t: t["n_frames"])
        assert track["label_voice"] in FUSION_LABELS and track["voice_frames"] > 0
        with open(tmp_path / f"{clip.stem}.frames.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        voiced = [r for r in rows if r["p_voice_angry"] != ""]
        assert voiced and len(voiced) < len(rows) + 1
        assert all(r["p_fused_angry"] != "" for r in rows)
        total = sum(float(voiced[0][f"p_fused_{c}"]) for c in FUSION_LABELS)
        assert total == pytest.approx(1, abs=1e-3)


def test_silent_video_falls_back_to_face(media: Path, tmp_path: Path) -> None:
    proc = run_video(str(media / "video" / "silent.mp4"), "--out", str(tmp_path), "--no-annotate")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "silent.summary.json").read_text())
    assert summary["fusion"]["voice_used"] is False and "face only" in summary["fusion"]["note"]
    assert summary["label_voice"] is None and summary["label_fused"] == summary["label_face"]
    header = (tmp_path / "silent.frames.csv").read_text().splitlines()[0]
    assert "p_voice_" not in header


def test_audio_only_file_to_video_is_a_clear_error(media: Path, tmp_path: Path) -> None:
    proc = run_video(str(media / "video" / "audio_only.m4a"), "--out", str(tmp_path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "no video stream" in proc.stderr and "emolens audio" in proc.stderr


def test_modality_option_is_validated(media: Path, tmp_path: Path) -> None:
    proc = run_video(str(media / "video" / "silent.mp4"), "--out", str(tmp_path), "--modality", "smell")
    assert proc.returncode != 0 and "modality" in proc.stderr
