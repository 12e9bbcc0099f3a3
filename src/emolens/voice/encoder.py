"""A pretrained speaker encoder as a feature extractor for speech emotion (onnxruntime only).

``models/speech_encoder.onnx`` is the GE2E speaker encoder of Resemblyzer (3-layer LSTM over 40
mel bands, 256-d output; trained for speaker verification on LibriSpeech, VoxCeleb 1 and 2, weights
shipped inside its Apache-2.0 wheel), exported once by :mod:`emolens.train.speech_encoder`. Nothing
is downloaded. :meth:`SpeechEncoder.embed` gives two 256-d unit vectors per utterance, the whole
utterance and the mean of 1.6 s partial windows (50 % overlap), which the speech-emotion model reads
next to the prosodic and spectral functionals, normalised per speaker like them;
:meth:`SpeechEncoder.states` the mean and standard deviation over the utterance of the top LSTM
layer's output at every frame (how the voice moves, not only where it ends up).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emolens.voice.features import FeatureParams, mel_power

DEFAULT_ENCODER = Path(__file__).resolve().parent.parent / "models" / "speech_encoder.onnx"
#: The encoder's mel front end: 25 ms windows, 10 ms hop, 40 mel bands 0-8 kHz, linear power.
ENCODER_PARAMS = FeatureParams(n_fft=400, win_length=400, hop_length=160, n_mels=40, fmin=0.0, fmax=8000.0)
#: Frames per partial window (1.6 s) and the hop between windows.
PARTIAL_FRAMES, PARTIAL_HOP = 160, 80
#: Loudness every utterance is scaled to before the mel front end (dBFS).
TARGET_DBFS = -30.0
EMBED_DIM = 512
STATES_DIM = 512


def encoder_feature_names() -> list[str]:
    """Names of :meth:`SpeechEncoder.embed`'s 512 values."""
    return [f"ge2e_utt_{i}" for i in range(256)] + [f"ge2e_win_{i}" for i in range(256)]


def state_feature_names() -> list[str]:
    """Names of :meth:`SpeechEncoder.states`' 512 values."""
    return [f"ge2e_state_mean_{i}" for i in range(256)] + [f"ge2e_state_std_{i}" for i in range(256)]


class SpeechEncoder:
    """The exported GE2E encoder: input ``mel`` float32 ``(N, T, 40)``, output ``embedding`` ``(N, 256)``."""

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = None,
                 device: str = "cpu") -> None:
        from emolens.device import inference_session

        self.path = Path(path) if path else DEFAULT_ENCODER
        if not self.path.is_file():
            raise FileNotFoundError(f"speech encoder not found: {self.path}")
        self.session = inference_session(self.path, threads, device, inter_op_threads=1 if threads else None)

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """Loudness-normalised mel power ``(T, 40)`` of 16 kHz mono audio."""
        x = np.asarray(audio, np.float32).reshape(-1)
        rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
        if rms > 1e-6:
            x = x * np.float32(10 ** (TARGET_DBFS / 20) / rms)
        return mel_power(x, ENCODER_PARAMS)

    def _run(self, mels: np.ndarray) -> np.ndarray:
        return self.session.run(["embedding"], {"mel": np.ascontiguousarray(mels, np.float32)})[0]

    def _need_states(self) -> None:
        if "states" not in {o.name for o in self.session.get_outputs()}:
            raise ValueError(f"{self.path} has no 'states' output: export it again with "
                             "python -m emolens.train.speech_encoder")

    def states(self, audio: np.ndarray) -> np.ndarray:
        """``float32 (512,)``: mean and standard deviation over the whole utterance of the top LSTM
        layer's output per frame (the encoder's ``states`` output)."""
        self._need_states()
        mel = np.ascontiguousarray(self.mel(audio)[None], np.float32)
        return self.session.run(["states"], {"mel": mel})[0][0].astype(np.float32)

    def embed(self, audio: np.ndarray, states: bool = False) -> np.ndarray:
        """``float32 (512,)``: the whole utterance's embedding, then the mean of its partial windows'
        (re-normalised to unit length; one window when the utterance is shorter than 1.6 s);
        ``states``: then :meth:`states` too ``(1024,)``, from the same pass over the utterance."""
        mel = self.mel(audio)
        if states:
            self._need_states()
        outs = self.session.run(["embedding", "states"] if states else ["embedding"],
                                {"mel": np.ascontiguousarray(mel[None], np.float32)})
        whole, extra = outs[0][0], [o[0].astype(np.float32) for o in outs[1:]]
        n = mel.shape[0]
        if n >= PARTIAL_FRAMES:
            starts = range(0, n - PARTIAL_FRAMES + 1, PARTIAL_HOP)
            parts = self._run(np.stack([mel[s:s + PARTIAL_FRAMES] for s in starts]))
            win = parts.mean(0)
            win = win / max(float(np.linalg.norm(win)), 1e-9)
        else:
            win = whole
        return np.concatenate([whole, win, *extra]).astype(np.float32)


_ENCODERS: dict[tuple[str, str], SpeechEncoder] = {}


def speech_encoder(path: str | os.PathLike | None = None, device: str = "cpu") -> SpeechEncoder:
    """A shared :class:`SpeechEncoder` per file and device (loaded once)."""
    key = (str(Path(path) if path else DEFAULT_ENCODER), device)
    if key not in _ENCODERS:
        _ENCODERS[key] = SpeechEncoder(path, device=device)
    return _ENCODERS[key]
