"""Train the facial-expression classifier: ``emolens train face --data PATH --out DIR``.

Recipe: VGG-style CNN on 44x44 crops of 48x48 faces; on-the-fly batch augmentation
(random affine crop/scale/rotation, mirror, brightness/contrast, random erasing);
label smoothing; class-balanced loss weights; SGD + one-cycle cosine schedule; model
selection on PublicTest (PrivateTest is only ever used for the final report); flip
test-time averaging baked into the exported ONNX graph.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emolens.datasets import FaceDataset, load_face_data
from emolens.train.nets import FaceNet, FlipTTA, Softmax, TenCropTTA

CROP = 44


@dataclass
class FaceTrainConfig:
    """Every knob of a face training run (saved with checkpoints and in metrics.json)."""

    data: str
    out: str
    ferplus: str | None = None
    soft_weight: float = 0.3
    width: int = 40
    epochs: int = 45
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    balance: str = "sqrt"
    amp: str = "auto"
    channels_last: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    teacher_logits: str | None = None
    kd_alpha: float = 0.7
    kd_temp: float = 2.0
    tta: str = "flip"
    framing: str = "auto"  # image folders: how each image becomes a face crop (emolens.face_crops)


def class_weights(counts: np.ndarray, mode: str) -> np.ndarray:
    """Loss weights per class: ``none`` (1), ``sqrt`` (1/sqrt(n)) or ``inverse`` (1/n).

    Normalised so the average weight over training samples is 1.
    """
    counts = np.maximum(counts.astype(np.float64), 1)
    if mode == "none":
        w = np.ones_like(counts)
    elif mode == "sqrt":
        w = 1 / np.sqrt(counts)
    elif mode == "inverse":
        w = 1 / counts
    else:
        raise ValueError(f"unknown balance mode {mode!r} (none, sqrt, inverse)")
    return w / (w * counts).sum() * counts.sum()


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Augment a uint8-valued float batch ``(N,1,48,48)`` into ``(N,1,44,44)`` crops."""
    n = x.shape[0]
    dev = x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=gen, device=dev) * (hi - lo) + lo

    angle = u(-15, 15) * math.pi / 180
    scale = u(0.85, 1.15) * CROP / 48
    flip = torch.where(torch.rand(n, generator=gen, device=dev) < 0.5, -1.0, 1.0)
    tx, ty = u(-0.1, 0.1), u(-0.1, 0.1)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )
    grid = F.affine_grid(theta, [n, 1, CROP, CROP], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * u(0.7, 1.3).view(n, 1, 1, 1) + mean + u(-25, 25).view(n, 1, 1, 1)
    # random erasing: one rectangle (2-25% of the area) in half of the images
    area = u(0.02, 0.25) * CROP * CROP
    ratio = torch.exp(u(math.log(0.3), math.log(3.3)))
    h = (area * ratio).sqrt().clamp(4, CROP - 1)
    w = (area / ratio).sqrt().clamp(4, CROP - 1)
    y0 = u(0, 1) * (CROP - h)
    x0 = u(0, 1) * (CROP - w)
    ys = torch.arange(CROP, device=dev).view(1, CROP, 1)
    xs = torch.arange(CROP, device=dev).view(1, 1, CROP)
    box = (
        (ys >= y0.view(n, 1, 1)) & (ys < (y0 + h).view(n, 1, 1))
        & (xs >= x0.view(n, 1, 1)) & (xs < (x0 + w).view(n, 1, 1))
    )
    box &= (torch.rand(n, generator=gen, device=dev) < 0.5).view(n, 1, 1)
    fill = u(0, 255).view(n, 1, 1, 1).expand_as(out)
    out = torch.where(box.unsqueeze(1), fill, out)
    return out.clamp(0, 255)


def center_crop(x: torch.Tensor) -> torch.Tensor:
    """Central 44x44 crop of ``(N,1,48,48)`` faces."""
    off = (x.shape[-1] - CROP) // 2
    return x[..., off: off + CROP, off: off + CROP]


TTAS = ("none", "flip", "tencrop")


def _wrap(net: nn.Module, tta: str) -> nn.Module:
    if tta not in TTAS:
        raise ValueError(f"unknown test-time averaging {tta!r} ({', '.join(TTAS)})")
    return {"none": Softmax, "flip": FlipTTA}.get(tta, lambda n: TenCropTTA(n, CROP))(net)


@torch.no_grad()
def predict(
    net: nn.Module, images: np.ndarray, device: torch.device, batch: int = 512, tta: str = "flip"
) -> np.ndarray:
    """Class probabilities for ``uint8 (N,48,48)`` faces, averaged over the face and its mirror
    (``tta="flip"``, centre crop), over ten views (``"tencrop"``: centre + corners, mirrored) or
    from the centre crop alone (``"none"``)."""
    net.eval()
    wrapper = _wrap(net, tta)
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i: i + batch]).to(device).float().unsqueeze(1)
        out.append(wrapper(x if tta == "tencrop" else center_crop(x)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 7), np.float32)


def _targets(data: FaceDataset, idx: np.ndarray, cfg: FaceTrainConfig, k: int) -> torch.Tensor:
    onehot = np.eye(k, dtype=np.float32)[data.labels[idx]]
    if data.soft is not None and cfg.ferplus:
        onehot = (1 - cfg.soft_weight) * onehot + cfg.soft_weight * data.soft[idx]
    return torch.from_numpy(onehot * (1 - cfg.label_smoothing) + cfg.label_smoothing / k)


