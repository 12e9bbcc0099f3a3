"""``POST /api/explain`` against the running app (uvicorn on 127.0.0.1): heat maps and region
evidence per face as JSON with base64 PNGs, the upload checks of the photo routes, tokens and Origin."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from emolens.explanations import REGIONS  # noqa: E402
from emolens.server import ServerConfig, create_app, running_server  # noqa: E402
from emolens.server.explain import EXPLAIN_SCHEMA, FACE_PNG_SIDE, IMAGE_MAX_SIDE, OVERLAY_MAX_SIDE  # noqa: E402

TOKEN = "explain-token-0123456789"
#: 4 megapixels: the 4352x2903 photo (692 kB, under the byte limit) is refused by its pixel count
LIMITS = {"max_image_bytes": 2_000_000, "max_pixels": 4_000_000}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, media: Path) -> str:
    with running_server(create_app(ServerConfig(jobs_dir=tmp_path_factory.mktemp("jobs"), **LIMITS))) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> httpx.Client:
    with httpx.Client(base_url=server, timeout=120) as c:
        yield c


def post(client: httpx.Client, path: Path, ctype: str = "image/jpeg", data: dict | None = None,
         headers: dict | None = None, name: str | None = None) -> httpx.Response:
    return client.post("/api/explain", files={"file": (name or path.name, path.read_bytes(), ctype)},
                       data=data or {}, headers=headers)


def png(b64: str) -> np.ndarray:
    """Decode a base64 PNG (any channel count)."""
    import cv2

    raw = base64.b64decode(b64, validate=True)
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


@pytest.mark.parametrize("name", ["portrait_happy.png", "group_family_7faces.jpg"])
def test_explain_photo(client: httpx.Client, media: Path, name: str) -> None:
    from emolens.api import FaceAnalyzer

    path = media / "photos" / name
    r = post(client, path)
    assert r.status_code == 200, r.text
    got = r.json()
    want = FaceAnalyzer().analyze_image(path)
    assert got["path"] == name and got["error"] is None and got["method"] == "occlusion"
    assert got["size"] == list(want.size) and len(got["faces"]) == len(want.faces) >= 1
    w, h = got["size"]
    assert list(got["images"]) == ["occlusion"]
    assert png(got["images"]["occlusion"]).shape[:2] == (h, w)  # the whole photo, heat maps drawn in
    for face, ref in zip(got["faces"], want.faces, strict=True):
        assert face["box"] == ref.to_dict()["box"] and face["label"] == ref.label
        assert face["probs"] == pytest.approx(ref.probs, abs=1e-3)
        assert face["methods"] == ["occlusion"]
        assert png(face["png"]).shape == (FACE_PNG_SIDE, 2 * FACE_PNG_SIDE, 3)  # aligned face | its heat map
        assert list(face["overlays"]) == ["occlusion"]
        overlay = png(face["overlays"]["occlusion"])
        bx, by, bw, bh = face["image_box"]
        assert max(bw, bh) <= OVERLAY_MAX_SIDE and overlay.shape == (bh, bw, 4)  # BGRA over image_box
        assert overlay[..., 3].max() > 100 and overlay[..., 3].min() == 0 and overlay[..., 3].std() > 10
        x, y, fw, fh = face["box"]  # the heat map covers the face's centre
        assert bx <= x + fw / 2 <= bx + bw and by <= y + fh / 2 <= by + bh
        assert set(face["regions"]) == set(REGIONS)
        for deltas in face["regions"].values():
            assert set(deltas) == set(face["probs"])
        assert any(abs(d[face["label"]]) > 1e-3 for d in face["regions"].values())  # masking changes it


def test_answer_matches_documented_schema(client: httpx.Client, media: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    body = post(client, media / "photos" / "portrait_sad.png", "image/png").json()
    jsonschema.Draft202012Validator(EXPLAIN_SCHEMA).validate(body)
    schema = client.get("/openapi.json").json()
    op = schema["paths"]["/api/explain"]["post"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["required"] == EXPLAIN_SCHEMA["required"]
    assert {"400", "401", "403", "408", "413", "415", "422", "500"} <= set(op["responses"])
    fields = op["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"file", "method", "image", "activations"} <= set(fields) and "occlusion" in fields["method"]["enum"]


def test_json_matches_the_cli(client: httpx.Client, media: Path, tmp_path: Path) -> None:
    """The same keys and numbers as ``emolens explain --json`` (pictures inline instead of paths; the
    CLI's ``image``, a copy of the first of ``images``, is left out)."""
    import json

    from typer.testing import CliRunner

    from emolens.cli import app

    path = media / "photos" / "portrait_frontal_smile.jpg"
    out = tmp_path / "out.json"
    run = CliRunner().invoke(app, ["explain", str(path), "--out", str(tmp_path), "--json", str(out),
                                   "--method", "occlusion"])
    assert run.exit_code == 0, run.output
    cli = json.loads(out.read_text())[0]
    api = post(client, path).json()
    assert set(cli) - {"image"} <= set(api) and len(cli["faces"]) == len(api["faces"]) == 1
    assert set(cli["images"]) == set(api["images"])
    c, a = cli["faces"][0], api["faces"][0]
    assert set(c) <= set(a)
    assert a["box"] == c["box"] and a["image_box"] == c["image_box"] and a["label"] == c["label"]
    for region in REGIONS:
        assert a["regions"][region] == pytest.approx(c["regions"][region], abs=1e-3)


def test_no_face_and_no_image(client: httpx.Client, media: Path) -> None:
    r = post(client, media / "photos" / "no_face_landscape.jpg")
    assert r.status_code == 200 and r.json()["faces"] == [] and r.json()["images"] == {}
    r = post(client, media / "photos" / "portrait_happy.png", "image/png", data={"image": "false"})
    assert r.status_code == 200 and r.json()["images"] == {} and len(r.json()["faces"]) == 1
    r = client.post("/api/explain?filename=raw.png", content=(media / "photos" / "portrait_happy.png").read_bytes(),
                    headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()["path"] == "raw.png"


def test_large_photo_scaled_down(tmp_path: Path, media: Path) -> None:
    """The whole-photo PNG is at most IMAGE_MAX_SIDE wide, the overlays at most OVERLAY_MAX_SIDE."""
    with running_server(create_app(ServerConfig(jobs_dir=tmp_path))) as url:
        r = httpx.post(f"{url}/api/explain", timeout=120, files={"file": (
            "large.jpg", (media / "photos" / "large_4352x2903.jpg").read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["size"] == [4352, 2903]
    assert png(body["images"]["occlusion"]).shape[:2] == (round(2903 * IMAGE_MAX_SIDE / 4352), IMAGE_MAX_SIDE)
    for face in body["faces"]:
        _, _, bw, bh = face["image_box"]
        overlay = png(face["overlays"]["occlusion"])
        assert max(overlay.shape[:2]) == min(OVERLAY_MAX_SIDE, max(bw, bh))
        assert overlay.shape[1] / overlay.shape[0] == pytest.approx(bw / bh, abs=0.02)


@pytest.mark.parametrize(("name", "ctype", "status", "words"), [
    ("bad/corrupt.jpg", "image/jpeg", 422, "not a readable image"),
    ("bad/zero_len.png", "image/png", 422, "empty"),
    ("bad/text_as_video.mp4", "image/png", 415, "text"),
    ("bad/truncated.mp4", "video/mp4", 415, "content type"),
    ("video/silent.mp4", "application/octet-stream", 415, "video"),
    ("photos/portrait_happy.png", "text/plain", 415, "content type"),
    ("photos/large_4352x2903.jpg", "image/jpeg", 413, "megapixels"),
])
def test_bad_inputs(client: httpx.Client, media: Path, name: str, ctype: str, status: int, words: str) -> None:
    r = post(client, media / name, ctype)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and words in detail, detail


def test_empty_upload_and_form_errors(client: httpx.Client, media: Path) -> None:
    r = client.post("/api/explain", files={"file": ("e.jpg", b"", "image/jpeg")})
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = client.post("/api/explain", data={"x": "1"}, files={"photo": ("a.png", b"123", "image/png")})
    assert r.status_code == 400 and "'file'" in r.json()["detail"]  # names the form field
    portrait = media / "photos" / "portrait_happy.png"
    r = post(client, portrait, "image/png", data={"method": "magic"})
    assert r.status_code == 422 and r.json()["detail"].startswith("method must be one of occlusion")
    for value in ("maybe", "", "TRUE", "1"):  # exactly as documented: true or false
        r = post(client, portrait, "image/png", data={"image": value})
        assert r.status_code == 422 and r.json()["detail"].startswith("image must be true or false"), value
    for value in ("", " occlusion"):
        r = post(client, portrait, "image/png", data={"method": value})
        assert r.status_code == 422 and r.json()["detail"].startswith("method must be one of"), value
    r = client.post("/api/explain", content=b"\xff\xd8\xff" + b"0" * 2_100_000, headers={"content-type": "image/jpeg"})
    assert r.status_code == 413 and "upload too large" in r.json()["detail"]


def test_origin_checked(client: httpx.Client, media: Path) -> None:
    photo = media / "photos" / "portrait_sad.png"
    r = post(client, photo, "image/png", headers={"Origin": "http://attacker.example"})
    assert r.status_code == 403 and "Origin" in r.json()["detail"]
    own = f"http://127.0.0.1:{client.base_url.port}"
    assert post(client, photo, "image/png", headers={"Origin": own}).status_code == 200


def test_token_required(tmp_path: Path, media: Path) -> None:
    photo = media / "photos" / "portrait_sad.png"
    with running_server(create_app(ServerConfig(jobs_dir=tmp_path, tokens=[TOKEN]))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        for headers in ({}, {"Authorization": "Bearer wrong-token-000000"}):
            r = post(c, photo, "image/png", headers=headers)
            assert r.status_code == 401 and "token" in r.json()["detail"]
        r = post(c, photo, "image/png", headers={"X-Emolens-Token": TOKEN})
        assert r.status_code == 200 and len(r.json()["faces"]) == 1


def test_methods_and_activations(client: httpx.Client, media: Path) -> None:
    """Every method the server offers (health: explain_methods) works; both: a map and overlay per method;
    the activation grid comes with models that export activations, and can be left out."""
    from emolens.explanations import METHODS

    offered = client.get("/api/health").json()["explain_methods"]
    assert offered[0] == "occlusion"
    if offered == ["occlusion"]:
        pytest.skip("the face model exports no Grad-CAM outputs")
    assert offered == [*METHODS, "both"]
    photo = media / "photos" / "portrait_sad.png"
    for method in offered:
        r = post(client, photo, "image/png", data={"method": method, "image": "false"})
        assert r.status_code == 200, (method, r.text)
        body = r.json()
        face = body["faces"][0]
        want = list(METHODS) if method == "both" else [method]
        assert body["method"] == method and len(body["faces"]) == 1 and face["methods"] == want
        assert list(face["overlays"]) == want
        assert png(face["png"]).shape == (FACE_PNG_SIDE, (1 + len(want)) * FACE_PNG_SIDE, 3)
        _, _, bw, bh = face["image_box"]
        for m in want:
            alpha = png(face["overlays"][m])[..., 3]
            assert alpha.shape == (bh, bw) and alpha.max() > 100 and alpha.std() > 10, m
        assert face["activations"] and {"name", "size", "channels", "channel_means"} <= set(face["activations"][0])
        grid = png(face["activations_png"])
        assert grid.shape[0] > 64 * len(face["activations"]) and grid.std() > 10
    maps = [png(post(client, photo, "image/png", data={"method": m, "image": "false"}).json()
                ["faces"][0]["overlays"][m]) for m in METHODS]
    assert any(np.abs(maps[0].astype(int) - m.astype(int)).mean() > 5 for m in maps[1:])  # different maps
    r = post(client, photo, "image/png", data={"activations": "false", "image": "false"})
    face = r.json()["faces"][0]
    assert face["activations"] == [] and face["activations_png"] is None


def test_method_the_model_cannot_do(tmp_path: Path, media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A face model without Grad-CAM outputs: occlusion only, and a clear 422 for gradcam and both."""
    import emolens.explanations
    from emolens.server.explain import model_methods

    class Plain:  # an ExpressionModel-like object without an onnxruntime session
        labels = ("happy", "sad")

    assert model_methods(Plain()) == ["occlusion"]
    monkeypatch.setattr(emolens.explanations, "explain_block", lambda model: None)
    photo = media / "photos" / "portrait_sad.png"
    with running_server(create_app(ServerConfig(jobs_dir=tmp_path))) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        assert c.get("/api/health").json()["explain_methods"] == ["occlusion"]
        for method in ("gradcam", "both"):
            r = post(c, photo, "image/png", data={"method": method})
            assert r.status_code == 422, r.text
            assert r.json()["detail"] == (f"method {method} is not available: this server's face model has no "
                                          "Grad-CAM outputs (available: occlusion)")
        r = post(c, photo, "image/png", data={"image": "false"})
        assert r.status_code == 200 and r.json()["faces"][0]["methods"] == ["occlusion"]
