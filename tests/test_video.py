"""`emolens video` / `emolens live` end to end on the real clips in ../shared/media (issue #8)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emolens.labels import FER7

AUDIO_SUFFIXES = {".m4a", ".wav", ".mp3"}
LANDMARKS = [f"{n}_{a}" for n in ("eye_r", "eye_l", "nose", "mouth_r", "mouth_l") for a in "xy"]
CSV_HEAD = ["time_s", "frame", "track_id", "x", "y", "w", "h", "score", "detected", "classified", "evidence",
            *LANDMARKS, "label"] + [f"p_{c}" for c in FER7]
SUMMARY_KEYS = {"duration_s", "frames_analysed", "processing_fps", "tracks", "label_sum", "label_vote"}
TRACK_KEYS = {"track_id", "first_s", "last_s", "n_frames", "label_sum", "label_vote", "mean_probs"}


def run_cli(*args: object) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "emolens.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def clips(media: Path) -> list[Path]:
    files = sorted((media / "video").iterdir()) + sorted((media / "labeled_av").iterdir())
    return [f for f in files if f.suffix != ".csv"]


@pytest.fixture(scope="module")
def all_clips(media: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path, list]:
    """One CLI run over every clip in video/ and labeled_av/ (audio-only files included)."""
    out = tmp_path_factory.mktemp("video_out")
    inputs = clips(media)
    return run_cli("video", *inputs, "--out", out, "--no-progress"), out, inputs


def load_summary(out: Path, stem: str) -> dict:
    return json.loads((out / f"{stem}.summary.json").read_text())


def test_every_video_clip_gives_three_outputs(all_clips: tuple) -> None:
    import av

    proc, out, inputs = all_clips
    assert "Traceback" not in proc.stderr
    videos = [p for p in inputs if p.suffix not in AUDIO_SUFFIXES]
    assert len(videos) >= 19
    for clip in videos:
        summary = load_summary(out, clip.stem)
        assert SUMMARY_KEYS <= set(summary), clip.name
        assert summary["error"] is None, (clip.name, summary["error"])
        assert summary["frames_analysed"] > 30 and summary["processing_fps"] > 0
        head, rows = read_rows(out / f"{clip.stem}.frames.csv")
        fusion = [f"p_{g}_{c}" for g in ("voice", "fused") for c in FER7]
        # face columns always; voice/fused columns exactly when the sound track had speech
        assert head == (CSV_HEAD + fusion if summary["fusion"]["voice_used"] else CSV_HEAD), clip.name
        assert len(rows) == summary["faces_found"]
        for t in summary["tracks"]:
            assert set(t) >= TRACK_KEYS and t["label_sum"] in FER7 and t["label_vote"] in FER7
            assert sum(t["mean_probs"].values()) == pytest.approx(1, abs=0.01)
        with av.open(str(out / f"{clip.stem}.annotated.mp4")) as container:
            n = sum(1 for _ in container.decode(video=0))
        assert n == summary["frames_analysed"], clip.name
        if clip.name != "no_face.mp4":
            assert summary["tracks"] and summary["label_sum"] in FER7 and summary["label_vote"] in FER7, clip.name


def test_audio_only_files_say_no_video_stream(all_clips: tuple) -> None:
    proc, out, inputs = all_clips
    audio = [p for p in inputs if p.suffix in AUDIO_SUFFIXES]
    assert len(audio) == 8
    assert proc.returncode == 1  # the audio-only inputs failed, the others still ran
    for p in audio:
        assert f"error: {p}: no video stream" in proc.stderr
    assert not list(out.glob("audio_only.*")) and not list(out.glob("1002_*"))
    assert f"{len(inputs)} input(s), {len(audio)} error(s)" in proc.stderr


def test_csv_rows_are_consistent(all_clips: tuple) -> None:
    _, out, _ = all_clips
    _, rows = read_rows(out / "multi_face.frames.csv")
    for r in rows[:200]:
        probs = np.array([float(r[f"p_{c}"]) for c in FER7])
        assert probs.sum() == pytest.approx(1, abs=2e-3)
        assert r["label"] == FER7[int(probs.argmax())] or probs.max() - float(r[f"p_{r['label']}"]) < 1e-3
        assert int(r["track_id"]) >= 1 and int(r["w"]) > 20 and 0 < float(r["score"]) <= 1
    times = [float(r["time_s"]) for r in rows]
    assert times == sorted(times)


@pytest.mark.parametrize(("stem", "faces"), [("multi_face", 4), ("multi_face_real_audience_2s", 4)])
def test_multi_face_clips_give_stable_tracks(all_clips: tuple, stem: str, faces: int) -> None:
    _, out, _ = all_clips
    summary = load_summary(out, stem)
    n = summary["frames_analysed"]
    long_tracks = [t for t in summary["tracks"] if t["n_frames"] >= 0.8 * n]
    assert len(long_tracks) >= faces, summary["tracks"]
    assert len(summary["tracks"]) <= faces + 4  # not a new id every frame
    if stem == "multi_face":
        assert len(long_tracks) == 4 and all(t["n_frames"] == n for t in long_tracks)


@pytest.mark.parametrize("stem", ["one_face_640x360", "one_face_1280x720", "one_face_stage_640x360", "silent",
                                  "face_clip_vp9_opus", "1001_DFA_HAP_XX"])
def test_one_face_clips_give_one_track(all_clips: tuple, stem: str) -> None:
    _, out, _ = all_clips
    summary = load_summary(out, stem)
    assert len(summary["tracks"]) == 1
    assert summary["tracks"][0]["n_frames"] >= 0.95 * summary["frames_analysed"]


def test_face_in_out_tracks_follow_the_cuts(all_clips: tuple) -> None:
    _, out, _ = all_clips
    summary = load_summary(out, "face_in_out")
    assert summary["duration_s"] == pytest.approx(7.0, abs=0.01) and summary["frames_analysed"] == 210
    assert len(summary["tracks"]) == 1
    track = summary["tracks"][0]
    assert 2.0 <= track["first_s"] <= 2.1  # face appears at 2.000 s (frame 60); ids need 2 detections
    assert 4.9 <= track["last_s"] < 5.0  # last face frame is 149 (4.967 s)
    _, rows = read_rows(out / "face_in_out.frames.csv")
    frames = sorted({int(r["frame"]) for r in rows})
    assert frames[0] >= 60 and frames[-1] <= 149 and len(frames) >= 85


def test_no_face_gives_empty_table_and_message(all_clips: tuple) -> None:
    proc, out, _ = all_clips
    head, rows = read_rows(out / "no_face.frames.csv")
    assert head == CSV_HEAD and rows == []
    summary = load_summary(out, "no_face")
    assert summary["tracks"] == [] and summary["label_sum"] is None and summary["label_vote"] is None
    assert summary["message"] == "no face found in the analysed frames"
    assert "no_face.mp4: no face found" in proc.stderr


def test_bad_inputs_fail_cleanly(media: Path, tmp_path: Path) -> None:
    bad = sorted((media / "bad").iterdir())
    proc = run_cli("video", *bad, "--out", tmp_path, "--no-progress")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    for p in bad:
        assert f"error: {p}: " in proc.stderr
    assert "truncated.mp4: cannot open as video" in proc.stderr
    assert "empty.wav: file is empty" in proc.stderr
    assert not list(tmp_path.glob("*.summary.json"))
    missing = run_cli("video", tmp_path / "nope.mp4", "--out", tmp_path)
    assert missing.returncode == 1 and "file not found" in missing.stderr


def test_video_cut_mid_stream_keeps_rows(media: Path, tmp_path: Path) -> None:
    src = media / "video" / "face_clip_h264_flac.mkv"
    cut = tmp_path / "cut.mkv"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])  # `head -c` 60 %
    out = tmp_path / "out"
    proc = run_cli("video", cut, src, "--out", out, "--no-progress")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "truncated" in proc.stderr and "rows written before it were kept" in proc.stderr
    summary = load_summary(out, "cut")
    assert "truncated" in summary["error"]
    _, rows = read_rows(out / "cut.frames.csv")
    assert len(rows) == summary["faces_found"] > 30  # the first ~1.5 s were analysed and kept
    assert load_summary(out, "face_clip_h264_flac")["error"] is None  # the next input still ran


def test_sampling_parquet_and_plot(media: Path, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    clip = media / "video" / "silent.mp4"
    proc = run_cli("video", clip, "--out", tmp_path, "--every", "3", "--format", "parquet", "--plot",
                   "--no-annotate", "--smooth", "window", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_parquet(tmp_path / "silent.frames.parquet")
    assert list(table.columns) == CSV_HEAD and len(table) == 30
    assert (table["frame"] % 3 == 0).all()
    assert (tmp_path / "silent.timeline.png").stat().st_size > 5000
    assert not (tmp_path / "silent.annotated.mp4").exists()
    proc = run_cli("video", clip, "--out", tmp_path / "f", "--fps", "10", "--no-annotate", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    _, rows = read_rows(tmp_path / "f" / "silent.frames.csv")
    steps = np.diff([float(r["time_s"]) for r in rows])
    assert 29 <= len(rows) <= 31 and steps.min() >= 0.09 and steps.max() <= 0.11


def test_bad_options_fail_cleanly(media: Path, tmp_path: Path) -> None:
    clip = media / "video" / "silent.mp4"
    for args in (["--smooth", "median"], ["--format", "xlsx"], ["--fps", "-1"]):
        proc = run_cli("video", clip, "--out", tmp_path, *args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr and "error" in proc.stderr.lower()


def test_live_file_headless_writes_csv(media: Path, tmp_path: Path) -> None:
    clip = media / "video" / "one_face_640x360.mp4"
    out = tmp_path / "live.csv"
    proc = run_cli("live", "--source", clip, "--no-window", "--port", "0", "--max-frames", "40", "--no-realtime",
                   "--csv", out)
    assert proc.returncode == 0, proc.stderr
    assert "live preview at http://127.0.0.1:" in proc.stderr
    assert "stopped (max frames reached): 40 frames" in proc.stderr
    head, rows = read_rows(out)
    assert head == CSV_HEAD and len(rows) == 40 and {r["track_id"] for r in rows} == {"1"}
    bad = run_cli("live", "--source", media / "video" / "audio_only.wav", "--no-window", "--port", "0")
    assert bad.returncode == 1 and "no video stream" in bad.stderr and "Traceback" not in bad.stderr


def test_csv_says_what_was_measured(tmp_path: Path) -> None:
    """Rows say whether the face was detected or carried, classified or reused; landmarks are exported."""
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "emolens.cli", "video", str(repo / "examples" / "astronaut_zoom.mp4"),
                           "--out", str(tmp_path), "--no-annotate", "--modality", "face", "--max-frames", "12",
                           "--detect-every", "3", "--classify-every", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "astronaut_zoom.frames.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    for r in rows:
        frame = int(r["frame"])
        assert r["detected"] == str(int(frame % 3 == 0))
        if r["classified"] == "0":
            assert frame % 2 == 1
        assert 0 <= float(r["evidence"]) <= 1
    assert {r["classified"] for r in rows} == {"0", "1"}
    x0, y0, w, h = (float(rows[0][k]) for k in "xywh")
    assert all(x0 - w < float(rows[0][k]) < x0 + 2 * w for k in LANDMARKS[::2])
