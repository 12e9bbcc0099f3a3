"""``--device cpu|cuda|auto`` / ``device=``: onnxruntime providers, clear errors where CUDA is missing,
and the models on a GPU where one exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import emolens
from emolens.device import CPU, CUDA, DeviceError, available_providers, providers_for, resolve_device
from emolens.expression import ExpressionModel

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "examples" / "astronaut_zoom.mp4"
HAS_CUDA = CUDA in available_providers()
NO_CUDA_HERE = f"this onnxruntime offers CUDA ({', '.join(available_providers())}): the no-GPU error cannot happen"
NEEDS_CUDA = f"needs onnxruntime-gpu and a CUDA GPU (onnxruntime here offers: {', '.join(available_providers())})"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emolens.cli", *args], capture_output=True, text=True, timeout=300)


def test_providers() -> None:
    assert providers_for("cpu") == [CPU]
    assert providers_for("auto") == ([CUDA, CPU] if HAS_CUDA else [CPU])
    assert resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        providers_for("gpu")
    with pytest.raises(ValueError, match="unknown device"):
        emolens.analyze_video(ASTRONAUT, device="tpu")


@pytest.mark.skipif(HAS_CUDA, reason=NO_CUDA_HERE)
def test_cuda_without_a_gpu_is_a_clear_error(media: Path) -> None:
    message = "--device cuda needs onnxruntime-gpu and a CUDA GPU; available providers: "
    with pytest.raises(DeviceError, match="needs onnxruntime-gpu and a CUDA GPU; available providers: .*CPU"):
        ExpressionModel(device="cuda")
    with pytest.raises(DeviceError):
        emolens.analyze_image(media / "photos" / "portrait_happy.png", device="cuda")
    with pytest.raises(DeviceError):
        emolens.analyze_audio(media / "labeled_av" / "1002_DFA_HAP_XX.mp3", device="cuda")
    for args in (["image", str(media / "photos" / "portrait_happy.png")],
                 ["video", str(ASTRONAUT), "--out", "/nonexistent/never-written"],
                 ["audio", str(media / "labeled_av" / "1002_DFA_HAP_XX.mp3")],
                 ["serve", "--port", "0"]):
        proc = cli(*args, "--device", "cuda")
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_auto_runs_here(media: Path, tmp_path: Path) -> None:
    proc = cli("image", str(media / "photos" / "portrait_happy.png"), "--device", "auto", "-q")
    assert proc.returncode == 0, proc.stderr
    result = emolens.analyze_video(ASTRONAUT, max_frames=5, device="auto")
    assert result.summary["options"]["device"] == "auto" and len(result.frames) > 0


@pytest.mark.skipif(not HAS_CUDA, reason=NEEDS_CUDA)
def test_models_run_on_the_gpu(media: Path) -> None:
    import cv2

    gpu, cpu = ExpressionModel(device="cuda"), ExpressionModel(device="cpu")
    assert gpu.session.get_providers()[0] == CUDA and cpu.session.get_providers() == [CPU]
    image = cv2.imread(str(media / "photos" / "group_friends_6faces.jpg"))
    faces = emolens.FaceAnalyzer().detector.detect(image)
    crops = cpu.align(image, faces)
    assert np.allclose(gpu.predict(crops), cpu.predict(crops), atol=2e-3)
    on_gpu = emolens.analyze_video(ASTRONAUT, max_frames=10, device="cuda")
    on_cpu = emolens.analyze_video(ASTRONAUT, max_frames=10)
    assert list(on_gpu.frames["label"]) == list(on_cpu.frames["label"])
    speech = emolens.analyze_audio(media / "labeled_av" / "1002_DFA_HAP_XX.mp3", device="cuda")
    assert speech.error is None and speech.label == emolens.analyze_audio(
        media / "labeled_av" / "1002_DFA_HAP_XX.mp3").label
