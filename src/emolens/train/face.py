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
from emolens.train.nets import FaceNet, FlipTTA, LogitEnsemble, TenCropTTA

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


@torch.no_grad()
def predict(
    net: nn.Module, images: np.ndarray, device: torch.device, batch: int = 512, tta: str = "flip"
) -> np.ndarray:
    """Class probabilities for ``uint8 (N,48,48)`` faces, averaged over the face and its mirror
    (``tta="flip"``, centre crop) or over ten views (``"tencrop"``: centre + corners, mirrored)."""
    net.eval()
    wrapper = FlipTTA(net) if tta == "flip" else TenCropTTA(net, CROP)
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i: i + batch]).to(device).float().unsqueeze(1)
        out.append(wrapper(center_crop(x) if tta == "flip" else x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 7), np.float32)


def export_onnx(net: nn.Module, path: str | Path, tta: str = "flip") -> None:
    """Export ``net`` with its test-time averaging and softmax to ONNX: input ``faces`` float32
    ``(N,1,44,44)`` (``flip``) or ``(N,1,48,48)`` (``tencrop``) in 0..255, output ``probs``."""
    net = net.to("cpu").float().eval()
    wrapper = (FlipTTA(net) if tta == "flip" else TenCropTTA(net, CROP)).to(memory_format=torch.contiguous_format)
    side = CROP if tta == "flip" else 48
    dummy = torch.zeros(2, 1, side, side)
    torch.onnx.export(
        wrapper, (dummy,), str(path), input_names=["faces"], output_names=["probs"],
        dynamic_axes={"faces": {0: "n"}, "probs": {0: "n"}}, opset_version=17, dynamo=False,
    )
    store_fp16(path)


def store_fp16(path: str | Path) -> None:
    """Store an ONNX model's float32 weights as float16 (half the file size), each followed by a
    Cast back to float32: compute stays float32 (onnxruntime folds the casts at load time)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) == 0:
            continue
        array = numpy_helper.to_array(init)
        half_name = init.name + "_fp16"
        casts.append((init.name, half_name, numpy_helper.from_array(array.astype(np.float16), half_name)))
    for name, half_name, tensor in casts:
        graph.initializer.remove(next(i for i in graph.initializer if i.name == name))
        graph.initializer.append(tensor)
        graph.node.insert(0, helper.make_node("Cast", [half_name], [name], to=onnx.TensorProto.FLOAT))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _targets(data: FaceDataset, idx: np.ndarray, cfg: FaceTrainConfig, k: int) -> torch.Tensor:
    onehot = np.eye(k, dtype=np.float32)[data.labels[idx]]
    if data.soft is not None and cfg.ferplus:
        onehot = (1 - cfg.soft_weight) * onehot + cfg.soft_weight * data.soft[idx]
    return torch.from_numpy(onehot * (1 - cfg.label_smoothing) + cfg.label_smoothing / k)


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
    splits = load_face_data(cfg.data, cfg.ferplus)
    train, val = splits["Training"], splits["PublicTest"]
    classes = train.classes
    k = len(classes)
    weights = torch.tensor(class_weights(np.bincount(train.labels, minlength=k), cfg.balance), dtype=torch.float32)

    history: list[dict] = []
    best_acc, start_epoch = -1.0, 0
    last = out / "last.pt"
    net = FaceNet(num_classes=k, width=cfg.width).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1,
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
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        probs = predict(net, val.images, device)
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
    metrics = finalize_face(out)
    print(f"best epoch {best['epoch'] + 1}: PublicTest {metrics['PublicTest']['accuracy']:.4f}, "
          f"PrivateTest {metrics['PrivateTest']['accuracy']:.4f}; wrote {out}/face_expression.onnx")
    return metrics


def finalize_face(
    run_dir: str | Path, ensemble: tuple[str | Path, ...] = (), ttas: tuple[str, ...] = ("flip",)
) -> dict:
    """Pick the test-time averaging (flip vs ten-crop) for a finished run's best checkpoint on
    PublicTest, export it, and rewrite ``metrics.json`` (PrivateTest is reported for the pick only).

    ``ensemble``: more checkpoints (``best.pt``-style files) whose logits may be averaged with the
    best one; single model vs ensemble is chosen on PublicTest as well. ``ttas``: the test-time
    averagings to consider. The default is ``flip`` alone: ten-crop costs 5x the compute per face
    (it made video analysis classifier-bound) for +0.3 points on PublicTest in the shipped run.
    """
    from emolens.metrics import classification_report, plot_confusion

    run = Path(run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = FaceTrainConfig(**metrics["config"])
    splits = load_face_data(cfg.data, cfg.ferplus)
    classes = splits["Training"].classes

    def load(path: str | Path) -> nn.Module:
        net = FaceNet(num_classes=len(classes), width=cfg.width)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["model"])
        return net.eval()

    candidates: dict[str, nn.Module] = {"best": load(run / "best.pt")}
    if ensemble:
        candidates["ensemble"] = LogitEnsemble([candidates["best"], *(load(p) for p in ensemble)])
    device = torch.device("cpu")
    val, test = splits["PublicTest"], splits["PrivateTest"]
    scores = {
        f"{name}+{t}": float((predict(net, val.images, device, tta=t).argmax(1) == val.labels).mean())
        for name, net in candidates.items() for t in ttas
    }
    choice = max(scores, key=lambda k: (scores[k], k.startswith("best"), k.endswith("flip")))  # ties: simpler
    name, tta = choice.split("+")
    net = candidates[name]
    metrics["tta"] = {"choice": tta, "model": name, "PublicTest_accuracy": scores,
                      "ensemble_members": ["best.pt", *map(str, ensemble)] if name == "ensemble" else ["best.pt"]}
    for split_name, split in (("PublicTest", val), ("PrivateTest", test)):
        pred = predict(net, split.images, device, tta=tta).argmax(1)
        metrics[split_name] = classification_report(split.labels, pred, classes)
    export_onnx(net, run / "face_expression.onnx", tta=tta)
    plot_confusion(metrics["PrivateTest"], run / "confusion.png", title="PrivateTest")
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"PublicTest accuracy by candidate: {scores} -> {choice}; "
          f"PrivateTest accuracy {metrics['PrivateTest']['accuracy']:.4f}")
    return metrics


def ship_face_model(run_dir: str | Path, models_dir: str | Path | None = None) -> Path:
    """Copy a finished run's ONNX into the package with its model card (JSON + markdown).

    The card records the training command, the PublicTest/PrivateTest metrics from the
    run's ``metrics.json`` and the sha256 of the shipped file.
    """
    import hashlib
    import shutil

    from emolens.expression import MODELS_DIR
    from emolens.metrics import format_report

    run = Path(run_dir)
    dest = Path(models_dir) if models_dir else MODELS_DIR
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = metrics["config"]
    onnx_path = dest / "face_expression.onnx"
    shutil.copyfile(run / "face_expression.onnx", onnx_path)
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    defaults = FaceTrainConfig(data="", out="")
    flags = " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in cfg.items()
        if k not in ("data", "out", "threads", "device") and v != getattr(defaults, k)
    )
    command = f"emolens train face --data ../shared/data/fer2013/fer2013.csv.xz --out {cfg['out']} {flags}".strip()
    tencrop = metrics.get("tta", {}).get("choice") == "tencrop"
    members = [Path(m).name for m in metrics.get("tta", {}).get("ensemble_members", [])]
    card = {
        "name": "face_expression", "labels": list(metrics["PrivateTest"]["labels"]),
        "input_size": 48 if tencrop else CROP,
        "input": "float32 (N, 1, 48, 48) grayscale 0..255: a 48x48 aligned face" if tencrop else
                 "float32 (N, 1, 44, 44) grayscale 0..255: centre 44x44 of a 48x48 aligned face",
        "output": "float32 (N, 7) probabilities (softmax of logits averaged over "
                  + ("ten views: centre and corner 44x44 crops and their mirrors)" if tencrop else
                     "the face and its mirror)"),
        "tta": metrics.get("tta"),
        "architecture": (f"logit average of {len(members)} checkpoints ({', '.join(members)}) of " if len(members) > 1
                         else "") + f"a VGG-style CNN, 4 stages x 2 conv (width {cfg['width']}), GAP, 2-layer head; "
                        "weights stored as float16, computed in float32",
        "sha256": sha, "size_bytes": onnx_path.stat().st_size, "command": command,
        "best_epoch": metrics["best_epoch"], "epochs": cfg["epochs"],
        "PublicTest": {k: metrics["PublicTest"][k] for k in ("accuracy", "macro_f1")},
        "PrivateTest": {k: metrics["PrivateTest"][k] for k in ("accuracy", "macro_f1")},
    }
    (dest / "face_expression.json").write_text(json.dumps(card, indent=2) + "\n")
    hist = metrics["history"]
    md = f"""# Model card: face_expression.onnx