def load_teacher_logits(path: str | Path, n: int) -> torch.Tensor:
    """Teacher-ensemble logits for the Training split: ``train`` array of an ``.npz`` holding
    ``(teachers, N, classes)`` or ``(N, classes)`` logits in the Training split's row order
    (as written by ``emolens.train.face_gpu``); several teachers are averaged."""
    with np.load(path) as z:
        if "train" not in z.files:
            raise ValueError(f"{path}: no 'train' array of teacher logits")
        logits = z["train"].astype(np.float32)
    if logits.ndim == 3:
        logits = logits.mean(0)
    if logits.ndim != 2 or len(logits) != n:
        raise ValueError(f"{path}: teacher logits have shape {logits.shape}; expected ({n}, classes)")
    return torch.from_numpy(logits)


def kd_loss(logits: torch.Tensor, teacher: torch.Tensor, temp: float) -> torch.Tensor:
    """Knowledge-distillation term: ``temp``-softened KL divergence to the teacher, scaled by
    ``temp**2`` (Hinton et al.) so its gradients keep their size across temperatures."""
    return F.kl_div(F.log_softmax(logits.float() / temp, 1), F.softmax(teacher / temp, 1),
                    reduction="batchmean") * temp * temp


def train_face(cfg: FaceTrainConfig, resume: bool = False) -> dict:
    """Run (or resume) a training run; returns the final metrics dict written to metrics.json."""
    from tqdm import tqdm

    from emolens.metrics import plot_curves

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    torch.manual_seed(cfg.seed)
    splits = load_face_data(cfg.data, cfg.ferplus, cfg.framing, progress=True)
    train, val = splits["Training"], splits["PublicTest"]
    classes = train.classes
    k = len(classes)
    weights = torch.tensor(class_weights(np.bincount(train.labels, minlength=k), cfg.balance), dtype=torch.float32)

    teacher = load_teacher_logits(cfg.teacher_logits, len(train)) if cfg.teacher_logits else None
    history: list[dict] = []
    best_acc, start_epoch = -1.0, 0
    last = out / "last.pt"
    net = FaceNet(num_classes=k, width=cfg.width).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
        pct_start=min(0.5, max(0.1, 2.5 / (cfg.epochs * steps_per_epoch))),  # at least 2 warm-up steps on tiny data
        anneal_strategy="cos", div_factor=10, final_div_factor=100,
    )
    if resume and last.is_file():
        state = torch.load(last, map_location=device, weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history, best_acc, start_epoch = state["history"], state["best_acc"], state["epoch"] + 1
        if state["config"]["epochs"] == cfg.epochs:
            sched.load_state_dict(state["scheduler"])
        else:  # --epochs changed: re-target the one-cycle schedule and fast-forward to this point
            print(f"re-targeting the schedule from {state['config']['epochs']} to {cfg.epochs} epochs")
            for _ in range(start_epoch * steps_per_epoch):
                sched.step()
        print(f"resumed from {last} at epoch {start_epoch}")

    images = torch.from_numpy(train.images).unsqueeze(1)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        perm = torch.from_numpy(np.random.default_rng(cfg.seed + epoch).permutation(len(train)))
        total_loss, correct, seen, t0 = 0.0, 0, 0, time.time()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
        for step in bar:
            idx = perm[step * cfg.batch_size: (step + 1) * cfg.batch_size]
            x = augment(images[idx].to(device).float(), gen)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            target = _targets(train, idx.numpy(), cfg, k).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = net(x)
            logp = F.log_softmax(logits.float(), dim=1)
            y = torch.from_numpy(train.labels[idx.numpy()]).to(device)
            loss = (-(target * logp).sum(1) * weights.to(device)[y]).mean()
            if teacher is not None:
                loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd_loss(logits, teacher[idx].to(device), cfg.kd_temp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        probs = predict(net, val.images, device, tta=cfg.tta)
        val_pred = probs.argmax(1)
        val_loss = float(-np.log(np.maximum(probs[np.arange(len(val)), val.labels], 1e-7)).mean())
        row = {
            "epoch": epoch + 1, "train_loss": total_loss / seen, "train_acc": correct / seen,
            "val_loss": val_loss, "val_acc": float((val_pred == val.labels).mean()),
            "lr": opt.param_groups[0]["lr"], "seconds": time.time() - t0,
        }
        history.append(row)
        improved = row["val_acc"] > best_acc
        if improved:
            best_acc = row["val_acc"]
            torch.save({"model": net.state_dict(), "config": asdict(cfg), "epoch": epoch}, out / "best.pt")
        torch.save(
            {"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "history": history, "best_acc": best_acc, "epoch": epoch, "config": asdict(cfg)}, last,
        )
        print(
            f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.3f}  train {row['train_acc']:.3f}  "
            f"PublicTest {row['val_acc']:.4f}{' *' if improved else ''}  ({row['seconds']:.0f}s)", flush=True,
        )
        plot_curves(history, out / "curves.png")

    best = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    metrics = {"config": asdict(cfg), "best_epoch": best["epoch"] + 1, "history": history}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    from emolens.train.face_export import finalize_face

    metrics = finalize_face(out)
    print(f"best epoch {best['epoch'] + 1}: PublicTest {metrics['PublicTest']['accuracy']:.4f}, "
          f"PrivateTest {metrics['PrivateTest']['accuracy']:.4f}; wrote {out}/face_expression.onnx")
    return metrics
