"""Frame sinks and the frame loop's hooks: Parquet written directly equals the CSV, the timeline
keeps a bounded series, progress is reported, a cancel stops early and keeps what was written."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from emolens.faces import Face
from emolens.media import Frame
from emolens.sinks import SINKS, CsvSink, ParquetSink, TimelineSink, make_sinks
from emolens.tracked import FrameResult, FusedFace, TrackedFace
from emolens.video import VideoAnalyzer, VideoOptions

pd = pytest.importorskip("pandas")
pq = pytest.importorskip("pyarrow.parquet")

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "examples" / "astronaut_zoom.mp4"


@pytest.fixture(scope="module")
def analyzer() -> VideoAnalyzer:
    return VideoAnalyzer(VideoOptions(max_frames=40, detect_every=3))


def assert_parquet_equals_csv(csv: Path, parquet: Path) -> pd.DataFrame:
    table, frame = pd.read_csv(csv), pd.read_parquet(parquet)
    assert list(frame.columns) == list(table.columns) and len(frame) == len(table) > 0
    pd.testing.assert_frame_equal(frame, table, check_dtype=True, rtol=0, atol=1e-9)
    return frame


def test_parquet_sink_is_written_directly_and_equals_the_csv(analyzer: VideoAnalyzer, tmp_path: Path) -> None:
    csv, parquet = tmp_path / "a.frames.csv", tmp_path / "a.frames.parquet"
    summary = analyzer.analyse(ASTRONAUT, [CsvSink(csv), ParquetSink(parquet, row_group_frames=10)])
    frame = assert_parquet_equals_csv(csv, parquet)
    assert summary["outputs"] == {"frames_csv": str(csv), "frames_parquet": str(parquet)}
    assert pq.ParquetFile(parquet).num_row_groups == 4  # 40 frames in groups of 10: flushed as it went
    assert frame["detected"].dtype == np.int64 and frame["label"].notna().all()


def test_parquet_with_voice_columns_equals_the_csv(media: Path, tmp_path: Path) -> None:
    clip = media / "labeled_av" / "1001_DFA_HAP_XX.flv"
    summary = VideoAnalyzer(VideoOptions(max_frames=45)).run(clip, tmp_path, annotate=False, parquet=True)
    if not summary["fusion"]["voice_used"]:
        pytest.skip(f"no voice fused in: {summary['fusion']['note']}")
    outputs = {k: Path(v) for k, v in summary["outputs"].items()}
    frame = assert_parquet_equals_csv(outputs["frames_csv"], outputs["frames_parquet"])
    voice = frame["p_voice_happy"]
    assert voice.notna().any()  # speech attributed to the face somewhere
    assert set(summary["outputs"]) == {"frames_csv", "frames_parquet", "summary_json"}


def test_run_writes_every_format_and_the_timeline(analyzer: VideoAnalyzer, tmp_path: Path) -> None:
    summary = analyzer.run(ASTRONAUT, tmp_path, stem="x", annotate=True, parquet=True, plot=True)
    assert set(summary["outputs"]) == {"frames_csv", "annotated_mp4", "frames_parquet", "timeline_png",
                                       "summary_json"}
    assert all(Path(p).is_file() for p in summary["outputs"].values())
    assert Path(summary["outputs"]["timeline_png"]).stat().st_size > 5000
    assert json.loads((tmp_path / "x.summary.json").read_text())["cancelled"] is False


def test_registry() -> None:
    assert set(SINKS) == {"csv", "parquet", "mp4", "png"}
    sinks = make_sinks(["csv", "png"], "out", "clip")
    assert [s.path.name for s in sinks] == ["clip.frames.csv", "clip.timeline.png"]
    with pytest.raises(ValueError, match="unknown output format"):
        make_sinks(["xlsx"], "out", "clip")


def fake_frame(i: int, tracks: int = 2) -> FrameResult:
    labels = ("happy", "sad")
    faces = []
    for t in range(1, tracks + 1):
        p = np.array([0.7, 0.3]) if (i + t) % 2 else np.array([0.2, 0.8])
        fused = FusedFace(voice=p, fused=p, label="happy", rule="both:only_face", segment=0) if t == 1 else None
        faces.append(TrackedFace(t, Face(np.array([10.0 * t, 10, 40, 40]), 0.9), labels[int(p.argmax())],
                                 dict(zip(labels, p.tolist())), p=p, fusion=fused))
    return FrameResult(Frame(np.zeros((4, 4, 3), np.uint8), i, i / 10), faces)


def test_timeline_sink_keeps_a_bounded_series(tmp_path: Path) -> None:
    sink = TimelineSink(tmp_path / "t.timeline.png", max_points=50)
    sink.open(("happy", "sad"), ("voice", "fused"), 10.0)
    for i in range(5000):
        sink.write(fake_frame(i))
    assert all(len(points) <= 50 for points in sink.series.values())
    table = sink.table()
    assert table["time_s"].max() >= 490 and set(table["track_id"]) == {1, 2}  # the whole length, thinned
    assert table.loc[table["track_id"] == 2, "p_voice_happy"].isna().all()  # no fusion: empty strips
    assert sink.close() == {"timeline_png": tmp_path / "t.timeline.png"}
    assert (tmp_path / "t.timeline.png").stat().st_size > 5000


def test_progress_hook_and_cancel_keep_what_was_written(analyzer: VideoAnalyzer, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    stop = threading.Event()

    def on_frame(done: int, total: int | None) -> None:
        calls.append((done, total))
        if done == 7:
            stop.set()

    summary = analyzer.run(ASTRONAUT, tmp_path, annotate=True, parquet=True, on_frame=on_frame, cancel=stop)
    assert calls == [(n, 40) for n in range(1, 8)]
    assert summary["cancelled"] is True and summary["error"] is None and summary["frames_analysed"] == 7
    table = pd.read_csv(summary["outputs"]["frames_csv"])
    assert len(table) == summary["faces_found"] > 0 and table["frame"].nunique() == 7
    assert_parquet_equals_csv(Path(summary["outputs"]["frames_csv"]), Path(summary["outputs"]["frames_parquet"]))
    assert Path(summary["outputs"]["annotated_mp4"]).is_file()
    assert json.loads(Path(summary["outputs"]["summary_json"]).read_text())["frames_analysed"] == 7
    # a callable works too, and a cancel before the first frame analyses nothing
    early = analyzer.analyse(ASTRONAUT, [], cancel=lambda: True)
    assert early["cancelled"] and early["frames_analysed"] == 0 and early["tracks"] == []
    full = analyzer.analyse(ASTRONAUT, [])
    assert full["cancelled"] is False and full["frames_analysed"] == 40


def test_api_sinks_and_save_give_the_same_table(tmp_path: Path) -> None:
    import emolens

    streamed = tmp_path / "streamed.frames.parquet"
    lean = emolens.analyze_video(ASTRONAUT, max_frames=20, detect_every=3, collect=False,
                                 sinks=[ParquetSink(streamed)])
    assert lean.frames.empty and lean.summary["outputs"] == {"frames_parquet": str(streamed)}
    result = emolens.analyze_video(ASTRONAUT, max_frames=20, detect_every=3)
    paths = result.save(tmp_path, formats=("csv", "parquet"))
    assert_parquet_equals_csv(paths["frames_csv"], paths["frames_parquet"])
    assert_parquet_equals_csv(paths["frames_csv"], streamed)
