"""Server hardening: Host/Origin checks, access tokens and job ownership, private job folders,
retention and disk quota, finite numbers, form fields, hidden internal errors, the OpenAPI
error answers, timeouts for half-sent requests, and a bounded schema-based fuzz run.

Every server listens on 127.0.0.1 (uvicorn in a thread), every loop and wait is bounded.
"""

from __future__ import annotations

import json
import logging
import socket
import stat
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from emolens.server import ServerConfig, create_app, running_server  # noqa: E402
from emolens.server.harness import read_until_closed, serve_process, wait_job  # noqa: E402
from emolens.server.jobs import GB, JobManager, QuotaError  # noqa: E402

ALPHA, BETA = "alpha-token-0123456789", "beta-token-9876543210"
SMALL = {"max_image_bytes": 600_000, "max_video_bytes": 3_000_000, "max_audio_bytes": 2_000_000,
         "header_timeout_s": 2.0, "body_timeout_s": 2.0, "keep_alive_s": 2}


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory, media: Path) -> tuple[str, Path]:
    """Base URL and jobs folder of a server without tokens (2 s request timeouts)."""
    jobs = tmp_path_factory.mktemp("open_jobs")
    with running_server(create_app(ServerConfig(jobs_dir=jobs, **SMALL))) as url:
        yield url, jobs


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory, media: Path) -> tuple[str, Path]:
    """Base URL and jobs folder of a server that needs one of two tokens."""
    jobs = tmp_path_factory.mktemp("token_jobs")
    with running_server(create_app(ServerConfig(jobs_dir=jobs, tokens=[ALPHA, BETA], **SMALL))) as url:
        yield url, jobs


@pytest.fixture(scope="module")
def client(open_server: tuple[str, Path]) -> httpx.Client:
    with httpx.Client(base_url=open_server[0], timeout=60) as c:
        yield c


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def post_video(c: httpx.Client, media: Path, data: dict | None = None, headers: dict | None = None,
               field: str = "file") -> httpx.Response:
    clip = (media / "video" / "silent.mp4").read_bytes()
    return c.post("/api/jobs", files={field: ("clip.mp4", clip, "video/mp4")}, data=data or {}, headers=headers)


def job_dirs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def host_port(url: str) -> tuple[str, int]:
    u = httpx.URL(url)
    return u.host, int(u.port or 80)


# ------------------------------------------------------------------------------------- Host


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:80", "127.0.0.1.attacker.example",
                                  "localhost.attacker.example", "[::2]"])
def test_spoofed_host_refused(client: httpx.Client, host: str) -> None:
    r = client.get("/api/health", headers={"Host": host})
    assert r.status_code == 400, r.text
    assert "not allowed" in r.json()["detail"] and "--allowed-hosts" in r.json()["detail"]
    assert client.get("/", headers={"Host": host}).status_code == 400  # the page too (DNS rebinding)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST.", "[::1]"])
def test_loopback_hosts_served(client: httpx.Client, host: str) -> None:
    port = client.base_url.port
    assert client.get("/api/health", headers={"Host": f"{host}:{port}"}).status_code == 200


def test_allowed_hosts_configurable(tmp_path: Path, media: Path) -> None:
    config = ServerConfig(jobs_dir=tmp_path, allowed_hosts=["emolens.lan"], **SMALL)
    with running_server(create_app(config)) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/api/health", headers={"Host": "emolens.lan:8000"}).status_code == 200
        assert c.get("/api/health").status_code == 400  # 127.0.0.1 was not listed
    config = ServerConfig(jobs_dir=tmp_path, allowed_hosts=["*"], **SMALL)
    with running_server(create_app(config)) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/api/health", headers={"Host": "anything.example"}).status_code == 200


# ------------------------------------------------------------------------------------- Origin


