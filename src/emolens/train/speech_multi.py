"""Multi-corpus speech-emotion training and the generalisation protocols.

Recipe (``emolens train speech --recipe functionals``): :func:`emolens.voice.functionals` of
every file of every corpus (clean + ``copies`` augmented copies: tempo/pitch, reverberation,
codec, noise, gain), per-speaker normalisation (z-scores with the speaker's own statistics,
shrunk towards the global ones: :class:`emolens.voice.SpeakerNormalizer`), and a small MLP
trained with a **masked** softmax: each item's loss only sees the classes its corpus has
(EmoDB has no ``calm``/``surprise``, TurEV no ``neutral`` ...), so no corpus is taught that a
class it never labels is absent. Loss weights balance corpora equally and classes within each
corpus. With ``adversary`` > 0 a small corpus classifier reads the hidden layer through a
gradient-reversal layer (domain-adversarial training, Ganin & Lempitsky 2015, with their
0 -> 1 ramp), so the hidden layer is pushed to keep what tells emotions apart and drop what
tells the corpora (language, channel, elicitation) apart; the classifier is dropped after
training. Exported as plain ONNX (Gemm/Relu/Softmax), with temperature scaling fitted on
leave-one-corpus-out predictions.

Protocols (:func:`protocol_speakers`, :func:`protocol_corpora`):

* ``speakers``: within each corpus, speaker-independent k-fold CV; each fold's model is trained on
  every other corpus plus the corpus's remaining speakers (the multi-corpus model), and tested
  on the fold's speakers with the corpus's own classes;
* ``corpora``: leave-one-corpus-out; train on the others, test on the left-out corpus restricted
  to the classes it shares with them (chance = 1 / shared classes).

Both report accuracy, UAR (balanced accuracy = mean recall), macro-F1 and confusion per corpus.

This module holds the folds, the protocols and the final training; the recipe's knobs and
features are in :mod:`~emolens.train.speech_recipe`, the normalisation (and mood-aware
statistics) in :mod:`~emolens.train.speech_norm`, the network and its export in
:mod:`~emolens.train.speech_mlp`, the reports in :mod:`~emolens.train.speech_report`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from emolens.datasets import SpeechDataset, speaker_folds, speaker_group_folds
from emolens.train.speech_mlp import (
    MLP,
    balanced_weights,
    export_onnx,
    fit,
    fit_temperature,
    logits_of,
    masked_log_softmax,
)
from emolens.train.speech_norm import (
    SHRUNK_NORMS,
    global_stats,
    group_normalize,
    label_offsets,
    mood_offsets,
    normalized,
    online_normalize,
)
from emolens.train.speech_recipe import MultiConfig, cold_columns, cold_config, feature_names, load_features
from emolens.train.speech_report import corpus_report, save_json, save_logits, strip_logits
from emolens.voice.speakers import ONE_MOOD, speaker_cold_weights

#: folds of the within-corpus speaker-independent CV (RAVDESS: the gender-balanced 6 folds of
#: 4 actors used since the first model; TurEV and EmoDB: leave-one/two-speakers-out).
CV_FOLDS = {"ravdess": 6, "emodb": 5, "turev": 6, "urdu": 5}


# ----------------------------------------------------------------------------- folds


def train_on(data: SpeechDataset, feats: np.ndarray, train_idx: np.ndarray, cfg: MultiConfig) -> MLP:
    """Fit on ``train_idx`` items (all their copies)."""
    copies = feats[: cfg.copies + 1, train_idx]
    x = copies.reshape(-1, copies.shape[-1])
    y = np.tile(data.labels[train_idx], len(copies))
    mask = np.tile(data.class_mask()[train_idx], (len(copies), 1))
    w = np.tile(balanced_weights(data.labels[train_idx], data.corpora[train_idx]), len(copies))
    return fit(x, y, mask, w, cfg, np.tile(data.corpora[train_idx], len(copies)), tuple(data.classes))


@dataclass
class Fold:
    """One trained fold: the network and its logits on the held-out items; with ``cfg.mood``
    also each held-out item's first-pass (cold-start) emotion offset."""

    net: MLP
    logits: np.ndarray
    cold_offsets: np.ndarray | None = None


