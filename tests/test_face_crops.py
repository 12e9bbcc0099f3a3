"""Labelled image folders: faces found in full photos, crops left as they are (evaluate face --framing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from emolens.datasets import load_fer2013, load_image_folder
from emolens.expression import ExpressionModel
from emolens.face_crops import FaceCropper
from emolens.labels import FER7

PORTRAITS = {"portrait_angry.png": "angry", "portrait_happy.png": "happy", "portrait_sad.png": "sad",
             "portrait_frontal_smile.jpg": "happy"}


@pytest.fixture(scope="module")
def net() -> ExpressionModel:
    return ExpressionModel("default")


def _portraits(media: Path, root: Path) -> Path:
    for name, label in PORTRAITS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / label / name), cv2.imread(str(media / "photos" / name)))
    return root


def test_full_photos_are_scored_like_emolens_image(media: Path, tmp_path: Path, net: ExpressionModel) -> None:
    """With ``detect`` every portrait's crop is the one ``analyze_image`` classifies (same label,
    same probabilities); ``crop`` squeezes the whole photo instead and gets other answers."""
    import emolens

    root = _portraits(media, tmp_path / "data")
    data = load_image_folder(root, net.spec.frame, FaceCropper("detect", net.spec.frame, net.spec.template))
    assert set(data.framing) == {"aligned"}
    probs = net.predict(data.images)
    for path, p in zip(data.paths, probs):
        faces = emolens.analyze_image(path).faces
        largest = max(faces, key=lambda f: f.face.box[2] * f.face.box[3])
        assert np.allclose([largest.probs[c] for c in FER7], p, atol=1e-5), path
    squeezed = net.predict(load_image_folder(root, framing="crop").images)
    assert not np.allclose(squeezed, probs, atol=0.05)


def test_faces_in_a_larger_frame_are_found(fer_csv: Path, tmp_path: Path, net: ExpressionModel) -> None:
    """FER2013 faces placed in a 640x480 frame: ``auto`` finds them and scores near the crops'
    own accuracy; ``crop`` (the whole frame as the face) falls to near chance. On the crops
    themselves ``auto`` leaves almost every image as it is."""
    test = load_fer2013(fer_csv, "PrivateTest")
    pick = np.concatenate([np.flatnonzero(test.labels == c)[:20] for c in range(7)])
    rng = np.random.default_rng(1)
    for i in pick:
        for kind in ("crops", "frames"):
            (tmp_path / kind / FER7[test.labels[i]]).mkdir(parents=True, exist_ok=True)
        img = test.images[i]
        cv2.imwrite(str(tmp_path / "crops" / FER7[test.labels[i]] / f"{i}.png"), img)
        face = cv2.resize(img, (192, 192), interpolation=cv2.INTER_CUBIC)
        left, top = int(rng.integers(0, 448)), int(rng.integers(0, 288))
        frame = cv2.copyMakeBorder(face, top, 288 - top, left, 448 - left, cv2.BORDER_REPLICATE)
        cv2.imwrite(str(tmp_path / "frames" / FER7[test.labels[i]] / f"{i}.png"), frame)

    def accuracy(kind: str, framing: str) -> tuple[float, dict[str, int]]:
        data = load_image_folder(tmp_path / kind, framing=FaceCropper(framing, net.spec.frame, net.spec.template))
        hows, counts = np.unique(data.framing, return_counts=True)
        return float((net.predict(data.images).argmax(1) == data.labels).mean()), dict(zip(hows, counts))

    crops_crop, _ = accuracy("crops", "crop")
    crops_auto, how = accuracy("crops", "auto")
    assert how.get("crop", 0) >= 0.85 * len(pick) and abs(crops_auto - crops_crop) <= 0.04
    frames_auto, how = accuracy("frames", "auto")
    frames_crop, _ = accuracy("frames", "crop")
    assert how.get("aligned", 0) >= 0.85 * len(pick)
    assert frames_auto >= 0.55, (frames_auto, crops_crop)
    assert frames_crop <= 0.35, frames_crop


def test_evaluate_cli_reports_framing_and_skipped_classes(media: Path, tmp_path: Path) -> None:
    root = _portraits(media, tmp_path / "data")
    (root / "happy" / "broken.jpg").write_bytes(b"not an image")  # left out and named, the rest scored
    (root / "contempt").mkdir()
    cv2.imwrite(str(root / "contempt" / "x.png"), cv2.imread(str(media / "photos" / "portrait_frontal_obama.jpg")))
    out = tmp_path / "m.json"
    proc = subprocess.run([sys.executable, "-m", "emolens.cli", "evaluate", "face", "--data", str(root),
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "skipped class folder 'contempt' (1 images)" in proc.stderr
    assert "faces (auto): aligned" in proc.stdout and "left out 1 unreadable image(s)" in proc.stderr
    report = json.loads(out.read_text())
    assert report["n"] == len(PORTRAITS) and report["skipped"] == {"contempt": 1}
    assert sum(g["n"] for g in report["framing"]["groups"].values()) == len(PORTRAITS)
    assert {Path(i["path"]).name for i in report["images"]} == set(PORTRAITS)
    assert [Path(p).name for p in report["unreadable"]] == ["broken.jpg"]
    assert all(i["predicted"] in FER7 and len(i["probs"]) == 7 for i in report["images"])


def test_the_detector_finds_faces_in_small_crops(fer_csv: Path) -> None:
    """48x48 FER2013 faces are upscaled for detection (YuNet misses about a quarter at 48 px) and
    the boxes come back in the crop's own pixels."""
    from emolens.faces import make_detector

    images = load_fer2013(fer_csv, "PrivateTest").images[:100]
    detector = make_detector("yunet")
    found = [detector.detect(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)) for img in images]
    assert sum(bool(f) for f in found) >= 92
    boxes = np.array([max(f, key=lambda x: x.box[2] * x.box[3]).box for f in found if f])
    assert (boxes[:, 3] > 24).mean() > 0.9 and (boxes[:, 0] + boxes[:, 2] <= 48.5).all()
    native = make_detector("yunet", min_side=0)
    assert sum(bool(native.detect(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))) for img in images) < 85


def test_evaluate_faces_api_matches_the_cli_report(media: Path, tmp_path: Path) -> None:
    import emolens

    root = _portraits(media, tmp_path / "data")
    report = emolens.evaluate_faces(root, framing="detect")
    assert report["n"] == len(PORTRAITS) and report["framing"]["groups"]["aligned"]["n"] == len(PORTRAITS)
    assert report["accuracy"] == np.mean([i["true"] == i["predicted"] for i in report["images"]])
    with pytest.raises(FileNotFoundError):
        emolens.evaluate_faces(tmp_path / "missing")
    split = tmp_path / "split"
    for part in ("train", "test"):
        _portraits(media, split / part)
    assert emolens.evaluate_faces(split, split="PrivateTest", framing="crop")["n"] == len(PORTRAITS)
    with pytest.raises(ValueError, match="unknown split 'Nope'"):
        emolens.evaluate_faces(split, split="Nope")
