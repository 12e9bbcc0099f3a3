"""The voice recipe's network: an MLP trained with a masked softmax (each item's loss only sees
its corpus's classes), corpus-balanced weights, an optional corpus adversary and arousal/valence
loss; seeds merged into one network, temperature scaling and plain-ONNX export."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emolens.train.speech_recipe import MultiConfig

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
