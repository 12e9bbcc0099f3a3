"""Analysis of recordings: VAD segments -> emotion per segment -> one timeline per file.

Pipeline for one file (``emolens audio``):

1. decode to 16 kHz mono float32 (:func:`~emolens.media.load_audio`);
2. find speech with a voice-activity detector (:mod:`emolens.voice.vad`), merge it into segments;
3. classify each segment with the speech-emotion model (:mod:`emolens.voice.model`);
4. per segment: its probabilities; overall: the duration-weighted mean of the segments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emolens.datasets import AUDIO_SUFFIXES, VIDEO_SUFFIXES
from emolens.labels import probs_dict
from emolens.media import AUDIO_RATE, MediaError, load_audio
from emolens.voice.features import log_mel, trim_bounds
from emolens.voice.model import SpeechEmotionModel
from emolens.voice.speakers import SpeakerNormalizer
from emolens.voice.vad import make_vad, speech_regions, split_region


@dataclass
class AudioSegment:
    """One stretch of speech on the timeline with its emotion probabilities."""

    start_s: float
    end_s: float
    label: str
    probs: dict[str, float]
    #: raw (un-normalised) functionals of the segment, for re-scoring per tracked person
    features: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: the ensemble partner's (log-mel CNN) probabilities for the segment, if the model has one
    partner_probs: np.ndarray | None = field(default=None, repr=False, compare=False)

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
    #: speech envelope (RMS, dB) every ``envelope_hop_s`` seconds, for audio-visual speaker attribution
    envelope: np.ndarray | None = field(default=None, repr=False)
    envelope_hop_s: float = 0.01

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


def envelope(audio: np.ndarray, hop_s: float = 0.01) -> np.ndarray:
    """RMS level in dB of every ``hop_s`` of 16 kHz audio (floored at -100 dB)."""
    hop = int(round(hop_s * AUDIO_RATE))
    n = len(audio) // hop
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    frames = np.asarray(audio[: n * hop], dtype=np.float64).reshape(n, hop)
    return (10 * np.log10(np.maximum((frames**2).mean(1), 1e-10))).astype(np.float32)


class AudioAnalyzer:
    """VAD + segmentation + speech-emotion model, loaded once and reused for many files.

    ``vad``: ``auto`` (Silero if installed, else energy), ``silero``, ``energy`` or ``none``
    (the whole recording, silence trimmed, is one segment). ``device``: where the emotion model
    runs (``cpu``, ``cuda``, ``auto``); the VAD always runs on the CPU.
    """

    def __init__(self, model: str | os.PathLike | SpeechEmotionModel | None = None, vad: str = "auto",
                 threads: int | None = None, threshold: float = 0.5, min_speech_s: float = 0.25,
                 min_silence_s: float = 0.3, max_segment_s: float = 4.0, device: str = "cpu") -> None:
        self.model = (model if isinstance(model, SpeechEmotionModel)
                      else SpeechEmotionModel(model, threads, device))
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

    def analyze(self, audio: np.ndarray, path: str | None = None, speaker: object = None) -> AudioResult:
        """Analyse 16 kHz mono float audio. ``speaker``: whose running feature statistics the
        segments are normalised with (default: the file, i.e. one speaker per recording)."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        result = AudioResult(path, duration_s=len(audio) / AUDIO_RATE,
                             vad=self.vad.name if self.vad is not None else "none", envelope=envelope(audio))
        spans = self.segments(audio)
        if not spans:
            return result
        clips = [audio[int(a * AUDIO_RATE): int(b * AUDIO_RATE)] for a, b in spans]
        key = speaker if speaker is not None else (path if path is not None else id(audio))
        raw: list[np.ndarray | None] = [None] * len(clips)
        partner: list[np.ndarray | None] = [None] * len(clips)
        if self.model.kind == "functionals":
            features = np.stack([self.model.raw_features(c) for c in clips])
            raw = list(features)
            if self.model.normalizer is not None:
                self.model.observe(features, self.model.normalizer, key)
            probs = self.model.predict_features(features, key, update=False)
            if self.model.partner is not None:
                partner_probs = self.model.partner.predict_segments(clips)
                partner = list(partner_probs)
                probs = self.model.combine(probs, partner_probs)
        else:
            probs = self.model.predict_segments(clips, key)
        labels = self.model.labels
        for (a, b), p, f, q in zip(spans, probs, raw, partner, strict=True):
            result.segments.append(AudioSegment(a, b, labels[int(p.argmax())], probs_dict(p, labels), f, q))
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


STATS_MODES = ("full", "online", "none")


def _normalized_probs(model: SpeechEmotionModel, norm: SpeakerNormalizer, raw: np.ndarray, speaker: object,
                      partner: np.ndarray | None) -> np.ndarray:
    return model.combine(model.predict_normalized(raw, norm, speaker), partner)


def score_files(model: SpeechEmotionModel, paths: list[str], speakers: list[object], stats: str = "full",
                progress: bool = False) -> tuple[np.ndarray, list[str]]:
    """Probabilities ``(N, classes)`` of whole files, one utterance each (NaN rows where a file
    cannot be decoded, with its message in the returned list).

    ``stats`` (functionals models; the CNN needs none): how each file's features are normalised.
    ``full``: with its speaker's statistics over *all* of the speaker's files (no labels used;
    what the evaluation protocols do); ``online``: with the statistics of the speaker's files so
    far, in the given order (a stream; a folder sorted by emotion biases it); ``none``: with the
    training statistics only, as if every file were a new voice.
    """
    if stats not in STATS_MODES:
        raise ValueError(f"unknown statistics mode {stats!r} ({', '.join(STATS_MODES)})")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="file", desc="scoring", leave=False)
    probs = np.full((len(paths), len(model.labels)), np.nan, dtype=np.float32)
    errors: list[str] = []
    norm = None
    if model.kind == "functionals" and model.normalizer is not None:  # a fresh one: the model's own is untouched
        base = model.normalizer
        norm = SpeakerNormalizer(base.mean, np.sqrt(base.var), base.prior)
    raw: dict[int, np.ndarray] = {}
    partner: dict[int, np.ndarray] = {}
    try:
        for i, (path, speaker) in enumerate(zip(paths, speakers, strict=True)):
            try:
                audio = load_audio(path, model.params.sample_rate)
            except MediaError as exc:
                errors.append(str(exc))
            else:
                if norm is None:
                    probs[i] = model.predict_audio(audio)
                else:
                    raw[i] = model.raw_features(audio)
                    if model.partner is not None:
                        partner[i] = model.partner.predict_audio(audio)
                    if stats == "online":
                        model.observe(raw[i], norm, speaker)
                        probs[i] = _normalized_probs(model, norm, raw[i], speaker, partner.get(i))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if norm is not None and stats == "full":  # each speaker's files added at once, as the protocols do
        for speaker in dict.fromkeys(speakers[i] for i in raw):
            model.observe(np.stack([x for i, x in raw.items() if speakers[i] == speaker]), norm, speaker)
    if norm is not None and stats != "online":
        for i, x in raw.items():
            probs[i] = _normalized_probs(model, norm, x, speakers[i] if stats == "full" else None, partner.get(i))
    return probs, errors


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
