"""From trained checkpoints to a shipped face model: choose (on PublicTest only), export to ONNX
with the model's own metadata, report PrivateTest once, and write the model card.

- :func:`finalize_face`: a finished ``emolens train face`` run -> ``face_expression.onnx`` + metrics.
- :func:`export_ensemble`: several checkpoints (e.g. the GPU recipe's teachers) -> one ONNX whose
  graph averages their logits; members and test-time averaging are chosen on PublicTest.
- :func:`ship_face_model`: copy a run's ONNX into the package as ``face_<name>.onnx`` with its
  card (``.json`` + ``.md``: data, recipe, command, PublicTest/PrivateTest tables, faces/s).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emolens.datasets import load_face_data
from emolens.faces import FACE_SIZE, FER_TEMPLATE
from emolens.train.face import CROP, FaceTrainConfig, _wrap, predict
from emolens.train.nets import FaceNet, LogitEnsemble
from emolens.train.onnx_weights import INT4_MIN, fold_weight_storage, quantize_int8, store_fp16, store_int8


def export_onnx(
    net: nn.Module, path: str | Path, tta: str = "flip", labels: tuple[str, ...] | None = None,
    weights: str = "fp16",
) -> None:
    """Export ``net`` with its test-time averaging and softmax to ONNX: input ``faces`` float32
    ``(N,1,44,44)`` (``none``/``flip``) or ``(N,1,48,48)`` (``tencrop``) in 0..255, output ``probs``.
    Weights are stored as ``fp16``, ``int8`` or ``int4`` (per-channel, see :func:`store_int8`) and computed in
    float32; ``labels`` and the preprocessing go into the ONNX metadata."""
    net = net.to("cpu").float().eval()
    wrapper = _wrap(net, tta).to(memory_format=torch.contiguous_format)
    side = 48 if tta == "tencrop" else CROP
    dummy = torch.zeros(2, 1, side, side)
    torch.onnx.export(
        wrapper, (dummy,), str(path), input_names=["faces"], output_names=["probs"],
        dynamic_axes={"faces": {0: "n"}, "probs": {0: "n"}}, opset_version=17, dynamo=False,
    )
    if weights in ("int8", "int4"):
        store_int8(path, int4_min=INT4_MIN if weights == "int4" else 0)
    if weights != "fp32":
        store_fp16(path)
    if labels is not None:
        embed_metadata(path, model_metadata(labels, side))


def model_metadata(labels: tuple[str, ...] | list[str], input_size: int) -> dict:
    """The preprocessing and labels a FER-style model expects (see :class:`emolens.expression.ModelSpec`)."""
    return {"labels": list(labels), "frame": FACE_SIZE, "input_size": int(input_size), "color": "gray",
            "template": FER_TEMPLATE.tolist()}


def embed_metadata(path: str | Path, meta: dict) -> None:
    """Store ``meta`` as JSON in the ONNX file's metadata (key ``emolens``)."""
    import onnx

    from emolens.expression import META_KEY

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != META_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(model, str(path))


