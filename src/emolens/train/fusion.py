"""Fit the calibrated fusion (:class:`emolens.fusion.CalibratedFusion`) on held-out data.

1. temperature of each modality: NLL-optimal on its own held-out predictions;
2. per-class reliability weights, confidence slopes and class biases: NLL of the fused
   distribution on paired held-out examples, L2-regularised towards plain product-of-experts
   (weights 1, slopes 0, biases 0), full-batch L-BFGS;
3. the strength of that pull (:func:`select_l2`): the one whose leave-one-group-out NLL is lowest,
   the groups being the voice corpora, so the fit is judged on a kind of voice it never saw (as
   every real recording is) rather than on more clips of the corpora it was fitted on.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from emolens.fusion import FUSION_LABELS, CalibratedFusion


def nll(logp: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of labels ``y`` under log-probabilities ``logp``."""
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """Temperature ``T`` minimising the NLL of ``softmax(log p / T)`` (grid over 0.2-10)."""
    lp = np.log(np.clip(probs, 1e-7, 1.0))
    best, best_t = np.inf, 1.0
    for t in np.exp(np.linspace(np.log(0.2), np.log(10.0), 161)):
        z = lp / t
        z = z - z.max(1, keepdims=True)
        val = nll(z - np.log(np.exp(z).sum(1, keepdims=True)), y)
        if val < best:
            best, best_t = val, float(t)
    return best_t


def fit_fusion(p_face: np.ndarray, p_voice: np.ndarray, y: np.ndarray, t_face: float, t_voice: float,
               l2: float = 0.01, source: dict | None = None,
               voice_prior: np.ndarray | None = None) -> CalibratedFusion:
    """Fit weights, slopes and biases on paired held-out probabilities ``(N, 7)`` with labels ``y``
    (the voice divided by ``voice_prior`` first: :class:`~emolens.fusion.CalibratedFusion`)."""
    base = CalibratedFusion(t_face, t_voice, np.ones(7), np.ones(7), voice_prior=voice_prior)
    lf = torch.from_numpy(base.calibrated(p_face, "face"))
    lv = torch.from_numpy(base.calibrated(p_voice, "voice"))
    cf, cv = lf.exp().max(1, keepdim=True).values, lv.exp().max(1, keepdim=True).values
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    k = len(FUSION_LABELS)
    a_f = torch.ones(k, dtype=torch.float64, requires_grad=True)
    a_v = torch.ones(k, dtype=torch.float64, requires_grad=True)
    k_f = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    k_v = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    params = [a_f, a_v, k_f, k_v, b]
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = (a_f + k_f * cf) * lf + (a_v + k_v * cv) * lv + b
        loss = F.cross_entropy(z, yt) + l2 * (((a_f - 1) ** 2).sum() + ((a_v - 1) ** 2).sum() + k_f.pow(2).sum()
                                              + k_v.pow(2).sum() + b.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return CalibratedFusion(t_face, t_voice, a_f.detach().numpy().copy(), a_v.detach().numpy().copy(),
                            float(k_f.item()), float(k_v.item()), b.detach().numpy().copy(), source or {},
                            voice_prior)


def pair_by_label(face_y: np.ndarray, voice_y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each face, the index of a random voice clip with the same label (-1 if none).

    The pairing treats face and voice as independent given the label: real audio-visual data
    would have correlated errors, so fused gains measured this way are an upper bound."""
    out = np.full(len(face_y), -1, dtype=np.int64)
    for c in np.unique(face_y):
        pool = np.flatnonzero(voice_y == c)
        faces = np.flatnonzero(face_y == c)
        if pool.size:
            out[faces] = rng.choice(pool, size=faces.size, replace=True)
    return out


#: L2 strengths :func:`select_l2` tries (large values: nearly plain product-of-experts).
L2_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 3.0, 10.0, 30.0, 100.0)


def grouped_cv(p_face: np.ndarray, p_voice: np.ndarray, y: np.ndarray, groups: np.ndarray, t_face: float,
               t_voice: float, l2: float | None = None, fixed: CalibratedFusion | None = None,
               voice_prior: np.ndarray | None = None) -> dict:
    """Leave-one-group-out NLL and accuracy of :func:`fit_fusion` with ``l2``, or of a ``fixed``
    fusion (nothing fitted). Each held-out group is scored only on the labels the other groups
    have, so no class is judged that the fit never saw."""
    if (l2 is None) == (fixed is None):
        raise ValueError("give either l2 or fixed")
    logp, labels = [], []
    for g in np.unique(groups):
        train, test = groups != g, groups == g
        test &= np.isin(y, np.unique(y[train]))
        if not test.any():
            continue
        fusion = fixed or fit_fusion(p_face[train], p_voice[train], y[train], t_face, t_voice, l2=float(l2 or 0),
                                     voice_prior=voice_prior)
        logp.append(fusion.fuse_log(p_face[test], p_voice[test]))
        labels.append(y[test])
    if not logp:
        raise ValueError("grouped cross-validation needs at least two groups sharing a label")
    lp, yy = np.concatenate(logp), np.concatenate(labels)
    return {"l2": l2, "nll": nll(lp, yy), "accuracy": float((lp.argmax(1) == yy).mean()), "n": int(len(yy))}


def select_l2(p_face: np.ndarray, p_voice: np.ndarray, y: np.ndarray, groups: np.ndarray, t_face: float,
              t_voice: float, grid: tuple[float, ...] = L2_GRID,
              voice_prior: np.ndarray | None = None) -> tuple[float, list[dict]]:
    """The L2 strength in ``grid`` with the lowest leave-one-group-out NLL (:func:`grouped_cv`),
    and the comparison's rows (``rule`` ``fit``), followed by two references on the same folds:
    plain product of the temperature-scaled modalities (``product``) and the face alone (``face``)."""
    rows = [{"rule": "fit", **grouped_cv(p_face, p_voice, y, groups, t_face, t_voice, l2, voice_prior=voice_prior)}
            for l2 in grid]
    best = min(rows, key=lambda r: r["nll"])["l2"]
    k = len(FUSION_LABELS)
    for rule, a_voice in (("product", np.ones(k)), ("face", np.zeros(k))):
        fixed = CalibratedFusion(t_face, t_voice, np.ones(k), a_voice, voice_prior=voice_prior)
        rows.append({"rule": rule, **grouped_cv(p_face, p_voice, y, groups, t_face, t_voice, fixed=fixed)})
    return float(best), rows
