"""Fusion math (mapping, weights, fallbacks, attribution) and the fused video outputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emolens.attribution import SpeakerPicker
from emolens.faces import Face
from emolens.fusion import (
    FUSION_LABELS,
    AVFuser,
    CalibratedFusion,
    FusionWeights,
    VoiceSegment,
    VoiceTimeline,
    default_weights,
    fold_confusion,
    fold_vector,
    reliability,
)
from emolens.labels import RAVDESS8
from emolens.tracked import FusedFace, TrackedFace


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


def test_shipped_fusion_is_calibrated_and_fitted_on_held_out_data() -> None:
    w = default_weights()
    assert isinstance(w, CalibratedFusion)
    assert w.t_face > 0 and w.t_voice > 0
    assert "held-out" in w.source["fitted_on"] and "independent" in w.source["assumption"]
    fused, rule = w.fuse(onehot("happy", 0.8), onehot("happy", 0.6))
    assert rule == "both" and fused.sum() == pytest.approx(1) and FUSION_LABELS[int(fused.argmax())] == "happy"
    assert w.fuse(onehot("sad"), None)[1] == "face" and w.fuse(None, None) == (None, "none")
    again = CalibratedFusion.from_dict(w.to_dict())
    assert np.allclose(again.fuse_log(onehot("sad", 0.5), onehot("angry", 0.5)),
                       w.fuse_log(onehot("sad", 0.5), onehot("angry", 0.5)))


def test_a_voice_that_says_nothing_leaves_the_face_alone() -> None:
    """The voice's 8 classes fold onto 7 (calm and neutral both on neutral): a voice model unsure
    between all 8 gives neutral 2/8. Divided by that folded prior it adds nothing to the product,
    so the face decides alone; without the division the fusion leans to neutral."""
    from emolens.labels import RAVDESS8

    flat = fold_vector(np.full(8, 1 / 8), RAVDESS8)
    assert flat[FUSION_LABELS.index("neutral")] == pytest.approx(2 / 8)
    face_p = onehot("sad", 0.3)  # unsure face, sad on top
    ones, zeros = np.ones(7), np.zeros(7)
    with_prior = CalibratedFusion(1.0, 1.0, ones, ones, voice_prior=flat)
    assert np.allclose(with_prior.fuse_log(face_p, flat), np.log(face_p / face_p.sum()), atol=1e-9)
    plain = CalibratedFusion(1.0, 1.0, ones, ones)
    assert plain.fuse_log(face_p, flat)[FUSION_LABELS.index("neutral")] > np.log(face_p[FUSION_LABELS.index("neutral")])
    again = CalibratedFusion.from_dict(with_prior.to_dict())
    assert again.voice_prior is not None and np.allclose(again.voice_prior, flat, atol=1e-5)
    assert CalibratedFusion.from_dict(plain.to_dict()).voice_prior is None
    assert np.allclose(CalibratedFusion(1.0, 1.0, ones, zeros, voice_prior=flat).fuse_log(face_p, onehot("happy")),
                       np.log(face_p / face_p.sum()), atol=1e-9)  # voice weight 0: the face alone


def test_temperature_scaling_lowers_held_out_nll() -> None:
    pytest.importorskip("torch")
    from emolens.train.fusion import fit_temperature, nll

    rng = np.random.default_rng(0)

    def overconfident(n: int) -> tuple[np.ndarray, np.ndarray]:  # right 60 % of the time, always 95 % sure
        y = rng.integers(0, 7, n)
        pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, 7, n))
        p = np.full((n, 7), 0.05 / 6)
        p[np.arange(n), pred] = 0.95
        return p, y

    fit_p, fit_y = overconfident(2000)
    test_p, test_y = overconfident(2000)
    t = fit_temperature(fit_p, fit_y)
    assert t > 1.5  # overconfident: softened
    scaled = np.log(test_p) / t
    scaled -= np.log(np.exp(scaled).sum(1, keepdims=True))
    assert nll(scaled, test_y) < nll(np.log(test_p), test_y) - 0.1


def test_fitted_fusion_beats_either_modality_on_held_out_pairs() -> None:
    pytest.importorskip("torch")
    from emolens.train.fusion import fit_fusion, fit_temperature

    rng = np.random.default_rng(1)

    def noisy(y: np.ndarray, signal: float) -> np.ndarray:  # evidence + noise, made overconfident (x3)
        z = 3 * (signal * np.eye(7)[y] + rng.normal(size=(len(y), 7)))
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    y_fit, y_test = rng.integers(0, 7, 3000), rng.integers(0, 7, 3000)
    pf, pv = noisy(y_fit, 1.8), noisy(y_fit, 1.2)
    fusion = fit_fusion(pf, pv, y_fit, fit_temperature(pf, y_fit), fit_temperature(pv, y_fit))
    tf, tv = noisy(y_test, 1.8), noisy(y_test, 1.2)
    fused = (fusion.fuse_log(tf, tv).argmax(1) == y_test).mean()
    assert fused >= max((tf.argmax(1) == y_test).mean(), (tv.argmax(1) == y_test).mean()) + 0.02


def test_fusion_strength_is_chosen_on_a_kind_of_voice_the_fit_never_saw() -> None:
    """Voices from two corpora: in one the voice is reliable on classes 0-3 only, in the other on
    4-6 only. Per-class weights fitted on one corpus are wrong for the other, which only
    leave-one-corpus-out selection sees; folds mixing the corpora prefer the flexible fit."""
    pytest.importorskip("torch")
    from emolens.train.fusion import fit_temperature, grouped_cv, select_l2

    rng = np.random.default_rng(3)

    def probs(y: np.ndarray, signal: np.ndarray) -> np.ndarray:
        z = signal[:, None] * np.eye(7)[y] + rng.normal(size=(len(y), 7))
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    n = 1500
    y = rng.integers(0, 7, 2 * n)
    corpus = np.repeat(["a", "b"], n)
    good = np.where(corpus == "a", y < 4, y >= 4)
    pf, pv = probs(y, np.full(2 * n, 1.0)), probs(y, np.where(good, 3.0, 0.0))
    tf, tv = fit_temperature(pf, y), fit_temperature(pv, y)
    best, rows = select_l2(pf, pv, y, corpus, tf, tv, grid=(0.001, 100.0))
    assert best == 100.0 and [r["rule"] for r in rows] == ["fit", "fit", "product", "face"]
    assert rows[1]["nll"] < rows[0]["nll"] and all(r["n"] == 2 * n for r in rows)
    mixed, _ = select_l2(pf, pv, y, rng.integers(0, 2, 2 * n), tf, tv, grid=(0.001, 100.0))
    assert mixed == 0.001
    # a held-out group is only scored on labels the other groups have
    only_c = np.where(y == 6, "c", corpus)  # class 6 only in corpus c: never scored
    assert grouped_cv(pf, pv, y, only_c, tf, tv, l2=1.0)["n"] == 2 * n - int((y == 6).sum())


def test_timeline_lookup() -> None:
    tl = VoiceTimeline([VoiceSegment(1.0, 2.0, onehot("angry")), VoiceSegment(3.0, 4.5, onehot("sad"))])
    assert tl.at(0.5) is None and tl.at(1.0) == 0 and tl.at(1.99) == 0 and tl.at(2.5) is None and tl.at(4.0) == 1
    assert VoiceTimeline([]).at(1.0) is None


def face(track_id: int, box: list[float], p: np.ndarray) -> TrackedFace:
    label = FUSION_LABELS[int(np.argmax(p))]
    return TrackedFace(track_id, Face(np.array(box, np.float32), 0.9), label, dict(zip(FUSION_LABELS, p)), p=p)


def test_speaker_picker_follows_the_sound_and_never_falls_back_to_the_largest_face() -> None:
    rng = np.random.default_rng(0)
    loud = (np.arange(300) // 10) % 2 == 0  # speech envelope: 0.1 s on, 0.1 s off
    envelope = np.where(loud, -20.0, -60.0)
    picker = SpeakerPicker(envelope, 0.01)
    big, small, other = [0, 0, 100, 100], [150, 0, 60, 60], [0, 150, 60, 60]  # the still face is the largest
    picks = []
    for i in range(40):  # 25 fps: the small face's mouth moves while the sound is on
        t = i * 0.04
        gray = np.full((240, 240), 128, np.uint8)
        if loud[int(t / 0.01)]:
            gray[30:60, 150:210] = rng.integers(0, 255, (30, 60))
        gray[180:210, 0:60] = rng.integers(0, 255, (30, 60))  # a third face chews all the time
        picks.append(picker.pick(0, gray, [(1, big), (2, small), (3, other)], t))
    assert picks[0] is None  # no evidence yet: unattributed, not the largest face
    assert all(p is None or p[0] == 2 for p in picks)
    assert picks[-1] == (2, "av_sync")
    assert picker.pick(1, gray, [(1, big)], 2.0) == (1, "only_face")
    # a face that never moves cannot be in sync
    still = SpeakerPicker(envelope, 0.01)
    frame = np.full((240, 240), 128, np.uint8)
    assert all(still.pick(0, frame, [(1, big), (2, small)], i * 0.04) is None for i in range(40))


def test_av_fuser_streams_and_decides() -> None:
    tl = VoiceTimeline([VoiceSegment(0.0, 1.0, onehot("angry", 0.9))])
    fuser = AVFuser(tl, "both", FusionWeights.equal())
    image = np.zeros((100, 100, 3), np.uint8)
    for i in range(20):  # 2 s at 10 fps: speech in the first second only
        out = fuser.frame(i / 10, image, [face(1, [10, 10, 50, 50], onehot("neutral", 0.6))])
        if i < 10:
            assert out[0].voice is not None and out[0].rule == "both:only_face" and out[0].speaking
            assert out[0].segment == 0 and out[0].label in FUSION_LABELS and out[0].fused is not None
        else:
            assert out[0].voice is None and out[0].rule == "face" and not out[0].speaking
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
    assert face_only.frame(0.5, image, [face(1, [0, 0, 9, 9], onehot("sad"))])[0] == FusedFace()


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


def test_multi_face_voice_goes_to_the_speaker_never_to_the_photo(media: Path, tmp_path: Path) -> None:
    """multi_face.mp4: the sound is the top-left tile's; bottom-right is a still photo."""
    proc = run_video(str(media / "video" / "multi_face.mp4"), "--out", str(tmp_path), "--no-annotate")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "multi_face.summary.json").read_text())
    with open(tmp_path / "multi_face.frames.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    first = {}
    for r in rows:
        first.setdefault(int(r["track_id"]), (float(r["x"]), float(r["y"])))
    top_left = min(first, key=lambda t: first[t][0] + first[t][1])
    photo = max(first, key=lambda t: first[t][0] + first[t][1])
    frames = {t["track_id"]: t["voice_frames"] for t in summary["tracks"]}
    total = sum(frames.values())
    assert total > 0
    assert frames[top_left] >= 0.8 * total, frames
    assert frames.get(photo, 0) == 0, frames
    assert "largest_face" not in summary["fusion"]["speaker_attribution"]


def test_fusion_is_never_worse_than_the_better_modality_on_labelled_clips(media: Path, tmp_path: Path) -> None:
    clips = sorted((media / "labeled_av").glob("1001_*.flv"))
    with open(media / "labeled_av" / "labels.csv", newline="") as fh:
        truth = {r["file"]: r["emotion"] for r in csv.DictReader(fh)}
    proc = run_video(*map(str, clips), "--out", str(tmp_path), "--no-annotate")
    assert proc.returncode == 0, proc.stderr
    right = {"label_face": 0, "label_voice": 0, "label_fused": 0}
    for clip in clips:
        summary = json.loads((tmp_path / f"{clip.stem}.summary.json").read_text())
        for key in right:
            right[key] += summary[key] == truth[clip.name]
    assert right["label_fused"] >= max(right["label_face"], right["label_voice"]), right
