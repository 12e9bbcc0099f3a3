"""Photo analysis end to end on the real photos in ../shared/media/photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import emolens
from emolens.faces import FER_TEMPLATE, Face, align_face
from emolens.labels import FER7
from emolens.media import MediaError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "astronaut.jpg"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emolens.cli", *args], capture_output=True, text=True, timeout=300)


def check_face_dict(face: dict) -> None:
    assert set(face) == {"box", "score", "label", "probs"}
    assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
    assert 0 < face["score"] <= 1
    assert list(face["probs"]) == list(FER7)
    assert sum(face["probs"].values()) == pytest.approx(1, abs=1e-3)
    assert face["label"] == max(face["probs"], key=face["probs"].get)


def test_sample_in_repo_has_one_face() -> None:
    result = emolens.analyze_image(SAMPLE)
    assert len(result.faces) == 1
    check_face_dict(result.faces[0].to_dict())


@pytest.mark.parametrize(
    ("name", "expected"),
    [("group_friends_6faces.jpg", 6), ("group_selfie_7faces.jpg", 6), ("group_family_7faces.jpg", 7)],
)
def test_group_photos_find_the_faces(media: Path, name: str, expected: int) -> None:
    # selfie: 3 of its 7 faces are cut at the image edges; we require at least 6 of them
    result = emolens.analyze_image(media / "photos" / name)
    assert expected <= len(result.faces) <= expected + 1


def test_single_portraits_one_face_each(media: Path) -> None:
    for name in ["portrait_frontal_obama.jpg", "grayscale_portrait.jpg", "large_4352x2903.jpg", "portrait_happy.png"]:
        assert len(emolens.analyze_image(media / "photos" / name).faces) == 1, name


def test_no_face_photo_gives_empty_list(media: Path) -> None:
    assert emolens.analyze_image(media / "photos" / "no_face_landscape.jpg").faces == []


def test_array_input_gray_and_bgr() -> None:
    import cv2

    bgr = cv2.imread(str(SAMPLE))
    assert len(emolens.analyze_image(bgr).faces) == 1
    assert len(emolens.analyze_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)).faces) == 1


def test_bad_files_raise_media_error(media: Path) -> None:
    for name in ["corrupt.jpg", "zero_len.png", "text_as_video.mp4"]:
        with pytest.raises(MediaError):
            emolens.analyze_image(media / "bad" / name)
    with pytest.raises(MediaError, match="not found"):
        emolens.analyze_image(media / "photos" / "missing.jpg")


def test_alignment_maps_landmarks_to_template() -> None:
    import cv2

    gray = np.zeros((200, 200), np.uint8)
    marks = FER_TEMPLATE * 3 + 20  # a face 3x the FER size, shifted
    for x, y in marks:
        cv2.circle(gray, (int(x), int(y)), 3, 255, -1)
    crop = align_face(gray, Face(np.array([20, 20, 144, 144], np.float32), 0.9, marks.astype(np.float32)))
    assert crop.shape == (48, 48)
    for x, y in FER_TEMPLATE:  # each landmark lands on its template position
        assert crop[int(round(y)), int(round(x))] > 100


def test_cli_image_json_and_errors(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "res.json"
    ann = tmp_path / "ann"
    bad = media / "bad"
    proc = run_cli("image", str(media / "photos"), str(bad / "corrupt.jpg"), str(bad / "zero_len.png"),
                   "--json", str(out), "--save-annotated", str(ann))
    assert proc.returncode == 1, proc.stderr  # two inputs failed; the others were all analysed
    assert "Traceback" not in proc.stderr
    data = json.loads(out.read_text())
    assert len(data) == 15
    by_name = {Path(d["path"]).name: d for d in data}
    assert by_name["corrupt.jpg"]["error"] and by_name["corrupt.jpg"]["faces"] == []
    assert "empty" in by_name["zero_len.png"]["error"]
    no_face = by_name["no_face_landscape.jpg"]
    assert no_face == {"path": no_face["path"], "faces": [], "error": None}
    assert len(by_name["group_friends_6faces.jpg"]["faces"]) == 6
    for d in data:
        for face in d["faces"]:
            check_face_dict(face)
    assert len(list(ann.glob("*.annotated.jpg"))) == 13
    assert "group_friends_6faces.jpg" in proc.stdout


def test_cli_all_inputs_bad_exits_nonzero(media: Path) -> None:
    proc = run_cli("image", str(media / "bad" / "corrupt.jpg"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    proc = run_cli("image", str(media / "no_such_dir"))
    assert proc.returncode != 0 and "file not found" in proc.stdout
