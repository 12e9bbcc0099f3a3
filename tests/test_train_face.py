"""Face training smoke test: a tiny run on an image folder writes every artefact and resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")


def make_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for k, name in enumerate(["happy", "sad", "angry"]):
        (root / name).mkdir(parents=True)
        for i in range(24):
            img = rng.integers(0, 60, (48, 48)).astype(np.uint8)
            img[8 + 8 * k: 16 + 8 * k] = 220  # class-dependent bright band: learnable
            cv2.imwrite(str(root / name / f"{i}.png"), img)


def test_train_face_cli_writes_artifacts_and_resumes(tmp_path: Path) -> None:
    make_folder(tmp_path / "data")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "emolens.cli", "train", "face", "--data", str(tmp_path / "data"), "--out", str(out),
           "--epochs", "2", "--width", "8", "--batch-size", "16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for name in ["curves.png", "confusion.png", "metrics.json", "face_expression.onnx", "last.pt", "best.pt"]:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 2
    assert {"accuracy", "macro_f1", "confusion"} <= set(metrics["PrivateTest"])
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "resumed" in proc.stdout
    from emolens.expression import ExpressionModel

    probs = ExpressionModel(out / "face_expression.onnx").predict(np.zeros((3, 48, 48), np.uint8))
    assert probs.shape == (3, 7)
