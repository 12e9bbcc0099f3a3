"""Face-model recipe for a short GPU window: teachers in parallel, then distilled students.

Two steps::

    # here (CPU): FER2013 Training + PublicTest and the FER+ votes as one compact file (~49 MB)
    python -m emolens.train.face_gpu pack --data fer2013.csv.xz --ferplus fer2013new.csv --out .carry/fer.npz
    # on the GPU machine: everything fits in one deadline (seconds from start)
    python -m emolens.train.face_gpu run --pack .carry/fer.npz --out $OUT --deadline 540

The pixels are stored losslessly as the residuals of the LOCO-I median edge predictor (as in
JPEG-LS), lzma-compressed: 1.56 kB per face instead of 1.77 kB for lzma alone. A device machine
takes at most 64 MiB of working tree including what it carries, and the shipped ONNX models
already hold about 25 MB of it: for this run, move ``src/emolens/models/*.onnx`` out of the
checkout (the run needs none of them) and put them back afterwards.

``run`` trains ``--teachers`` VGG-style teachers as separate processes sharing the GPU until a
common deadline (a cosine schedule over *time*, so the run ends annealed whatever the GPU's
speed; the number of epochs and steps each one ran is logged), then trains the students in one
process by online distillation from the teacher ensemble on the same augmented batches. It
writes at most 8 files: ``teacher_<i>.pt`` (float16 weights, config, history), ``students.pt``,
``logits.npz`` (teacher logits on Training/PublicTest for offline distillation), ``summary.json``
and ``log.txt``. Model selection uses PublicTest only; PrivateTest is never packed.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("Training", "PublicTest")


# ----------------------------------------------------------------------------- data pack
def _med_prediction(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    """LOCO-I median edge predictor (int16 arrays)."""
    lo, hi = np.minimum(left, up), np.maximum(left, up)
    return np.where(up_left >= hi, lo, np.where(up_left <= lo, hi, left + up - up_left))


def med_residuals(images: np.ndarray) -> np.ndarray:
    """``uint8 (N,H,W)`` -> the residuals (mod 256) of :func:`_med_prediction` from the decoded
    neighbours (0 outside the image): lossless, and far more compressible than the pixels."""
    x = np.pad(images.astype(np.int16), ((0, 0), (1, 0), (1, 0)))
    pred = _med_prediction(x[:, 1:, :-1], x[:, :-1, 1:], x[:, :-1, :-1])
    return ((x[:, 1:, 1:] - pred) % 256).astype(np.uint8)


def med_decode(residuals: np.ndarray) -> np.ndarray:
    """Inverse of :func:`med_residuals` (pixel by pixel, vectorised over the images)."""
    n, h, w = residuals.shape
    x = np.zeros((n, h + 1, w + 1), np.int16)
    r = residuals.astype(np.int16)
    for i in range(1, h + 1):
        for j in range(1, w + 1):
            pred = _med_prediction(x[:, i, j - 1], x[:, i - 1, j], x[:, i - 1, j - 1])
            x[:, i, j] = (pred + r[:, i - 1, j - 1]) % 256
    return x[:, 1:, 1:].astype(np.uint8)


def pack(data: str, ferplus: str | None, out: str) -> Path:
    """Write FER2013 Training + PublicTest (uint8 pixels, :func:`med_residuals` lzma-compressed),
    labels and FER+ votes."""
    from emolens.datasets import load_fer2013_arrays, load_ferplus_votes

    images, labels, usage = load_fer2013_arrays(data)
    keep = np.isin(usage, SPLITS)
    arrays = {
        "images_med_xz": np.frombuffer(lzma.compress(med_residuals(images[keep]).tobytes(),
                                                     preset=9 | lzma.PRESET_EXTREME), np.uint8),
        "labels": labels[keep].astype(np.int8),
        "split": np.array([SPLITS.index(u) for u in usage[keep]], np.int8),
    }
    if ferplus:
        votes, plus_usage = load_ferplus_votes(ferplus)
        if not np.array_equal(plus_usage, usage):
            raise ValueError("FER+ votes do not line up with the FER2013 csv")
        arrays["votes"] = votes[keep].astype(np.uint8)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


@dataclass
class Data:
    """Unpacked arrays: ``images uint8 (N,48,48)``, ``labels int64``, ``split`` 0/1, ``soft (N,7)``."""

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    soft: np.ndarray

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self.split == SPLITS.index(name)
        return self.images[m], self.labels[m], self.soft[m]


def load_pack(path: str | Path, limit: int = 0) -> Data:
    """Read a pack (``limit`` > 0 keeps that many rows per split, for smoke tests)."""
    with np.load(path) as z:
        labels = z["labels"].astype(np.int64)
        if "images_med_xz" in z:
            images = med_decode(np.frombuffer(lzma.decompress(z["images_med_xz"].tobytes()), np.uint8)
                                .reshape(-1, 48, 48))
        else:  # packs written before the predictor
            images = np.frombuffer(lzma.decompress(z["images_xz"].tobytes()), np.uint8).reshape(-1, 48, 48)
        split = z["split"].astype(np.int64)
        votes = z["votes"].astype(np.float32) if "votes" in z else None
    onehot = np.eye(7, dtype=np.float32)[labels]
    if votes is None:
        soft = onehot
    else:
        seven = votes[:, :7]
        total = seven.sum(1, keepdims=True)
        soft = np.where(total > 0, seven / np.maximum(total, 1), onehot).astype(np.float32)
    if limit:
        keep = np.concatenate([np.flatnonzero(split == s)[:limit] for s in range(len(SPLITS))])
        images, labels, split, soft = images[keep], labels[keep], split[keep], soft[keep]
    return Data(images, labels, split, soft)


# ----------------------------------------------------------------------------- training pieces
@dataclass
class NetSpec:
    """One network to train: ``width`` of the VGG-style FaceNet, seed, loss knobs."""

    name: str
    width: int = 64
    seed: int = 0
    lr: float = 0.05
    soft_weight: float = 0.0  # FER+ vote distribution mixed into the target (teachers)
    kd_alpha: float = 0.0  # weight of the distillation term (students)
    kd_temp: float = 2.0
    label_smoothing: float = 0.1
    weight_decay: float = 5e-4
    batch_size: int = 128
    history: list[dict] = field(default_factory=list)


class TimeSchedule:
    """Learning rate as a function of the fraction of the time budget used: 3% linear warm-up
    from lr/10, then cosine down to lr/1000 at the deadline."""

    def __init__(self, start: float, deadline: float, lr: float) -> None:
        self.start, self.deadline, self.lr = start, deadline, lr

    def progress(self) -> float:
        return min(1.0, (time.time() - self.start) / max(1e-6, self.deadline - self.start))

    def __call__(self) -> float:
        p = self.progress()
        if p < 0.03:
            return self.lr * (0.1 + 0.9 * p / 0.03)
        q = (p - 0.03) / 0.97
        return self.lr * (1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * q)))


def _device(name: str):  # noqa: ANN202
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _log(path: Path | None, text: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {text}"
    print(line, flush=True)
    if path is not None:
        with open(path, "a") as fh:
            fh.write(line + "\n")


def _soft_ce(logits, target, weights):  # noqa: ANN001, ANN202
    import torch.nn.functional as F

    return (-(target * F.log_softmax(logits.float(), 1)).sum(1) * weights).mean()


def _evaluate(net, images, device, batch: int = 1024):  # noqa: ANN001, ANN202
    """Flip-averaged logits of the centre 44x44 crops (``images`` a uint8 tensor on device)."""
    import torch

    from emolens.train.face import center_crop

    net.eval()
    out = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for i in range(0, len(images), batch):
            x = center_crop(images[i: i + batch].float().unsqueeze(1))
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(((net(x) + net(torch.flip(x, dims=[3]))) / 2).float())
    net.train()
    return torch.cat(out)


def _half_state(net) -> dict:  # noqa: ANN001
    return {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().clone()
            for k, v in net.state_dict().items()}


def train_nets(
    specs: list[NetSpec], data: Data, deadline: float, device_name: str = "auto",
    teachers: list | None = None, log: Path | None = None, eval_from: float = 0.55,
    on_epoch: Callable[[list[tuple[dict, float]]], None] | None = None,
) -> list[tuple[dict, float]]:
    """Train ``specs`` together on shared augmented batches until ``deadline`` (epoch time).

    With ``teachers`` (eval-mode networks), each spec with ``kd_alpha > 0`` also learns the
    teachers' averaged logits on the same batch. Returns ``(best_state_fp16, best_val_acc)`` per
    spec; the best epoch is chosen on PublicTest (evaluated once progress passes ``eval_from``).
    ``on_epoch`` receives the best states so far after each evaluated epoch (for checkpoints).
    """
    import torch
    import torch.nn.functional as F

    from emolens.train.face import augment, class_weights
    from emolens.train.nets import FaceNet

    device = _device(device_name)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(specs[0].seed)
    tr_x, tr_y, tr_soft = data.part("Training")
    va_x, va_y, _ = data.part("PublicTest")
    images = torch.from_numpy(tr_x).to(device)
    labels = torch.from_numpy(tr_y).to(device)
    soft = torch.from_numpy(tr_soft).to(device)
    val_images, val_labels = torch.from_numpy(va_x).to(device), torch.from_numpy(va_y).to(device)
    weights = torch.tensor(class_weights(np.bincount(tr_y, minlength=7), "sqrt"), dtype=torch.float32).to(device)
    bf16 = device.type == "cuda"
    nets, opts = [], []
    for s in specs:
        torch.manual_seed(s.seed)
        net = FaceNet(num_classes=7, width=s.width).to(device).to(memory_format=torch.channels_last)
        nets.append(net)
        opts.append(torch.optim.SGD(net.parameters(), lr=s.lr, momentum=0.9, nesterov=True,
                                    weight_decay=s.weight_decay))
    start = time.time()
    scheds = [TimeSchedule(start, deadline, s.lr) for s in specs]
    gen = torch.Generator(device=device).manual_seed(1000 + specs[0].seed)
    batch = specs[0].batch_size
    n = len(tr_y)
    best: list[tuple[dict, float]] = [({}, -1.0) for _ in specs]
    epoch, steps = 0, 0
    while scheds[0].progress() < 1.0:
        epoch += 1
        perm = torch.randperm(n, generator=gen, device=device)
        t0 = time.time()
        loss_sum = torch.zeros(len(specs), device=device)
        epoch_steps = 0
        for i in range(0, n - batch + 1, batch):
            if scheds[0].progress() >= 1.0:
                break
            idx = perm[i: i + batch]
            x = augment(images[idx].float().unsqueeze(1), gen).contiguous(memory_format=torch.channels_last)
            y = labels[idx]
            t_logits = None
            if teachers:
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    t_logits = torch.stack([t(x).float() for t in teachers]).mean(0)
            for k, (s, net, opt) in enumerate(zip(specs, nets, opts)):
                lr = scheds[k]()
                for g in opt.param_groups:
                    g["lr"] = lr
                onehot = F.one_hot(y, 7).float()
                target = (1 - s.soft_weight) * onehot + s.soft_weight * soft[idx]
                target = target * (1 - s.label_smoothing) + s.label_smoothing / 7
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = net(x)
                loss = _soft_ce(logits, target, weights[y])
                if t_logits is not None and s.kd_alpha > 0:
                    temp = s.kd_temp
                    kd = F.kl_div(F.log_softmax(logits.float() / temp, 1), F.softmax(t_logits / temp, 1),
                                  reduction="batchmean") * temp * temp
                    loss = (1 - s.kd_alpha) * loss + s.kd_alpha * kd
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum[k] += loss.detach()
            steps += 1
            epoch_steps += 1
        secs = time.time() - t0
        p = scheds[0].progress()
        evaluate = p >= eval_from
        losses = (loss_sum / max(1, epoch_steps)).tolist()
        for k, (s, net) in enumerate(zip(specs, nets)):
            row = {"epoch": epoch, "steps": steps, "progress": round(p, 4), "loss": losses[k],
                   "lr": scheds[k](), "seconds": round(secs, 2)}
            if evaluate:
                acc = float((_evaluate(net, val_images, device).argmax(1) == val_labels).float().mean())
                row["val_acc"] = acc
                if acc > best[k][1]:
                    best[k] = (_half_state(net), acc)
            s.history.append(row)
        _log(log, f"{'+'.join(s.name for s in specs)} epoch {epoch} p={p:.2f} {secs:.1f}s "
                  + " ".join(f"{s.name}:loss={r['loss']:.3f}" + (f",val={r['val_acc']:.4f}" if "val_acc" in r else "")
                             for s, r in zip(specs, (s.history[-1] for s in specs))))
        if evaluate and on_epoch is not None:
            on_epoch(best)
    for k, net in enumerate(nets):  # a run too short to reach eval_from still returns its last state
        if best[k][1] < 0:
            acc = float((_evaluate(net, val_images, device).argmax(1) == val_labels).float().mean())
            best[k] = (_half_state(net), acc)
    return best


def _load_net(state: dict, width: int, device):  # noqa: ANN001, ANN202
    import torch

    from emolens.train.nets import FaceNet

    net = FaceNet(num_classes=7, width=width)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return net.to(device).to(memory_format=torch.channels_last).eval()


# ----------------------------------------------------------------------------- entry points
def run_teacher(args: argparse.Namespace) -> None:
    """One teacher process: train until the deadline, write ``teacher_<i>.pt``."""
    import torch

    spec = NetSpec(**json.loads(args.spec))
    out = Path(args.out)
    data = load_pack(args.pack, args.limit)
    state, acc = train_nets([spec], data, args.deadline_at, args.device, log=out / "log.txt")[0]
    torch.save({"model": state, "spec": asdict(spec), "val_acc": acc}, out / f"{spec.name}.pt")
    _log(out / "log.txt", f"{spec.name} done: PublicTest {acc:.4f} after {spec.history[-1]['epoch']} epochs "
                          f"({spec.history[-1]['steps']} steps)")


def default_teachers(n: int, width: int) -> list[NetSpec]:
    """``n`` teachers: different seeds, every other one with FER+ votes mixed into its target."""
    return [NetSpec(name=f"teacher_{i}", width=width, seed=i, soft_weight=0.3 if i % 2 else 0.0) for i in range(n)]


def default_students(widths: list[int]) -> list[NetSpec]:
    """Students distilled from the teacher ensemble (one per width, two KD settings for the first)."""
    specs = [NetSpec(name=f"student_w{w}", width=w, seed=100 + i, kd_alpha=0.7, kd_temp=2.0)
             for i, w in enumerate(widths)]
    specs.append(NetSpec(name=f"student_w{widths[0]}_t4", width=widths[0], seed=200, kd_alpha=0.9, kd_temp=4.0))
    return specs


def run(args: argparse.Namespace) -> dict:
    """Teachers (parallel processes) then students (one process), all before ``--deadline``."""
    import torch

    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    device = _device(args.device)
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else ""
    _log(log, f"device {device} {gpu} torch {torch.__version__}")
    end = t_start + args.deadline - args.margin
    teacher_end = t_start + (end - t_start) * args.teacher_share
    teachers = default_teachers(args.teachers, args.teacher_width)
    procs = []
    for spec in teachers:
        cmd = [sys.executable, "-m", "emolens.train.face_gpu", "teacher", "--pack", args.pack, "--out", str(out),
               "--spec", json.dumps(asdict(spec)), "--deadline-at", str(teacher_end), "--device", args.device,
               "--limit", str(args.limit)]
        procs.append(subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "2"}))
    data = load_pack(args.pack, args.limit)
    codes = [p.wait() for p in procs]
    _log(log, f"teachers exited with {codes} after {time.time() - t_start:.0f}s")
    loaded = []
    for spec in teachers:
        path = out / f"{spec.name}.pt"
        if path.is_file():
            loaded.append(torch.load(path, map_location="cpu", weights_only=False))
    summary: dict = {"teachers": {
        t["spec"]["name"]: {"val_acc": t["val_acc"], "epochs": t["spec"]["history"][-1]["epoch"],
                            "steps": t["spec"]["history"][-1]["steps"]} for t in loaded}}
    if not loaded:
        _log(log, "no teacher finished; stopping")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary
    nets = [_load_net(t["model"], t["spec"]["width"], device) for t in loaded]
    tr_x, _, _ = data.part("Training")
    va_x, va_y, _ = data.part("PublicTest")
    logits = {}
    for name, x in (("Training", tr_x), ("PublicTest", va_x)):
        xs = torch.from_numpy(x).to(device)
        logits[name] = torch.stack([_evaluate(n, xs, device) for n in nets]).cpu().numpy().astype(np.float16)
    np.savez(out / "logits.npz", train=logits["Training"], public=logits["PublicTest"],
             names=np.array([t["spec"]["name"] for t in loaded]))
    ens_acc = float((logits["PublicTest"].astype(np.float32).mean(0).argmax(1) == va_y).mean())
    summary["ensemble_val_acc"] = ens_acc
    _log(log, f"teacher ensemble ({len(nets)}) PublicTest {ens_acc:.4f}")
    students = default_students(args.student_widths)

    def save_students(best: list[tuple[dict, float]]) -> None:
        tmp = out / ".students.tmp"
        torch.save({s.name: {"model": st, "spec": asdict(s), "val_acc": acc} for s, (st, acc) in zip(students, best)},
                   tmp)
        os.replace(tmp, out / "students.pt")

    best = train_nets(students, data, end, args.device, teachers=nets, log=log, on_epoch=save_students)
    save_students(best)
    summary["students"] = {s.name: {"val_acc": acc, "epochs": s.history[-1]["epoch"], "steps": s.history[-1]["steps"]}
                           for s, (_, acc) in zip(students, best)}
    summary["seconds"] = time.time() - t_start
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _log(log, "summary " + json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emolens.train.face_gpu", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="write the compact data file")
    p.add_argument("--data", required=True)
    p.add_argument("--ferplus")
    p.add_argument("--out", required=True)
    r = sub.add_parser("run", help="teachers then distilled students, before a deadline")
    r.add_argument("--pack", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--deadline", type=float, default=540, help="seconds from start for the whole run")
    r.add_argument("--margin", type=float, default=25, help="seconds kept for saving at the end")
    r.add_argument("--teacher-share", type=float, default=0.62, help="fraction of the time for the teachers")
    r.add_argument("--teachers", type=int, default=4)
    r.add_argument("--teacher-width", type=int, default=64)
    r.add_argument("--student-widths", type=int, nargs="+", default=[32, 40])
    r.add_argument("--device", default="auto")
    r.add_argument("--limit", type=int, default=0, help="rows per split (smoke tests)")
    t = sub.add_parser("teacher", help="(internal) one teacher process")
    t.add_argument("--pack", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--spec", required=True)
    t.add_argument("--deadline-at", type=float, required=True)
    t.add_argument("--device", default="auto")
    t.add_argument("--limit", type=int, default=0)
    args = parser.parse_args(argv)
    if args.cmd == "pack":
        path = pack(args.data, args.ferplus, args.out)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    elif args.cmd == "run":
        run(args)
    else:
        run_teacher(args)


if __name__ == "__main__":
    main()