Facial-expression classifier shipped with emolens (7 FER2013 classes: {", ".join(card["labels"])}).

- **Architecture**: {card["architecture"]}; input {card["input"]}; output {card["output"]}.
- **Training data**: FER2013 `Training` split (28,709 faces). Model selection: best epoch on
  `PublicTest` (epoch {card["best_epoch"]} of {card["epochs"]}). `PrivateTest` was used only for the report below.
- **Recipe**: SGD (Nesterov, momentum 0.9, weight decay {cfg["weight_decay"]}), one-cycle cosine LR (peak {cfg["lr"]}),
  batch {cfg["batch_size"]}, label smoothing {cfg["label_smoothing"]}, class weights `{cfg["balance"]}`,
  augmentation: random affine crop 44x44 (rotation +-15 deg, scale 0.85-1.15, shift +-10%), mirror,
  brightness/contrast, random erasing. Test-time averaging baked into the ONNX graph, chosen on
  PublicTest: {card["output"]}.
- **Reproduce**: `{command}` then
  `python -c "from emolens.train.face import ship_face_model; ship_face_model('{cfg["out"]}')"`
  (CPU, 2 cores: about {sum(h["seconds"] for h in hist) / 60:.0f} minutes of epochs in the shipped run).
- **Check**: `emolens evaluate face --data ../shared/data/fer2013/fer2013.csv.xz --split PrivateTest`
  (the test suite asserts the PrivateTest floor of 70%).
- **sha256**: `{sha}` ({card["size_bytes"]:,} bytes)

## PublicTest (model selection)

```
{format_report(metrics["PublicTest"])}
```

## PrivateTest (3,589 faces, never used for selection)

```
{format_report(metrics["PrivateTest"])}
```

## Limits

FER2013 is 48x48 grayscale web images, mostly frontal, with noisy labels (human accuracy is
about 65%); `disgust` has only 436 training images and is the weakest class. Faces in
photos/videos are aligned to FER2013's framing from 5 landmarks before classification;
strongly turned or occluded faces are less reliable. Research use: FER2013's terms apply.
"""
    (dest / "face_expression.md").write_text(md)
    return onnx_path
