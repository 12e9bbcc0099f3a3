"""``emolens batch``: manifest of a folder of good and bad files, resuming after SIGINT / SIGKILL
without redoing finished inputs, the Parquet dataset, and the Ray engine against a real local head."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emolens.batch import discover_inputs, plan_jobs, read_input_list
from emolens.batch.ray_head import free_port

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow", reason="the batch's Parquet datasets need pyarrow (the test extra has it)")

FAST = ["--fps", "4", "--max-frames", "6", "--no-progress"]  # a few frames per clip: seconds per input


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emolens.cli", "batch", *args], capture_output=True, text=True,
                          timeout=timeout)


def manifest(out: Path) -> dict[str, dict[str, str]]:
    path = out / "manifest.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {Path(r["input"]).name: r for r in csv.DictReader(f)}


def statuses(stdout: str) -> list[str]:
    """The status column of the final table."""
    return [line.split()[1] for line in stdout.splitlines()[1:] if "input(s):" not in line and line.strip()]


def link(folder: Path, *files: Path, names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        (folder / (names[i] if names else f.name)).symlink_to(f)
    return folder


@pytest.fixture
def mixed(media: Path, tmp_path: Path) -> Path:
    """A folder with a video, a photo, an audio file and four files that must fail."""
    return link(tmp_path / "in", media / "video/one_face_640x360.mp4", media / "photos/portrait_happy.png",
                media / "video/audio_only.wav", media / "bad/truncated.mp4", media / "bad/corrupt.jpg",
                media / "bad/empty.wav", media / "bad/text_as_video.mp4")


GOOD = {"one_face_640x360.mp4": "video", "portrait_happy.png": "photo", "audio_only.wav": "audio"}
BAD = {"truncated.mp4", "corrupt.jpg", "empty.wav", "text_as_video.mp4"}


def test_folder_of_good_and_bad_files(mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = cli(str(mixed), "--out", str(out), "--workers", "2", *FAST)
    assert proc.returncode == 1, proc.stderr  # some inputs failed
    assert "Traceback" not in proc.stderr
    rows = manifest(out)
    assert set(rows) == set(GOOD) | BAD
    for name, kind in GOOD.items():
        row = rows[name]
        assert (row["status"], row["error"], row["kind"]) == ("ok", "", kind), row
        outputs = row["outputs"].split(";")
        assert all((out / p).is_file() for p in outputs), outputs
        assert float(row["seconds"]) > 0
    for name in BAD:
        assert rows[name]["status"] == "failed" and rows[name]["error"], rows[name]
        assert name in rows[name]["error"] or "empty" in rows[name]["error"]
    stem = "one_face_640x360"
    assert int(rows["one_face_640x360.mp4"]["frames"]) == 6
    assert {f"{stem}/{stem}.frames.csv", f"{stem}/{stem}.summary.json", f"{stem}/{stem}.annotated.mp4",
            f"frames/input={stem}/part-0.parquet"} <= set(rows["one_face_640x360.mp4"]["outputs"].split(";"))
    # one dataset, partitioned by input: the video's rows equal its frames CSV
    frames = pd.read_parquet(out / "frames")
    assert set(frames["input"].astype(str)) == {stem, "portrait_happy"}
    video = frames[frames["input"].astype(str) == stem].drop(columns=["input", "kind"]).reset_index(drop=True)
    csv_rows = pd.read_csv(out / stem / f"{stem}.frames.csv")
    pd.testing.assert_frame_equal(video[list(csv_rows.columns)], csv_rows, check_dtype=False)
    photo = frames[frames["input"].astype(str) == "portrait_happy"]
    assert len(photo) == 1 and photo["label"].iloc[0] == "happy"
    segments = pd.read_parquet(out / "segments")
    assert len(segments) >= 1 and set(segments["input"].astype(str)) == {"audio_only"}
    # the final table names every input
    for name in GOOD | dict.fromkeys(BAD):
        assert name in proc.stdout
    # rerun: finished inputs are skipped (their rows unchanged), failed ones are retried
    again = cli(str(mixed), "--out", str(out), "--workers", "2", *FAST)
    assert again.returncode == 1
    rows2 = manifest(out)
    for name in GOOD:
        assert rows2[name] == rows[name]
    for name in BAD:
        assert rows2[name]["finished"] > rows[name]["finished"]
    assert statuses(again.stdout).count("skipped") == len(GOOD)


def test_usage_errors(tmp_path: Path, media: Path) -> None:
    clip = str(media / "video/silent.mp4")
    for args, message in [
        (["--engine", "spark"], "unknown --engine"),
        (["--address", "127.0.0.1:6379"], "--address needs --engine ray"),
        (["--model", "nope"], "unknown face model"),
        (["--fps", "2", "--every", "3"], "either --every or --fps"),
    ]:
        proc = cli(clip, "--out", str(tmp_path / "o"), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr
    proc = cli(str(tmp_path / "nothing-*.mp4"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "no inputs found" in proc.stderr


def test_one_run_per_output_folder(tmp_path: Path, media: Path) -> None:
    """A second run into a folder that a running batch holds stops at once (exit 2, who holds it);
    once the first is gone the folder is free again (a killed run frees it too: the resume tests)."""
    from emolens.batch.lock import LOCK_FILE, folder_lock

    photo, out = str(media / "photos/portrait_happy.png"), tmp_path / "o"
    out.mkdir()
    with folder_lock(out):
        proc = cli(photo, "--out", str(out), "--no-progress")
        assert proc.returncode == 2, proc.stderr
        assert f"in use by another emolens batch run (pid {os.getpid()} on" in proc.stderr
        assert "Traceback" not in proc.stderr and not (out / "manifest.csv").exists()
    proc = cli(photo, "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert (out / "manifest.csv").is_file() and (out / LOCK_FILE).read_text() == ""


def test_cuda_without_a_gpu_is_a_usage_error(tmp_path: Path, media: Path) -> None:
    """--device cuda where onnxruntime has no CUDA provider: the message of every command, exit 2, before any
    worker starts or the output folder is made; the library and the workers refuse it the same way."""
    from emolens.batch import BatchSettings, BatchWorker, run_batch
    from emolens.device import CUDA, DeviceError, available_providers

    if CUDA in available_providers():
        pytest.skip(f"this onnxruntime offers CUDA ({', '.join(available_providers())}): the error cannot happen")
    photo, out = str(media / "photos/portrait_happy.png"), tmp_path / "o"
    proc = cli(photo, "--out", str(out), "--device", "cuda", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "--device cuda needs onnxruntime-gpu and a CUDA GPU; available providers: " in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    with pytest.raises(DeviceError, match="needs onnxruntime-gpu"):
        run_batch([photo], out, BatchSettings(device="cuda"))
    assert not out.exists()
    result = BatchWorker(BatchSettings(device="cuda"), out).run(plan_jobs([photo])[0])  # the device reaches the models
    assert result.status == "failed" and "needs onnxruntime-gpu" in result.error, result


def test_discovery_lists_and_stems(media: Path, tmp_path: Path) -> None:
    # same names in two folders get distinct stems; a list file (txt or csv) names inputs relative to itself
    a = link(tmp_path / "a", media / "photos/portrait_sad.png")
    b = link(tmp_path / "b", media / "photos/portrait_sad.png", media / "video/silent.mp4",
             names=["portrait_sad.png", "frames.mp4"])
    (tmp_path / "list.txt").write_text("# inputs\na/portrait_sad.png\n\nb\n")
    (tmp_path / "list.csv").write_text("id,path\n1,a/portrait_sad.png\n")
    found = discover_inputs([str(tmp_path / "list.txt")])
    assert found == [str(a / "portrait_sad.png"), str(b / "frames.mp4"), str(b / "portrait_sad.png")]
    assert read_input_list(tmp_path / "list.csv") == [str(tmp_path / "a/portrait_sad.png")]
    assert discover_inputs([str(tmp_path / "*/portrait_sad.png"), str(a)]) == found[::2]
    stems = [j.stem for j in plan_jobs(found)]
    assert stems == ["portrait_sad", "frames_", "portrait_sad.png"]  # reserved and repeated names
    assert [j.kind for j in plan_jobs(found)] == ["photo", "video", "photo"]
    kept = plan_jobs(found[::-1], {found[2]: "portrait_sad"})  # stems from an earlier manifest stay
    assert kept[0].stem == "portrait_sad" and kept[2].stem != "portrait_sad"
    with pytest.raises(ValueError, match="camera"):
        discover_inputs(["0"])


def _wait_for(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_resume_after_interruption(media: Path, tmp_path: Path, sig: signal.Signals) -> None:
    """Interrupt a run once its first input finished: the rerun redoes none of the finished inputs."""
    clip = media / "video/one_face_640x360.mp4"
    n = 8
    folder = link(tmp_path / "in", *[clip] * n, names=[f"copy{i}.mp4" for i in range(n)])
    out = tmp_path / "out"
    args = [sys.executable, "-m", "emolens.cli", "batch", str(folder), "--out", str(out), "--workers", "1",
            "--modality", "face", "--fps", "10", "--max-frames", "20", "--no-progress"]
    # a new session, as a terminal's Ctrl-C (or a crash) hits the whole process group
    # SIGINT as in a terminal even when this test runs in a background job (which starts with SIGINT ignored)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for(lambda: any(r["status"] == "ok" for r in manifest(out).values()), 120, "the first finished input")
        os.killpg(proc.pid, sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if sig == signal.SIGINT:
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    _wait_for(lambda: _group_gone(proc.pid), 15, "the worker processes to exit")
    before = manifest(out)  # still a complete, readable file
    finished = {k: r for k, r in before.items() if r["status"] == "ok"}
    assert 1 <= len(finished) < n, before
    mtimes = {p: (out / p).stat().st_mtime_ns for r in finished.values() for p in r["outputs"].split(";")}

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = manifest(out)
    assert len(after) == n and all(r["status"] == "ok" for r in after.values())
    for name, row in finished.items():  # not redone: same row, outputs untouched
        assert after[name] == row
    assert mtimes == {p: (out / p).stat().st_mtime_ns for p in mtimes}
    assert statuses(rerun.stdout).count("skipped") == len(finished)
    frames = pd.read_parquet(out / "frames")
    assert frames["input"].astype(str).nunique() == n


# --------------------------------------------------------------------------------------------
# Ray: a real local head on 127.0.0.1 with 2 CPUs, started and stopped by the test.
# --------------------------------------------------------------------------------------------


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[str]:
    """A real ``ray start --head`` on 127.0.0.1 with 2 CPUs for this test (:mod:`emolens.batch.ray_head`)."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'emolens[ray]')")
    from emolens.batch.ray_head import local_ray_head

    with local_ray_head(cpus=2, log=tmp_path / "ray-head.log") as address:
        yield address


