"""Train and cross-validate the speech-emotion model: ``emolens train speech --data DIR --out DIR``.

Recipe (``cnn``): 16 kHz, 64-band log-mel (25 ms / 10 ms), leading/trailing silence trimmed,
per-utterance normalisation, 3 s windows (random placement = time shift); a 4-block 2D CNN
with attentive mean+std pooling (:class:`~emolens.train.speech_nets.SpeechCNN`); AdamW with
one-cycle cosine schedule, label smoothing. Augmentation is done on the cached mel power
spectrogram: speed perturbation (0.9-1.1, time stretched and frequencies scaled together),
additive noise (20 % of the samples, 15-40 dB SNR, white to pinkish, added in the power domain), time shift and
SpecAugment (2 frequency and 2 time masks); optional mixup. A gain change is a no-op by
construction: per-utterance normalisation removes the level.

Baseline (``mfcc``): 40 MFCCs + deltas + delta-deltas, a 1D CNN over time, no augmentation
beyond random crops -- the kind of system behind the 81 % often reported with random (speaker-dependent) splits.

Evaluation is speaker-independent: actor-wise k-fold cross-validation (default 6 folds of
4 actors, 2 male + 2 female), last-epoch model of each fold (no selection on the test fold),
test-time averaging over 3 placements / sliding windows. The shipped model is trained on all
actors except ``holdout`` (default 23 and 24, kept for an honest held-out check).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emolens.voice import (
    FeatureParams,
    SpeechDataset,
    _hz_to_mel,
    _mel_to_hz,
    eval_windows,
    fit_window,
    load_speech_data,
    log_mel,
    mfcc_features,
    normalize,
    power_to_db,
    speaker_folds,
    trim_bounds,
)


@dataclass
class SpeechTrainConfig:
    """Every knob of a speech training / cross-validation run (saved in cv.json)."""

    data: str
    out: str
    model: str = "cnn"
    folds: int = 6
    cv: bool = True
    baseline: bool = True
    final: bool = True
    holdout: str = "23,24"
    epochs: int = 45
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    channels: str = "16,32,64,128"
    dropout: float = 0.3
    spec_augment: bool = True
    noise: float = 0.2
    noise_snr: str = "15,40"
    speed: float = 0.5
    mixup: float = 0.0
    seed: int = 0
    threads: int = 1
    max_files: int = 0


# ----------------------------------------------------------------------------- feature cache


@dataclass
class FeatureCache:
    """Trimmed log-mel (dB) of every file, concatenated: item ``i`` is ``db[offsets[i]:offsets[i+1]]``."""

    db: np.ndarray
    offsets: np.ndarray

    def __getitem__(self, i: int) -> np.ndarray:
        return self.db[self.offsets[i]: self.offsets[i + 1]].astype(np.float32)


def _cache_dir() -> Path:
    from emolens.datasets import _cache_dir as base

    return base()


def build_cache(data: SpeechDataset, params: FeatureParams, verbose: bool = True) -> FeatureCache:
    """Decode every file once and keep its trimmed log-mel (float16) in ``~/.cache/emolens``
    (or ``$EMOLENS_CACHE``), keyed by the file list, sizes, mtimes and feature parameters."""
    from emolens.media import load_audio

    key = hashlib.sha1(json.dumps(asdict(params), sort_keys=True).encode())
    for p in data.paths:
        st = Path(p).stat()
        key.update(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    path = _cache_dir() / f"speech-logmel-{key.hexdigest()[:16]}.npz"
    if path.is_file():
        os.utime(path)  # most recently used: kept by the cache's pruning
        with np.load(path) as z:
            return FeatureCache(z["db"], z["offsets"])
    t0 = time.time()
    parts, offsets = [], [0]
    for i, p in enumerate(data.paths):
        db = log_mel(load_audio(p, params.sample_rate), params)
        s, e = trim_bounds(db, params.trim_db)
        parts.append(db[s:e].astype(np.float16))
        offsets.append(offsets[-1] + e - s)
        if verbose and (i + 1) % 200 == 0:
            print(f"features {i + 1}/{len(data)} ({time.time() - t0:.0f}s)", flush=True)
    cache = FeatureCache(np.concatenate(parts), np.asarray(offsets, dtype=np.int64))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, db=cache.db, offsets=cache.offsets)
    tmp.replace(path)
    from emolens.datasets import prune_cache

    prune_cache(path.parent, "speech-logmel-*.npz")
    return cache


# ----------------------------------------------------------------------------- augmentation


class Augmenter:
    """Mel-domain speech augmentation (see the module docstring)."""

    def __init__(self, cfg: SpeechTrainConfig, params: FeatureParams, rng: np.random.Generator) -> None:
        self.cfg, self.params, self.rng = cfg, params, rng
        mels = np.linspace(_hz_to_mel(params.fmin), _hz_to_mel(params.fmax), params.n_mels + 2)[1:-1]
        self.centers = _mel_to_hz(mels)
        self.mel_pos = mels

    def speed(self, db: np.ndarray, alpha: float) -> np.ndarray:
        """Speed perturbation by ``alpha``: ``1/alpha`` times the duration, frequencies x ``alpha``."""
        t = len(db)
        new_t = max(2, int(round(t / alpha)))
        src = np.linspace(0, t - 1, new_t)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, t - 1)
        w = (src - i0)[:, None]
        out = db[i0] * (1 - w) + db[i1] * w
        # the band now at f held f / alpha before the speed change
        pos = np.interp(_hz_to_mel(self.centers / alpha), self.mel_pos, np.arange(len(self.mel_pos)))
        j0 = np.clip(np.floor(pos).astype(int), 0, db.shape[1] - 1)
        j1 = np.minimum(j0 + 1, db.shape[1] - 1)
        v = (pos - j0)[None, :]
        return (out[:, j0] * (1 - v) + out[:, j1] * v).astype(np.float32)

    def add_noise(self, db: np.ndarray) -> np.ndarray:
        """Noise at ``cfg.noise_snr`` dB SNR, spectral tilt 0..-3 dB/octave, random per-frame fluctuation."""
        power = np.power(10.0, db / 10.0)
        lo, hi = (float(v) for v in self.cfg.noise_snr.split(","))
        snr = self.rng.uniform(lo, hi)
        tilt = self.rng.uniform(-3, 0)
        shape = np.power(10.0, tilt * np.log2(self.centers / 500.0) / 10.0)
        shape = shape / shape.mean()
        level = power.mean() / 10 ** (snr / 10)
        fluct = self.rng.gamma(4.0, 0.25, size=power.shape)
        return power_to_db(power + level * shape[None, :] * fluct, self.params.top_db)

    def spec_augment(self, x: np.ndarray) -> np.ndarray:
        """Two frequency masks (<= 8 bands) and two time masks (<= 20 frames), set to the mean (0)."""
        x = x.copy()
        t, f = x.shape
        for _ in range(2):
            w = self.rng.integers(0, 9)
            s = self.rng.integers(0, max(1, f - w))
            x[:, s: s + w] = 0
        for _ in range(2):
            w = self.rng.integers(0, min(21, max(1, t // 5)))
            s = self.rng.integers(0, max(1, t - w))
            x[s: s + w] = 0
        return x

    def __call__(self, db: np.ndarray) -> np.ndarray:
        """Augmented, normalised, randomly placed window ``(frames, n_mels)`` from trimmed dB features."""
        if self.rng.random() < self.cfg.speed:
            db = self.speed(db, self.rng.uniform(0.9, 1.1))
        if self.rng.random() < self.cfg.noise:
            db = self.add_noise(db)
        x = normalize(db)
        frames = self.params.window_frames
        span = abs(frames - len(x))
        x = fit_window(x, frames, int(self.rng.integers(0, span + 1)))
        if self.cfg.spec_augment:
            x = self.spec_augment(x)
        return x


# ----------------------------------------------------------------------------- training


def _inputs(kind: str, db: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Model input features for one segment of trimmed dB log-mel."""
    if kind == "mfcc":
        return mfcc_features(db, params.n_mfcc)
    return normalize(db)


