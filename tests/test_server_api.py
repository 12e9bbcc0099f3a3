"""REST API and WebSocket tests against the running app (uvicorn on 127.0.0.1, a real HTTP client).

Every request goes to loopback, counts are bounded, and the server stops with the module.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from emolens.server import ServerConfig, create_app, running_server  # noqa: E402
from emolens.server.harness import serve_process, wait_job  # noqa: E402
from emolens.server.jobs import JobManager  # noqa: E402

LIMITS = {"max_image_bytes": 600_000, "max_video_bytes": 3_000_000, "max_audio_bytes": 2_000_000,
          "max_frame_bytes": 400_000}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, media: Path) -> tuple[str, Path]:
    """Base URL and jobs folder of a server with small upload limits."""
    jobs = tmp_path_factory.mktemp("jobs")
    with running_server(create_app(ServerConfig(jobs_dir=jobs, **LIMITS))) as url:
        yield url, jobs


@pytest.fixture(scope="module")
def client(server: tuple[str, Path]) -> httpx.Client:
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


def post_file(client: httpx.Client, url: str, path: Path, ctype: str, name: str | None = None,
              data: dict | None = None) -> httpx.Response:
    with open(path, "rb") as f:
        return client.post(url, files={"file": (name or path.name, f, ctype)}, data=data or {})


def jobs_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ------------------------------------------------------------------------------------- basics


def test_health_docs_and_page(client: httpx.Client) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["features"]["image"] and health["features"]["video"]
    assert "happy" in health["labels"] and health["limits"]["image_bytes"] == LIMITS["max_image_bytes"]
    schema = client.get("/openapi.json").json()
    for route in ("/api/image", "/api/audio", "/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/files/{name}"):
        assert route in schema["paths"], route
    body = schema["paths"]["/api/image"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    if "/docs-assets/" in docs.text:  # fastapi-offline installed: the docs need no CDN
        assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # everything is served locally
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200


# ------------------------------------------------------------------------------------- photos


def test_photo_json_is_the_cli_json(client: httpx.Client, media: Path) -> None:
    from emolens.api import FaceAnalyzer

    path = media / "photos" / "portrait_happy.png"
    got = post_file(client, "/api/image", path, "image/png").json()
    want = FaceAnalyzer().analyze_image(path).to_dict()
    assert set(want) <= set(got) and got["path"] == "portrait_happy.png" and got["error"] is None
    assert got["size"] == [427, 524]
    assert len(got["faces"]) == len(want["faces"]) == 1
    for g, w in zip(got["faces"], want["faces"], strict=True):
        assert set(g) == {"box", "score", "label", "probs"}
        assert g["box"] == w["box"] and g["label"] == w["label"]
        assert g["probs"] == pytest.approx(w["probs"], abs=1e-3)


def test_photo_raw_body_and_group(client: httpx.Client, media: Path) -> None:
    data = (media / "photos" / "group_friends_6faces.jpg").read_bytes()
    r = client.post("/api/image?filename=friends.jpg", content=data, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and r.json()["path"] == "friends.jpg"
    assert len(r.json()["faces"]) == 6
    none = post_file(client, "/api/image", media / "photos" / "no_face_landscape.jpg", "image/jpeg").json()
    assert none["faces"] == [] and none["error"] is None


@pytest.mark.parametrize(("name", "ctype", "status"), [
    ("bad/corrupt.jpg", "image/jpeg", 422),            # random bytes named .jpg
    ("bad/zero_len.png", "image/png", 422),            # empty
    ("bad/text_as_video.mp4", "image/png", 415),       # text content
    ("video/silent.mp4", "video/mp4", 415),            # declared as a video
    ("video/silent.mp4", "application/octet-stream", 415),  # sniffed as a video
    ("photos/portrait_happy.png", "text/plain", 415),  # wrong declared type
    ("photos/large_4352x2903.jpg", "image/jpeg", 413),  # 692 kB > the 600 kB test limit
])
def test_photo_errors(client: httpx.Client, media: Path, name: str, ctype: str, status: int) -> None:
    r = post_file(client, "/api/image", media / name, ctype)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def test_malformed_requests(client: httpx.Client, media: Path) -> None:
    r = client.post("/api/image", data={"not_file": "x"}, files={"other": ("a.png", b"123", "image/png")})
    assert r.status_code == 400 and "file" in r.json()["detail"]
    r = client.post("/api/image", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400
    host, port = client.base_url.host, client.base_url.port
    with socket.create_connection((host, port), timeout=30) as s:  # declares 50 MB, sends 1 kB
        s.sendall(f"POST /api/image HTTP/1.1\r\nHost: {host}:{port}\r\n".encode() + b"Content-Type: image/jpeg\r\n"
                  b"Content-Length: 50000000\r\n\r\n" + b"\xff\xd8\xff" + b"0" * 1000)
        head = s.recv(200)
    assert head.startswith(b"HTTP/1.1 413"), head  # rejected by the declared length, body never read


def test_annotated_photo(client: httpx.Client, media: Path) -> None:
    import cv2
    import numpy as np

    r = post_file(client, "/api/image/annotated", media / "photos" / "portrait_angry.png", "image/png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (454, 515)


# ------------------------------------------------------------------------------------- audio


def test_audio(client: httpx.Client, media: Path) -> None:
    mp3 = media / "labeled_av" / "1002_DFA_ANG_XX.mp3"
    r = post_file(client, "/api/audio", mp3, "audio/mpeg")
    health = client.get("/api/health").json()
    if not health["features"]["audio"]:
        assert r.status_code in (501, 503) and r.json()["detail"] == health["audio_message"]
        pytest.skip(f"speech analysis unavailable here: {health['audio_message']}")
    assert r.status_code == 200, r.text
    result = r.json()
    assert {"path", "label", "probs", "segments", "error"} <= set(result) and result["path"] == mp3.name
    assert result["label"] in result["probs"] and result["segments"]
    assert post_file(client, "/api/audio", media / "bad" / "empty.wav", "audio/wav").status_code == 422
    assert post_file(client, "/api/audio", media / "photos" / "portrait_sad.png", "image/png").status_code == 415
    silent = post_file(client, "/api/audio", media / "video" / "silent.mp4", "video/mp4")
    assert silent.status_code == 422 and "silent.mp4" in silent.json()["detail"]


# ------------------------------------------------------------------------------------- video jobs


def test_video_job_lifecycle(client: httpx.Client, server: tuple[str, Path], media: Path) -> None:
    clip = media / "video" / "one_face_640x360.mp4"
    r = post_file(client, "/api/jobs", clip, "video/mp4", name="my clip.mp4", data={"max_frames": "24"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert uuid.UUID(job["id"]).version == 4 and job["status"] in ("queued", "running")
    assert job["progress"]["frames_total"] == 24
    assert client.get(f"/api/jobs/{job['id']}/result").status_code in (200, 409)
    job = wait_job(client, job["id"])
    assert job["status"] == "done", job["error"]
    assert job["progress"] == {"frames_done": 24, "frames_total": 24, "fraction": 1.0}
    assert job["seen"] == sorted(job["seen"])  # progress only goes up
    assert any(j["id"] == job["id"] for j in client.get("/api/jobs").json())

    summary = client.get(job["links"]["result"]).json()
    assert summary["source"] == "my clip.mp4" and summary["frames_analysed"] == 24
    assert summary["tracks"] and summary["label_sum"] in summary["labels"] and summary["label_vote"]
    assert str(server[1]) not in json.dumps(summary)  # no server paths leak
    timeline = client.get(job["links"]["timeline"]).json()
    track = timeline["tracks"][0]
    assert len(track["time_s"]) == len(track["probs"]["happy"]) == len(track["label"]) > 10

    csv = client.get(job["links"]["frames.csv"])
    assert csv.status_code == 200 and csv.text.startswith("time_s,frame,track_id")
    assert "my%20clip.frames.csv" in csv.headers["content-disposition"]
    assert client.get(job["links"]["summary.json"]).json()["frames_analysed"] == 24
    mp4 = client.get(job["links"]["annotated.mp4"])
    assert mp4.headers["content-type"] == "video/mp4" and mp4.content[4:8] == b"ftyp"

    folder = server[1] / job["id"]
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    assert files == ["input.mp4", "job.json", "out", "out/video.annotated.mp4", "out/video.frames.csv",
                     "out/video.summary.json"]
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
    assert not folder.exists()
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 404


@pytest.mark.parametrize(("name", "ctype", "data", "status"), [
    ("bad/truncated.mp4", "video/mp4", {}, 422),  # no moov atom
    ("bad/text_as_video.mp4", "video/mp4", {}, 415),
    ("video/audio_only.m4a", "audio/mp4", {}, 415),
    ("photos/portrait_sad.png", "image/png", {}, 415),
    ("bad/zero_len.png", "video/mp4", {}, 422),
    ("video/silent.mp4", "video/mp4", {"every": "0"}, 422),
    ("video/silent.mp4", "video/mp4", {"max_frames": "many"}, 422),
])
def test_video_job_rejected(client: httpx.Client, server: tuple[str, Path], media: Path, name: str, ctype: str,
                            data: dict, status: int) -> None:
    before = jobs_in(server[1])
    r = post_file(client, "/api/jobs", media / name, ctype, data=data)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str)
    assert str(server[1]) not in r.json()["detail"]
    assert jobs_in(server[1]) == before  # nothing left behind


@pytest.mark.parametrize("data", [{"every": "0"}, {"fps": "0"}, {"max_frames": "0"}, {"detect_every": "x"},
                                  {"smooth": "bogus"}])
def test_job_option_errors_name_the_form_fields(client: httpx.Client, media: Path, data: dict) -> None:
    """REST errors name the request's fields (every, max_frames), never the CLI's flags (--every)."""
    r = post_file(client, "/api/jobs", media / "video" / "silent.mp4", "video/mp4", data=data)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "--" not in detail and next(iter(data)) in detail, detail


def test_library_messages_are_translated_at_the_server_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """VideoOptions speaks of CLI flags; what the API answers names the form fields instead, while
    hints for the server's operator (emolens serve --flag) keep their flags."""
    from fastapi import HTTPException

    from emolens.server.app import job_options
    from emolens.server.jobs import api_message
    from emolens.video import VideoOptions

    assert api_message("--fps must be > 0") == "fps must be > 0"
    assert api_message("--every, --detect-every and --classify-every must be >= 1") == \
        "every, detect_every and classify_every must be >= 1"
    hint = "the jobs folder is full (emolens serve --max-jobs-disk-gb); --max-frames must be >= 1"
    assert api_message(hint) == "the jobs folder is full (emolens serve --max-jobs-disk-gb); max_frames must be >= 1"

    def refuse(self: VideoOptions) -> None:
        raise ValueError("--max-frames must be >= 1")

    monkeypatch.setattr(VideoOptions, "__post_init__", refuse)
    with pytest.raises(HTTPException) as err:
        job_options({"max_frames": "5"})
    assert err.value.status_code == 422 and err.value.detail == "max_frames must be >= 1"


