"""Pixel limits checked before decoding: crafted decompression bombs against the Python API, the
CLI, the REST API and the live WebSocket (each answered fast, with a ceiling on extra memory).

The bombs are tiny files whose headers declare huge sizes (a JPEG and a PNG of 30000x30000 and
65500x65500 pixels) and a one-frame 16000x16000 H.264 video encoded with PyAV at test time.
Every server runs on 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import emolens
from emolens.media import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_VIDEO_PIXELS,
    MediaError,
    MediaTooLarge,
    VideoSource,
    check_image_header,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "astronaut.jpg"
MB = 1_000_000
RSS_CEILING = 200 * MB  #: extra resident memory allowed while a bomb is refused
BOMB_SIZES = (30000, 65500)


# ------------------------------------------------------------------------------------- crafting


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 64x48 JPEG whose frame header (SOF) is patched to declare ``width`` x ``height``."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    i = 2
    while i < len(data) - 9:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker in Pillow's JPEG")


def png_declaring(width: int, height: int) -> bytes:
    """A real 64x48 PNG whose IHDR is patched to declare ``width`` x ``height`` (CRC fixed)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"bomb_30000.jpg": path, ...}``: tiny files declaring 30000^2 and 65500^2 pixels."""
    folder = tmp_path_factory.mktemp("bombs")
    out = {}
    for side in BOMB_SIZES:
        for suffix, craft in ((".jpg", jpeg_declaring), (".png", png_declaring)):
            path = folder / f"bomb_{side}{suffix}"
            path.write_bytes(craft(side, side))
            out[path.name] = path
    return out


VIDEO_SCRIPT = """
import sys, av
path, side = sys.argv[1], int(sys.argv[2])
with av.open(path, "w") as c:
    s = c.add_stream("libx264", rate=1)
    s.width = s.height = side
    s.pix_fmt = "yuv420p"
    s.options = {"preset": "ultrafast", "tune": "zerolatency", "threads": "1"}
    frame = av.VideoFrame(side, side, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    for packet in [*s.encode(frame), *s.encode(None)]:
        c.mux(packet)
"""


@pytest.fixture(scope="module")
def big_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A one-frame H.264 MP4 of 16000x16000 pixels (or the largest size the encoder takes) and its
    side. Encoded in a child process: the encoder's ~1.5 GB never counts against this one."""
    folder = tmp_path_factory.mktemp("bigvideo")
    errors = []
    for side in (16000, 8192, 4096):
        path = folder / f"frames_{side}.mp4"
        proc = subprocess.run([sys.executable, "-c", VIDEO_SCRIPT, str(path), str(side)], capture_output=True,
                              text=True, timeout=240)
        if proc.returncode == 0 and path.is_file() and path.stat().st_size > 0:
            return path, side
        errors.append(proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"])
    pytest.skip(f"PyAV could not encode a large H.264 video here: {errors}")


def video_limit(side: int) -> int:
    """The frame limit the video tests use: the default 8K when the video exceeds it, else lower."""
    return DEFAULT_MAX_VIDEO_PIXELS if side * side > DEFAULT_MAX_VIDEO_PIXELS else side * side // 2


# ------------------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


@contextmanager
def peak_rss_growth(interval_s: float = 0.002) -> Iterator[dict]:
    """Samples this process's RSS in a thread while the block runs: ``result["growth"]`` is the
    peak above the level at entry (bytes)."""
    result = {"growth": 0}
    start = rss_bytes()
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result["growth"] = max(peak[0], rss_bytes()) - start


# ------------------------------------------------------------------------------------- Python API


def test_header_check_refuses_before_decoding(bombs: dict[str, Path]) -> None:
    for name, path in bombs.items():
        side = int(name.split("_")[1].split(".")[0])
        with peak_rss_growth() as rss:
            t0 = time.perf_counter()
            with pytest.raises(MediaTooLarge, match="too large"):
                check_image_header(path.read_bytes())
            elapsed = time.perf_counter() - t0
        assert elapsed < 1.0, (name, elapsed)
        assert rss["growth"] < RSS_CEILING, (name, rss["growth"] / MB)
        with pytest.raises(MediaTooLarge, match=f"{side}x{side}|megapixels"):
            check_image_header(path.read_bytes(), name=name)
    # a larger limit lets a declared size through (only the header is read here)
    assert check_image_header(jpeg_declaring(9000, 9000), max_pixels=100_000_000) == (9000, 9000)
    assert check_image_header(SAMPLE.read_bytes()) is not None


def test_python_api_raises_media_error(bombs: dict[str, Path]) -> None:
    for name, path in bombs.items():
        with peak_rss_growth() as rss:
            t0 = time.perf_counter()
            with pytest.raises(MediaError, match="too large"):
                emolens.analyze_image(path)
            elapsed = time.perf_counter() - t0
        assert elapsed < 1.0, (name, elapsed)
        assert rss["growth"] < RSS_CEILING, (name, rss["growth"] / MB)
    with pytest.raises(MediaTooLarge, match="limit 0.1 megapixels"):
        emolens.analyze_image(SAMPLE, max_pixels=100_000)
    assert len(emolens.analyze_image(SAMPLE).faces) == 1
    from emolens.api import FaceAnalyzer

    results = list(FaceAnalyzer().analyze_images([bombs["bomb_30000.jpg"], SAMPLE]))
    assert "too large" in (results[0].error or "") and results[1].error is None and len(results[1].faces) == 1


def test_video_source_refuses_large_frames(big_video: tuple[Path, int]) -> None:
    path, side = big_video
    limit = video_limit(side)
    with peak_rss_growth() as rss:
        t0 = time.perf_counter()
        with pytest.raises(MediaTooLarge, match=f"{side}x{side}"):
            VideoSource(path, max_pixels=limit)
        elapsed = time.perf_counter() - t0
    assert elapsed < 1.0 and rss["growth"] < RSS_CEILING, (elapsed, rss["growth"] / MB)
    if side * side > DEFAULT_MAX_VIDEO_PIXELS:
        with pytest.raises(MediaTooLarge):
            VideoSource(path)  # the default limit (8K)


def test_video_analyzer_refuses_large_frames(big_video: tuple[Path, int], tmp_path: Path) -> None:
    from emolens.video import VideoAnalyzer, VideoOptions

    path, side = big_video
    analyzer = VideoAnalyzer(VideoOptions(modality="face", max_video_pixels=video_limit(side)))
    with peak_rss_growth() as rss, pytest.raises(MediaTooLarge):
        analyzer.run(path, tmp_path, annotate=False)
    assert rss["growth"] < RSS_CEILING, rss["growth"] / MB
    assert not list(tmp_path.iterdir())  # nothing left behind


# ------------------------------------------------------------------------------------- CLI


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "emolens.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_cli_image_batch_goes_on_after_bad_files(bombs: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for path in bombs.values():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "a_good.jpg").write_bytes(SAMPLE.read_bytes())
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    (folder / "z_good.jpg").write_bytes(SAMPLE.read_bytes())
    out = tmp_path / "res.json"
    t0 = time.perf_counter()
    proc = run_cli("image", str(folder), "--json", str(out), "--quiet")
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    data = {Path(d["path"]).name: d for d in json.loads(out.read_text())}
    assert len(data) == 7
    for name in bombs:
        assert "too large" in data[name]["error"] and data[name]["faces"] == [], data[name]
    assert "not a readable image" in data["corrupt.jpg"]["error"]
    for name in ("a_good.jpg", "z_good.jpg"):  # before and after the bad ones
        assert data[name]["error"] is None and len(data[name]["faces"]) == 1
    assert "7 image(s), 2 face(s), 5 error(s)" in proc.stderr
    assert elapsed < 120, elapsed
    limited = run_cli("image", str(folder / "a_good.jpg"), "--max-pixels", "1000")
    assert limited.returncode == 1 and "too large" in limited.stdout and "Traceback" not in limited.stderr


def test_cli_image_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreadable file (EACCES; simulated, since root reads everything) gets an error entry."""
    from typer.testing import CliRunner

    from emolens.cli import app

    for name in ("a.jpg", "locked.jpg", "z.jpg"):
        (tmp_path / name).write_bytes(SAMPLE.read_bytes())
    locked = tmp_path / "locked.jpg"
    if os.geteuid() != 0:
        locked.chmod(0)
    else:
        read_bytes = Path.read_bytes

        def denied(self: Path) -> bytes:
            if self.name == "locked.jpg":
                raise PermissionError(13, "Permission denied", str(self))
            return read_bytes(self)

        monkeypatch.setattr(Path, "read_bytes", denied)
    out = tmp_path / "res.json"
    result = CliRunner().invoke(app, ["image", str(tmp_path), "--json", str(out), "--quiet"])
    locked.chmod(0o600)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    data = {Path(d["path"]).name: d for d in json.loads(out.read_text())}
    assert "Permission denied" in data["locked.jpg"]["error"]
    assert len(data["a.jpg"]["faces"]) == 1 and len(data["z.jpg"]["faces"]) == 1


@pytest.mark.parametrize("command", [["image", str(SAMPLE)], ["video", str(SAMPLE), "--out", "x"],
                                     ["live", "--source", str(SAMPLE)], ["serve"]])
@pytest.mark.parametrize("name", ["foo", "haar"])
def test_cli_unknown_detector_is_a_usage_error(command: list[str], name: str) -> None:
    from typer.testing import CliRunner

    from emolens.cli import app

    result = CliRunner().invoke(app, [*command, "--detector", name])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert "yunet" in result.output


def test_cli_help_documents_limits_and_exit_codes() -> None:
    from typer.testing import CliRunner

    from emolens.cli import app

    runner = CliRunner(env={"COLUMNS": "240", "TERMINAL_WIDTH": "240"})
    image = " ".join(runner.invoke(app, ["image", "--help"]).output.split())
    assert "--max-pixels" in image and "1 when any input failed" in image and "haar" not in image
    for command in ("video", "serve"):
        text = runner.invoke(app, [command, "--help"]).output
        assert "--max-video-pixels" in text and "haar" not in text, text
    assert "--max-pixels" in runner.invoke(app, ["serve", "--help"]).output


def test_cli_video_refuses_large_frames(big_video: tuple[Path, int], media: Path, tmp_path: Path) -> None:
    path, side = big_video
    clip = media / "video" / "one_face_640x360.mp4"
    proc = run_cli("video", str(path), str(clip), "--out", str(tmp_path), "--max-frames", "3", "--modality", "face",
                   "--no-annotate", "--no-progress", "--max-video-pixels", str(video_limit(side)))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "too large" in proc.stderr
    assert (tmp_path / "one_face_640x360.summary.json").is_file()  # the next input still ran
    assert not (tmp_path / f"{path.stem}.summary.json").exists()


# ------------------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a server with the default limits (80 megapixels, 8K video frames)."""
    pytest.importorskip("fastapi")
    from emolens.server import ServerConfig, create_app, running_server

    config = ServerConfig(jobs_dir=tmp_path_factory.mktemp("jobs"))
    assert (config.max_pixels, config.max_video_pixels) == (DEFAULT_MAX_PIXELS, DEFAULT_MAX_VIDEO_PIXELS)
    with running_server(create_app(config)) as url:
        yield url


@pytest.mark.parametrize("route", ["/api/image", "/api/image/annotated"])
def test_rest_refuses_bombs_fast(server: str, bombs: dict[str, Path], route: str) -> None:
    httpx = pytest.importorskip("httpx")
    with httpx.Client(base_url=server, timeout=60) as client:
        assert client.post("/api/image", files={"file": ("ok.jpg", SAMPLE.read_bytes(), "image/jpeg")}).status_code \
            == 200  # warm
        for name, path in bombs.items():
            ctype = "image/png" if name.endswith(".png") else "image/jpeg"
            with peak_rss_growth() as rss:
                t0 = time.perf_counter()
                r = client.post(route, files={"file": (name, path.read_bytes(), ctype)})
                elapsed = time.perf_counter() - t0
            assert r.status_code == 413, (name, r.status_code, r.text)
            assert "too large" in r.json()["detail"]
            assert elapsed < 1.0, (name, elapsed)
            assert rss["growth"] < RSS_CEILING, (name, rss["growth"] / MB)


def test_rest_refuses_large_video_frames(server: str, big_video: tuple[Path, int], tmp_path: Path) -> None:
    httpx = pytest.importorskip("httpx")
    path, side = big_video
    if side * side <= DEFAULT_MAX_VIDEO_PIXELS:
        pytest.skip(f"the encoder stopped at {side}x{side}, within the server's default limit")
    with httpx.Client(base_url=server, timeout=60) as client:
        before = {j["id"] for j in client.get("/api/jobs").json()}
        with peak_rss_growth() as rss:
            t0 = time.perf_counter()
            r = client.post("/api/jobs", files={"file": ("huge.mp4", path.read_bytes(), "video/mp4")})
            elapsed = time.perf_counter() - t0
        if r.status_code == 202:  # never let a wrongly accepted job decode the bomb
            client.delete(f"/api/jobs/{r.json()['id']}")
        assert r.status_code == 413, r.text
        assert f"{side}x{side}" in r.json()["detail"] and "huge.mp4" in r.json()["detail"]
        assert elapsed < 2.0, elapsed  # includes the 0.75 MB upload
        assert rss["growth"] < RSS_CEILING, rss["growth"] / MB
        assert {j["id"] for j in client.get("/api/jobs").json()} == before


def test_websocket_answers_bombs_and_keeps_serving(server: str, bombs: dict[str, Path]) -> None:
    pytest.importorskip("websockets")
    from websockets.sync.client import connect

    good = SAMPLE.read_bytes()
    with connect(server.replace("http", "ws") + "/api/live", open_timeout=10, close_timeout=5,
                 max_size=2**22) as ws:
        seq = 0
        for name in ("bomb_65500.jpg", "bomb_30000.jpg", "bomb_65500.png", "bomb_30000.png"):
            with peak_rss_growth() as rss:
                t0 = time.perf_counter()
                ws.send(bombs[name].read_bytes())
                answer = json.loads(ws.recv(timeout=30))
                elapsed = time.perf_counter() - t0
            seq += 1
            assert answer["seq"] == seq and "too large" in answer["error"], (name, answer)
            assert elapsed < 1.0 and rss["growth"] < RSS_CEILING, (name, elapsed, rss["growth"] / MB)
            ws.send(good)  # the session still serves the next frame
            answer = json.loads(ws.recv(timeout=30))
            seq += 1
            assert answer["seq"] == seq and len(answer["faces"]) == 1, answer


def test_decoded_limit_matches_header_limit() -> None:
    """A photo exactly at the limit passes; one pixel more is refused (both from the header)."""
    from emolens.media import decode_image

    data = jpeg_declaring(64, 48)
    assert decode_image(data, max_pixels=64 * 48).shape == (48, 64, 3)
    with pytest.raises(MediaTooLarge):
        decode_image(data, max_pixels=64 * 48 - 1)
    assert np.asarray(decode_image(png_declaring(64, 48))).shape == (48, 64, 3)
