"""Where models run: ``cpu``, ``cuda`` or ``auto``, as onnxruntime execution providers.

Every ONNX model of emolens (face expression, speech emotion, voice activity) is opened through
:func:`inference_session`. ``cuda`` needs the ``onnxruntime-gpu`` package and a CUDA GPU (its
``CUDAExecutionProvider``); ``auto`` takes CUDA when onnxruntime offers it and CPU otherwise.
The face detector (YuNet) always runs on the CPU.
"""

from __future__ import annotations

import os
from typing import Any, Literal, get_args

Device = Literal["cpu", "cuda", "auto"]
DEVICES: tuple[str, ...] = get_args(Device)
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class DeviceError(ValueError):
    """The requested device cannot be used here (unknown name, or no CUDA provider/GPU)."""


def available_providers() -> list[str]:
    """onnxruntime's execution providers in this installation."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _no_cuda(providers: list[str], why: str = "") -> DeviceError:
    return DeviceError(f"--device cuda needs onnxruntime-gpu and a CUDA GPU; available providers: "
                       f"{', '.join(providers) or 'none'}{why}")


def check_device(device: str) -> str:
    """``device`` if it is one of :data:`DEVICES`, else :class:`DeviceError`."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r} (cpu, cuda, auto)")
    return device


def providers_for(device: str = "cpu") -> list[str]:
    """onnxruntime providers for a device: ``cuda`` -> CUDA (then CPU for the operators CUDA
    lacks), raising :class:`DeviceError` when this onnxruntime has no CUDA provider; ``auto`` ->
    CUDA where available, else CPU; ``cpu`` -> CPU."""
    check_device(device)
    if device == "cpu":
        return [CPU]
    available = available_providers()
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise _no_cuda(available)
    return [CPU]


def resolve_device(device: str = "cpu") -> str:
    """The device ``device`` stands for here: ``cpu`` or ``cuda`` (``auto`` resolved)."""
    return "cuda" if CUDA in providers_for(device) else "cpu"


def inference_session(path: str | os.PathLike, threads: int | None = None, device: str = "cpu",
                      inter_op_threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path`` on ``device`` (``threads``: intra-op
    threads, None: onnxruntime's default). With ``cuda``, a session that onnxruntime could not put
    on the GPU (no driver, no device) raises :class:`DeviceError` instead of quietly running on
    the CPU."""
    import onnxruntime as ort

    providers = providers_for(device)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if inter_op_threads:
        opts.inter_op_num_threads = inter_op_threads
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    if device == "cuda" and CUDA not in session.get_providers():
        raise _no_cuda(available_providers(), " (onnxruntime could not start its CUDA provider: "
                                              "is a GPU and its driver present?)")
    return session