def test_video_too_large_streams_nothing_to_keep(client: httpx.Client, server: tuple[str, Path]) -> None:
    before = jobs_in(server[1])
    blob = b"\x00\x00\x00\x18ftypisom" + os.urandom(3_200_000)
    r = client.post("/api/jobs", files={"file": ("big.mp4", blob, "video/mp4")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert jobs_in(server[1]) == before


@pytest.mark.parametrize("job_id", ["not-a-uuid", str(uuid.uuid4()), "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "x" * 300])
def test_job_ids_validated(client: httpx.Client, job_id: str) -> None:
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/result"), ("GET", "/timeline"),
                           ("GET", "/files/frames.csv")):
        r = client.request(method, f"/api/jobs/{job_id}{suffix}")
        assert r.status_code == 404, (method, suffix, r.status_code)
        assert "detail" in r.json()


def test_jobs_survive_a_restart(tmp_path: Path) -> None:
    ids = [str(uuid.uuid4()) for _ in range(4)]
    for job_id, status in zip(ids[:3], ("done", "running", "queued"), strict=True):
        (tmp_path / job_id).mkdir()
        (tmp_path / job_id / "job.json").write_text(json.dumps(
            {"id": job_id, "filename": "a.mp4", "input_name": "input.mp4", "options": {}, "status": status}))
    (tmp_path / ids[3]).mkdir()  # an upload cut short by a crash, a day ago
    os.utime(tmp_path / ids[3], (time.time() - 86400, time.time() - 86400))
    (tmp_path / "not-a-job").mkdir()
    manager = JobManager(tmp_path)  # not started: nothing runs
    assert manager.get(ids[0]).status == "done"
    assert manager.get(ids[1]).status == "failed" and "stopped" in manager.get(ids[1]).error
    assert manager.get(ids[2]).status == "queued" and manager.queue.get_nowait() == ids[2]
    assert not (tmp_path / ids[3]).exists() and (tmp_path / "not-a-job").exists()
    with pytest.raises(KeyError):
        manager.folder("../etc")


# ------------------------------------------------------------------------------------- live + load


def test_live_websocket(server: tuple[str, Path], media: Path) -> None:
    import cv2
    from websockets.sync.client import connect

    image = cv2.imread(str(media / "photos" / "portrait_happy.png"))
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    with connect(server[0].replace("http", "ws") + "/api/live", open_timeout=10, close_timeout=5) as ws:
        ws.send(jpeg)
        answer = json.loads(ws.recv(timeout=30))
        assert answer["seq"] == 1 and answer["size"] == [427, 524] and len(answer["faces"]) == 1
        assert set(answer["faces"][0]) == {"box", "score", "label", "probs"}
        ws.send(b"\x00garbage")
        assert "error" in json.loads(ws.recv(timeout=30))
        ws.send(b"\xff\xd8" + b"0" * 500_000)
        assert "too large" in json.loads(ws.recv(timeout=30))["error"]
        ws.send("ping")
        assert json.loads(ws.recv(timeout=10)) == {"pong": True}
        for _ in range(6):  # a burst: the server keeps only the newest waiting frame
            ws.send(jpeg)
        answers = [json.loads(ws.recv(timeout=30)) for _ in range(6)]
        assert sorted(a["seq"] for a in answers) == list(range(4, 10))  # 1-3 were sent above
        dropped = [a for a in answers if a.get("dropped") is True]
        analysed = [a for a in answers if "faces" in a]
        assert len(dropped) + len(analysed) == 6 and dropped and analysed
        assert analysed[-1]["seq"] == 9  # the newest frame is always analysed


def test_concurrent_uploads_keep_the_loop_responsive(server: tuple[str, Path], media: Path) -> None:
    data = (media / "photos" / "portrait_sad.png").read_bytes()

    async def main() -> tuple[list[int], float]:
        async with httpx.AsyncClient(base_url=server[0], timeout=120) as c:
            uploads = [asyncio.create_task(c.post("/api/image", files={"file": ("s.png", data, "image/png")}))
                       for _ in range(12)]
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            assert (await c.get("/api/health")).status_code == 200
            health_s = time.perf_counter() - t0
            return [r.status_code for r in await asyncio.gather(*uploads)], health_s

    codes, health_s = asyncio.run(main())
    assert codes == [200] * 12
    assert health_s < 5.0  # answered while 12 photos were being analysed


def test_serve_command(tmp_path: Path) -> None:
    """`emolens serve` starts, answers, and stops on SIGTERM."""
    with serve_process(jobs_dir=tmp_path / "j", timeout=60) as (url, proc):
        r = httpx.get(f"{url}/api/health", timeout=5)
        assert r.json()["status"] == "ok" and (tmp_path / "j").is_dir()
    assert proc.returncode is not None  # stopped
