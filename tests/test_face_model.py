"""The shipped face models: PrivateTest floors, self-describing files, the registry and ``--model``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emolens.datasets import load_fer2013
from emolens.expression import META_KEY, ExpressionModel, available_models, resolve_model
from emolens.faces import Face
from emolens.labels import FER7

REPO = Path(__file__).resolve().parents[1]
#: PrivateTest accuracy floors of the shipped models (all 3,589 rows).
FLOORS = {"default": 0.73, "accurate": 0.74}


def _private_test(fer_csv: Path):  # noqa: ANN202
    test = load_fer2013(fer_csv, "PrivateTest")
    assert len(test) == 3589
    return test


def test_registry_has_both_models() -> None:
    models = available_models()
    assert list(models)[:2] == ["default", "accurate"]
    assert resolve_model(None) == models["default"]
    with pytest.raises(ValueError, match="default, accurate"):
        resolve_model("no-such-model")


@pytest.mark.parametrize("name", list(FLOORS))
def test_model_carries_its_metadata_and_card(name: str) -> None:
    path = available_models()[name]
    model = ExpressionModel(name)
    raw = model.session.get_modelmeta().custom_metadata_map[META_KEY]  # in the ONNX itself
    meta = json.loads(raw)
    assert meta["labels"] == list(FER7) == list(model.labels)
    assert (meta["frame"], meta["color"], len(meta["template"])) == (48, "gray", 5)
    assert model.crop == meta["input_size"]
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["labels"] == meta["labels"]
    assert path.stat().st_size < 16 * 1024 * 1024
    md = path.with_suffix(".md").read_text()
    assert "PrivateTest" in md and "faces/s" in md and "recall disgust" in md


@pytest.mark.parametrize("name", list(FLOORS))
def test_private_test_accuracy_floor(name: str, fer_csv: Path) -> None:
    test = _private_test(fer_csv)
    probs = ExpressionModel(name).predict(test.images)
    assert probs.shape == (3589, 7)
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    accuracy = float((probs.argmax(1) == test.labels).mean())
    card = json.loads(available_models()[name].with_suffix(".json").read_text())
    print(f"{name}: PrivateTest accuracy {accuracy:.4f}")
    assert accuracy == pytest.approx(card["PrivateTest"]["accuracy"], abs=0.002)  # the card tells the truth
    assert accuracy >= FLOORS[name]


def tiny_model(path: Path, labels: list[str], side: int = 32, frame: int = 40) -> Path:
    """A valid 8-class ONNX classifier (random linear layer) with its own emolens metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = len(labels)
    w = np.random.default_rng(0).normal(0, 1e-3, (side * side, k)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["faces"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "tiny", [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["n", 1, side, side])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", k])], [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"labels": labels, "frame": frame, "input_size": side, "color": "gray",
            "template": [[12, 15], [28, 15], [20, 23], [14, 30], [26, 30]]}
    model.metadata_props.add(key=META_KEY, value=json.dumps(meta))
    onnx.save(model, str(path))
    return path


EIGHT = [*FER7, "contempt"]


def test_adding_a_model_is_adding_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import emolens.expression as expression

    tiny_model(tmp_path / "face_eight.onnx", EIGHT)
    monkeypatch.setattr(expression, "MODELS_DIR", tmp_path)
    assert "eight" in expression.available_models()
    model = ExpressionModel("eight")
    assert model.labels == tuple(EIGHT) and model.spec.frame == 40
    image = np.full((120, 120, 3), 128, np.uint8)
    face = Face(np.array([30, 30, 60, 60], np.float32), 0.9,
                np.array([[45, 50], [75, 50], [60, 65], [48, 80], [72, 80]], np.float32))
    crops = model.align(image, [face])
    assert crops.shape == (1, 40, 40)
    probs = model.classify(image, [face])
    assert probs.shape == (1, 8) and np.isclose(probs.sum(), 1, atol=1e-5)


def test_bad_model_files_fail_clearly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a usable ONNX model"):
        ExpressionModel(junk)
    wrong = tiny_model(tmp_path / "wrong.onnx", EIGHT)
    meta_fixed = tmp_path / "wrong7.onnx"
    import onnx

    m = onnx.load(str(wrong))
    m.metadata_props[0].value = json.dumps(json.loads(m.metadata_props[0].value) | {"labels": list(FER7)})
    onnx.save(m, str(meta_fixed))
    with pytest.raises(ValueError, match="8 outputs but 7 labels"):
        ExpressionModel(meta_fixed)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emolens.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO)


@pytest.mark.parametrize("command", [
    ["image", "examples/astronaut.jpg"],
    ["video", "examples/astronaut_zoom.mp4", "--out", "{tmp}"],
    ["live", "--source", "examples/astronaut_zoom.mp4", "--max-frames", "2", "--no-window"],
    ["evaluate", "face", "--data", "{tmp}"],
    ["serve", "--port", "1"],
])
def test_every_command_takes_model(command: list[str], tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    proc = _cli(*args, "--model", "no-such-model")
    assert proc.returncode == 2, proc.stderr
    assert "unknown face model 'no-such-model'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_model_path_reaches_image_and_video(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "eight.onnx", EIGHT)
    out = tmp_path / "x.json"
    proc = _cli("image", "examples/astronaut.jpg", "--model", str(model), "--json", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    faces = json.loads(out.read_text())[0]["faces"]
    assert faces and set(faces[0]["probs"]) == set(EIGHT)
    proc = _cli("video", "examples/astronaut_zoom.mp4", "--out", str(tmp_path / "v"), "--model", str(model),
                "--modality", "face", "--max-frames", "6", "--no-annotate")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(next((tmp_path / "v").glob("*.summary.json")).read_text())
    assert summary["model"] == str(model)


def test_python_api_takes_model(tmp_path: Path) -> None:
    import emolens

    model = tiny_model(tmp_path / "eight.onnx", EIGHT)
    result = emolens.analyze_image(REPO / "examples" / "astronaut.jpg", model=model)
    assert set(result.faces[0].probs) == set(EIGHT)
    assert emolens.analyze_image(REPO / "examples" / "astronaut.jpg", model="default").faces[0].label in FER7


def test_evaluate_cli_scores_against_ferplus_labels(fer_csv: Path, ferplus_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    proc = _cli("evaluate", "face", "--data", str(fer_csv), "--ferplus", str(ferplus_csv), "--split", "PublicTest",
                "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    m = json.loads(out.read_text())
    assert m["labels_from"] == "FER+ majority vote" and set(m["skipped"]) == {"contempt", "no usable vote"}
    assert m["n"] == 3589 - sum(m["skipped"].values()) and "faces whose FER+ majority is contempt" in proc.stderr
    plain = _cli("evaluate", "face", "--data", str(fer_csv), "--split", "PublicTest")
    assert plain.stdout.splitlines()[0] != proc.stdout.splitlines()[0]
    bad = _cli("evaluate", "face", "--data", str(tmp_path), "--ferplus", str(ferplus_csv))
    assert bad.returncode == 2 and "FER+ labels go with a FER2013 csv" in bad.stderr


def test_evaluate_cli_json_shape(fer_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    proc = _cli("evaluate", "face", "--data", str(fer_csv), "--split", "PublicTest", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    m = json.loads(out.read_text())
    assert {"accuracy", "macro_f1", "per_class", "confusion", "labels"} <= set(m)
    assert m["labels"] == list(FER7)
    assert np.asarray(m["confusion"]).sum() == 3589
    assert out.with_suffix(".confusion.png").is_file()
    assert "confusion" in proc.stdout