def test_cross_origin_post_refused(client: httpx.Client, media: Path) -> None:
    photo = (media / "photos" / "portrait_sad.png").read_bytes()
    files = {"file": ("s.png", photo, "image/png")}
    port = client.base_url.port
    for origin in ("http://attacker.example", "null", f"http://attacker.example:{port}", "https://127.0.0.1.evil.io",
                   f"http://127.0.0.1:{port + 1}"):
        r = client.post("/api/image", files=files, headers={"Origin": origin})
        assert r.status_code == 403, (origin, r.status_code)
        assert "Origin" in r.json()["detail"]
    r = client.delete(f"/api/jobs/{uuid.uuid4()}", headers={"Origin": "http://attacker.example"})
    assert r.status_code == 403  # refused before the job lookup
    r = client.post("/api/image", files=files, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", None):  # own origin, or curl
        r = client.post("/api/image", files=files, headers={"Origin": origin} if origin else {})
        assert r.status_code == 200, (origin, r.text)
    assert client.get("/api/health", headers={"Origin": "http://attacker.example"}).status_code == 200  # reads


def test_allowed_origins_configurable(tmp_path: Path, media: Path) -> None:
    config = ServerConfig(jobs_dir=tmp_path, allowed_origins=["https://front.example"], **SMALL)
    with running_server(create_app(config)) as url, httpx.Client(base_url=url, timeout=30) as c:
        bad = {"file": ("x.jpg", b"\xff\xd8\xff" + b"0" * 100, "image/jpeg")}
        assert c.post("/api/image", files=bad, headers={"Origin": "https://front.example"}).status_code == 422
        assert c.post("/api/image", files=bad, headers={"Origin": "http://evil.example"}).status_code == 403
        own = f"http://127.0.0.1:{c.base_url.port}"
        assert c.post("/api/image", files=bad, headers={"Origin": own}).status_code == 422


def test_cross_origin_websocket_refused(open_server: tuple[str, Path]) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = open_server[0].replace("http", "ws") + "/api/live"
    for origin in ("http://attacker.example", "null"):
        with pytest.raises(InvalidStatus) as info:
            connect(url, origin=origin, open_timeout=10).close()  # type: ignore[arg-type]
        assert info.value.response.status_code == 403
    with connect(url, origin=open_server[0], open_timeout=10, close_timeout=5) as ws:  # type: ignore[arg-type]
        ws.send("ping")
        assert json.loads(ws.recv(timeout=10)) == {"pong": True}


def test_websocket_with_spoofed_host_refused(open_server: tuple[str, Path]) -> None:
    host, port = host_port(open_server[0])
    with socket.create_connection((host, port), timeout=15) as s:
        s.sendall(b"GET /api/live HTTP/1.1\r\nHost: attacker.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = s.recv(200)
    assert head.split(b"\r\n")[0] in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 403 Forbidden"), head


# ------------------------------------------------------------------------------------- tokens


def test_token_required(token_server: tuple[str, Path]) -> None:
    with httpx.Client(base_url=token_server[0], timeout=30) as c:
        r = c.get("/api/health")
        assert r.status_code == 401 and "token" in r.json()["detail"]
        assert r.headers["www-authenticate"].lower().startswith("bearer")
        assert c.get("/api/health", headers=auth("wrong")).status_code == 401
        assert c.get("/api/jobs", headers={"X-Emolens-Token": "nope"}).status_code == 401
        assert c.get("/api/health", headers=auth(ALPHA)).status_code == 200
        assert c.get("/api/health", headers={"X-Emolens-Token": BETA}).json()["token_required"] is True
        assert c.get("/").status_code == 200  # the page loads and asks for the token
        assert c.get("/openapi.json").json()["components"]["securitySchemes"]
        assert c.post("/api/image", files={"file": ("a.png", b"x", "image/png")}).status_code == 401


def test_token_on_websocket(token_server: tuple[str, Path]) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = token_server[0].replace("http", "ws") + "/api/live"
    for suffix in ("", "?token=wrong"):
        with pytest.raises(InvalidStatus) as info:
            connect(url + suffix, open_timeout=10).close()
        assert info.value.response.status_code in (401, 403)
    with connect(f"{url}?token={ALPHA}", open_timeout=10, close_timeout=5) as ws:
        ws.send("ping")
        assert json.loads(ws.recv(timeout=10)) == {"pong": True}


def test_jobs_belong_to_their_token(token_server: tuple[str, Path], media: Path) -> None:
    with httpx.Client(base_url=token_server[0], timeout=60) as c:
        r = post_video(c, media, {"max_frames": "3"}, headers=auth(ALPHA))
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert "owner" not in r.json()
        assert [j["id"] for j in c.get("/api/jobs", headers=auth(ALPHA)).json()] == [job_id]
        assert c.get("/api/jobs", headers=auth(BETA)).json() == []
        for method, suffix in (("GET", ""), ("GET", "/result"), ("GET", "/timeline"), ("GET", "/files/frames.csv"),
                               ("DELETE", "")):
            r = c.request(method, f"/api/jobs/{job_id}{suffix}", headers=auth(BETA))
            assert r.status_code == 404, (method, suffix, r.status_code)
        assert c.get("/api/health", headers=auth(BETA)).json()["jobs"] == {"queued": 0, "running": 0, "done": 0,
                                                                           "failed": 0}
        job = wait_job(c, job_id, auth(ALPHA))
        assert job["status"] == "done", job
        saved = (token_server[1] / job_id / "job.json").read_text()
        assert ALPHA not in saved and BETA not in saved  # only a hash of the token is stored
        assert c.get(f"/api/jobs/{job_id}/result", headers=auth(ALPHA)).status_code == 200
        assert c.delete(f"/api/jobs/{job_id}", headers=auth(BETA)).status_code == 404
        assert c.delete(f"/api/jobs/{job_id}", headers=auth(ALPHA)).status_code == 204


def test_token_from_environment(tmp_path: Path) -> None:
    """`emolens serve` takes its token from $EMOLENS_TOKEN."""
    with serve_process(jobs_dir=tmp_path / "j", env={"EMOLENS_TOKEN": ALPHA}, timeout=60) as (url, _):
        assert httpx.get(f"{url}/api/health", timeout=5).status_code == 401
        assert httpx.get(f"{url}/api/health", headers=auth(ALPHA), timeout=5).status_code == 200


# ------------------------------------------------------------------------------------- job folders


def test_job_folders_are_private(client: httpx.Client, open_server: tuple[str, Path], media: Path) -> None:
    r = post_video(client, media, {"max_frames": "3"})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "done", job
    folder = open_server[1] / job["id"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    paths = list(folder.rglob("*"))
    assert any(p.name == "job.json" for p in paths) and any(p.suffix == ".csv" for p in paths)
    for path in paths:
        want = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == want, (path.name, oct(path.stat().st_mode))
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 204


# ------------------------------------------------------------------------------------- retention and quota


def plant_job(root: Path, status: str, age_h: float, size: int = 0) -> str:
    """A job folder as the server leaves it, finished (or created) ``age_h`` hours ago."""
    job_id = str(uuid.uuid4())
    (root / job_id).mkdir()
    when = time.time() - age_h * 3600
    state = {"id": job_id, "filename": "a.mp4", "input_name": "input.mp4", "options": {}, "status": status,
             "created": when - 60, "finished": when if status in ("done", "failed") else None}
    (root / job_id / "job.json").write_text(json.dumps(state))
    if size:
        (root / job_id / "input.mp4").write_bytes(b"\0" * size)
    return job_id


def test_old_finished_jobs_removed(tmp_path: Path) -> None:
    plant_job(tmp_path, "done", 30), plant_job(tmp_path, "failed", 25)
    fresh, queued = plant_job(tmp_path, "done", 1), plant_job(tmp_path, "queued", 100)
    manager = JobManager(tmp_path, keep_hours=24)  # removed at startup; not started: nothing runs
    assert {j.id for j in manager.list()} == {fresh, queued}
    assert job_dirs(tmp_path) == {fresh, queued}
    manager.keep_hours = 0.5  # later, periodically
    assert manager.prune() == [fresh] and job_dirs(tmp_path) == {queued}
    manager.keep_hours = 0  # no age limit
    assert manager.prune() == []


def test_quota_removes_oldest_finished_first(tmp_path: Path) -> None:
    mb = 1_000_000
    a, b, c = (plant_job(tmp_path, "done", h, mb) for h in (3, 2, 1))
    queued = plant_job(tmp_path, "queued", 5, 2 * mb)  # waiting jobs count too, but are never removed
    manager = JobManager(tmp_path, keep_hours=0, max_disk_bytes=int(3.5 * mb))  # 5 MB at startup: a, b go
    assert job_dirs(tmp_path) == {c, queued} and {j.id for j in manager.list()} == {c, queued}
    manager.reserve("upload-1", int(0.4 * mb))  # fits: 3.0 + 0.4 MB of 3.5
    assert job_dirs(tmp_path) == {c, queued}
    manager.reserve("upload-2", int(0.4 * mb))  # 3.8 MB would not fit: the finished job c makes room
    assert job_dirs(tmp_path) == {queued}
    with pytest.raises(QuotaError, match="max-jobs-disk-gb"):
        manager.reserve("upload-3", 1 * mb)  # 2 + 0.8 booked + 1: nothing finished is left to remove
    manager.release("upload-1")
    manager.release("upload-2")
    manager.reserve("upload-3", 1 * mb)  # the bookings ended: room again
    assert job_dirs(tmp_path) == {queued}


def test_upload_over_quota_gets_507(tmp_path: Path, media: Path) -> None:
    mb = 1_000_000
    uploading = tmp_path / str(uuid.uuid4())  # an upload in progress (no job.json yet) holds the room
    uploading.mkdir()
    (uploading / "upload.part").write_bytes(b"\0" * int(1.2 * mb))
    config = ServerConfig(jobs_dir=tmp_path, max_jobs_disk_gb=1.0 * mb / GB, **SMALL)
    with running_server(create_app(config)) as url, httpx.Client(base_url=url, timeout=60) as c:
        before = job_dirs(tmp_path)
        r = post_video(c, media)
        assert r.status_code == 507, r.text
        assert "--max-jobs-disk-gb" in r.json()["detail"] and "1.0 MB allowed" in r.json()["detail"]
        assert job_dirs(tmp_path) <= before  # nothing left behind
        assert c.get("/api/health").json()["limits"]["jobs_disk_bytes"] == mb


# ------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("field", "value"), [
    ("fps", "nan"), ("fps", "NaN"), ("fps", "inf"), ("fps", "-inf"), ("fps", "Infinity"), ("fps", "1e400"),
    ("fps", "0"), ("fps", "-5"), ("fps", "1e9"), ("fps", "fast"),
    ("every", "1e400"), ("every", "nan"), ("every", "1001"), ("max_frames", "inf"), ("max_frames", "10000001"),
    ("detect_every", "101"), ("smooth", "cubic"), ("annotate", "maybe"),
])
def test_non_finite_and_out_of_range_rejected(client: httpx.Client, open_server: tuple[str, Path], media: Path,
                                              field: str, value: str) -> None:
    before = job_dirs(open_server[1])
    r = post_video(client, media, {field: value})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert field in detail and "internal" not in detail
    if field == "fps" and value.lower() in ("nan", "inf", "-inf", "infinity", "1e400"):
        assert "finite" in detail
    assert job_dirs(open_server[1]) == before


def test_finite_fps_job_json_is_standard(client: httpx.Client, open_server: tuple[str, Path], media: Path) -> None:
    r = post_video(client, media, {"fps": "1000", "max_frames": "2"})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "done", job
    text = (open_server[1] / job["id"] / "job.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 204


def test_file_in_another_field_is_400(client: httpx.Client, open_server: tuple[str, Path], media: Path) -> None:
    photo = (media / "photos" / "portrait_sad.png").read_bytes()  # 270 kB: far past the 1 kB of a text field
    r = client.post("/api/image", files={"photo": ("s.png", photo, "image/png")})
    assert r.status_code == 400 and "'file'" in r.json()["detail"], r.text
    two = [("file", ("a.png", photo, "image/png")), ("file", ("b.png", photo, "image/png"))]
    r = client.post("/api/image", files=two)
    assert r.status_code == 400 and "one file" in r.json()["detail"], r.text
    before = job_dirs(open_server[1])
    r = post_video(client, media, field="video")
    assert r.status_code == 400 and "'file'" in r.json()["detail"], r.text
    assert job_dirs(open_server[1]) == before
    r = client.post("/api/image", files={"file": ("s.png", photo, "image/png")}, data={"note": "x" * 5000})
    assert r.status_code == 400 and "too long" in r.json()["detail"]


class BrokenAnalyzer:
    """A face analyzer whose every call fails with a message full of internals."""

    class model:  # noqa: N801
        labels = ("happy", "sad")

    def analyze_frame(self, image: object) -> list:
        raise RuntimeError("cv::dnn::Net::forward /opt/secret/libyuface.so: assertion failed at 0x7f00")


def test_internal_error_hides_details(tmp_path: Path, media: Path, caplog: pytest.LogCaptureFixture) -> None:
    photo = (media / "photos" / "portrait_sad.png").read_bytes()
    with caplog.at_level(logging.ERROR, logger="emolens.server"), \
            running_server(create_app(ServerConfig(jobs_dir=tmp_path, **SMALL), analyzer=BrokenAnalyzer())) as url:
        r = httpx.post(f"{url}/api/image", files={"file": ("s.png", photo, "image/png")}, timeout=60)
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"detail", "id"} and body["detail"] == "internal error" and len(body["id"]) == 8
    for word in ("secret", "RuntimeError", "cv::", "Traceback"):
        assert word not in r.text
    logged = [rec for rec in caplog.records if body["id"] in rec.getMessage()]
    assert logged and logged[0].exc_info and "secret" in str(logged[0].exc_info[1])


def test_openapi_lists_error_answers_and_limits(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    for path, item in schema["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, op in item.items():
            codes = set(op["responses"])
            assert {"400", "401", "500"} <= codes, (method, path, codes)
            if method in ("post", "delete"):
                assert "403" in codes, (method, path)
            if "{job_id}" in path:
                assert "404" in codes, (method, path)
            for code in codes - {"200", "202", "204"}:
                content = op["responses"][code]["content"]["application/json"]["schema"]
                assert content["properties"]["detail"]["type"] == "string", (method, path, code)
    for path in ("/api/image", "/api/image/annotated", "/api/audio", "/api/jobs"):
        assert {"408", "413", "415", "422"} <= set(schema["paths"][path]["post"]["responses"]), path
    jobs = schema["paths"]["/api/jobs"]["post"]
    assert {"501", "503", "507"} <= set(jobs["responses"])
    fields = jobs["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert (fields["every"]["minimum"], fields["every"]["maximum"]) == (1, 1000)
    assert (fields["detect_every"]["minimum"], fields["detect_every"]["maximum"]) == (1, 100)
    assert (fields["max_frames"]["minimum"], fields["max_frames"]["maximum"]) == (1, 10_000_000)
    assert fields["fps"]["exclusiveMinimum"] == 0 and fields["fps"]["maximum"] == 1000
    assert fields["smooth"]["enum"] == ["ema", "window", "none"]


# ------------------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize("sent", ["nothing", "half the headers", "half the body", "a video half sent"])
def test_half_sent_request_closed_in_seconds(open_server: tuple[str, Path], sent: str) -> None:
    host, port = host_port(open_server[0])
    head = f"POST /api/image HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/jpeg\r\n".encode()
    payload = {"nothing": b"", "half the headers": head, "half the body":
               head + b"Content-Length: 100000\r\n\r\n\xff\xd8\xff" + b"0" * 1000,
               "a video half sent": head.replace(b"/api/image", b"/api/jobs").replace(b"image/jpeg", b"video/mp4")
               + b"Content-Length: 100000\r\n\r\n\x00\x00\x00\x18ftypisom" + b"0" * 1000}[sent]
    before = job_dirs(open_server[1])
    with socket.create_connection((host, port), timeout=15) as s:
        s.sendall(payload)
        data, seconds = read_until_closed(s)
    assert seconds < 6, f"{sent}: still open after {seconds:.1f} s"  # the timeouts are 2 s here
    if sent != "nothing":
        assert data.startswith(b"HTTP/1.1 408"), data[:100]
    deadline = time.monotonic() + 10
    while job_dirs(open_server[1]) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job_dirs(open_server[1]) == before  # the half upload was removed


def test_slow_but_steady_upload_is_served(open_server: tuple[str, Path], media: Path) -> None:
    """Pauses shorter than the body timeout are fine (an idle timer, not a deadline)."""
    host, port = host_port(open_server[0])
    photo = (media / "photos" / "portrait_sad.png").read_bytes()
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(f"POST /api/image HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/png\r\n"
                  f"Content-Length: {len(photo)}\r\nConnection: close\r\n\r\n".encode())
        for i in range(4):  # 4 pieces, 1 s apart: 3 s in all, more than the 2 s timeout
            s.sendall(photo[i * len(photo) // 4:(i + 1) * len(photo) // 4])
            time.sleep(1.0)
        data, _ = read_until_closed(s, 30)
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


# ------------------------------------------------------------------------------------- fuzzing


def test_schema_fuzz(open_server: tuple[str, Path]) -> None:
    """Schema-based fuzzing of every operation (positive and negative data, at most ~60 s): no 5xx,
    every answer documented, every body as its schema says, invalid data rejected."""
    schemathesis = pytest.importorskip("schemathesis")
    import hypothesis
    from hypothesis import HealthCheck, Phase, settings
    from schemathesis import GenerationMode
    from schemathesis import checks as sc

    url = open_server[0]
    checks = [sc.not_a_server_error, sc.status_code_conformance, sc.content_type_conformance,
              sc.response_schema_conformance, sc.response_headers_conformance]
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    deadline = time.monotonic() + 60
    counts = {"cases": 0, "5xx": 0}
    failures: list[str] = []
    def fuzz(operation: object, mode: GenerationMode) -> None:
        mode_checks = checks + ([sc.negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))  # type: ignore[attr-defined]
        @settings(max_examples=60, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case: object) -> None:
            if time.monotonic() > deadline:
                return
            response = case.call(base_url=url, timeout=30)  # type: ignore[attr-defined]
            counts["cases"] += 1
            counts["5xx"] += response.status_code >= 500
            try:
                case.validate_response(response, checks=mode_checks)  # type: ignore[attr-defined]
            except BaseException as exc:  # noqa: BLE001  (schemathesis raises a BaseExceptionGroup; reported below)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                label = operation.label  # type: ignore[attr-defined]
                failures.append(f"{label} [{mode.value}] {response.status_code}: {str(exc)[:300]}")

        try:
            run()
        except hypothesis.errors.Unsatisfiable:  # no invalid data exists for this operation
            pass

    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(result.ok(), mode)
    assert counts["5xx"] == 0 and not failures, (counts, failures[:5])
    assert counts["cases"] >= 200, counts