def test_ray_engine_end_to_end(ray_head: str, media: Path, tmp_path: Path) -> None:
    folder = link(tmp_path / "in", media / "video/one_face_640x360.mp4", media / "video/face_clip_h264.mov",
                  media / "photos/portrait_angry.png", media / "video/audio_only.wav", media / "bad/truncated.mp4")
    out = tmp_path / "out"
    proc = cli(str(folder), "--out", str(out), "--engine", "ray", "--address", ray_head, "--workers", "2", *FAST)
    assert proc.returncode == 1, proc.stderr  # truncated.mp4 fails, the others run
    rows = manifest(out)
    assert {k: r["status"] for k, r in rows.items()} == {
        "one_face_640x360.mp4": "ok", "face_clip_h264.mov": "ok", "portrait_angry.png": "ok",
        "audio_only.wav": "ok", "truncated.mp4": "failed"}
    for row in rows.values():
        assert all((out / p).is_file() for p in row["outputs"].split(";") if p)
    frames = pd.read_parquet(out / "frames")
    assert set(frames["input"].astype(str)) == {"one_face_640x360", "face_clip_h264", "portrait_angry"}
    # the same numbers as the local engine for one clip
    local = cli(str(media / "video/one_face_640x360.mp4"), "--out", str(tmp_path / "local"), *FAST)
    assert local.returncode == 0, local.stderr
    stem = "one_face_640x360"
    pd.testing.assert_frame_equal(pd.read_csv(out / stem / f"{stem}.frames.csv"),
                                  pd.read_csv(tmp_path / "local" / stem / f"{stem}.frames.csv"))
    # a rerun on the cluster skips what is done
    again = cli(str(folder), "--out", str(out), "--engine", "ray", "--address", ray_head, *FAST)
    assert again.returncode == 1 and statuses(again.stdout).count("skipped") == 4


