"""Frame sources (files, folders, sampling, errors), the pipeline API and the MJPEG preview server."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest

from emolens.media import MediaError, VideoSource, iter_video_inputs, source_kind


def test_source_kinds(tmp_path: Path) -> None:
    assert source_kind(0) == source_kind("1") == "camera"
    assert source_kind("rtsp://cam.local/stream") == source_kind("http://x/y.mjpg") == "stream"
    assert source_kind(tmp_path) == "folder" and source_kind(tmp_path / "a.mp4") == "file"


def test_threaded_and_plain_decoding_agree(media: Path) -> None:
    clip = media / "video" / "face_clip_mpeg4.avi"
    with VideoSource(clip, every=4, threaded=True) as a, VideoSource(clip, every=4, threaded=False) as b:
        fa, fb = list(a), list(b)
    assert [(f.index, f.time_s) for f in fa] == [(f.index, f.time_s) for f in fb]
    assert all(f.index % 4 == 0 for f in fa) and fa[0].time_s == 0.0
    assert np.array_equal(fa[3].image, fb[3].image) and fa[0].image.shape == (360, 480, 3)


def test_flv_with_data_stream_and_fps_sampling(media: Path) -> None:
    clip = media / "labeled_av" / "1001_DFA_NEU_XX.flv"  # carries an empty data stream
    with VideoSource(clip, fps=5) as src:
        frames = list(src)
        assert src.info.width == 480 and src.info.fps == pytest.approx(29.97, abs=0.01)
    times = [f.time_s for f in frames]
    assert 9 <= len(frames) <= 11 and min(np.diff(times)) >= 0.19


def test_max_frames_stops_early(media: Path) -> None:
    with VideoSource(media / "video" / "multi_face.mp4", max_frames=7) as src:
        assert len(list(src)) == 7


def test_audio_only_and_bad_files(media: Path) -> None:
    for path in [media / "video" / "audio_only.m4a", media / "labeled_av" / "1002_DFA_SAD_XX.mp3"]:
        with pytest.raises(MediaError, match="no video stream"):
            VideoSource(path)
    with pytest.raises(MediaError, match="cannot open as video"):
        VideoSource(media / "bad" / "truncated.mp4")
    with pytest.raises(MediaError, match="decoding failed"):
        list(VideoSource(media / "bad" / "corrupt.jpg"))


def test_image_folder_is_a_frame_sequence(media: Path, tmp_path: Path) -> None:
    import cv2

    from emolens.video import VideoAnalyzer, VideoOptions

    with VideoSource(media / "video" / "face_clip_h264.mov", every=6) as src:
        for i, frame in enumerate(src):
            cv2.imwrite(str(tmp_path / f"frame_{i:03d}.jpg"), frame.image)
    (tmp_path / "notes.txt").write_text("not an image")
    assert iter_video_inputs([tmp_path]) == [str(tmp_path)]
    summary = VideoAnalyzer(VideoOptions(detect_every=1)).run(tmp_path, tmp_path / "out", annotate=False)
    assert summary["frames_analysed"] == 15 and summary["error"] is None
    assert len(summary["tracks"]) == 1 and summary["tracks"][0]["last_s"] == pytest.approx(14 / 30, abs=1e-3)


def test_folder_of_videos_expands(media: Path) -> None:
    inputs = iter_video_inputs([media / "video"])
    assert any(p.endswith("face_in_out.mp4") for p in inputs)
    assert not any(p.endswith(".m4a") or p.endswith(".wav") for p in inputs)


def test_process_api_yields_tracked_faces(media: Path) -> None:
    from emolens.video import VideoAnalyzer, VideoOptions

    analyzer = VideoAnalyzer(VideoOptions(detect_every=3, max_frames=12))
    with VideoSource(media / "video" / "one_face_640x360.mp4", max_frames=12) as src:
        results = list(analyzer.process(src))
    assert len(results) == 12
    assert [r.faces[0].detected for r in results[:4]] == [True, False, False, True]
    assert {f.track_id for r in results for f in r.faces} == {1}
    face = results[1].faces[0]
    assert face.label == max(face.probs, key=face.probs.get) and len(face.p) == 7


def test_mjpeg_server_serves_frames_on_localhost() -> None:
    import cv2

    from emolens.live import MjpegServer

    server = MjpegServer("127.0.0.1", 0).start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        image = np.full((90, 160, 3), 200, np.uint8)
        server.publish(image)
        with urllib.request.urlopen(server.url + "frame.jpg", timeout=5) as resp:
            got = cv2.imdecode(np.frombuffer(resp.read(), np.uint8), cv2.IMREAD_COLOR)
        assert got.shape == image.shape
        with urllib.request.urlopen(server.url + "stream", timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            server.publish(image)
            assert resp.readline().strip() == b"--frame"
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            assert b"/stream" in resp.read()
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url + "frame.jpg", timeout=2)
