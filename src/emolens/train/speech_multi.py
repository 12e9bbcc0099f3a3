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
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emolens.datasets import SpeechDataset, speaker_folds, speaker_group_folds
from emolens.metrics import classification_report
from emolens.voice.model import shrunk_stats

#: folds of the within-corpus speaker-independent CV (RAVDESS: the gender-balanced 6 folds of
#: 4 actors used since the first model; TurEV and EmoDB: leave-one/two-speakers-out).
CV_FOLDS = {"ravdess": 6, "emodb": 5, "turev": 6, "urdu": 5}


#: Normalisations that shrink each speaker's statistics towards the global ones (``prior``).
SHRUNK_NORMS = ("online", "first")


@dataclass
class MultiConfig:
    """Knobs of the functionals recipe (saved in the model JSON)."""

    hidden: int = 256
    dropout: float = 0.3
    epochs: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-3
    label_smoothing: float = 0.05
    copies: int = 2
    norm: str = "speaker"  # speaker | online | corpus | global
    prior: float = 0.0  # pseudo-observations of the global stats in the per-speaker norm (0: pure)
    seed: int = 0
    threads: int = 1
    encoder: bool = False  # add the speaker-encoder embeddings (emolens.voice.encoder) to the functionals
    seeds: int = 1  # networks trained with seeds seed, seed+1, ... and merged into one (logits averaged)
    adversary: float = 0.0  # weight of the gradient reversed from a corpus classifier on the hidden layer
    dims: float = 0.0  # weight of the arousal/valence loss on the expected circumplex position (AROUSAL_VALENCE)
    states: bool = False  # add the encoder's frame-level states (SpeechEncoder.states); needs encoder
    mood: float = 0.0  # share of the estimated emotion effect taken out of each speaker's statistics (0: off)

    def __post_init__(self) -> None:
        if self.states and not self.encoder:
            raise ValueError("the encoder states come with the encoder: states needs encoder")
        if self.mood and self.norm not in ("online", "speaker"):
            raise ValueError("mood-aware statistics are per-speaker statistics: mood needs norm online or speaker")

    @property
    def kinds(self) -> tuple[str, ...]:
        """Feature kinds (:data:`emolens.train.speech_features.KINDS`) this recipe reads."""
        return ("functionals",) + (("encoder",) if self.encoder else ()) + (("states",) if self.states else ())


# ----------------------------------------------------------------------------- normalisation


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


def cold_config(cfg: MultiConfig) -> MultiConfig:
    """The cold-start partner's recipe for ``cfg``: every file as its speaker's first utterance,
    one network, no states, adversary or mood (its posteriors start the mood-aware statistics)."""
    return replace(cfg, norm="first", states=False, seeds=1, adversary=0.0, dims=0.0, mood=0.0)


def label_offsets(feats: np.ndarray, data: SpeechDataset, train: np.ndarray,
                  share: float) -> tuple[np.ndarray, np.ndarray]:
    """The training items' :func:`class_effects` and ``(N, D)`` offsets: each ``train`` item's
    class effect (its label known) times ``share``; zero for the other items."""
    effects = class_effects(feats, data, train)
    offsets = np.zeros(feats.shape)
    offsets[train] = share * effects[data.labels[train]]
    return effects, offsets


def cold_columns(cfg: MultiConfig, d: int) -> np.ndarray:
    """Columns of the recipe's ``d`` features the cold-start partner reads (all but the states)."""
    from emolens.voice.encoder import state_feature_names

    n = d - (len(state_feature_names()) if cfg.states else 0)
    if n <= 0:
        raise ValueError("the cold-start partner needs features besides the encoder states")
    return np.arange(n)


# ----------------------------------------------------------------------------- model


#: Conventional positions of the classes on Russell's circumplex (arousal, valence), in [-1, 1]:
#: read from the class labels, never per file. Used by ``MultiConfig.dims``.
AROUSAL_VALENCE: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0), "calm": (-0.5, 0.3), "happy": (0.5, 0.8), "sad": (-0.5, -0.7),
    "angry": (0.8, -0.6), "fear": (0.7, -0.6), "disgust": (0.3, -0.7), "surprise": (0.8, 0.3),
    "boredom": (-0.7, -0.3),
}


