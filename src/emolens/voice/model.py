"""The speech-emotion model (ONNX, run with onnxruntime; torch is only needed to train)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from emolens.labels import RAVDESS8
from emolens.voice.encoder import SpeechEncoder, speech_encoder
from emolens.voice.features import (
    FeatureParams,
    eval_windows,
    functionals,
    log_mel,
    mfcc_features,
    normalize,
    trim_bounds,
)
from emolens.voice.speakers import SpeakerNormalizer, cold_share, one_mood_share

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DEFAULT_SPEECH_MODEL = MODELS_DIR / "speech_emotion.onnx"

def _session(path: Path, threads: int | None = None, device: str = "cpu"):  # noqa: ANN202
    from emolens.device import inference_session

    return inference_session(path, threads, device, inter_op_threads=1 if threads else None)


class SpeechEmotionModel:
    """The speech-emotion classifier (onnxruntime only; torch is not needed).

    Reads its labels and feature parameters from the JSON next to the ONNX file, so a model
    trained with other settings (or the MFCC baseline) runs through the same code. ``device``:
    ``cpu``, ``cuda`` or ``auto`` (:mod:`emolens.device`).
    """

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = None,
                 device: str = "cpu") -> None:
        import json

        self.path = Path(path) if path else DEFAULT_SPEECH_MODEL
        if not self.path.is_file():
            raise FileNotFoundError(f"speech emotion model not found: {self.path}")
        card = self.path.with_suffix(".json")
        self.meta: dict = json.loads(card.read_text()) if card.is_file() else {}
        self.labels: tuple[str, ...] = tuple(self.meta.get("labels", RAVDESS8))
        known = set(FeatureParams.__dataclass_fields__)
        self.params = FeatureParams(**{k: v for k, v in self.meta.get("feature_params", {}).items() if k in known})
        model = self.meta.get("model")
        self.kind: str = model if model in ("mfcc", "functionals") else "cnn"
        self.session = _session(self.path, threads, device)
        self.input_name = self.session.get_inputs()[0].name
        self.normalizer: SpeakerNormalizer | None = None
        self.encoder: SpeechEncoder | None = None
        self.states = False  # the encoder's frame-level states follow its embeddings
        if self.kind == "functionals":
            norm = self.meta["normalization"]
            self.columns = np.asarray(norm["columns"], dtype=np.int64)
            self.n_mfcc = int(self.meta.get("n_mfcc", 20))
            enc = self.meta.get("encoder")
            self.encoder = speech_encoder(self.path.parent / enc, device) if enc else None
            self.states = bool(self.meta.get("encoder_states")) and self.encoder is not None
            self.normalizer = SpeakerNormalizer(np.asarray(norm["mean"]), np.asarray(norm["std"]),
                                                float(norm.get("prior", 8.0)))
        #: a model trained on first-utterance normalisation, used for a voice's first segment
        self.cold: SpeechEmotionModel | None = None
        #: where the cold-start model's features sit in this model's raw features
        self.cold_columns: np.ndarray | None = None
        cold = self.meta.get("cold_start")
        #: :func:`~emolens.voice.speakers.one_mood_share` thresholds (``cold_start.one_mood`` in the JSON):
        #: a speaker whose segments all sound alike to the cold-start model is scored by it
        self.one_mood: tuple[float, float] | None = None
        if cold and self.kind == "functionals":
            self.cold = SpeechEmotionModel(self.path.parent / cold["model"], threads, device)
            self.cold_columns = self._cold_columns(self.cold, cold["model"])
            if cold.get("one_mood") is not None:
                low, high = (float(v) for v in cold["one_mood"])
                one_mood_share(0.0, low, high)  # ValueError on thresholds the wrong way round
                self.one_mood = (low, high)
        #: mood-aware statistics: each class's effect on the raw features, times its share (see observe())
        self.mood_effects: np.ndarray | None = None
        mood = self.meta.get("normalization", {}).get("mood") if self.kind == "functionals" else None
        if mood:
            if self.cold is None:
                raise ValueError(f"{self.path.name} has mood-aware statistics, which start from a cold-start "
                                 "model, but names none (cold_start in its JSON)")
            self.mood_effects = float(mood.get("share", 1.0)) * np.asarray(mood["effects"], dtype=np.float64)
            if self.mood_effects.shape != (len(self.labels), len(self.columns)):
                raise ValueError(f"{self.path.name}: mood effects of shape {self.mood_effects.shape}, expected "
                                 f"{(len(self.labels), len(self.columns))}")
        self.partner: SpeechEmotionModel | None = None  # ensemble member (the log-mel CNN), see combine()
        self.partner_weight = 0.0
        ens = self.meta.get("ensemble")
        if ens:
            self.partner = SpeechEmotionModel(self.path.parent / ens["model"], threads, device)
            self.partner_weight = float(ens.get("weight", 0.5))
            if self.partner.labels != self.labels:
                raise ValueError(f"ensemble member {ens['model']} has labels {self.partner.labels}, not {self.labels}")

    def combine(self, probs: np.ndarray, partner: np.ndarray | None) -> np.ndarray:
        """Ensemble: weighted geometric mean of this model's and the partner's probabilities
        (``probs`` alone when there is no partner)."""
        if partner is None or self.partner is None:
            return probs
        w = self.partner_weight
        z = (1 - w) * np.log(np.clip(probs, 1e-7, 1)) + w * np.log(np.clip(partner, 1e-7, 1))
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)

    def raw_features(self, audio: np.ndarray, trim: bool = True) -> np.ndarray:
        """Un-normalised features ``(D,)`` the model reads (``functionals`` models only): the
        functionals, then the speaker encoder's embeddings and states where the model uses them."""
        f = functionals(audio, self.params, self.n_mfcc, trim)
        if self.encoder is not None:
            f = np.concatenate([f, self.encoder.embed(audio, states=self.states)])
        return f[self.columns]

    def observe(self, raw: np.ndarray, norm: SpeakerNormalizer, speaker: object = None) -> None:
        """Add raw feature vectors ``(D,)`` or ``(N, D)`` of ``speaker``'s segments to its
        statistics in ``norm``; with ``one_mood`` thresholds also the cold-start model's untempered
        posterior of each segment to ``norm.moods`` (see :meth:`cold_weight`).

        A model with mood-aware statistics (``normalization.mood`` in its JSON) first takes each
        segment's estimated emotion effect out (the classes' effects weighted by the cold-start
        model's posterior for it), then refines that estimate with its own posterior under the
        updated statistics (the training protocol's second pass), so a person heard in one mood
        only is not normalised to neutral."""
        raw = np.atleast_2d(np.asarray(raw, dtype=np.float64))
        if self.cold is None or self.cold.normalizer is None or (self.mood_effects is None and self.one_mood is None):
            norm.update(raw, speaker)
            return
        cold_rows = np.stack([self.cold.normalizer.normalize_alone(x) for x in self.cold_features(raw)])
        posterior = self.cold.untempered(self.cold.predict_windows(cold_rows))
        norm.moods.add(posterior, speaker)
        if self.mood_effects is None:
            norm.update(raw, speaker)
            return
        first = posterior @ self.mood_effects
        norm.update(raw, speaker, first)
        own = self.untempered(self.predict_windows(np.stack([norm.normalize(x, speaker) for x in raw])))
        norm.revise(raw, speaker, first, own @ self.mood_effects)

    def untempered(self, probs: np.ndarray) -> np.ndarray:
        """``probs`` of this model with its temperature undone (the softmax of the raw logits, the
        posterior the training protocol weighs the mood effects with)."""
        p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0) ** float(self.meta.get("temperature", 1.0))
        return p / p.sum(axis=-1, keepdims=True)

    def predict_features(self, raw: np.ndarray, speaker: object = None, update: bool = True) -> np.ndarray:
        """Probabilities ``(N, classes)`` for raw functionals ``(N, D)`` of one ``speaker``: each
        row is normalised with that speaker's statistics accumulated so far (itself included);
        ``speaker=None``: every row as a voice heard for the first time (nothing accumulated).
        See :meth:`predict_normalized` for which networks score a row."""
        assert self.normalizer is not None
        raw = np.atleast_2d(np.asarray(raw, dtype=np.float64))
        out = np.zeros((len(raw), len(self.labels)), np.float32)
        groups: dict[int, tuple[SpeechEmotionModel, list[int], list[np.ndarray], list[float]]] = {}
        for i, x in enumerate(raw):  # speaker None: nobody to accumulate for
            if update and speaker is not None:
                self.observe(x, self.normalizer, speaker)
            for net, row, weight in self._scorers(x, self.normalizer, speaker):
                _, idx, rows, weights = groups.setdefault(id(net), (net, [], [], []))
                idx.append(i)
                rows.append(row)
                weights.append(weight)
        for net, idx, rows, weights in groups.values():  # one batch per network
            out[idx] += np.asarray(weights, np.float32)[:, None] * net.predict_windows(np.stack(rows))
        return out

    def _cold_columns(self, cold: SpeechEmotionModel, name: str) -> np.ndarray:
        """Positions of ``cold``'s features within this model's raw features (it may read fewer,
        e.g. no encoder states); ValueError when the labels differ or it reads a feature this
        model does not compute (feature indices count functionals, embedding, states in order)."""
        where = {int(c): i for i, c in enumerate(self.columns)}
        if cold.labels != self.labels or cold.kind != "functionals" or any(int(c) not in where for c in cold.columns):
            raise ValueError(f"cold-start model {name} does not match {self.path.name} "
                             "(it must have the same labels and read a subset of the same features)")
        return np.array([where[int(c)] for c in cold.columns], dtype=np.int64)

    def cold_features(self, raw: np.ndarray) -> np.ndarray:
        """The cold-start model's raw features, taken from this model's ``raw`` ``(..., D)``."""
        assert self.cold_columns is not None
        return raw[..., self.cold_columns]

    def cold_weight(self, norm: SpeakerNormalizer, speaker: object = None) -> float:
        """Weight of the cold-start network for ``speaker``'s next segment: 0 without a partner,
        else :func:`~emolens.voice.speakers.cold_share` of the segments heard, raised to
        :func:`~emolens.voice.speakers.one_mood_share` of their cold-start posteriors where the
        model names ``one_mood`` thresholds (a person heard in one mood only)."""
        if self.cold is None:
            return 0.0
        w = cold_share(norm.count(speaker), norm.prior)
        if self.one_mood is not None and w < 1:
            w = max(w, one_mood_share(norm.moods.diversity(speaker), *self.one_mood))
        return w

    def _scorers(self, raw: np.ndarray, norm: SpeakerNormalizer,
                 speaker: object) -> list[tuple[SpeechEmotionModel, np.ndarray, float]]:
        """The networks that score ``raw``, their normalised inputs and weights (see
        :meth:`predict_normalized`)."""
        w = self.cold_weight(norm, speaker)
        out: list[tuple[SpeechEmotionModel, np.ndarray, float]] = []
        if self.cold is not None and self.cold.normalizer is not None and w > 0:  # a functionals model: set
            out.append((self.cold, self.cold.normalizer.normalize_alone(self.cold_features(raw)), w))
        if w < 1:
            out.append((self, norm.normalize(raw, speaker), 1.0 - w))
        return out

    def predict_normalized(self, raw: np.ndarray, norm: SpeakerNormalizer, speaker: object = None) -> np.ndarray:
        """Probabilities ``(classes,)`` of one raw feature vector ``(D,)`` normalised with
        ``speaker``'s statistics in ``norm`` (already updated with it).

        Where the model has a cold-start partner, that partner scores the segment too, normalised
        as a first utterance with its own training statistics (the way it was trained), and the two
        probabilities are mixed with :meth:`cold_weight`: the cold start alone for a voice heard for
        the first time (or ``speaker=None``), then less and less as the speaker's statistics fill,
        unless everything the speaker said so far sounds alike (one mood)."""
        parts = [w * net.predict_windows(row[None])[0] for net, row, w in self._scorers(raw, norm, speaker)]
        return np.sum(parts, axis=0).astype(np.float32)

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

    def predict_audio(self, audio: np.ndarray, trim: bool = True, speaker: object = None) -> np.ndarray:
        """Probabilities ``(classes,)`` for one utterance (16 kHz mono float): window-averaged
        for the CNN; for a functionals model normalised with ``speaker``'s running statistics."""
        if self.kind == "functionals":
            p = self.predict_features(self.raw_features(audio, trim), speaker)[0]
            return self.combine(p, self.partner.predict_audio(audio, trim) if self.partner is not None else None)
        return self.predict_windows(self.segment_windows(audio, trim)).mean(axis=0)

    def predict_segments(self, segments: list[np.ndarray], speaker: object = None) -> np.ndarray:
        """Probabilities ``(len(segments), classes)`` (CNN: all windows run in one batch;
        functionals: segments of ``speaker`` in order, statistics accumulated online)."""
        if not segments:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if self.kind == "functionals":
            raw = np.stack([self.raw_features(a) for a in segments])
            if speaker is not None and self.normalizer is not None:
                self.observe(raw, self.normalizer, speaker)
            probs = self.predict_features(raw, speaker, update=False)
            return self.combine(probs, self.partner.predict_segments(segments) if self.partner is not None else None)
        wins = [self.segment_windows(a) for a in segments]
        probs = self.predict_windows(np.concatenate(wins))
        bounds = np.cumsum([0] + [len(w) for w in wins])
        return np.stack([probs[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


@lru_cache(maxsize=4)
def default_speech_model(path: str | None = None, threads: int | None = None,
                         device: str = "cpu") -> SpeechEmotionModel:
    """A shared :class:`SpeechEmotionModel` (loaded once per process and device)."""
    return SpeechEmotionModel(path, threads, device)