def pairs_with_cold_start(cfg: MultiConfig, cold_start: bool) -> bool:
    """Whether a protocol asked for ``cold_start`` scores the cold-start partner: only recipes with
    per-speaker statistics have one (``--norm first`` is itself a cold-start recipe)."""
    return cold_start and cfg.norm in SHRUNK_NORMS and cfg.norm != "first"


def cold_partner_logits(data: SpeechDataset, feats: np.ndarray, cfg: MultiConfig, train: np.ndarray,
                        rows: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Train ``cfg``'s cold-start partner (:func:`~emolens.train.speech_recipe.cold_config`) on
    ``train`` and return its logits ``(len(rows), classes)`` of the clean copies of ``rows``, each
    normalised as its speaker's first utterance."""
    cold_cfg, cols = cold_config(cfg), cold_columns(cfg, feats.shape[-1])
    cold_stats = (stats[0][cols], stats[1][cols])
    zc = normalized(feats[..., cols], data, cold_cfg, *cold_stats)
    return logits_of(train_on(data, zc, train, cold_cfg), zc[0, rows])


def fit_fold(data: SpeechDataset, feats: np.ndarray, cfg: MultiConfig, train: np.ndarray, held: np.ndarray,
             stats: tuple[np.ndarray, np.ndarray], z: np.ndarray | None = None) -> Fold:
    """Train on ``train`` and score ``held`` (whole speakers, none of them in ``train``).

    With ``cfg.mood`` each speaker's statistics are mood-aware: every item's estimated emotion
    effect (:func:`~emolens.train.speech_norm.class_effects` of the training items, weighted by a posterior, times
    ``cfg.mood``) is taken out before the speaker's mean and spread are computed, so a person heard
    in one mood only keeps that mood after normalisation. Training items use their label; held-out
    items first the posterior of a cold-start partner
    (:func:`~emolens.train.speech_recipe.cold_config`, trained on the same items), then the trained
    network's own posterior (second pass, as at inference)."""
    if not cfg.mood:
        z = normalized(feats, data, cfg, *stats) if z is None else z
        net = train_on(data, z, train, cfg)
        return Fold(net, logits_of(net, z[0, held]))
    effects, offsets = label_offsets(feats[0], data, train, cfg.mood)
    allowed = torch.from_numpy(np.isin(np.arange(len(data.classes)), np.unique(data.labels[train])))

    def posterior(net: MLP, x: np.ndarray) -> np.ndarray:  # over the classes the training items have
        return masked_log_softmax(torch.from_numpy(logits_of(net, x)), allowed).exp().numpy()

    cold = masked_log_softmax(torch.from_numpy(cold_partner_logits(data, feats, cfg, train, held, stats)), allowed)
    offsets[held] = mood_offsets(cold.exp().numpy(), effects, cfg.mood)
    first = offsets[held].copy()
    z = normalized(feats, data, cfg, *stats, offsets=offsets)
    net = train_on(data, z, train, cfg)
    second = group_normalize(feats[0, held], data.speakers[held], *stats, cfg.prior,
                             mood_offsets(posterior(net, z[0, held]), effects, cfg.mood))
    return Fold(net, logits_of(net, second), first)


# ----------------------------------------------------------------------------- protocols


def protocol_speakers(data: SpeechDataset, feats: np.ndarray, cfg: MultiConfig,
                      corpora: list[str] | None = None, log: bool = True, cold_start: bool = False) -> dict:
    """Speaker-independent CV within each corpus with the multi-corpus model (module docstring);
    ``cold_start``: as in :func:`protocol_corpora`, on each fold's test speakers."""
    stats = global_stats(feats, np.arange(len(data)))
    z = None if cfg.mood else normalized(feats, data, cfg, *stats)  # mood-aware: per fold
    cold_start = pairs_with_cold_start(cfg, cold_start)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    out: dict = {}
    oof_all = np.zeros((len(data), len(data.classes)), dtype=np.float32)
    for corpus in corpora or list(dict.fromkeys(data.corpora.tolist())):
        sel = np.flatnonzero(data.corpora == corpus)
        sub = data.subset(sel)
        k = CV_FOLDS.get(corpus, 5)
        folds = speaker_folds(sub, k) if corpus == "ravdess" else speaker_group_folds(sub.speakers, k)
        fold_acc, fold_uar = [], []
        for f, test_speakers in enumerate(folds):
            test = sel[np.isin(sub.speakers, test_speakers)]
            train = np.setdiff1d(np.arange(len(data)), test)
            logits = fit_fold(data, feats, cfg, train, test, stats, z).logits
            oof_all[test] = logits
            if cold_start:
                parts.setdefault(corpus, []).append((test, logits,
                                                     cold_partner_logits(data, feats, cfg, train, test, stats)))
            rep = corpus_report(data.labels[test], logits, list(data.corpus_classes[corpus]), data.classes)
            fold_acc.append(rep["accuracy"])
            fold_uar.append(rep["uar"])
            if log:
                print(f"[speakers {corpus} fold {f + 1}/{len(folds)}] acc {rep['accuracy']:.3f} "
                      f"UAR {rep['uar']:.3f} ({', '.join(test_speakers)})", flush=True)
        rep = corpus_report(data.labels[sel], oof_all[sel], list(data.corpus_classes[corpus]), data.classes)
        rep.update({"folds": [list(map(str, f)) for f in folds], "accuracy_per_fold": np.round(fold_acc, 4).tolist(),
                    "uar_per_fold": np.round(fold_uar, 4).tolist(), "accuracy_mean": float(np.mean(fold_acc)),
                    "accuracy_std": float(np.std(fold_acc)), "uar_mean": float(np.mean(fold_uar))})
        out[corpus] = rep
    result = {"protocol": "speakers", "config": asdict(cfg), "corpora": out, "logits": oof_all}
    if parts:
        whole = {c: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v]),
                     np.concatenate([p[2] for p in v])) for c, v in parts.items()}
        result.update(pipeline_protocol(data, whole, oof_all, cfg.prior, out, log,
                                        classes_of=lambda c: list(data.corpus_classes[c])))
    return result