def make_net(cfg: SpeechTrainConfig, n_classes: int, params: FeatureParams) -> nn.Module:
    """The network for ``cfg.model`` (``cnn`` or ``mfcc``)."""
    from emolens.train.speech_nets import MfccCNN1D, SpeechCNN

    if cfg.model == "mfcc":
        return MfccCNN1D(3 * params.n_mfcc, n_classes, dropout=cfg.dropout)
    if cfg.model == "cnn":
        channels = tuple(int(c) for c in cfg.channels.split(","))
        return SpeechCNN(n_classes, channels, dropout=cfg.dropout)
    raise ValueError(f"unknown speech model {cfg.model!r} (cnn or mfcc)")


@torch.no_grad()
def predict_items(net: nn.Module, cache: FeatureCache, idx: np.ndarray, kind: str,
                  params: FeatureParams) -> np.ndarray:
    """Window-averaged probabilities ``(len(idx), classes)`` for cached items."""
    net.eval()
    out = []
    for i in idx:
        x = eval_windows(_inputs(kind, cache[i], params), params.window_frames)
        out.append(torch.softmax(net(torch.from_numpy(x)), dim=1).mean(0).numpy())
    return np.stack(out)


def train_one(cfg: SpeechTrainConfig, data: SpeechDataset, cache: FeatureCache, train_idx: np.ndarray,
              test_idx: np.ndarray | None, params: FeatureParams, tag: str,
              mask: np.ndarray | None = None, weights: np.ndarray | None = None) -> tuple[nn.Module, list[dict]]:
    """Train one model on ``train_idx``; logs test accuracy per epoch when ``test_idx`` is given
    (for curves only: the last epoch is always the one kept). Several corpora: ``mask`` ``(N, K)``
    says which classes each item's corpus labels (the softmax and the label smoothing run over
    those only) and ``weights`` ``(N,)`` weigh each item's loss (e.g. corpus/class balance)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    k = len(data.classes)
    labels = data.labels
    net = make_net(cfg, k, params)
    kind = cfg.model
    mfcc: dict[int, np.ndarray] = {}
    if kind == "mfcc":  # no augmentation: features once; per-dimension standardisation from training items
        mfcc = {int(i): mfcc_features(cache[i], params.n_mfcc) for i in train_idx}
        feats = np.concatenate(list(mfcc.values()))
        net.mean.copy_(torch.from_numpy(feats.mean(0)))
        net.std.copy_(torch.from_numpy(feats.std(0) + 1e-5))
    aug = Augmenter(cfg, params, rng)
    frames = params.window_frames
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = math.ceil(len(train_idx) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.15,
                                                anneal_strategy="cos", div_factor=20, final_div_factor=200)
    history: list[dict] = []
    for epoch in range(cfg.epochs):
        net.train()
        perm = rng.permutation(train_idx)
        total, correct, seen, t0 = 0.0, 0, 0, time.time()
        for s in range(steps):
            idx = perm[s * cfg.batch_size: (s + 1) * cfg.batch_size]
            if len(idx) < 2:
                continue
            if kind == "mfcc":
                xs = []
                for i in idx:
                    f = mfcc[int(i)]
                    xs.append(fit_window(f, frames, int(rng.integers(0, abs(frames - len(f)) + 1))))
                x = torch.from_numpy(np.stack(xs))
            else:
                x = torch.from_numpy(np.stack([aug(cache[i]) for i in idx]))
            y = torch.from_numpy(labels[idx])
            allowed = torch.from_numpy(mask[idx]) if mask is not None else torch.ones(len(idx), k, dtype=torch.bool)
            spread = allowed.float() / allowed.sum(1, keepdim=True).float()
            target = F.one_hot(y, k).float() * (1 - cfg.label_smoothing) + cfg.label_smoothing * spread
            if cfg.mixup > 0 and rng.random() < 0.5:
                lam = float(rng.beta(cfg.mixup, cfg.mixup))
                order = torch.from_numpy(rng.permutation(len(idx)))
                x = lam * x + (1 - lam) * x[order]
                target = lam * target + (1 - lam) * target[order]
            logits = net(x)
            logp = F.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=1).masked_fill(~allowed, 0.0)
            per_item = -(target * logp).sum(1)
            if weights is not None:
                w = torch.from_numpy(weights[idx].astype(np.float32))
                loss = (w * per_item).sum() / w.sum()
            else:
                loss = per_item.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        row = {"epoch": epoch + 1, "train_loss": total / seen, "train_acc": correct / seen,
               "seconds": time.time() - t0}
        if test_idx is not None and ((epoch + 1) % 5 == 0 or epoch + 1 == cfg.epochs):
            probs = predict_items(net, cache, test_idx, kind, params)
            y_test = labels[test_idx]
            row["val_loss"] = float(-np.log(np.maximum(probs[np.arange(len(y_test)), y_test], 1e-7)).mean())
            row["val_acc"] = float((probs.argmax(1) == y_test).mean())
        history.append(row)
        msg = f"[{tag}] epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.3f} train {row['train_acc']:.3f}"
        if "val_acc" in row:
            msg += f" held-out {row['val_acc']:.3f}"
        print(f"{msg} ({row['seconds']:.0f}s)", flush=True)
    return net, history


def summarize(fold_reports: list[dict]) -> dict:
    """Mean and (population) standard deviation of accuracy and macro-F1 over folds."""
    acc = np.array([r["accuracy"] for r in fold_reports])
    f1 = np.array([r["macro_f1"] for r in fold_reports])
    return {"accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
            "macro_f1_mean": float(f1.mean()), "macro_f1_std": float(f1.std()),
            "accuracy_per_fold": acc.round(4).tolist(), "macro_f1_per_fold": f1.round(4).tolist()}


def cross_validate(cfg: SpeechTrainConfig, data: SpeechDataset, cache: FeatureCache, params: FeatureParams) -> dict:
    """Actor-wise k-fold CV of ``cfg.model``; per-fold results are saved (and reused on a rerun)
    under ``OUT/cv_<model>/``. Returns per-fold and pooled metrics."""
    from emolens.metrics import classification_report, plot_confusion, plot_curves

    out = Path(cfg.out) / f"cv_{cfg.model}"
    out.mkdir(parents=True, exist_ok=True)
    folds = speaker_folds(data, cfg.folds)
    speakers = data.speakers
    oof = np.zeros((len(data), len(data.classes)), dtype=np.float32)
    fold_reports = []
    for f, test_speakers in enumerate(folds):
        test_idx = np.flatnonzero(np.isin(speakers, test_speakers))
        train_idx = np.flatnonzero(~np.isin(speakers, test_speakers))
        done = out / f"fold{f + 1}.npz"
        if done.is_file():
            with np.load(done) as z:
                probs = z["probs"]
            history = json.loads((out / f"fold{f + 1}.json").read_text())["history"]
            print(f"[{cfg.model} fold {f + 1}] reusing {done}")
        else:
            net, history = train_one(cfg, data, cache, train_idx, test_idx, params, f"{cfg.model} fold {f + 1}")
            probs = predict_items(net, cache, test_idx, cfg.model, params)
            np.savez(done, probs=probs, idx=test_idx)
            export_model(net, cfg, params, data, out / f"fold{f + 1}.onnx",
                         sorted(set(speakers[train_idx].tolist())), list(test_speakers))
        oof[test_idx] = probs
        rep = classification_report(data.labels[test_idx], probs.argmax(1), data.classes)
        rep["speakers"] = list(test_speakers)
        fold_reports.append(rep)
        (out / f"fold{f + 1}.json").write_text(json.dumps({"report": rep, "history": history}, indent=2))
        curves = [h for h in history if "val_acc" in h]
        if curves:
            plot_curves(curves, out / f"fold{f + 1}_curves.png")
        print(f"[{cfg.model} fold {f + 1}] actors {','.join(test_speakers)}: accuracy {rep['accuracy']:.4f} "
              f"macro-F1 {rep['macro_f1']:.4f}", flush=True)
    pooled = classification_report(data.labels, oof.argmax(1), data.classes)
    result = {"model": cfg.model, "folds": [r["speakers"] for r in fold_reports], **summarize(fold_reports),
              "pooled": pooled, "per_fold": fold_reports}
    plot_confusion(pooled, out / "confusion.png", title=f"{cfg.model} {cfg.folds}-fold CV (pooled)")
    (out / "cv.json").write_text(json.dumps(result, indent=2))
    print(f"[{cfg.model}] {cfg.folds}-fold speaker-independent CV: accuracy {result['accuracy_mean']:.4f} "
          f"± {result['accuracy_std']:.4f}, macro-F1 {result['macro_f1_mean']:.4f} ± {result['macro_f1_std']:.4f}",
          flush=True)
    return result


def export_onnx(net: nn.Module, path: str | Path, n_features: int) -> None:
    """Export ``net`` with a softmax: input ``features`` float32 ``(N, T, F)``, output ``probs``."""
    from emolens.train.nets import Softmax

    wrapper = Softmax(net.cpu().eval()).eval()
    dummy = torch.zeros(2, 300, n_features)
    torch.onnx.export(wrapper, (dummy,), str(path), input_names=["features"], output_names=["probs"],
                      dynamic_axes={"features": {0: "n", 1: "frames"}, "probs": {0: "n"}}, opset_version=17,
                      dynamo=False)


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_model(net: nn.Module, cfg: SpeechTrainConfig, params: FeatureParams, data: SpeechDataset, path: Path,
                 train_speakers: list[str], held_out: list[str], extra: dict | None = None) -> dict:
    """Export ``net`` to ONNX at ``path`` with its JSON card (labels, feature parameters, sha256...)."""
    n_features = 3 * params.n_mfcc if cfg.model == "mfcc" else params.n_mels
    export_onnx(net, path, n_features)
    meta = {
        "name": "emolens speech emotion", "labels": list(data.classes), "sample_rate": params.sample_rate,
        "features": "mfcc+deltas" if cfg.model == "mfcc" else "log-mel", "model": cfg.model,
        "feature_params": asdict(params), "input": "features float32 (N, frames, bins), normalised per utterance",
        "output": "probs float32 (N, classes)", "sha256": sha256_of(path),
        "trained_on_speakers": train_speakers, "held_out_speakers": held_out,
        **(extra or {}), "config": asdict(cfg), "torch": torch.__version__,
    }
    Path(path).with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return meta


def train_final(cfg: SpeechTrainConfig, data: SpeechDataset, cache: FeatureCache, params: FeatureParams,
                cv: dict | None) -> dict:
    """Train on every speaker except ``cfg.holdout``; export ``speech_emotion.onnx`` + ``.json``
    into OUT and report accuracy on the held-out speakers."""
    from emolens.metrics import classification_report

    out = Path(cfg.out)
    holdout = [s.strip().zfill(2) if s.strip().isdigit() else s.strip() for s in cfg.holdout.split(",") if s.strip()]
    speakers = data.speakers
    test_idx = np.flatnonzero(np.isin(speakers, holdout))
    train_idx = np.flatnonzero(~np.isin(speakers, holdout))
    net, history = train_one(cfg, data, cache, train_idx, test_idx if len(test_idx) else None, params,
                             f"{cfg.model} final")
    onnx_path = out / "speech_emotion.onnx"
    held = None
    if len(test_idx):
        probs = predict_items(net, cache, test_idx, cfg.model, params)
        held = classification_report(data.labels[test_idx], probs.argmax(1), data.classes)
        held["speakers"] = holdout
    extra = {
        "held_out": None if held is None else {k: held[k] for k in ("accuracy", "macro_f1", "n", "speakers")},
        "cv": None if cv is None else {k: cv[k] for k in (
            "accuracy_mean", "accuracy_std", "macro_f1_mean", "macro_f1_std", "accuracy_per_fold", "macro_f1_per_fold",
            "folds")},
    }
    meta = export_model(net, cfg, params, data, onnx_path, sorted(set(speakers[train_idx].tolist())), holdout, extra)
    (out / "final_history.json").write_text(json.dumps({"history": history, "held_out": held}, indent=2))
    if held:
        print(f"[final] held-out speakers {','.join(holdout)}: accuracy {held['accuracy']:.4f} "
              f"macro-F1 {held['macro_f1']:.4f}; wrote {onnx_path}", flush=True)
    return meta


def train_speech(cfg: SpeechTrainConfig) -> dict:
    """Cross-validate (model and, optionally, the MFCC baseline), then train and export the final model."""
    torch.set_num_threads(max(1, cfg.threads))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    params = FeatureParams()
    data = load_speech_data(cfg.data)
    if cfg.max_files:
        order = np.random.default_rng(0).permutation(len(data))[: cfg.max_files]
        data = data.subset(np.sort(order))
    print(f"{len(data)} files, {len(set(data.speakers))} speakers, classes {data.counts()}", flush=True)
    cache = build_cache(data, params)
    results: dict = {"config": asdict(cfg), "feature_params": asdict(params)}
    if cfg.cv:
        results[cfg.model] = cross_validate(cfg, data, cache, params)
        if cfg.baseline and cfg.model != "mfcc":
            base = SpeechTrainConfig(**{**asdict(cfg), "model": "mfcc"})
            results["mfcc"] = cross_validate(base, data, cache, params)
        (out / "cv_summary.json").write_text(json.dumps(
            {k: {m: v for m, v in r.items() if m not in ("per_fold", "pooled")} if isinstance(r, dict) and "model" in r
             else r for k, r in results.items()}, indent=2))
    if cfg.final:
        results["final"] = train_final(cfg, data, cache, params, results.get(cfg.model))
    return results