def test_ray_missing_is_a_usage_error(tmp_path: Path, media: Path) -> None:
    """Without Ray installed, --engine ray is refused with the install command (exit 2)."""
    code = ("import sys, builtins; real = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            "    if name == 'ray' or name.startswith('ray.'): raise ImportError('no ray')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\n"
            "sys.argv = ['emolens', 'batch', sys.argv[1], '--out', sys.argv[2], '--engine', 'ray']\n"
            "from emolens.cli import main; main()\n")
    proc = subprocess.run([sys.executable, "-c", code, str(media / "video/silent.mp4"), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "pip install 'emolens[ray]'" in proc.stderr, proc.stderr


def test_ray_address_without_cluster(tmp_path: Path, media: Path) -> None:
    """An address where no Ray cluster listens fails at once with a clear message."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'emolens[ray]')")
    proc = cli(str(media / "video/silent.mp4"), "--out", str(tmp_path / "o"), "--engine", "ray", "--address",
               f"127.0.0.1:{free_port()}", timeout=60)
    assert proc.returncode == 1 and "no Ray cluster answers" in proc.stderr, proc.stderr


def test_other_settings_are_noted(tmp_path: Path, media: Path) -> None:
    """A rerun with other settings keeps finished inputs and says so; --redo analyses them again."""
    photo, out = str(media / "photos/portrait_sad.png"), str(tmp_path / "o")
    assert cli(photo, "--out", out, "--no-progress").returncode == 0
    again = cli(photo, "--out", out, "--no-progress", "--min-score", "0.5")
    assert again.returncode == 0 and "settings differ" in again.stderr
    assert statuses(again.stdout) == ["skipped"]
    redo = cli(photo, "--out", out, "--no-progress", "--min-score", "0.5", "--redo")
    assert redo.returncode == 0 and statuses(redo.stdout) == ["ok"] and "settings differ" not in redo.stderr
    assert "settings differ" not in cli(photo, "--out", out, "--no-progress", "--min-score", "0.5").stderr


def test_help_fits_80_columns() -> None:
    from typer.testing import CliRunner

    from emolens.cli import app

    result = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["batch", "--help"])
    assert result.exit_code == 0, result.output
    assert "--engine" in result.output and "--address" in result.output and "<bool>" not in result.output
    assert not [line for line in result.output.splitlines() if len(line) > 80]
