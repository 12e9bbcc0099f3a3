"""Occlusion heat maps and region evidence (issue 15) on the real photos and FER2013 PrivateTest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import emolens
from emolens.explanations import REGIONS, deletion_test, face_regions, occlusion_map, region_deltas
from emolens.expression import ExpressionModel, default_model
from emolens.labels import FER7

GROUP = "group_friends_6faces.jpg"
PORTRAIT = "portrait_frontal_smile.jpg"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emolens.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def photos(media: Path) -> Path:
    folder = media / "photos"
    if not (folder / GROUP).is_file() or not (folder / PORTRAIT).is_file():
        pytest.skip(f"needs {folder / GROUP} and {folder / PORTRAIT}")
    return folder


@pytest.fixture(scope="module")
def model() -> ExpressionModel:
    return default_model("default")


@pytest.mark.parametrize("name", [PORTRAIT, GROUP, "group_family_7faces.jpg"])
def test_explain_one_map_per_face(photos: Path, name: str) -> None:
    if not (photos / name).is_file():
        pytest.skip(f"needs {photos / name}")
    found = emolens.explain(photos / name)
    assert len(found) == len(emolens.analyze_image(photos / name).faces) >= 1
    for e in found:
        assert e.heatmap.shape == (48, 48) and e.crop.shape == (48, 48)
        assert float(e.heatmap.std()) > 0
        assert e.label == max(e.probs, key=e.probs.get) and list(e.probs) == list(FER7)
        x, y, w, h = e.image_box
        assert e.image_heatmap.shape == (h, w) and float(e.image_heatmap.std()) > 0
        bx, by, bw, bh = e.box  # the warped map covers the face box
        assert x <= bx + bw / 2 <= x + w and y <= by + bh / 2 <= y + h
        assert set(e.regions) == set(REGIONS)
        d = e.to_dict()
        json.dumps(d)
        assert {"box", "label", "probs", "image_box", "regions"} <= set(d)


def test_explain_matches_analyze_image(photos: Path) -> None:
    ref = emolens.analyze_image(photos / PORTRAIT).faces[0]
    e = emolens.explain(photos / PORTRAIT)[0]
    assert e.label == ref.label and e.box == ref.box
    assert e.probs == pytest.approx(ref.probs, abs=1e-4)


def test_occlusion_map_ranks_patches(photos: Path, model: ExpressionModel) -> None:
    """Covering the hottest spot of the map hurts the predicted class more than covering the coldest."""
    crops = np.stack([e.crop for e in emolens.explain(photos / GROUP)])
    for crop in crops:
        heat = occlusion_map(model, crop)
        assert heat.shape == crop.shape and heat.dtype == np.float32
        covered = []
        for flat in (int(heat.argmax()), int(heat.argmin())):
            y, x = np.unravel_index(flat, heat.shape)
            c = crop.copy()
            c[max(0, y - 4): y + 4, max(0, x - 4): x + 4] = 128
            covered.append(c)
        probs = model.predict(np.stack([crop, *covered]))
        cls = int(probs[0].argmax())
        assert probs[0, cls] - probs[1, cls] >= probs[0, cls] - probs[2, cls] - 1e-3


def test_region_deltas_change_probabilities(photos: Path, model: ExpressionModel) -> None:
    boxes = face_regions(model.spec)
    assert list(boxes) == list(REGIONS)
    for x0, y0, x1, y1 in boxes.values():
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
    assert boxes["eyes"][3] <= boxes["nose"][3] <= boxes["mouth"][3]  # top to bottom
    crop = emolens.explain(photos / PORTRAIT)[0].crop
    deltas = region_deltas(model, crop)
    assert max(abs(v) for r in deltas.values() for v in r.values()) > 0.01
    for r in deltas.values():
        assert list(r) == list(FER7) and sum(r.values()) == pytest.approx(0, abs=2e-3)


def test_cli_writes_pngs_and_json(photos: Path, tmp_path: Path) -> None:
    import cv2

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out, js = tmp_path / "out", tmp_path / "explain.json"
    r = run_cli("explain", str(photos / GROUP), str(bad), "--out", str(out), "--json", str(js))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "broken.jpg" in r.stderr
    data = json.loads(js.read_text())
    assert [Path(d["path"]).name for d in data] == [GROUP, "broken.jpg"]
    good, broken = data
    assert broken["error"] and broken["faces"] == []
    assert good["error"] is None and len(good["faces"]) >= 5
    photo = cv2.imread(good["image"])
    assert photo.shape == cv2.imread(str(photos / GROUP)).shape
    for face in good["faces"]:
        assert set(face["regions"]) == set(REGIONS) and face["label"] in FER7
        png = cv2.imread(face["png"])
        assert png is not None and png.shape[0] > 48 and png.std() > 0


@pytest.mark.parametrize("args", [
    ["--out", "OUT", "--model", "nope"],
    ["--out", "OUT", "--patch", "4", "--stride", "8"],
    ["--out", "OUT", "--stride", "0"],
    [],  # --out missing
])
def test_cli_bad_options_exit_2(photos: Path, tmp_path: Path, args: list[str]) -> None:
    args = [a.replace("OUT", str(tmp_path / "o")) for a in args]
    r = run_cli("explain", str(photos / PORTRAIT), *args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr


def test_cli_no_images(tmp_path: Path) -> None:
    r = run_cli("explain", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no image files" in r.stderr


def test_deletion_salient_beats_random(fer_csv: Path, model: ExpressionModel) -> None:
    """Masking the 20% most salient pixels hurts the predicted class >= 2x more than random blobs."""
    from emolens.datasets import load_fer2013

    faces = load_fer2013(fer_csv, "PrivateTest").images[:200]
    drops = deletion_test(model, faces, 0.2)
    ratio = float(drops["salient"].mean() / drops["random"].mean())
    assert ratio >= 2, {k: float(v.mean()) for k, v in drops.items()}