def shared_classes(data: SpeechDataset, test_corpus: str, train_corpora: list[str]) -> list[str]:
    """Classes of ``test_corpus`` that some training corpus also labels."""
    seen = {c for t in train_corpora for c in data.corpus_classes[t]}
    return [c for c in data.corpus_classes[test_corpus] if c in seen]


def loco_split(data: SpeechDataset, corpus: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Leave-one-corpus-out: ``(train indices, test indices, shared classes)``; the test items
    are ``corpus``'s items whose class some other corpus also labels."""
    names = list(dict.fromkeys(data.corpora.tolist()))
    if corpus not in names:
        raise KeyError(f"no corpus {corpus!r} (have {', '.join(names)})")
    train = np.flatnonzero(data.corpora != corpus)
    classes = shared_classes(data, corpus, [c for c in names if c != corpus])
    wanted = [data.classes.index(c) for c in classes]
    test = np.flatnonzero((data.corpora == corpus) & np.isin(data.labels, wanted))
    return train, test, classes


def loco_temperature(logits: np.ndarray, data: SpeechDataset) -> float:
    """:func:`~emolens.train.speech_mlp.fit_temperature` on the rows of leave-one-corpus-out
    ``logits`` that were scored (non-zero), each over its corpus's own classes."""
    held = np.abs(logits).sum(1) > 0
    return fit_temperature(logits[held], data.labels[held], data.class_mask()[held])


def pipeline_logits(main_logits: np.ndarray, cold_logits: np.ndarray, speakers: np.ndarray, prior: float,
                    temperatures: tuple[float, float] = (1.0, 1.0),
                    one_mood: tuple[float, float] | None = ONE_MOOD) -> np.ndarray:
    """Log-probabilities of the pipeline's mix for whole speakers, as ``SpeechEmotionModel``
    mixes its two networks: each network's softmax at its temperature (``(main, cold)``),
    weighted per speaker by :func:`emolens.voice.speakers.speaker_cold_weights` of the cold-start
    partner's untempered posteriors (``one_mood``: its thresholds; None: ``cold_share`` alone)."""

    def softmax(z: np.ndarray, t: float) -> np.ndarray:
        return torch.softmax(torch.from_numpy(np.asarray(z, dtype=np.float64)) / t, -1).numpy()

    w = speaker_cold_weights(softmax(cold_logits, 1.0), speakers, prior, one_mood)[:, None]
    mix = w * softmax(cold_logits, temperatures[1]) + (1 - w) * softmax(main_logits, temperatures[0])
    return np.log(np.clip(mix, 1e-12, 1.0)).astype(np.float32)


def protocol_corpora(data: SpeechDataset, feats: np.ndarray, cfg: MultiConfig,
                     corpora: list[str] | None = None, log: bool = True, cold_start: bool = False) -> dict:
    """Leave-one-corpus-out on the shared classes (module docstring). ``cold_start`` (per-speaker
    recipes): also train the cold-start partner on each fold and score every held-out speaker as
    the pipeline does (:func:`pipeline_logits`, with each network's temperature fitted on its own
    leave-one-corpus-out logits of the corpora run; ``pipeline`` in each corpus's report)."""
    names = list(dict.fromkeys(data.corpora.tolist()))
    cold_start = pairs_with_cold_start(cfg, cold_start)
    out: dict = {}
    oof = np.zeros((len(data), len(data.classes)), dtype=np.float32)
    first = np.zeros_like(oof)
    whole: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # corpus: held, main and cold logits
    for corpus in corpora or names:
        train, test, classes = loco_split(data, corpus)
        train_corpora = [c for c in names if c != corpus]
        stats = global_stats(feats, train)
        held = np.flatnonzero(data.corpora == corpus)  # the whole corpus: its speakers' statistics
        fold = fit_fold(data, feats, cfg, train, held, stats)
        where = np.isin(held, test)
        logits = fold.logits[where]
        oof[test] = logits
        if cfg.norm in SHRUNK_NORMS:  # each test file also as its speaker's first (that file alone)
            alone = online_normalize(feats[0, test], data.speakers[test], stats[0], stats[1], cfg.prior,
                                     np.random.default_rng(0), sizes=(1,),
                                     offsets=None if fold.cold_offsets is None else fold.cold_offsets[where])
            first[test] = logits_of(fold.net, alone)
        rep = corpus_report(data.labels[test], logits, classes, data.classes)
        rep["trained_on"] = train_corpora
        if cfg.norm in SHRUNK_NORMS:
            rep["first_utterance_uar"] = corpus_report(data.labels[test], first[test], classes, data.classes)["uar"]
        if cold_start:
            whole[corpus] = (held, fold.logits, cold_partner_logits(data, feats, cfg, train, held, stats))
        out[corpus] = rep
        if log:
            print(f"[corpora] {corpus}: UAR {rep['uar']:.3f} (chance {rep['chance_uar']:.3f}), "
                  f"macro-F1 {rep['macro_f1']:.3f}, acc {rep['accuracy']:.3f}, {len(classes)} classes", flush=True)
    result = {"protocol": "corpora", "config": asdict(cfg), "corpora": out, "logits": oof, "logits_first": first}
    if whole:
        result.update(pipeline_protocol(data, whole, oof, cfg.prior, out, log))
    return result


def pipeline_protocol(data: SpeechDataset, whole: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                      oof: np.ndarray, prior: float, reports: dict, log: bool = True,
                      classes_of: Callable[[str], list[str]] | None = None) -> dict:
    """A protocol's scores with the cold-start partner (``cold_start=True``): ``whole`` holds each
    corpus's held-out rows and the two networks' logits on them, ``oof`` the main network's scored
    rows; each corpus is scored on ``classes_of(corpus)`` (default: the classes it shares with the
    others, as leave-one-corpus-out scores them). Adds ``pipeline`` to each corpus's entry of
    ``reports`` and returns the two temperatures, the mixed log-probabilities and the cold-start
    partner's logits."""
    cold_oof = np.zeros_like(oof)
    for held, _, cold in whole.values():
        cold_oof[held] = cold  # all of a held-out corpus's rows: its speakers' posterior diversity
    scored = np.abs(oof).sum(1) > 0  # the rows the main network was tested on (its corpus's shared classes)
    temps = (loco_temperature(oof, data), loco_temperature(np.where(scored[:, None], cold_oof, 0), data))
    mixed = np.zeros_like(oof)
    for corpus, (held, main, cold) in whole.items():
        both = pipeline_logits(main, cold, data.speakers[held], prior, temps)
        test = held[scored[held]]
        mixed[test] = both[scored[held]]
        classes = classes_of(corpus) if classes_of is not None else loco_split(data, corpus)[2]
        rep = reports[corpus]["pipeline"] = corpus_report(data.labels[test], mixed[test], classes, data.classes)
        if log:
            print(f"[{'corpora' if classes_of is None else 'speakers'}] {corpus} with the cold-start partner: "
                  f"UAR {rep['uar']:.3f}, accuracy {rep['accuracy']:.3f}, "
                  f"macro-F1 {rep['macro_f1']:.3f}", flush=True)
    return {"pipeline_temperatures": [round(t, 4) for t in temps], "logits_pipeline": mixed, "logits_cold": cold_oof}


# ----------------------------------------------------------------------------- drivers


def run_protocol(data_root: str | Path, protocol: str, cfg: MultiConfig, drop: str = "",
                 corpora: list[str] | None = None, cache: str | Path | None = None, cold_start: bool = False,
                 logits_out: str | Path | None = None) -> dict:
    """``speakers`` or ``corpora`` protocol on every corpus under ``data_root`` (``cold_start``:
    see :func:`protocol_corpora`, :func:`protocol_speakers`); ``logits_out``: also write the held-out logits there
    (:func:`~emolens.train.speech_report.save_logits`)."""
    if protocol not in ("speakers", "corpora"):
        raise ValueError(f"unknown protocol {protocol!r} (speakers, corpora)")
    data, feats, _ = load_features(data_root, cfg, drop, cache)
    if protocol == "speakers":
        result = protocol_speakers(data, feats, cfg, corpora, cold_start=cold_start)
    else:
        result = protocol_corpora(data, feats, cfg, corpora, cold_start=cold_start)
    if logits_out is not None:
        save_logits(logits_out, result, data)
    return result


def train_final(data_root: str | Path, out: str | Path, cfg: MultiConfig, drop: str = "",
                cache: str | Path | None = None, prior: float = 8.0, protocols: tuple[str, ...] = ("corpora",),
                holdout: str = "ravdess:23,24") -> dict:
    """Protocols (LOCO logits give the temperature; results reused when the config matches), then
    the model on every corpus except the ``holdout`` speakers (``corpus:id,id;...``) -> ONNX + JSON.
    With ``cfg.mood`` also its cold-start partner (:func:`~emolens.train.speech_recipe.cold_config`,
    in ``out/cold_start``, copied next to it as ``speech_emotion_cold.*`` and named in its JSON)."""
    import hashlib

    from emolens.voice.features import FUNCTIONALS_VERSION, FeatureParams

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data, feats, cols = load_features(data_root, cfg, drop, cache)
    results = {}
    for proto in protocols:
        done, logits_file = out / f"{proto}.json", out / f"{proto}_logits.npz"
        if done.is_file() and logits_file.is_file():
            prev = json.loads(done.read_text())
            if prev.get("config") == asdict(cfg) and prev.get("dropped_features", "") == drop:
                with np.load(logits_file) as z:
                    if len(z["labels"]) == len(data) and (proto != "corpora" or "logits_first" in z):
                        print(f"reusing {done}", flush=True)
                        results[proto] = {**prev, **{k: z[k] for k in ("logits", "logits_first") if k in z}}
                        continue
        res = protocol_speakers(data, feats, cfg) if proto == "speakers" else protocol_corpora(data, feats, cfg)
        res["dropped_features"] = drop
        save_json(strip_logits(res), out / f"{proto}.json")
        save_logits(out / f"{proto}_logits.npz", res, data)
        results[proto] = res
    temperature = loco_temperature(results["corpora"]["logits"], data) if "corpora" in results else 1.0
    held = {h.split(":")[0]: h.split(":")[1].split(",") for h in holdout.split(";") if ":" in h}
    keep = np.array([not (it.corpus in held and it.speaker.split("/", 1)[1] in held[it.corpus]) for it in data.items])
    train = np.flatnonzero(keep)
    stats = global_stats(feats, train)
    effects, offsets = label_offsets(feats[0], data, train, cfg.mood) if cfg.mood else (None, None)
    z = normalized(feats, data, cfg, *stats, offsets=offsets)
    net = train_on(data, z, train, cfg)
    onnx_path = out / "speech_emotion.onnx"
    export_onnx(net, onnx_path, temperature)
    names = feature_names(cfg)
    meta = {
        "name": "emolens speech emotion (multi-corpus functionals"
                + (" + speaker encoder" if cfg.encoder else "") + (" states" if cfg.states else "") + ")",
        "labels": list(data.classes),
        "sample_rate": 16000,
        "features": "functionals",
        "model": "functionals",
        "functionals_version": FUNCTIONALS_VERSION,
        "n_mfcc": 20,
        **({"encoder": "speech_encoder.onnx"} if cfg.encoder else {}),
        **({"encoder_states": True} if cfg.states else {}),
        "feature_params": asdict(FeatureParams()),
        "normalization": {"mode": cfg.norm, "prior": cfg.prior if cfg.norm in SHRUNK_NORMS else prior,
                          "columns": cols.tolist(),
                          "names": [names[i] for i in cols],
                          "mean": np.round(stats[0], 6).tolist(), "std": np.round(np.sqrt(stats[1]), 6).tolist(),
                          **({"mood": {"share": cfg.mood, "effects": np.round(effects, 5).tolist()}}
                             if effects is not None else {})},
        "input": "features float32 (N, D): functionals normalised per speaker (see normalization)",
        "output": "probs float32 (N, classes), temperature-scaled softmax",
        "temperature": temperature,
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "trained_on": {c: int((data.corpora[train] == c).sum()) for c in dict.fromkeys(data.corpora.tolist())},
        "held_out_speakers": held.get("ravdess", []),
        "held_out": {c: ids for c, ids in held.items()},
        "corpus_classes": {c: list(v) for c, v in data.corpus_classes.items()},
        "config": asdict(cfg),
        "dropped_features": drop,
        "evaluation": {k: {c: {m: round(float(r[m]), 4) for m in ("accuracy", "uar", "macro_f1", "chance_uar")}
                           for c, r in v["corpora"].items()} for k, v in results.items()},
        "torch": torch.__version__,
    }
    if cfg.encoder and not (out / "speech_encoder.onnx").is_file():  # the folder runs as it is
        from emolens.voice.encoder import DEFAULT_ENCODER

        shutil.copy(DEFAULT_ENCODER, out / "speech_encoder.onnx")
    if cfg.mood:  # its statistics start from a cold-start partner's posterior: train it alongside
        train_final(data_root, out / "cold_start", cold_config(cfg), drop, cache, prior, ("corpora",), holdout)
        for ext in ("onnx", "json"):
            shutil.copy(out / "cold_start" / f"speech_emotion.{ext}", out / f"speech_emotion_cold.{ext}")
        meta["cold_start"] = {"model": "speech_emotion_cold.onnx"}
    save_json(meta, out / "speech_emotion.json")
    return {"meta": meta, **results}
