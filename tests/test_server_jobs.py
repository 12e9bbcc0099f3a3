"""Video jobs of the server: the sound track is analysed once per job, progress comes from the
frame loop's hook, and a deleted running job stops at its next frame."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from emolens.server import ServerConfig, create_app, running_server  # noqa: E402
from emolens.server.harness import wait_job  # noqa: E402


def test_a_video_job_analyses_its_sound_once(media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from emolens.voice import DEFAULT_SPEECH_MODEL
    from emolens.voice.analysis import AudioAnalyzer

    if not DEFAULT_SPEECH_MODEL.is_file():
        pytest.skip(f"needs the speech model {DEFAULT_SPEECH_MODEL.name}")
    calls: list[str | None] = []
    analyze = AudioAnalyzer.analyze

    def counted(self: AudioAnalyzer, audio: object, path: str | None = None, speaker: object = None) -> object:
        calls.append(path)
        return analyze(self, audio, path, speaker)

    monkeypatch.setattr(AudioAnalyzer, "analyze", counted)  # analyze_file goes through analyze too
    clip = media / "labeled_av" / "1001_DFA_ANG_XX.flv"  # a face and speech
    with running_server(create_app(ServerConfig(jobs_dir=tmp_path))) as url, \
            httpx.Client(base_url=url, timeout=60) as client, open(clip, "rb") as f:
        r = client.post("/api/jobs", files={"file": (clip.name, f, "video/x-flv")}, data={"max_frames": "30"})
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"])
        assert job["status"] == "done", job["error"]
        assert job["progress"] == {"frames_done": 30, "frames_total": 30, "fraction": 1.0}
        summary = client.get(job["links"]["result"]).json()
    assert len(calls) == 1, f"the sound track was analysed {len(calls)} times"
    assert summary["voice"] is not None and summary["voice"]["segments"] and job["voice"] == summary["voice"]
    assert summary["fusion"]["voice_used"] and summary["label_voice"] is not None


def test_deleting_a_running_job_stops_its_frame_loop(media: Path, tmp_path: Path) -> None:
    import shutil

    from emolens.server.jobs import JobManager

    manager = JobManager(tmp_path)
    job_id, folder = manager.new_folder()
    shutil.copy(media / "video" / "face_in_out.mp4", folder / "input.mp4")  # 210 frames
    job = manager.submit(job_id, "clip.mp4", "input.mp4", {"modality": "face", "annotate": False}, 210)
    manager.start()
    try:
        deadline = time.monotonic() + 60
        while job.frames_done < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        manager.delete(job_id)
        while job.status == "running" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert job.status == "failed" and job.error == "cancelled"
        assert 5 <= job.frames_done < 210  # stopped at the next frame, not at the end
        deadline = time.monotonic() + 10
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not folder.exists()
    finally:
        manager.stop()
