"""Per-speaker feature normalisation of the voice recipe, as training and the protocols apply
it (inference accumulates the same statistics online: :class:`emolens.voice.SpeakerNormalizer`),
and mood-aware statistics (:func:`class_effects`, :func:`mood_offsets`): each file's estimated
emotion effect taken out before its speaker's mean and spread are computed."""

from __future__ import annotations

import numpy as np

from emolens.datasets import SpeechDataset
from emolens.train.speech_recipe import MultiConfig
from emolens.voice.speakers import shrunk_stats

#: Normalisations that shrink each speaker's statistics towards the global ones (``prior``).
SHRUNK_NORMS = ("online", "first")


def group_normalize(feats: np.ndarray, groups: np.ndarray, mean: np.ndarray, var: np.ndarray,
                    prior: float = 0.0, offsets: np.ndarray | None = None) -> np.ndarray:
    """Z-score each row of ``feats (N, D)`` with its group's statistics (shrunk towards
    ``mean``/``var`` with ``prior`` pseudo-observations). With ``offsets (N, D)`` (each row's
    estimated emotion effect, :func:`mood_offsets`) the statistics are those of ``feats - offsets``
    (mood-aware), applied to ``feats``."""
    out = np.empty_like(feats, dtype=np.float32)
    for g in np.unique(groups):
        sel = groups == g
        x = feats[sel].astype(np.float64)
        r = x if offsets is None else x - offsets[sel]
        m, s = shrunk_stats(len(r), r.sum(0), (r * r).sum(0), mean, var, prior)
        out[sel] = ((x - m) / s).astype(np.float32)
    return out


def norm_groups(data: SpeechDataset, mode: str) -> np.ndarray:
    """The groups normalised together: speakers, corpora, or one global group."""
    if mode == "speaker":
        return data.speakers
    if mode == "corpus":
        return data.corpora
    if mode == "global":
        return np.zeros(len(data), dtype=int)
    raise ValueError(f"unknown normalisation {mode!r} (speaker, online, first, corpus, global)")


def online_normalize(feats: np.ndarray, groups: np.ndarray, mean: np.ndarray, var: np.ndarray, prior: float,
                     rng: np.random.Generator, sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 0),
                     offsets: np.ndarray | None = None) -> np.ndarray:
    """Each row normalised the way inference sees it early on: with the shrunk statistics of a
    random ``n`` of its speaker's utterances (itself included; ``n`` drawn from ``sizes``, 0 = all);
    ``offsets`` as in :func:`group_normalize`."""
    out = np.empty_like(feats, dtype=np.float32)
    x64 = feats.astype(np.float64)
    r64 = x64 if offsets is None else x64 - offsets
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        for i in idx:
            n = int(rng.choice(sizes)) or len(idx)
            n = min(n, len(idx))
            others = rng.choice(idx[idx != i], size=n - 1, replace=False) if n > 1 else np.zeros(0, dtype=int)
            sub = r64[np.concatenate([[i], others])]
            m, sd = shrunk_stats(len(sub), sub.sum(0), (sub * sub).sum(0), mean, var, prior)
            out[i] = ((x64[i] - m) / sd).astype(np.float32)
    return out


def normalized(feats: np.ndarray, data: SpeechDataset, cfg: MultiConfig, mean: np.ndarray,
               var: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """``(copies, N, D)`` features normalised per group, each copy on its own.

    ``norm="online"``: the clean copy (the one evaluated) with each speaker's full statistics
    (shrunk with ``prior``), the augmented copies with :func:`online_normalize`, so the model also
    learns the inputs it gets from a person heard only once or a few times.

    ``norm="first"``: every copy normalised as its speaker's first utterance (the statistics of
    that file alone, shrunk with ``prior``): the cold-start model, used for a voice's first segment.

    ``offsets (N, D)``: per-item emotion effects taken out of the statistics (``cfg.mood``,
    :func:`mood_offsets`), the same for every copy."""
    if cfg.norm == "first":
        rng = np.random.default_rng(cfg.seed + 17)
        return np.stack([online_normalize(f, data.speakers, mean, var, cfg.prior, rng, sizes=(1,), offsets=offsets)
                         for f in feats])
    if cfg.norm == "online":
        groups = data.speakers
        rng = np.random.default_rng(cfg.seed + 17)
        return np.stack([group_normalize(f, groups, mean, var, cfg.prior, offsets) if c == 0
                         else online_normalize(f, groups, mean, var, cfg.prior, rng, offsets=offsets)
                         for c, f in enumerate(feats)])
    groups = norm_groups(data, cfg.norm)
    return np.stack([group_normalize(f, groups, mean, var, cfg.prior, offsets) for f in feats])


def global_stats(feats: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the clean features of ``idx`` (the shrinkage prior)."""
    x = feats[0, idx].astype(np.float64)
    return x.mean(0), x.var(0) + 1e-8


# ----------------------------------------------------------------------------- mood-aware statistics


def class_effects(feats: np.ndarray, data: SpeechDataset, idx: np.ndarray) -> np.ndarray:
    """``(classes, D)``: how far each emotion moves a speaker's raw features from that speaker's
    centre (the mean of its per-emotion means), averaged over the speakers of ``idx`` that have it,
    each corpus weighing the same. Zero rows for classes ``idx`` never labels."""
    x = feats.astype(np.float64)
    k = len(data.classes)
    total, corpora = np.zeros((k, x.shape[1])), np.zeros(k)
    for corpus in np.unique(data.corpora[idx]):
        sel = idx[data.corpora[idx] == corpus]
        eff, n = np.zeros_like(total), np.zeros(k)
        for speaker in np.unique(data.speakers[sel]):
            mine = sel[data.speakers[sel] == speaker]
            labels = np.unique(data.labels[mine])
            cells = np.stack([x[mine[data.labels[mine] == c]].mean(0) for c in labels])
            eff[labels] += cells - cells.mean(0)
            n[labels] += 1
        have = n > 0
        total[have] += eff[have] / n[have, None]
        corpora[have] += 1
    seen = corpora > 0
    total[seen] /= corpora[seen, None]
    return total


def mood_offsets(probs: np.ndarray, effects: np.ndarray, share: float) -> np.ndarray:
    """Each row's estimated emotion effect ``share * probs @ effects`` (``(N, D)``)."""
    return share * (np.asarray(probs, np.float64) @ effects)


def label_offsets(feats: np.ndarray, data: SpeechDataset, train: np.ndarray,
                  share: float) -> tuple[np.ndarray, np.ndarray]:
    """The training items' :func:`class_effects` and ``(N, D)`` offsets: each ``train`` item's
    class effect (its label known) times ``share``; zero for the other items."""
    effects = class_effects(feats, data, train)
    offsets = np.zeros(feats.shape)
    offsets[train] = share * effects[data.labels[train]]
    return effects, offsets