class MLP(nn.Module):
    """``D -> hidden -> classes`` with ReLU and dropout (``hidden`` 0: linear)."""

    def __init__(self, d: int, k: int, hidden: int, dropout: float) -> None:
        super().__init__()
        if hidden:
            self.net = nn.Sequential(nn.Dropout(0.1), nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout),
                                     nn.Linear(hidden, k))
        else:
            self.net = nn.Sequential(nn.Dropout(0.1), nn.Linear(d, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def balanced_weights(labels: np.ndarray, corpora: np.ndarray) -> np.ndarray:
    """Per-item loss weights: every corpus weighs the same, and within it every class."""
    w = np.zeros(len(labels), dtype=np.float64)
    names = np.unique(corpora)
    for c in names:
        sel = corpora == c
        classes = np.unique(labels[sel])
        for k in classes:
            m = sel & (labels == k)
            w[m] = 1.0 / (len(names) * len(classes) * m.sum())
    return w / w.sum() * len(w)


def masked_log_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-softmax over each row's allowed classes only (others get -inf)."""
    return F.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=1)


def merge(nets: list[MLP]) -> MLP:
    """One MLP equal to the average of the logits of ``nets`` (same shapes, one hidden layer): the
    hidden layers side by side, the output layer's weights concatenated and divided by their number."""
    first = [m for m in nets[0].net if isinstance(m, nn.Linear)]
    if len(nets) == 1 or len(first) != 2:
        if len(nets) > 1:
            raise ValueError("only MLPs with one hidden layer can be merged")
        return nets[0]
    d, h, k = first[0].in_features, first[0].out_features, first[1].out_features
    out = MLP(d, k, h * len(nets), 0.0)
    hid, head = [m for m in out.net if isinstance(m, nn.Linear)]
    members = [[m for m in net.net if isinstance(m, nn.Linear)] for net in nets]
    with torch.no_grad():
        for i, (a, b) in enumerate(members):
            hid.weight[i * h:(i + 1) * h] = a.weight
            hid.bias[i * h:(i + 1) * h] = a.bias
            head.weight[:, i * h:(i + 1) * h] = b.weight / len(nets)
        head.bias.copy_(torch.stack([b.bias for _, b in members]).mean(0))
    return out.eval()


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient times ``-scale`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: ANN001
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return -ctx.scale * grad, None


def fit(x: np.ndarray, y: np.ndarray, mask: np.ndarray, weights: np.ndarray, cfg: MultiConfig,
        domains: np.ndarray | None = None, class_names: tuple[str, ...] | None = None) -> MLP:
    """Train the MLP full-batch with AdamW on normalised features (masked, weighted CE); with
    ``cfg.seeds`` > 1, one per seed, merged (:func:`merge`). With ``cfg.adversary`` > 0,
    ``domains`` (the corpus of each row) trains a corpus classifier on the hidden layer
    through a gradient-reversal layer (module docstring)."""
    if cfg.seeds > 1:
        return merge([fit(x, y, mask, weights, replace(cfg, seed=cfg.seed + i, seeds=1), domains, class_names)
                      for i in range(cfg.seeds)])
    codes = None if domains is None else np.unique(domains, return_inverse=True)[1].astype(np.int64)
    adversarial = cfg.adversary > 0 and codes is not None and int(codes.max()) > 0
    if adversarial and not cfg.hidden:
        raise ValueError("the corpus adversary needs a hidden layer (hidden > 0)")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    k = mask.shape[1]
    net = MLP(x.shape[1], k, cfg.hidden, cfg.dropout)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    mt, wt = torch.from_numpy(mask), torch.from_numpy(weights.astype(np.float32))
    target = F.one_hot(yt, k).float()
    allowed = mt.float()
    smooth = allowed / allowed.sum(1, keepdim=True)
    target = (1 - cfg.label_smoothing) * target + cfg.label_smoothing * smooth
    params = list(net.parameters())
    dims = None
    if cfg.dims > 0:
        if class_names is None or len(class_names) != k:
            raise ValueError("the arousal/valence loss needs the class names")
        dims = torch.tensor([AROUSAL_VALENCE[c] for c in class_names], dtype=torch.float32)
    if adversarial:
        dt = torch.from_numpy(codes)
        critic = nn.Sequential(nn.Linear(cfg.hidden, 64), nn.ReLU(), nn.Linear(64, int(dt.max()) + 1))
        params += list(critic.parameters())
        body, head = net.net[:4], net.net[4:]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
    net.train()
    for epoch in range(cfg.epochs):
        if adversarial:
            h = body(xt)
            logp = masked_log_softmax(head(h), mt)
            ramp = 2.0 / (1.0 + np.exp(-10.0 * epoch / cfg.epochs)) - 1.0
            domain_loss = (F.cross_entropy(critic(_ReverseGradient.apply(h, cfg.adversary * ramp)), dt,
                                           reduction="none") * wt).mean()
        else:
            logp, domain_loss = masked_log_softmax(net(xt), mt), 0.0
        loss = -((target * logp.masked_fill(~mt, 0.0)).sum(1) * wt).mean() + domain_loss
        if dims is not None:  # expected circumplex position of the prediction vs. the label's
            loss = loss + cfg.dims * (((logp.exp() @ dims - dims[yt]) ** 2).sum(1) * wt).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return net


@torch.no_grad()
def logits_of(net: MLP, x: np.ndarray) -> np.ndarray:
    """Logits ``(N, classes)``."""
    net.eval()
    return net(torch.from_numpy(x.astype(np.float32))).numpy()


def train_on(data: SpeechDataset, feats: np.ndarray, train_idx: np.ndarray, cfg: MultiConfig,
             stats: tuple[np.ndarray, np.ndarray]) -> MLP:
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


def fit_fold(data: SpeechDataset, feats: np.ndarray, cfg: MultiConfig, train: np.ndarray, held: np.ndarray,
             stats: tuple[np.ndarray, np.ndarray], z: np.ndarray | None = None) -> Fold:
    """Train on ``train`` and score ``held`` (whole speakers, none of them in ``train``).

    With ``cfg.mood`` each speaker's statistics are mood-aware: every item's estimated emotion
    effect (:func:`class_effects` of the training items, weighted by a posterior, times
    ``cfg.mood``) is taken out before the speaker's mean and spread are computed, so a person heard
    in one mood only keeps that mood after normalisation. Training items use their label; held-out
    items first the posterior of a cold-start partner (:func:`cold_config`, trained on the same
    items), then the trained network's own posterior (second pass, as at inference)."""
    if not cfg.mood:
        z = normalized(feats, data, cfg, *stats) if z is None else z
        net = train_on(data, z, train, cfg, stats)
        return Fold(net, logits_of(net, z[0, held]))
    effects, offsets = label_offsets(feats[0], data, train, cfg.mood)
    allowed = torch.from_numpy(np.isin(np.arange(len(data.classes)), np.unique(data.labels[train])))

    def posterior(net: MLP, x: np.ndarray) -> np.ndarray:  # over the classes the training items have
        return masked_log_softmax(torch.from_numpy(logits_of(net, x)), allowed).exp().numpy()

    cold_cfg, cols = cold_config(cfg), cold_columns(cfg, feats.shape[-1])
    cold_stats = (stats[0][cols], stats[1][cols])
    zc = normalized(feats[..., cols], data, cold_cfg, *cold_stats)
    cold = train_on(data, zc, train, cold_cfg, cold_stats)
    offsets[held] = mood_offsets(posterior(cold, zc[0, held]), effects, cfg.mood)
    first = offsets[held].copy()
    z = normalized(feats, data, cfg, *stats, offsets=offsets)
    net = train_on(data, z, train, cfg, stats)
    second = group_normalize(feats[0, held], data.speakers[held], *stats, cfg.prior,
                             mood_offsets(posterior(net, z[0, held]), effects, cfg.mood))
    return Fold(net, logits_of(net, second), first)


# ----------------------------------------------------------------------------- protocols


def _uar(report: dict) -> float:
    recalls = [v["recall"] for v in report["per_class"].values() if v["support"] > 0]
    return float(np.mean(recalls)) if recalls else 0.0


def corpus_report(y: np.ndarray, logits: np.ndarray, classes: list[str], all_classes: tuple[str, ...]) -> dict:
    """Metrics on ``classes`` only (predictions: argmax over those classes)."""
    idx = [all_classes.index(c) for c in classes]
    local = {g: i for i, g in enumerate(idx)}
    yl = np.array([local[v] for v in y])
    rep = classification_report(yl, logits[:, idx].argmax(1), classes)
    rep["uar"] = _uar(rep)
    rep["chance_uar"] = 1.0 / len(classes)
    return rep


def global_stats(feats: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the clean features of ``idx`` (the shrinkage prior)."""
    x = feats[0, idx].astype(np.float64)
    return x.mean(0), x.var(0) + 1e-8


def protocol_speakers(data: SpeechDataset, feats: np.ndarray, cfg: MultiConfig,
                      corpora: list[str] | None = None, log: bool = True) -> dict:
    """Speaker-independent CV within each corpus with the multi-corpus model (module docstring)."""
    stats = global_stats(feats, np.arange(len(data)))
    z = None if cfg.mood else normalized(feats, data, cfg, *stats)  # mood-aware: per fold
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
    return {"protocol": "speakers", "config": asdict(cfg), "corpora": out, "logits": oof_all}


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


def protocol_corpora(data: SpeechDataset, feats: np.ndarray, cfg: MultiConfig,
                     corpora: list[str] | None = None, log: bool = True) -> dict:
    """Leave-one-corpus-out on the shared classes (module docstring)."""
    names = list(dict.fromkeys(data.corpora.tolist()))
    out: dict = {}
    oof = np.zeros((len(data), len(data.classes)), dtype=np.float32)
    first = np.zeros_like(oof)
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
        out[corpus] = rep
        if log:
            print(f"[corpora] {corpus}: UAR {rep['uar']:.3f} (chance {rep['chance_uar']:.3f}), "
                  f"macro-F1 {rep['macro_f1']:.3f}, acc {rep['accuracy']:.3f}, {len(classes)} classes", flush=True)
    return {"protocol": "corpora", "config": asdict(cfg), "corpora": out, "logits": oof, "logits_first": first}


# ----------------------------------------------------------------------------- calibration + export


def fit_temperature(logits: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Temperature minimising the NLL of ``softmax(logits / T)`` (masked classes excluded)."""
    lt = torch.from_numpy(logits.astype(np.float64))
    yt = torch.from_numpy(y.astype(np.int64))
    if mask is not None:
        lt = lt.masked_fill(~torch.from_numpy(mask), float("-inf"))
    best, best_t = float("inf"), 1.0
    for t in np.exp(np.linspace(np.log(0.25), np.log(8.0), 121)):
        nll = float(F.cross_entropy(lt / t, yt))
        if nll < best:
            best, best_t = nll, float(t)
    return best_t


def export_onnx(net: MLP, path: str | Path, temperature: float = 1.0) -> None:
    """Write ``features (N, D) -> probs (N, classes)`` as a plain ONNX graph (opset 17)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    layers = [m for m in net.net if isinstance(m, nn.Linear)]
    nodes, inits, cur = [], [], "features"
    for i, lin in enumerate(layers):
        w = lin.weight.detach().numpy().astype(np.float32)
        b = lin.bias.detach().numpy().astype(np.float32)
        if i == len(layers) - 1:
            w, b = w / temperature, b / temperature
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [f"h{i}"], transB=1))
        cur = f"h{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"]))
            cur = f"r{i}"
    nodes.append(helper.make_node("Softmax", [cur], ["probs"], axis=1))
    d, k = layers[0].in_features, layers[-1].out_features
    graph = helper.make_graph(nodes, "emolens_speech_functionals",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", d])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="emolens")
    model.ir_version = 8
    onnx.checker.check_model(model)
    Path(path).write_bytes(model.SerializeToString())


def strip_logits(result: dict) -> dict:
    """The protocol result without its bulky arrays (for JSON)."""
    return {k: v for k, v in result.items() if k not in ("logits", "logits_first")}


def save_json(obj: dict, path: str | Path) -> None:
    """Write ``obj`` as indented JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")


# ----------------------------------------------------------------------------- drivers


def select_columns(names: list[str], drop: str) -> np.ndarray:
    """Indices of the functionals kept when dropping the name prefixes in ``drop`` (``|``-separated)."""
    prefixes = [p for p in drop.split("|") if p]
    return np.asarray([i for i, n in enumerate(names) if not any(n.startswith(p) for p in prefixes)], dtype=np.int64)


def feature_names(cfg: MultiConfig) -> list[str]:
    """Names of the features the recipe reads: the functionals, then the encoder's values."""
    from emolens.voice.encoder import encoder_feature_names, state_feature_names
    from emolens.voice.features import functional_names

    return (functional_names() + (encoder_feature_names() if cfg.encoder else [])
            + (state_feature_names() if cfg.states else []))


def load_features(data_root: str | Path, cfg: MultiConfig, drop: str = "",
                  cache: str | Path | None = None) -> tuple[SpeechDataset, np.ndarray, np.ndarray]:
    """All corpora under ``data_root``, their (cached) functionals ``(copies+1, N, D)`` and the
    kept column indices."""
    from emolens.datasets import load_speech_corpora
    from emolens.train.speech_features import DEFAULT_CACHE, dataset_features
    data = load_speech_corpora(data_root)
    feats = dataset_features(data, cfg.copies, cache or DEFAULT_CACHE, kinds=cfg.kinds)
    cols = select_columns(feature_names(cfg), drop)
    return data, feats[..., cols], cols


def table(result: dict) -> str:
    """Markdown table of a protocol result, one row per corpus (LOCO with ``norm="online"`` also
    gives the UAR when every test file is scored as its speaker's first utterance)."""
    proto = result["protocol"]
    first = all("first_utterance_uar" in r for r in result["corpora"].values())
    head = "| corpus | classes | n | accuracy | UAR | macro-F1 | chance UAR |" + (
        " folds (accuracy) |" if proto == "speakers" else " trained on |")
    lines = [head + (" UAR, first utterance |" if first else ""),
             "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if first else "")]
    for name, r in result["corpora"].items():
        extra = (f"{r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}" if proto == "speakers"
                 else ", ".join(r["trained_on"]))
        lines.append(f"| {name} | {len(r['labels'])} | {r['n']} | {r['accuracy']:.3f} | {r['uar']:.3f} | "
                     f"{r['macro_f1']:.3f} | {r['chance_uar']:.3f} | {extra} |"
                     + (f" {r['first_utterance_uar']:.3f} |" if first else ""))
    return "\n".join(lines)


def confusions(result: dict) -> str:
    """Each corpus's pooled confusion matrix as text."""
    from emolens.metrics import format_report

    return "\n\n".join(f"{name}:\n" + format_report(r).split("confusion (rows true, columns predicted):\n")[1]
                       for name, r in result["corpora"].items())


def run_protocol(data_root: str | Path, protocol: str, cfg: MultiConfig, drop: str = "",
                 corpora: list[str] | None = None, cache: str | Path | None = None) -> dict:
    """``speakers`` or ``corpora`` protocol on every corpus under ``data_root``."""
    data, feats, _ = load_features(data_root, cfg, drop, cache)
    if protocol == "speakers":
        return protocol_speakers(data, feats, cfg, corpora)
    if protocol == "corpora":
        return protocol_corpora(data, feats, cfg, corpora)
    raise ValueError(f"unknown protocol {protocol!r} (speakers, corpora)")


def save_logits(path: str | Path, result: dict, data: SpeechDataset) -> None:
    """A protocol's held-out logits with what the fusion fit needs (labels, corpora, speakers,
    paths, classes); LOCO also ``logits_first`` (each file scored as its speaker's first)."""
    extra = {"logits_first": result["logits_first"]} if "logits_first" in result else {}
    np.savez(path, logits=result["logits"], labels=data.labels, corpora=data.corpora, speakers=data.speakers,
             paths=np.asarray(data.paths), classes=np.asarray(data.classes), **extra)


def train_final(data_root: str | Path, out: str | Path, cfg: MultiConfig, drop: str = "",
                cache: str | Path | None = None, prior: float = 8.0, protocols: tuple[str, ...] = ("corpora",),
                holdout: str = "ravdess:23,24") -> dict:
    """Protocols (LOCO logits give the temperature; results reused when the config matches), then
    the model on every corpus except the ``holdout`` speakers (``corpus:id,id;...``) -> ONNX + JSON.
    With ``cfg.mood`` also its cold-start partner (:func:`cold_config`, in ``out/cold_start``,
    copied next to it as ``speech_emotion_cold.*`` and named in its JSON)."""
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
    temperature = 1.0
    if "corpora" in results:
        logits = results["corpora"]["logits"]
        held = np.abs(logits).sum(1) > 0
        temperature = fit_temperature(logits[held], data.labels[held], data.class_mask()[held])
    held = {h.split(":")[0]: h.split(":")[1].split(",") for h in holdout.split(";") if ":" in h}
    keep = np.array([not (it.corpus in held and it.speaker.split("/", 1)[1] in held[it.corpus]) for it in data.items])
    train = np.flatnonzero(keep)
    stats = global_stats(feats, train)
    effects, offsets = label_offsets(feats[0], data, train, cfg.mood) if cfg.mood else (None, None)
    z = normalized(feats, data, cfg, *stats, offsets=offsets)
    net = train_on(data, z, train, cfg, stats)
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
