"""From checkpoints to shipped models: distillation, ensembles, int8 storage, model cards, the GPU recipe
(all on a tiny synthetic FER2013-format csv, on CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from emolens.expression import META_KEY, ExpressionModel, resolve_model  # noqa: E402
from emolens.labels import FER7  # noqa: E402


def fer_csv(path: Path, per_split: dict[str, int] | None = None) -> Path:
    """A FER2013-format csv whose classes are learnable (a class-dependent bright band)."""
    rng = np.random.default_rng(0)
    rows = ["emotion,pixels,Usage"]
    for usage, n in (per_split or {"Training": 140, "PublicTest": 35, "PrivateTest": 35}).items():
        for i in range(n):
            k = i % 7
            img = rng.integers(0, 60, (48, 48))
            img[4 + 6 * k: 10 + 6 * k] = 220
            rows.append(f"{k},{' '.join(map(str, img.reshape(-1)))},{usage}")
    path.write_text("\n".join(rows) + "\n")
    return path


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("export")
    csv = fer_csv(root / "fer.csv")
    runs = {}
    for seed in (0, 1):
        out = root / f"run{seed}"
        proc = _cli("-m", "emolens.cli", "train", "face", "--data", str(csv), "--out", str(out), "--epochs", "2",
                    "--width", "8", "--batch-size", "32", "--seed", str(seed))
        assert proc.returncode == 0, proc.stderr
        runs[seed] = out
    return {"root": root, "csv": csv, "runs": runs}


def test_distillation_from_teacher_logits(tiny: dict) -> None:
    teacher = np.random.default_rng(1).normal(0, 1, (2, 140, 7)).astype(np.float16)
    npz = tiny["root"] / "logits.npz"
    np.savez(npz, train=teacher)
    out = tiny["root"] / "student"
    proc = _cli("-m", "emolens.cli", "train", "face", "--data", str(tiny["csv"]), "--out", str(out), "--epochs", "1",
                "--width", "8", "--batch-size", "32", "--teacher-logits", str(npz), "--tta", "none")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["teacher_logits"] == str(npz) and metrics["tta"]["choice"] == "none"
    model = ExpressionModel(out / "face_expression.onnx")
    assert model.labels == FER7 and model.crop == 44
    np.savez(npz, train=teacher[:, :100])  # logits that do not match the data: a clear error
    proc = _cli("-m", "emolens.cli", "train", "face", "--data", str(tiny["csv"]), "--out", str(out / "bad"),
                "--epochs", "1", "--width", "8", "--teacher-logits", str(npz))
    assert proc.returncode == 2 and "expected (140, classes)" in proc.stderr


def test_ensemble_export_chooses_on_publictest_and_ships_a_card(tiny: dict, tmp_path: Path) -> None:
    from emolens.train.face_export import ship_face_model

    out = tmp_path / "ens"
    ckpts = [str(tiny["runs"][s] / "best.pt") for s in (0, 1)]
    proc = _cli("-m", "emolens.train.face_export", "ensemble", *ckpts, "--out", str(out), "--data", str(tiny["csv"]),
                "--tta", "none", "flip", "--weights", "int8")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    scores = metrics["tta"]["PublicTest_accuracy"]
    assert len(scores) == 3 * 2  # {best0, best1, both} x {none, flip}
    assert max(scores.values()) == pytest.approx(metrics["PublicTest"]["accuracy"], abs=1e-9)
    model = ExpressionModel(out / "face_expression.onnx")
    assert json.loads(model.session.get_modelmeta().custom_metadata_map[META_KEY])["labels"] == list(FER7)
    models = tmp_path / "models"
    models.mkdir()
    path = ship_face_model(out, "tiny", models)
    from emolens.explanations import explain_block, gradcam_maps

    shipped = ExpressionModel(path)  # shipping adds the Grad-CAM / activation outputs
    assert explain_block(shipped) is not None
    faces = np.random.default_rng(0).integers(0, 255, (2, 48, 48), np.uint8)
    assert gradcam_maps(shipped, faces)[0].shape == (2, 48, 48)
    assert np.array_equal(shipped.predict(faces), ExpressionModel(out / "face_expression.onnx").predict(faces))
    card = json.loads((models / "face_tiny.json").read_text())
    assert path.name == "face_tiny.onnx" and card["faces_per_second"]["value"] > 0
    assert {"accuracy", "macro_f1", "per_class"} <= set(card["PrivateTest"])
    md = (models / "face_tiny.md").read_text()
    assert "recall disgust" in md and "face_export ensemble" in md


def test_int8_weight_storage_is_small_and_faithful(tiny: dict, tmp_path: Path) -> None:
    from emolens.train.face_export import export_onnx, load_checkpoint

    net = load_checkpoint(tiny["runs"][0] / "best.pt", 7)
    faces = np.random.default_rng(0).integers(0, 255, (16, 48, 48)).astype(np.uint8)
    probs = {}
    for w in ("fp32", "fp16", "int8"):
        export_onnx(net, tmp_path / f"{w}.onnx", tta="flip", labels=FER7, weights=w)
        probs[w] = ExpressionModel(tmp_path / f"{w}.onnx").predict(faces)
    size = {w: (tmp_path / f"{w}.onnx").stat().st_size for w in probs}
    assert size["int8"] < 0.6 * size["fp16"] < 0.6 * size["fp32"]
    assert np.abs(probs["fp16"] - probs["fp32"]).max() < 1e-2
    assert np.abs(probs["int8"] - probs["fp32"]).max() < 5e-2


def test_int4_storage_halves_int8_again_and_folding_gives_the_weights_back(tiny: dict, tmp_path: Path) -> None:
    import shutil

    from emolens.train.face_explain_export import add_explain_outputs
    from emolens.train.face_export import export_onnx, load_checkpoint
    from emolens.train.onnx_weights import fold_weight_storage, store_fp16, store_int8

    net = load_checkpoint(tiny["runs"][0] / "best.pt", 7)
    faces = np.random.default_rng(1).integers(0, 255, (16, 48, 48)).astype(np.uint8)
    for w in ("fp32", "int8"):
        export_onnx(net, tmp_path / f"{w}.onnx", tta="flip", labels=FER7, weights=w)
    add_explain_outputs(tmp_path / "int8.onnx")  # as shipped
    fold_weight_storage(tmp_path / "int8.onnx", tmp_path / "folded.onnx")
    for bits, int4_min in (("again8", 0), ("int4", 4096)):
        shutil.copy(tmp_path / "folded.onnx", tmp_path / f"{bits}.onnx")
        store_int8(tmp_path / f"{bits}.onnx", int4_min=int4_min)
        store_fp16(tmp_path / f"{bits}.onnx")
    probs = {w: ExpressionModel(tmp_path / f"{w}.onnx").predict(faces) for w in ("fp32", "int8", "again8", "int4")}
    size = {w: (tmp_path / f"{w}.onnx").stat().st_size for w in probs}
    # int8 weights folded to float and stored as int8 again: the same numbers (scales from the same maxima)
    assert np.array_equal(probs["again8"], probs["int8"])
    assert size["int4"] < 0.75 * size["again8"]  # the tiny net's big tensors in 4 bits
    assert np.abs(probs["int4"] - probs["fp32"]).max() < 0.15
    # the packed nibbles unpack to exactly the per-channel 4-bit values of the weights
    import onnx
    from onnx import numpy_helper

    fold_weight_storage(tmp_path / "int4.onnx", tmp_path / "unpacked.onnx")
    before, after = ({i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / f)).graph.initializer}
                     for f in ("folded.onnx", "unpacked.onnx"))
    four = [n for n in before if before[n].ndim >= 2 and before[n].size >= 4096]
    assert four
    for n in four:
        w = before[n].reshape(len(before[n]), -1)
        scale = (np.abs(w).max(1, keepdims=True) / 7).astype(np.float16).astype(np.float32)
        want = np.clip(np.round(w / (np.abs(w).max(1, keepdims=True) / 7)), -7, 7) * scale
        assert np.allclose(after[n].reshape(w.shape), want, rtol=0, atol=1e-6), n


def test_the_gpu_pack_stores_faces_losslessly_and_smaller_than_lzma_alone() -> None:
    import lzma

    from emolens.train.face_gpu import med_decode, med_residuals

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    smooth = (128 + 60 * np.sin(xx[None] / rng.uniform(3, 9, (64, 1, 1)) + yy[None] / 7)
              + rng.normal(0, 3, (64, 48, 48)))  # face-like: smooth shading plus sensor noise
    faces = np.clip(smooth, 0, 255).astype(np.uint8)
    faces[0] = rng.integers(0, 256, (48, 48))  # and the extremes: noise, black, white, edges
    faces[1], faces[2], faces[3] = 0, 255, np.where(xx > 20, 255, 0)
    res = med_residuals(faces)
    assert np.array_equal(med_decode(res), faces)
    assert len(lzma.compress(res.tobytes())) < 0.9 * len(lzma.compress(faces.tobytes()))


def test_gpu_recipe_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    csv = fer_csv(tmp_path / "fer.csv")
    pack = tmp_path / "fer.npz"
    proc = _cli("-m", "emolens.train.face_gpu", "pack", "--data", str(csv), "--out", str(pack))
    assert proc.returncode == 0, proc.stderr
    with np.load(pack) as z:
        assert set(z["split"].tolist()) == {0, 1}  # Training and PublicTest only: PrivateTest is never packed
    out = tmp_path / "out"
    proc = _cli("-m", "emolens.train.face_gpu", "run", "--pack", str(pack), "--out", str(out), "--deadline", "40",
                "--margin", "8", "--teachers", "2", "--teacher-width", "8", "--student-widths", "8", "--device", "cpu",
                timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["teachers"]) == {"teacher_0", "teacher_1"} and summary["students"]
    with np.load(out / "logits.npz") as z:
        assert z["train"].shape == (2, 140, 7)


def test_a_mirrored_view_averages_the_logits_of_face_and_mirror(tmp_path: Path) -> None:
    """``add_mirror_view``: the new graph's probabilities are the softmax of the mean logits of the
    face and its left-right mirror; a graph that already has the view is refused (the shipped default)."""
    import onnxruntime as ort
    from test_face_model import tiny_model

    from emolens.train.face_explain_export import remove_explain_outputs
    from emolens.train.onnx_mirror import add_mirror_view

    one = tiny_model(tmp_path / "one.onnx", list(FER7))
    add_mirror_view(one, tmp_path / "two.onnx")
    x = np.random.default_rng(0).integers(0, 255, (5, 1, 32, 32)).astype(np.float32)
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (one, tmp_path / "two.onnx")]
    p1, p2 = (s.run(None, {"faces": x})[0] for s in run)
    mirrored = run[0].run(None, {"faces": x[..., ::-1].copy()})[0]
    assert not np.allclose(p1, mirrored, atol=1e-6)
    mean = np.exp((np.log(p1) + np.log(mirrored)) / 2)
    assert np.allclose(p2, mean / mean.sum(1, keepdims=True), atol=1e-6)
    remove_explain_outputs(resolve_model("default"), tmp_path / "default.onnx")
    with pytest.raises(ValueError, match="already has a mirrored"):
        add_mirror_view(tmp_path / "default.onnx", tmp_path / "again.onnx")
