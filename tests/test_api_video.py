"""Python API for recordings: ``emolens.analyze_video`` / ``stream`` / ``analyze_audio`` give the
same numbers as the CLI, in memory."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

import emolens
from emolens.labels import FER7

pd = pytest.importorskip("pandas")

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "examples" / "astronaut_zoom.mp4"
OPTIONS = {"max_frames": 40, "detect_every": 3}  # CLI: --max-frames 40 --detect-every 3
VARYING = {"processing_fps", "outputs"}  # differ from run to run / CLI to API


def cli_video(clip: Path, out: Path, *args: str) -> tuple[pd.DataFrame, dict]:
    cmd = [sys.executable, "-m", "emolens.cli", "video", str(clip), "--out", str(out), "--no-annotate",
           "--no-progress", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / f"{clip.stem}.summary.json").read_text())
    return pd.read_csv(out / f"{clip.stem}.frames.csv"), summary


def assert_same_as_cli(result: emolens.VideoResult, table: pd.DataFrame, summary: dict) -> None:
    frames = result.frames.astype({"detected": int, "classified": int})
    assert list(frames.columns) == list(table.columns)
    assert len(frames) == len(table) == result.summary["faces_found"]
    pd.testing.assert_frame_equal(frames, table, check_dtype=False)
    ours = json.loads(json.dumps(result.summary))  # as summary.json holds it
    assert {k: v for k, v in ours.items() if k not in VARYING} == {k: v for k, v in summary.items()
                                                                  if k not in VARYING}
    assert result.tracks == result.summary["tracks"] and result.summary["outputs"] == {}


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> tuple[emolens.VideoResult, pd.DataFrame, dict]:
    out = tmp_path_factory.mktemp("cli")
    table, summary = cli_video(ASTRONAUT, out, "--max-frames", "40", "--detect-every", "3")
    return emolens.analyze_video(ASTRONAUT, **OPTIONS), table, summary


def test_analyze_video_equals_cli_csv_and_summary(astronaut: tuple) -> None:
    result, table, summary = astronaut
    assert_same_as_cli(result, table, summary)
    frames = result.frames
    assert result.summary["frames_analysed"] == 40 and len(frames) >= 30
    assert frames["detected"].dtype == bool and set(frames["label"]) <= set(FER7)
    assert not any(c.startswith("p_voice_") for c in frames.columns)  # no sound track
    assert result.tracks and result.tracks[0]["label_sum"] in FER7
    assert "40 frames" in repr(result)


def test_save_writes_files(astronaut: tuple, tmp_path: Path) -> None:
    result, table, summary = astronaut
    paths = result.save(tmp_path, formats=("csv", "json", "png"))
    assert set(paths) == {"frames_csv", "summary_json", "timeline_png"}
    assert all(p.is_file() and p.parent == tmp_path for p in paths.values())
    assert paths["frames_csv"].name == "astronaut_zoom.frames.csv"
    pd.testing.assert_frame_equal(pd.read_csv(paths["frames_csv"]), table, check_dtype=False)
    saved = json.loads(paths["summary_json"].read_text())
    assert saved["tracks"] == summary["tracks"] and saved["outputs"]["frames_csv"] == str(paths["frames_csv"])
    with pytest.raises(ValueError, match="unknown format"):
        result.save(tmp_path, formats=("mp4",))


def test_analyze_video_with_sound_equals_cli(media: Path, tmp_path: Path) -> None:
    clip = media / "labeled_av" / "1001_DFA_HAP_XX.flv"
    table, summary = cli_video(clip, tmp_path)
    result = emolens.analyze_video(clip)
    if not result.summary["fusion"]["voice_used"]:
        pytest.skip(f"no voice fused in: {result.summary['fusion']['note']}")
    assert {f"p_voice_{c}" for c in FER7} | {f"p_fused_{c}" for c in FER7} <= set(result.frames.columns)
    assert_same_as_cli(result, table, summary)
    assert result.summary["label_fused"] in FER7 and result.tracks[0]["label_fused"] in FER7


def test_stream_is_lazy(media: Path) -> None:
    clip = media / "video" / "face_in_out.mp4"  # 210 frames
    with emolens.stream(clip) as frames:
        first = list(itertools.islice(frames, 3))
        assert frames.frames_decoded < 20  # decoded a few frames ahead, not the whole clip
        assert frames.info.frame_count == 210
    assert [r.frame.index for r in first] == [0, 1, 2]
    assert all(isinstance(r, emolens.video.FrameResult) for r in first)
    face = next(r for r in emolens.stream(ASTRONAUT, max_frames=5) if r.faces).faces[0]
    assert face.label in FER7 and face.track_id >= 1 and len(face.face.box) == 4


def test_stream_matches_analyze_video(astronaut: tuple) -> None:
    result = astronaut[0]
    rows = [(r.frame.index, f.track_id, f.label) for r in emolens.stream(ASTRONAUT, **OPTIONS) for f in r.faces]
    assert rows == list(result.frames[["frame", "track_id", "label"]].itertuples(index=False, name=None))


def test_analyze_audio(media: Path) -> None:
    result = emolens.analyze_audio(media / "labeled_av" / "1002_DFA_HAP_XX.mp3")
    assert isinstance(result, emolens.AudioResult) and result.error is None
    assert result.label in result.probs and sum(result.probs.values()) == pytest.approx(1, abs=1e-3)
    assert result.segments and all(s.end_s > s.start_s and s.label in s.probs for s in result.segments)
    assert result.to_dict()["segments"][0]["label"] == result.segments[0].label


def test_bad_inputs_raise_media_error(media: Path, tmp_path: Path) -> None:
    for bad in ("text_as_video.mp4", "truncated.mp4", "empty.wav"):
        with pytest.raises(emolens.MediaError):
            emolens.analyze_video(media / "bad" / bad, modality="face")
    with pytest.raises(emolens.MediaError, match="no video stream"):
        emolens.stream(media / "video" / "audio_only.wav")
    with pytest.raises(emolens.MediaError, match="file not found"):
        emolens.analyze_video(tmp_path / "nope.mp4")
    for bad in ("empty.wav", "text_as_video.mp4"):
        with pytest.raises(emolens.MediaError):
            emolens.analyze_audio(media / "bad" / bad)


def test_bad_options_raise_clear_errors() -> None:
    with pytest.raises(TypeError, match="unknown option.*evry"):
        emolens.analyze_video(ASTRONAUT, evry=2)
    with pytest.raises(TypeError, match="every must be int, not str"):
        emolens.stream(ASTRONAUT, every="2")
    with pytest.raises(ValueError, match="smoothing"):
        emolens.analyze_video(ASTRONAUT, smooth="median")
    with pytest.raises(ValueError, match="fps"):
        emolens.analyze_video(ASTRONAUT, fps=-1.0)
    with pytest.raises(TypeError, match="model"):
        emolens.analyze_video(ASTRONAUT, model=3)
    with pytest.raises(ValueError, match="threshold"):
        emolens.analyze_audio(ASTRONAUT, threshold=2.0)


def test_public_names() -> None:
    for name in ("analyze_video", "analyze_audio", "stream", "MediaError", "VideoResult", "AudioResult"):
        assert name in emolens.__all__ and getattr(emolens, name) is not None