def load_checkpoint(path: str | Path, num_classes: int) -> nn.Module:
    """A :class:`FaceNet` from a ``best.pt`` (train face) or ``teacher_*.pt`` (GPU recipe) file;
    the width is read from the weights."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    weights = state["model"]
    net = FaceNet(num_classes=num_classes, width=int(weights["features.0.weight"].shape[0]))
    net.load_state_dict({k: v.float() for k, v in weights.items()})
    return net.eval()


def _choose(candidates: dict[str, nn.Module], ttas: tuple[str, ...], images: np.ndarray,
            labels: np.ndarray) -> tuple[str, str, dict[str, float]]:
    device = torch.device("cpu")
    scores = {
        f"{name}+{t}": float((predict(net, images, device, tta=t).argmax(1) == labels).mean())
        for name, net in candidates.items() for t in ttas
    }
    order = list(scores)
    choice = max(order, key=lambda k: (scores[k], -order.index(k)))  # ties: the earlier (simpler) one
    name, tta = choice.split("+")
    return name, tta, scores


def _report(net: nn.Module, tta: str, splits: dict, out: Path, metrics: dict, weights: str = "fp16") -> dict:
    """Export the chosen network, then report the exported ONNX itself (as shipped: int8 and
    float16 storage included) on PublicTest and, once, on PrivateTest."""
    from emolens.expression import ExpressionModel
    from emolens.metrics import classification_report, plot_confusion

    classes = tuple(splits["Training"].classes)
    path = out / "face_expression.onnx"
    if weights == "qdq":
        fp32 = out / "face_expression.fp32.onnx"
        export_onnx(net, fp32, tta=tta, labels=classes, weights="fp32")
        calibration = splits["Training"].images[:: max(1, len(splits["Training"]) // 512)][:512]
        off = (calibration.shape[-1] - CROP) // 2
        quantize_int8(fp32, path, calibration if tta == "tencrop" else calibration[:, off:off + CROP, off:off + CROP])
        embed_metadata(path, model_metadata(classes, 48 if tta == "tencrop" else CROP))
        fp32.unlink()
    else:
        export_onnx(net, path, tta=tta, labels=classes, weights=weights)
    model = ExpressionModel(path)
    for split_name in ("PublicTest", "PrivateTest"):
        split = splits[split_name]
        metrics[split_name] = classification_report(split.labels, model.predict(split.images).argmax(1), classes)
    metrics["weights"] = weights
    plot_confusion(metrics["PrivateTest"], out / "confusion.png", title="PrivateTest")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    best = max(metrics["tta"]["PublicTest_accuracy"].values())
    print(f"chose {'+'.join(metrics['tta']['ensemble_members'])} with {tta} averaging (PublicTest {best:.4f} among "
          f"{len(metrics['tta']['PublicTest_accuracy'])} candidates; exported: "
          f"{metrics['PublicTest']['accuracy']:.4f}); PrivateTest {metrics['PrivateTest']['accuracy']:.4f}")
    return metrics


def finalize_face(
    run_dir: str | Path, ensemble: tuple[str | Path, ...] = (), ttas: tuple[str, ...] | None = None
) -> dict:
    """Pick the test-time averaging for a finished run's best checkpoint on PublicTest, export it,
    and rewrite ``metrics.json`` (PrivateTest is reported for the pick only).

    ``ensemble``: more checkpoints whose logits may be averaged with the best one (single model vs
    ensemble is chosen on PublicTest too). ``ttas``: the averagings to consider (default: the
    run's own, ``flip`` unless configured).
    """
    run = Path(run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = FaceTrainConfig(**metrics["config"])
    ttas = ttas or (cfg.tta,)
    splits = load_face_data(cfg.data, cfg.ferplus, cfg.framing)
    k = len(splits["Training"].classes)
    candidates: dict[str, nn.Module] = {"best": load_checkpoint(run / "best.pt", k)}
    if ensemble:
        candidates["ensemble"] = LogitEnsemble([candidates["best"], *(load_checkpoint(p, k) for p in ensemble)])
    val = splits["PublicTest"]
    name, tta, scores = _choose(candidates, ttas, val.images, val.labels)
    metrics["tta"] = {"choice": tta, "model": name, "PublicTest_accuracy": scores,
                      "ensemble_members": ["best.pt", *map(str, ensemble)] if name == "ensemble" else ["best.pt"]}
    return _report(candidates[name], tta, splits, run, metrics)


@torch.no_grad()
def view_logits(net: nn.Module, images: np.ndarray, tta: str, batch: int = 256) -> np.ndarray:
    """Logits of ``uint8 (N,48,48)`` faces averaged over the views of ``tta`` (as the exported
    wrappers average them before their softmax)."""
    net.eval()
    c, s = CROP, images.shape[-1]
    o = (s - c) // 2
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i: i + batch]).float().unsqueeze(1)
        views = [x[..., o:o + c, o:o + c]]
        if tta == "tencrop":
            views += [x[..., :c, :c], x[..., :c, s - c:], x[..., s - c:, :c], x[..., s - c:, s - c:]]
        if tta != "none":
            views += [torch.flip(v, dims=[3]) for v in views]
        out.append(torch.stack([net(v) for v in views]).mean(0).numpy())
    return np.concatenate(out)


def export_ensemble(
    checkpoints: list[str | Path], out: str | Path, data: str, ferplus: str | None = None,
    ttas: tuple[str, ...] = ("flip", "tencrop"), recipe: str = "", command: str = "", weights: str = "int8",
    max_members: int = 0,
) -> dict:
    """Turn checkpoints into one ONNX model in ``out`` (``face_expression.onnx`` + ``metrics.json``).

    Candidates: every non-empty subset of the checkpoints (logits averaged), with each averaging in
    ``ttas``; the best PublicTest accuracy wins (ties: fewer members, then the cheaper averaging)
    and only that one is reported on PrivateTest. ``recipe``/``command`` are recorded for the model
    card; ``weights``: ``int8`` or ``fp16`` weight storage (float32 compute), ``fp32``, or ``qdq``
    (static int8 quantization: integer kernels, for speed); ``max_members``: largest ensemble
    considered (0: all).
    """
    from itertools import combinations

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_face_data(data, ferplus)
    k = len(splits["Training"].classes)
    stems = [Path(p).stem for p in checkpoints]
    names = [s if stems.count(s) == 1 else f"{Path(p).parent.name}/{s}" for s, p in zip(stems, checkpoints)]
    if len(set(names)) != len(names):
        raise ValueError("give each checkpoint only once")
    nets = {name: load_checkpoint(p, k) for name, p in zip(names, checkpoints)}
    val = splits["PublicTest"]
    logits = {(n, t): view_logits(net, val.images, t) for n, net in nets.items() for t in ttas}
    scores: dict[str, float] = {}
    for size in range(1, (max_members or len(nets)) + 1):
        for members in combinations(nets, size):
            for t in ttas:
                mean = np.mean([logits[(m, t)] for m in members], 0)
                scores["+".join(members) + f"@{t}"] = float((mean.argmax(1) == val.labels).mean())
    order = list(scores)
    choice = max(order, key=lambda key: (scores[key], -order.index(key)))
    names, tta = choice.split("@")
    members = names.split("+")
    net = nets[members[0]] if len(members) == 1 else LogitEnsemble([nets[m] for m in members])
    widths = sorted({int(nets[m].features[0].weight.shape[0]) for m in members})
    metrics = {
        "config": {"data": data, "ferplus": ferplus, "width": widths[-1], "checkpoints": [str(p) for p in checkpoints]},
        "tta": {"choice": tta, "model": "ensemble" if len(members) > 1 else members[0],
                "PublicTest_accuracy": scores, "ensemble_members": members},
        "recipe": recipe, "command": command,
    }
    return _report(net, tta, splits, out, metrics, weights)


def measure_faces_per_second(path: str | Path, threads: int = 2, batch: int = 64, seconds: float = 3.0) -> float:
    """Classifier throughput of an ONNX face model on this machine (faces/s, batches of ``batch``)."""
    from emolens.expression import ExpressionModel

    model = ExpressionModel(path, threads=threads)
    faces = np.random.default_rng(0).integers(0, 256, (batch, model.spec.frame, model.spec.frame), np.uint8)
    model.predict(faces)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.predict(faces)
        n += batch
    return n / (time.perf_counter() - t0)


STORAGE = {
    "fp16": "weights stored as float16, computed in float32",
    "fp32": "float32 weights and compute",
    "int8": "weights stored as int8 with a float scale per output channel, computed in float32",
    "int4": ("weights stored with a float scale per output channel, as int8, and as int4 (-7..7) for the "
             f"tensors of at least {INT4_MIN:,} values (conv stages 3-4); computed in float32"),
    "qdq": "statically quantized: int8 weights (per channel) and uint8 activations, integer kernels",
}


def _class_line(report: dict) -> str:
    per = report["per_class"]
    return (f"accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}, "
            f"recall disgust {per['disgust']['recall']:.3f}, fear {per['fear']['recall']:.3f}")


def ship_face_model(run_dir: str | Path, name: str = "default", models_dir: str | Path | None = None,
                    faces_per_second: float | None = None) -> Path:
    """Copy a finished run's ONNX into the package as ``face_<name>.onnx`` with its model card.

    The card (JSON + markdown) records the data, recipe and commands, the PublicTest/PrivateTest
    metrics from the run's ``metrics.json``, faces/s measured here and the file's sha256; the run
    folder's ``NOTES.md``, if any, becomes the card's training history. ``faces_per_second``: a
    figure measured earlier on a quiet machine (default: measured now).
    """
    from emolens.expression import MODELS_DIR
    from emolens.metrics import format_report

    run = Path(run_dir)
    dest = Path(models_dir) if models_dir else MODELS_DIR
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = metrics["config"]
    onnx_path = dest / f"face_{name}.onnx"
    shutil.copyfile(run / "face_expression.onnx", onnx_path)
    from emolens.train.face_explain_export import add_explain_outputs

    add_explain_outputs(onnx_path)  # Grad-CAM and activation outputs, off unless asked for
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    command = metrics.get("command") or _train_command(cfg)
    tta = metrics.get("tta", {}).get("choice", "flip")
    members = [Path(m).name for m in metrics.get("tta", {}).get("ensemble_members", [])]
    views = {"none": "one view (the centre crop)", "flip": "the face and its mirror",
             "tencrop": "ten views: centre and corner 44x44 crops and their mirrors"}[tta]
    side = 48 if tta == "tencrop" else CROP
    fps = faces_per_second or measure_faces_per_second(onnx_path)
    card = model_metadata(metrics["PrivateTest"]["labels"], side) | {
        "name": name, "file": onnx_path.name,
        "input": f"float32 (N, 1, {side}, {side}) grayscale 0..255: "
                 + ("a 48x48 aligned face" if side == 48 else "centre 44x44 of a 48x48 aligned face"),
        "output": f"float32 (N, {len(metrics['PrivateTest']['labels'])}) probabilities: softmax of logits "
                  f"averaged over {views}",
        "tta": metrics.get("tta"),
        "architecture": (f"logit average of {len(members)} networks ({', '.join(members)}), each " if len(members) > 1
                         else "") + f"a VGG-style CNN, 4 stages x 2 conv (width {cfg['width']}), GAP, 2-layer head; "
                        + STORAGE[metrics.get("weights", "fp16")],
        "sha256": sha, "size_bytes": onnx_path.stat().st_size, "command": command,
        "faces_per_second": {"value": round(fps, 1), "threads": 2, "batch": 64, "machine": _machine(),
                             "date": time.strftime("%Y-%m-%d")},
        "PublicTest": {k: metrics["PublicTest"][k] for k in ("accuracy", "macro_f1", "per_class")},
        "PrivateTest": {k: metrics["PrivateTest"][k] for k in ("accuracy", "macro_f1", "per_class")},
    }
    (dest / f"face_{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    recipe = metrics.get("recipe") or (_train_recipe(cfg) if "weight_decay" in cfg else
                                       "logit average of the checkpoints " + ", ".join(cfg.get("checkpoints", [])))
    soft = "; FER+ vote distributions as soft targets" if cfg.get("ferplus") else ""
    md = f"""# Model card: face_{name}.onnx (`--model {name}`)

Facial-expression classifier shipped with emolens ({len(card["labels"])} FER2013 classes: {", ".join(card["labels"])}).

- **Architecture**: {card["architecture"]}.
- **Input / output**: {card["input"]}; {card["output"]}. The preprocessing (48x48 gray face aligned
  from 5 landmarks onto the FER2013 template, {side}x{side} input) is stored in the ONNX metadata.
- **Training data**: FER2013 `Training` split (28,709 faces){soft}.
  Model selection on `PublicTest` only ({len(card["tta"]["PublicTest_accuracy"])} candidates, accuracy):
  {", ".join(f"{k} {v:.4f}" for k, v in sorted(card["tta"]["PublicTest_accuracy"].items(), key=lambda kv: -kv[1]))}.
  `PrivateTest` was used once, for the report below.
- **Recipe**: {recipe}
- **Reproduce**: `{command}`
- **Check**: `emolens evaluate face --data ../shared/data/fer2013/fer2013.csv.xz --split PrivateTest --model {name}`
- **Speed**: {fps:,.0f} faces/s (onnxruntime, 2 threads, batches of 64; {card["faces_per_second"]["machine"]},
  {card["faces_per_second"]["date"]}). `benchmarks/fer_side_by_side.py` compares it with `fer` in one run.
- **sha256**: `{sha}` ({card["size_bytes"]:,} bytes)

## Summary

| split | accuracy | macro-F1 | recall disgust | recall fear |
|---|---|---|---|---|
""" + "".join(
        f"| {s} | {metrics[s]['accuracy']:.4f} | {metrics[s]['macro_f1']:.4f} | "
        f"{metrics[s]['per_class']['disgust']['recall']:.3f} | {metrics[s]['per_class']['fear']['recall']:.3f} |\n"
        for s in ("PublicTest", "PrivateTest")
    ) + f"""
## PublicTest (model selection)

```
{format_report(metrics["PublicTest"])}
```

## PrivateTest (3,589 faces, never used for selection)

```
{format_report(metrics["PrivateTest"])}
```

{{history}}## Limits

FER2013 is 48x48 grayscale web images, mostly frontal, with noisy labels (human accuracy is
about 65%); `disgust` has only 436 training images and is the weakest class. Faces in
photos/videos are aligned to FER2013's framing from 5 landmarks before classification;
strongly turned or occluded faces are less reliable. Research use: FER2013's terms apply.
"""
    notes = run / "NOTES.md"  # the run's own account of how it was made (e.g. what was tried and dropped)
    md = md.replace("{history}", f"## Training history\n\n{notes.read_text().strip()}\n\n" if notes.is_file() else "")
    card_md = dest / f"face_{name}.md"
    if card_md.is_file():  # measured sections (region evidence, heat-map faithfulness) are kept
        from emolens.cards import sections, set_section

        for section, text in sections(card_md.read_text()).items():
            md = set_section(md, section, text)
    card_md.write_text(md)
    print(f"shipped {onnx_path} ({_class_line(metrics['PrivateTest'])} on PrivateTest; {fps:,.0f} faces/s)")
    return onnx_path


def _rebuilt_run(name: str, out: Path, path: Path, data: str, command: str, weights: str, tta: dict,
                 recipe_extra: str, note: str, candidate: str | None = None) -> dict:
    """``metrics.json`` and ``NOTES.md`` in ``out`` for ``path``, a new file made from the shipped
    ``face_<name>.onnx`` without its checkpoints, measured on PublicTest/PrivateTest like an export
    and ready for :func:`ship_face_model`. ``note`` gets the measured numbers appended;
    ``candidate``: the name under which the new file's PublicTest accuracy joins ``tta``'s candidates."""
    import re

    from emolens.expression import MODELS_DIR, ExpressionModel
    from emolens.metrics import classification_report

    card = json.loads((MODELS_DIR / f"face_{name}.json").read_text())
    card_md = (MODELS_DIR / f"face_{name}.md").read_text()
    embed_metadata(path, model_metadata(card["labels"], card["input_size"]))
    recipe = re.search(r"^- \*\*Recipe\*\*: (.*)$", card_md, re.M)
    width = re.search(r"width (\d+)", card["architecture"])
    metrics: dict = {
        "config": {"data": data, "ferplus": "FER+" in card_md.split("## Summary")[0],
                   "width": int(width.group(1)) if width else 0},
        "tta": tta, "recipe": (recipe.group(1) if recipe else "") + recipe_extra,
        "command": f"{card['command']}; then {command}", "weights": weights,
    }
    splits = load_face_data(data)
    model = ExpressionModel(path)
    for split in ("PublicTest", "PrivateTest"):
        faces = splits[split]
        metrics[split] = classification_report(faces.labels, model.predict(faces.images).argmax(1), faces.classes)
    if candidate:
        tta["PublicTest_accuracy"] = tta.get("PublicTest_accuracy", {}) | {candidate: metrics["PublicTest"]["accuracy"]}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    history = re.search(r"^## Training history\n\n(.*?)(?=^<!-- emolens|^## )", card_md, re.M | re.S)
    (out / "NOTES.md").write_text((history.group(1).strip() + "\n\n" if history else "") + note + (
        f" Measured again: PublicTest {card['PublicTest']['accuracy']:.4f} -> {metrics['PublicTest']['accuracy']:.4f}, "
        f"PrivateTest {card['PrivateTest']['accuracy']:.4f} -> {metrics['PrivateTest']['accuracy']:.4f}.\n"))
    print(f"{path}: {path.stat().st_size:,} bytes; PublicTest {metrics['PublicTest']['accuracy']:.4f} (shipped "
          f"{card['PublicTest']['accuracy']:.4f}), PrivateTest {metrics['PrivateTest']['accuracy']:.4f}")
    return metrics


def requantize(name: str, out: str | Path, weights: str = "int4", data: str = "../shared/data/fer2013/fer2013.csv.xz",
               command: str = "") -> dict:
    """Store the shipped ``face_<name>.onnx``'s weights anew (``weights``: ``int4``, ``int8`` or
    ``fp16``; see :func:`store_int8`) without its training checkpoints, and report the result like
    :func:`export_ensemble`: ``out/face_expression.onnx`` + ``metrics.json``, ready for
    :func:`ship_face_model`. The weights are read back from their current storage (e.g. int8), so
    the new storage is measured on PublicTest/PrivateTest as shipped."""
    from emolens.expression import MODELS_DIR

    if weights not in ("int4", "int8", "fp16"):
        raise ValueError(f"weights must be int4, int8 or fp16, not {weights!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "face_expression.onnx"
    fold_weight_storage(MODELS_DIR / f"face_{name}.onnx", path)
    if weights != "fp16":
        store_int8(path, int4_min=INT4_MIN if weights == "int4" else 0)
    store_fp16(path)
    old_size = (MODELS_DIR / f"face_{name}.onnx").stat().st_size
    card = json.loads((MODELS_DIR / f"face_{name}.json").read_text())
    note = (f"Weights re-stored as {weights} (`{command or 'requantize'}`, from the shipped file itself: "
            f"{old_size:,} bytes as shipped before, {path.stat().st_size:,} now without the explain outputs that "
            "shipping adds). The compute stays float32 (onnxruntime folds the unpacking when it loads the model), "
            "so the speed is unchanged.")
    return _rebuilt_run(name, out, path, data, command or "requantize", weights, card["tta"], "", note)


def mirror(name: str, out: str | Path, data: str = "../shared/data/fer2013/fer2013.csv.xz", command: str = "") -> dict:
    """Add test-time flip averaging to the shipped one-view ``face_<name>.onnx``
    (:func:`emolens.train.onnx_mirror.add_mirror_view`): the logits of the face and its mirror are
    averaged. Written and measured like :func:`requantize`, ready for :func:`ship_face_model`."""
    from emolens.expression import MODELS_DIR
    from emolens.train.face_explain_export import remove_explain_outputs
    from emolens.train.onnx_mirror import add_mirror_view

    card = json.loads((MODELS_DIR / f"face_{name}.json").read_text())
    tta = dict(card["tta"])
    if tta.get("choice") != "none":
        raise ValueError(f"face_{name}.onnx already averages views ({tta.get('choice')})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plain, path = out / "one_view.onnx", out / "face_expression.onnx"
    remove_explain_outputs(MODELS_DIR / f"face_{name}.onnx", plain)
    add_mirror_view(plain, path)
    plain.unlink()
    model = tta.get("model", name)
    tta["choice"] = "flip"
    note = (f"Mirror view added (`{command or 'mirror'}`, from the shipped file itself; the checkpoints were not "
            "kept): the graph scores the face and its left-right mirror and averages the two logits, so it "
            "computes twice per face.")
    extra = " Then a mirrored view added to the exported file: the logits of the face and its mirror are averaged."
    return _rebuilt_run(name, out, path, data, command or "mirror", _weights_of(card), tta, extra, note,
                        candidate=f"{model}@flip")


def _weights_of(card: dict) -> str:
    """The weight storage key of a shipped card (from its architecture text)."""
    return next((k for k, text in STORAGE.items() if text in card["architecture"]), "fp16")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs"


def _train_command(cfg: dict) -> str:
    defaults = FaceTrainConfig(data="", out="")
    flags = " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in cfg.items()
        if k not in ("data", "out", "threads", "device", "ferplus") and hasattr(defaults, k)
        and v != getattr(defaults, k)
    )
    ferplus = " --ferplus ../shared/data/fer2013/fer2013new.csv" if cfg.get("ferplus") else ""
    return (f"emolens train face --data ../shared/data/fer2013/fer2013.csv.xz{ferplus} --out {cfg['out']} "
            f"{flags}").strip()


def _train_recipe(cfg: dict) -> str:
    kd = (f" Knowledge distillation from teacher logits ({Path(cfg['teacher_logits']).name}): "
          f"loss = {1 - cfg['kd_alpha']:.1f} x cross-entropy + {cfg['kd_alpha']:.1f} x T^2 KL at T={cfg['kd_temp']}."
          if cfg.get("teacher_logits") else "")
    return (f"SGD (Nesterov, momentum 0.9, weight decay {cfg['weight_decay']}), one-cycle cosine LR (peak "
            f"{cfg['lr']}), {cfg['epochs']} epochs, batch {cfg['batch_size']}, label smoothing "
            f"{cfg['label_smoothing']}, class weights `{cfg['balance']}`, augmentation: random affine crop 44x44 "
            "(rotation +-15 deg, scale 0.85-1.15, shift +-10%), mirror, brightness/contrast, random erasing."
            + kd)


def main(argv: list[str] | None = None) -> None:
    """``python -m emolens.train.face_export ensemble|requantize|mirror|ship ...`` (see ``--help``)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m emolens.train.face_export", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("ensemble", help="checkpoints -> one ONNX (members and averaging chosen on PublicTest)")
    e.add_argument("checkpoints", nargs="+")
    e.add_argument("--out", required=True)
    e.add_argument("--data", default="../shared/data/fer2013/fer2013.csv.xz")
    e.add_argument("--ferplus", default=None)
    e.add_argument("--tta", nargs="+", default=["flip", "tencrop"], choices=["none", "flip", "tencrop"])
    e.add_argument("--weights", default="int8", choices=["int8", "int4", "fp16", "fp32", "qdq"])
    e.add_argument("--max-members", type=int, default=0, help="largest ensemble considered (0: all)")
    e.add_argument("--recipe", default="", help="training recipe text for the model card")
    e.add_argument("--threads", type=int, default=0)
    r = sub.add_parser("requantize", help="store a shipped model's weights with fewer bits, measured like an export")
    r.add_argument("--name", default="accurate", help="the shipped model (face_NAME.onnx)")
    r.add_argument("--weights", default="int4", choices=["int4", "int8", "fp16"])
    r.add_argument("--out", required=True)
    r.add_argument("--data", default="../shared/data/fer2013/fer2013.csv.xz")
    m = sub.add_parser("mirror", help="add test-time flip averaging to a shipped one-view model (measured)")
    m.add_argument("--name", default="default", help="the shipped model (face_NAME.onnx)")
    m.add_argument("--out", required=True)
    m.add_argument("--data", default="../shared/data/fer2013/fer2013.csv.xz")
    s = sub.add_parser("ship", help="copy a run's ONNX into the package as face_NAME.onnx with its model card")
    s.add_argument("run")
    s.add_argument("--name", default="default")
    args = ap.parse_args(argv)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    if args.cmd == "ensemble":
        command = "python -m emolens.train.face_export ensemble " + " ".join(
            [*args.checkpoints, "--out", args.out, "--tta", *args.tta, "--weights", args.weights]
            + (["--max-members", str(args.max_members)] if args.max_members else []))
        export_ensemble(args.checkpoints, args.out, args.data, args.ferplus, tuple(args.tta), args.recipe,
                        command, args.weights, args.max_members)
    elif args.cmd == "requantize":
        requantize(args.name, args.out, args.weights, args.data,
                   f"python -m emolens.train.face_export requantize --name {args.name} --weights {args.weights} "
                   f"--out {args.out}")
    elif args.cmd == "mirror":
        mirror(args.name, args.out, args.data, f"python -m emolens.train.face_export mirror --name {args.name} "
               f"--out {args.out}")
    else:
        ship_face_model(args.run, args.name)


if __name__ == "__main__":
    main()
